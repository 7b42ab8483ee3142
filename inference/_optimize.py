"""Shared work of the optimising engines: find a mode of a LogDensity, then its Laplace covariance."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from bayesgen.diagnostics import pareto_khat
from bayesgen.engine import EngineResult, Problem
from bayesgen.logdensity import LogDensity

__all__ = ["Mode", "find_mode", "mode_result", "run_mode"]


#: Objective value that stands in for a non-finite one during the line search.
_WALL = 1e30


@dataclass(frozen=True)
class Mode:
    """An optimum in the unconstrained space and how the search went."""

    u: torch.Tensor
    losses: torch.Tensor
    converged: bool
    message: str


def find_mode(density: LogDensity, init: torch.Tensor, *, jacobian: bool, prior: bool,
              num_steps: int, tol: float = 1e-10) -> Mode:
    """Maximise the log density from ``init`` (``(dim,)``) with L-BFGS and a strong-Wolfe line search.

    A trial point where the objective or its gradient is not finite (a rate that overflowed,
    say) is reported to the line search as a wall of height :data:`_WALL` with zero slope,
    so the search backs off instead of carrying NaN into every later iterate, as Stan's
    line search does after a failed evaluation.
    """
    u = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([u], lr=1.0, max_iter=num_steps, max_eval=2 * num_steps,
                                  tolerance_grad=tol, tolerance_change=1e-14, history_size=50,
                                  line_search_fn="strong_wolfe")
    losses: list[float] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -density.log_density(u[None], jacobian=jacobian, prior=prior)[0]
        loss.backward()
        if not (torch.isfinite(loss) and torch.isfinite(u.grad).all()):
            u.grad.zero_()
            loss = torch.tensor(_WALL, dtype=u.dtype, device=u.device)
        losses.append(float(loss.detach()))
        return loss

    optimizer.step(closure)
    value, grad = density.value_and_grad(u.detach()[None], jacobian=jacobian, prior=prior)
    grad_norm = float(grad.abs().max())
    final = -float(value[0])
    # a gradient small relative to the objective: the cube root of the dtype's precision
    # (6e-6 in float64) is about where L-BFGS stops making progress on the loss
    threshold = max(tol, torch.finfo(u.dtype).eps ** (1 / 3)) * max(1.0, abs(final))
    converged = math.isfinite(final) and bool(torch.isfinite(u).all()) and grad_norm < threshold
    message = f"max |gradient| = {grad_norm:.3g} after {len(losses)} evaluations"
    return Mode(u.detach(), torch.tensor(losses), converged, message)


def _constrained_flat(density: LogDensity, u: torch.Tensor) -> torch.Tensor:
    values = density.constrain(u[None])
    return torch.cat([values[s.name].reshape(-1) for s in density.layout])


def mode_result(density: LogDensity, mode: Mode, *, jacobian: bool, prior: bool, kind: str,
                num_draws: int, generator: torch.Generator, started: float) -> EngineResult:
    """Turn a mode into an EngineResult: point, delta-method standard errors and Gaussian draws.

    The covariance in the unconstrained space is the inverse of the negative Hessian of
    the same objective that was maximised (observed information for MLE). Draws come
    from that Gaussian, mapped to each site's support, so they always respect it.
    """
    optimised = time.perf_counter()
    hessian = torch.autograd.functional.hessian(
        lambda x: density.log_density(x[None], jacobian=jacobian, prior=prior)[0], mode.u)
    precision = -(hessian + hessian.T) / 2
    cholesky, info = torch.linalg.cholesky_ex(precision)
    positive = int(info) == 0
    dim = mode.u.shape[0]
    if positive:
        cov = torch.cholesky_inverse(cholesky)
        noise = torch.randn(num_draws, dim, generator=generator, dtype=mode.u.dtype, device=mode.u.device)
        scale_tril = torch.linalg.cholesky(cov)
        u_draws = mode.u + noise @ scale_tril.T
    else:
        cov = torch.full((dim, dim), float("nan"), dtype=mode.u.dtype, device=mode.u.device)
        u_draws = mode.u.expand(num_draws, dim)
    jac = torch.autograd.functional.jacobian(lambda x: _constrained_flat(density, x), mode.u)
    se_flat = torch.sqrt(torch.diagonal(jac @ cov @ jac.T))
    point = {k: v[0] for k, v in density.constrain(mode.u[None]).items() if k in density.latent_names}
    stderr, offset = {}, 0
    for name, value in point.items():
        stderr[name] = se_flat[offset:offset + value.numel()].reshape(value.shape)
        offset += value.numel()
    draws = {k: v[None] for k, v in density.constrain(u_draws).items() if k in density.latent_names}
    info = {"converged": mode.converged, "message": mode.message, "hessian_positive_definite": positive}
    if kind == "approximation" and positive:
        with torch.no_grad():
            normal = torch.distributions.MultivariateNormal(mode.u, scale_tril=scale_tril)
            log_p = density.log_density_in_chunks(u_draws)
            log_weights = log_p - normal.log_prob(u_draws)
        info["pareto_k"] = pareto_khat(log_weights.cpu().numpy())
    return EngineResult(
        kind=kind, draws=draws, sample_stats={"loss": mode.losses[None]}, point=point, stderr=stderr,
        timing={"optimize": optimised - started, "hessian": time.perf_counter() - optimised},
        info=info,
    )


def run_mode(problem: Problem, *, seed: int, num_steps: int, num_draws: int, jacobian: bool,
             prior: bool, kind: str, engine: str) -> EngineResult:
    """Optimise ``problem``'s log density from a seeded start and build the EngineResult."""
    started = time.perf_counter()
    density = problem.density
    density.require_continuous(engine)
    if density.dim == 0:
        raise ValueError(f"engine '{engine}': the program has no continuous latent sites to estimate")
    if not prior and not density.observed:
        raise ValueError(f"engine '{engine}' maximises the likelihood, but the program has no "
                         "observed sites with the given data")
    density.require_exact(engine)
    generator = torch.Generator(device=problem.device).manual_seed(seed)
    init = torch.rand(density.dim, generator=generator, dtype=torch.get_default_dtype(),
                      device=problem.device) * 4 - 2
    mode = find_mode(density, init, jacobian=jacobian, prior=prior, num_steps=num_steps)
    return mode_result(density, mode, jacobian=jacobian, prior=prior, kind=kind,
                       num_draws=num_draws, generator=generator, started=started)
