"""Gaussian variational families on a LogDensity: reparameterised particles, one batched call per step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributions as td

from bayesgen.distributed import Ranks
from bayesgen.inference._optimize import (coordinate_labels, curvature_directions, curvature_message, find_mode,
                                          negative_hessian, site_of)
from bayesgen.inference._minibatches import Minibatches
from bayesgen.inference._steps import Checkpointing, Steps, run_steps
from bayesgen.logdensity import LogDensity

__all__ = ["GaussianFamily", "LAPLACE_MAX_DIM", "SD_FACTOR", "elbo_converged", "fit_gaussian", "laplace_start",
           "sd_against_laplace"]

#: Largest unconstrained dimension for which the Gaussian families start at the Laplace
#: approximation and have their sds checked against it: the Hessian costs one gradient per
#: dimension, cheap below this and the price of many optimiser steps above it.
LAPLACE_MAX_DIM = 500

#: Factor by which a marginal sd of the approximation may differ from the Laplace sd at its mean
#: before ``bg.check`` reports it. Mean-field families understate the sd of correlated
#: parameters (by 1/sqrt(1 - R^2), R the multiple correlation with the others); a full-rank
#: Gaussian on a near-Gaussian posterior is within a few percent of the Laplace sds.
SD_FACTOR = 2.0

#: Distance, in approximation sds, from the variational means to where the ELBO's gradient
#: says they belong, above which a run has not converged (see :class:`Settling`): a fifth of a
#: posterior sd, where Monte Carlo error of a few hundred effective draws is a tenth.
SETTLED_SD = 0.2

#: Blocks of the last window whose means estimate the noise of the window's mean gradient
#: (batch means: gradients at Adam's iterates are autocorrelated over tens of steps).
_BLOCKS = 5


class GaussianFamily(torch.nn.Module):
    """q(u) = N(loc, Sigma) over the unconstrained vector, with diagonal, full or low-rank Sigma.

    Parameters
    ----------
    dim : int
        Dimension of the unconstrained space.
    family : str
        ``"normal"`` (mean-field), ``"mvn"`` (full covariance) or ``"lowrank"``.
    rank : int
        Rank of the low-rank factor (``"lowrank"`` only).
    init_scale : float
        Initial standard deviation of every coordinate.
    """

    def __init__(self, dim: int, family: str, rank: int, init_scale: float,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        if family not in ("normal", "mvn", "lowrank"):
            raise ValueError(f"unknown Gaussian family '{family}'; use 'normal', 'mvn' or 'lowrank'")
        self.family = family
        kw = {"dtype": dtype, "device": device}
        raw_scale = math.log(math.expm1(init_scale))
        self.loc = torch.nn.Parameter(torch.zeros(dim, **kw))
        self.raw_diag = torch.nn.Parameter(torch.full((dim,), raw_scale, **kw))
        if family == "mvn":
            self.off_diag = torch.nn.Parameter(torch.zeros(dim, dim, **kw))
            # a constant mask, since torch.tril is surprisingly slow on small CPU matrices
            self.register_buffer("lower", torch.ones(dim, dim, **kw).tril(diagonal=-1))
        if family == "lowrank":
            self.factor = torch.nn.Parameter(torch.zeros(dim, rank, **kw))

    def distribution(self) -> td.Distribution:
        """The current q as a torch distribution."""
        diag = torch.nn.functional.softplus(self.raw_diag) + 1e-8
        if self.family == "normal":
            return td.Independent(td.Normal(self.loc, diag, validate_args=False), 1, validate_args=False)
        if self.family == "mvn":
            tril = self.off_diag * self.lower + torch.diag(diag)
            return td.MultivariateNormal(self.loc, scale_tril=tril, validate_args=False)
        return td.LowRankMultivariateNormal(self.loc, self.factor, diag**2, validate_args=False)

    def marginal_sd(self) -> torch.Tensor:
        """The sd of each coordinate under q, ``(dim,)``."""
        q = self.distribution()
        if self.family == "normal":
            return q.base_dist.scale
        if self.family == "mvn":
            return q.scale_tril.pow(2).sum(-1).sqrt()
        return (q.cov_factor.pow(2).sum(-1) + q.cov_diag).sqrt()

    def start_at(self, loc: torch.Tensor, cov: torch.Tensor) -> None:
        """Set q to the Gaussian nearest ``N(loc, cov)`` in the family: for mean-field, the
        sds ``1 / sqrt(precision_ii)``, which minimise KL(q || N(loc, cov)); for low rank, the
        same diagonal (its factor keeps its small random start, for the steps to grow)."""
        with torch.no_grad():
            self.loc.copy_(loc)
            if self.family == "mvn":
                tril = torch.linalg.cholesky(cov)
                self.off_diag.copy_(tril * self.lower)
                diag = tril.diagonal()
            else:
                diag = torch.linalg.inv(cov).diagonal().rsqrt()
            self.raw_diag.copy_(diag + torch.log(-torch.expm1(-diag)))  # softplus^-1

    def sample(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """Reparameterised draws ``(num, dim)`` whose noise comes from ``generator``."""
        q = self.distribution()
        kw = {"generator": generator, "dtype": self.loc.dtype, "device": self.loc.device}
        dim = self.loc.shape[0]
        if self.family == "normal":
            return self.loc + torch.randn(num, dim, **kw) * q.base_dist.scale
        if self.family == "mvn":
            return self.loc + torch.randn(num, dim, **kw) @ q.scale_tril.T
        rank = self.factor.shape[1]
        return (self.loc + torch.randn(num, rank, **kw) @ self.factor.T
                + torch.randn(num, dim, **kw) * q.cov_diag.sqrt())


@dataclass(frozen=True)
class Settling:
    """How far q's means are from the ELBO's optimum, by the gradient over the last window.

    The ELBO's gradient in q's mean is ``E_q[grad log p(u)]``; on a Gaussian posterior with
    precision ``P`` it is ``-P (mean - optimum)``, so q's covariance (about ``P^-1``) times the
    window's average gradient is the step that remains, whatever the learning rate; a run whose
    loss has gone flat while its means still creep has a remaining step of a posterior sd or more.

    Attributes
    ----------
    distance : float
        The largest remaining step of a mean, in q's sds of that coordinate.
    settled : bool
        Whether every coordinate's remaining step is under the larger of :data:`SETTLED_SD` and
        three standard errors of the estimate (batch means over :data:`_BLOCKS` blocks).
    """

    distance: float
    settled: bool


class _LastWindow:
    """Averages over the last window of steps: q's parameters (Polyak-Ruppert averaging, which
    cancels most of the noise in the last iterate at Adam's final learning rate) and, by block,
    the gradient of the ELBO in q's mean."""

    def __init__(self, num_steps: int, window: int) -> None:
        self.block = max(window // _BLOCKS, 1)
        self.first = num_steps - _BLOCKS * self.block
        self.params: dict[str, torch.Tensor] = {}
        self.gradients: list[torch.Tensor] = []

    def add(self, step: int, q: GaussianFamily) -> None:
        """Take step ``step``'s parameters (after the update) and gradient (before it); nothing in a
        run shorter than the window, which :meth:`finish` leaves as it is."""
        if self.first < 0 or step < self.first:
            return
        for name, param in q.named_parameters():
            self.params[name] = self.params.get(name, 0) + param.detach()
        if (step - self.first) % self.block == 0:
            self.gradients.append(torch.zeros_like(q.loc))
        self.gradients[-1] -= q.loc.grad  # the loss is minus the ELBO

    def finish(self, q: GaussianFamily) -> Settling | None:
        """Set q to its average over the window and say how settled it is; None (q left as it
        is) when the run was shorter than a window."""
        if self.first < 0 or len(self.gradients) < _BLOCKS:
            return None
        steps = _BLOCKS * self.block
        with torch.no_grad():
            for name, param in q.named_parameters():
                param.copy_(self.params[name] / steps)
            distribution = q.distribution()
            sd = q.marginal_sd()
            blocks = torch.stack(self.gradients) / self.block
            if q.family == "normal":
                steps_left = blocks * sd**2
            else:
                steps_left = blocks @ distribution.covariance_matrix
            step, noise = steps_left.mean(0) / sd, steps_left.std(0) / sd / _BLOCKS**0.5
        allowed = torch.clamp(3 * noise, min=SETTLED_SD)
        return Settling(distance=float(step.abs().max()), settled=bool((step.abs() <= allowed).all()))


def elbo_converged(losses: list[float], window: int, tol: float) -> bool:
    """Whether the mean loss of the last window moved less than ``tol`` (relative) or than
    three standard errors, compared with the window before (at two, one fit in twenty that had
    settled was reported as not converged).

    The loss's step-to-step noise is read from the median absolute difference of successive
    losses over both windows, not from their variance: a loss still falling, or one spike
    while Adam finds its scale, would inflate a variance until any change looked like noise
    (a 20-step VAE run passed that way). The rule takes successive losses as independent given
    their trend, as SVI's are (lag-1 autocorrelation -0.02 on the linear regression); noise
    correlated from step to step would be underestimated, towards "not converged"."""
    if len(losses) < 2 * window:
        return False
    recent = torch.tensor(losses[-2 * window:], dtype=torch.float64)
    change = float((recent[window:].mean() - recent[:window].mean()).abs())
    step_sd = 1.4826 * float(recent.diff().abs().median()) / 2**0.5  # of one loss, were they independent
    noise = step_sd * (2 / window) ** 0.5  # standard error of the difference of two window means
    return change < max(tol * float(recent[window:].mean().abs()), 3 * noise)


def _covariance(precision: torch.Tensor) -> torch.Tensor | None:
    """The inverse of a positive-definite precision; None when it is not (or not finite)."""
    if not torch.isfinite(precision).all():
        return None
    cholesky, info = torch.linalg.cholesky_ex(precision)
    return torch.cholesky_inverse(cholesky) if int(info) == 0 else None


def laplace_start(density: LogDensity, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The Laplace approximation ``(mode, covariance)`` of the unconstrained posterior, where it
    is cheap and exists, as the Gaussian families' start; else None.

    Started at random, Adam spends most of its steps reaching the posterior's bulk and shaping
    the covariance, and on a badly scaled posterior it stops, its loss flat, with the means
    still more than a posterior sd away (a logistic regression on raw covariates). From the
    Laplace solution it has only the difference between the two Gaussians left to learn. None
    (the random start) for dimensions above :data:`LAPLACE_MAX_DIM`, for a density that
    subsamples (a random estimate that L-BFGS cannot optimise), and where L-BFGS finds no
    strict mode (a funnel whose density grows without bound as a scale goes to zero).
    """
    if density.dim > LAPLACE_MAX_DIM or density.subsampled:
        return None
    init = torch.rand(density.dim, generator=generator, dtype=torch.get_default_dtype(),
                      device=density.device) * 4 - 2
    mode = find_mode(density, init, jacobian=True, prior=True, num_steps=1000)
    if not mode.converged:
        return None
    cov = _covariance(negative_hessian(density, mode.u))
    return None if cov is None else (mode.u, cov)


def sd_against_laplace(density: LogDensity, q: GaussianFamily) -> tuple[dict[str, float] | None, str | None]:
    """The coordinates whose sd under q differs by more than :data:`SD_FACTOR` from the Laplace
    sd at q's mean, with the ratio (q's over Laplace's), and None; or None and the flat
    directions of the curvature there (:func:`curvature_message`: an improper or unidentified
    posterior, which q's sds hide) where the Hessian at q's mean is singular without upward
    curvature; or None, None where the check does not apply (dimension above
    :data:`LAPLACE_MAX_DIM`, a density that subsamples, or upward curvature at q's mean: the
    mean of a posterior with symmetric modes, such as a factor model's signs or a network's
    units, may sit between them, which says nothing about q).

    The ELBO cannot see this: a mean-field q that is too narrow in correlated directions is the
    ELBO's own optimum, and its Pareto k-hat can stay under 0.7. The density's curvature at
    the same point says what the sds should be near a Gaussian posterior.
    """
    if density.dim > LAPLACE_MAX_DIM or density.subsampled:
        return None, None
    precision = negative_hessian(density, q.loc.detach())
    cov = _covariance(precision)
    if cov is None:
        if not torch.isfinite(precision).all():
            return None, None
        _, _, flat, upward = curvature_directions(precision)
        if not flat or upward:
            return None, None
        return None, curvature_message(precision, coordinate_labels(density), site_of(density), prior=True,
                                       consequence="the approximation's sds there may mean nothing")
    ratio = q.marginal_sd().detach() / cov.diagonal().sqrt()
    flagged = (ratio > SD_FACTOR) | (ratio < 1 / SD_FACTOR)
    return {label: round(float(r), 3) for label, r, bad in zip(coordinate_labels(density), ratio, flagged)
            if bad}, None


class _GaussianRun:
    """The steps of one fit of a Gaussian family, and the state a checkpoint keeps of it."""

    def __init__(self, density: LogDensity, q: GaussianFamily, *, num_steps: int, num_particles: int,
                 lr: float, lr_decay: float, generator: torch.Generator, ranks: Ranks) -> None:
        self.density, self.q, self.num_particles, self.generator = density, q, num_particles, generator
        self.ranks = ranks
        self.optimizer = torch.optim.Adam(q.parameters(), lr=lr)
        self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimizer,
                                                               gamma=lr_decay ** (1 / max(num_steps, 1)))
        self.last_window = _LastWindow(num_steps, max(10, num_steps // 20))
        self.done = 0

    def step(self) -> float:
        """One Adam step on minus the ELBO; returns the loss."""
        self.optimizer.zero_grad()
        u = self.q.sample(self.num_particles, self.generator)
        loss = -(self.density.log_density(u).mean() + self.q.distribution().entropy())
        loss.backward()
        loss = self.ranks.average_gradients(list(self.q.parameters()), float(loss.detach()))
        self.optimizer.step()
        if self.done == 0:
            self.ranks.broadcast(list(self.q.parameters()))
        self.schedule.step()
        self.last_window.add(self.done, self.q)
        self.done += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "done": self.done, "last_window": {"params": self.last_window.params,
                                                   "gradients": self.last_window.gradients}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.done = state["done"]
        self.last_window.params = dict(state["last_window"]["params"])
        self.last_window.gradients = list(state["last_window"]["gradients"])


def fit_gaussian(density: LogDensity, *, family: str, rank: int, num_steps: int, num_particles: int,
                 lr: float, lr_decay: float, init_scale: float, generator: torch.Generator,
                 progress: bool, checkpointing: Checkpointing | None = None,
                 minibatches: Minibatches | None = None, ranks: Ranks = Ranks()
                 ) -> tuple[GaussianFamily, Steps, Settling | None]:
    """Maximise the ELBO E_q[log p(u)] + H[q] with Adam and an exponentially decaying learning rate.

    The expectation is over ``num_particles`` reparameterised draws evaluated in ONE
    batched call of the density; the entropy is exact. q starts at the Laplace approximation
    where :func:`laplace_start` finds one, else at a random mean in ``(-2, 2)`` with sds
    ``init_scale``. The q returned is its average over the last window of ``max(10,
    num_steps // 20)`` steps, with how far the gradient says its means are from the optimum
    (:class:`Settling`); q as it is and None for shorter runs and runs that Ctrl-C stopped.
    ``checkpointing`` and ``minibatches``: see :func:`~bayesgen.inference._steps.run_steps`. In a
    distributed fit (``ranks``), each step's gradient is averaged over the processes.
    """
    dtype = torch.get_default_dtype()
    q = GaussianFamily(density.dim, family, rank, init_scale, dtype, density.device)
    with torch.no_grad():
        q.loc.copy_(torch.rand(density.dim, generator=generator, dtype=dtype, device=density.device) * 4 - 2)
        if family == "lowrank":
            q.factor.copy_(torch.randn(q.factor.shape, generator=generator, dtype=dtype,
                                       device=density.device) * init_scale / 10)
    if checkpointing is None or checkpointing.resume is None:  # a resumed run takes q from its checkpoint
        start = laplace_start(density, generator)
        if start is not None:
            q.start_at(*start)
    run = _GaussianRun(density, q, num_steps=num_steps, num_particles=num_particles, lr=lr, lr_decay=lr_decay,
                       generator=generator, ranks=ranks)
    steps = run_steps(run.step, num_steps, progress=progress, desc="svi", checkpointing=checkpointing, state=run,
                      minibatches=minibatches)
    return q, steps, None if steps.interrupted else run.last_window.finish(q)
