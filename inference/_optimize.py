"""Shared work of the optimising engines: find a mode of a LogDensity, then its Laplace covariance."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass

import torch
from torch.distributions import constraints

from bayesgen.diagnostics import pareto_khat
from bayesgen.engine import EngineResult, Problem
from bayesgen.inference._numerical import is_numerical_error
from bayesgen.logdensity import LogDensity
from bayesgen.program import LastSite

__all__ = ["Mode", "coordinate_labels", "curvature_directions", "curvature_message", "find_mode", "mode_result",
           "negative_hessian", "run_mode", "runaway_sites", "site_of"]


#: Objective value that stands in for a non-finite one during the line search.
_WALL = 1e30

#: Scales of the displacement from the start at which :func:`runaway_sites` re-evaluates the
#: objective: an optimum that is really there is passed by the first of them.
_RUNAWAY_SCALES = (2.0, 10.0, 100.0)

#: An eigenvalue of the negative Hessian at most this fraction of the largest counts as zero: the
#: direction is not identified by the data (collinear covariates, a parameter the objective
#: does not involve). Between float64's precision and the curvature of a weakly informed
#: parameter, so that near-singular matrices whose inverse would be noise are flagged too.
_SINGULAR_RTOL = 1e-10

#: Coordinates of an eigenvector with at least this absolute weight are named in its description
#: (at most :data:`_DIRECTION_TERMS` of them, the heaviest), for at most :data:`_DIRECTIONS_SHOWN`
#: directions of each kind: a message, not a matrix dump.
_DIRECTION_WEIGHT = 0.1
_DIRECTION_TERMS = 6
_DIRECTIONS_SHOWN = 3


@dataclass(frozen=True)
class Mode:
    """An optimum in the unconstrained space and how the search went.

    Attributes
    ----------
    u : Tensor
        The point, ``(dim,)``.
    losses : Tensor
        The objective (negative log density) at every evaluation, walls included.
    converged : bool
        Whether the gradient there is small relative to the objective.
    message : str
        How the search ended.
    failed_evaluations : int
        Trial points where the program raised a numerical error (walled, see :func:`find_mode`).
    """

    u: torch.Tensor
    losses: torch.Tensor
    converged: bool
    message: str
    failed_evaluations: int = 0


def find_mode(density: LogDensity, init: torch.Tensor, *, jacobian: bool, prior: bool,
              num_steps: int, tol: float = 1e-10) -> Mode:
    """Maximise the log density from ``init`` (``(dim,)``) with L-BFGS and a strong-Wolfe line search.

    A trial point where the objective or its gradient is not finite (a rate that overflowed,
    say), or where the program raises a numerical error (a covariance that is not positive
    definite makes ``torch.linalg.cholesky`` raise; see
    :func:`~bayesgen.inference._numerical.is_numerical_error`), is reported to the line search
    as a wall of height :data:`_WALL` with zero slope, so the search
    backs off instead of carrying NaN into every later iterate or crashing, as Stan's line
    search does after a failed evaluation.

    Raises
    ------
    ValueError
        If the program raises a numerical error at ``init`` itself: there is no point to
        back off to. The message names the error and the last site the program reached.
    """
    u = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([u], lr=1.0, max_iter=num_steps, max_eval=2 * num_steps,
                                  tolerance_grad=tol, tolerance_change=1e-14, history_size=50,
                                  line_search_fn="strong_wolfe")
    losses: list[float] = []
    failed = 0

    def closure() -> torch.Tensor:
        nonlocal failed
        optimizer.zero_grad()
        last = LastSite()
        try:
            with last:
                loss = -density.log_density(u[None], jacobian=jacobian, prior=prior)[0]
                loss.backward()
        except Exception as exc:
            if not is_numerical_error(exc):
                raise
            if not losses:
                where = f"at or after site '{last.name}'" if last.name else "before its first sample site"
                raise ValueError(
                    f"the program raised {type(exc).__name__} {where} at the optimiser's starting point, "
                    f"so there is no point to back off to: {exc}. Check the starting values (the "
                    "priors' supports) or make the program valid for every value of its latent sites"
                ) from exc
            failed += 1
            u.grad = torch.zeros_like(u)
            loss = torch.tensor(_WALL, dtype=u.dtype, device=u.device)
        if not (torch.isfinite(loss) and torch.isfinite(u.grad).all()):
            u.grad.zero_()
            loss = torch.tensor(_WALL, dtype=u.dtype, device=u.device)
        losses.append(float(loss.detach()))
        return loss

    optimizer.step(closure)
    try:
        value, grad = density.value_and_grad(u.detach()[None], jacobian=jacobian, prior=prior)
    except Exception as exc:
        if not is_numerical_error(exc):
            raise
        value = torch.full((1,), float("nan"), dtype=u.dtype, device=u.device)
        grad = torch.full((1, u.shape[0]), float("nan"), dtype=u.dtype, device=u.device)
    grad_norm = float(grad.abs().max())
    final = -float(value[0])
    # a gradient small relative to the objective: the cube root of the dtype's precision
    # (6e-6 in float64) is about where L-BFGS stops making progress on the loss
    threshold = max(tol, torch.finfo(u.dtype).eps ** (1 / 3)) * max(1.0, abs(final))
    converged = math.isfinite(final) and bool(torch.isfinite(u).all()) and grad_norm < threshold
    message = f"max |gradient| = {grad_norm:.3g} after {len(losses)} evaluations"
    if failed:
        message += f" ({failed} of them raised a numerical error and were treated as walls)"
    return Mode(u.detach(), torch.tensor(losses), converged, message, failed)


def negative_hessian(density: LogDensity, u: torch.Tensor, *, jacobian: bool = True,
                     prior: bool = True) -> torch.Tensor:
    """Minus the Hessian of the log density at one unconstrained point ``u`` ``(dim,)``,
    symmetrised: the precision of the Gaussian approximation there. NaN where evaluating it
    raised a numerical error (:func:`~bayesgen.inference._numerical.is_numerical_error`)."""
    try:
        hessian = torch.autograd.functional.hessian(
            lambda x: density.log_density(x[None], jacobian=jacobian, prior=prior)[0], u)
    except Exception as exc:
        if not is_numerical_error(exc):
            raise
        hessian = torch.full((u.shape[0],) * 2, float("nan"), dtype=u.dtype, device=u.device)
    return -(hessian + hessian.T) / 2


def coordinate_labels(density: LogDensity) -> list[str]:
    """A name for each coordinate of the flat unconstrained vector: the site and, for sites with
    several values, the index (of the unconstrained value, which differs for e.g. simplexes)."""
    labels = []
    for site in density.layout:
        if site.size == 1 and not site.unconstrained_shape:
            labels.append(site.name)
            continue
        for position in range(site.size):
            index = [int(i) for i in torch.unravel_index(torch.tensor(position), site.unconstrained_shape)]
            labels.append(f"{site.name}[{', '.join(map(str, index))}]")
    return labels


def site_of(density: LogDensity) -> list[str]:
    """The site name of each coordinate of the flat unconstrained vector."""
    return [site.name for site in density.layout for _ in range(site.size)]


def runaway_sites(density: LogDensity, u: torch.Tensor, init: torch.Tensor, *, jacobian: bool,
                  prior: bool) -> list[str]:
    """The sites that run off to infinity along a direction in which the objective keeps increasing.

    An objective with no finite maximum (the likelihood of a logistic regression on
    perfectly separable classes, which grows towards 0 as the coefficients grow) leaves
    L-BFGS at a point where the gradient has vanished, the values huge and meaningless.

    Rule: from the start ``init`` and from the origin, the point ``u`` is moved out along
    its own direction, to ``origin + k * (u - origin)`` for each k in
    :data:`_RUNAWAY_SCALES`; if the objective is finite there, strictly higher (beyond
    rounding) at the first scale and not lower at each further one, it has no maximum
    within reach along that direction. A strict maximum is passed by the first scale
    (the displacement doubled), and a flat direction (non-identified parameters) gives no
    strict increase, so neither is flagged. Each site is first moved alone, the others held
    at ``u``, so that a site with a maximum (a mean beside separable coefficients) neither
    hides the runaway of another, as it does on the ray through all of them, nor is named
    with it; then all together, for a runaway that needs several sites at once. The named
    sites are those that run off and whose constrained values move by more than
    ``max(1, |value|)`` from ``u`` to the farthest point: a site that only creeps to the edge
    of its support (a scale towards 0, a probability towards 1) has a finite estimate there
    and is not named.

    Returns
    -------
    list of str
        Site names in layout order; empty when the objective has a maximum within reach.
    """
    if not bool(torch.isfinite(u).all()):
        return []
    alone = []
    for site in density.layout:
        block = torch.zeros_like(u, dtype=torch.bool)
        block[site.offset:site.offset + site.size] = True
        if site.name in _running_off(density, u, init, block, jacobian=jacobian, prior=prior):
            alone.append(site.name)
    if alone or len(density.layout) == 1:
        return alone
    return _running_off(density, u, init, torch.ones_like(u, dtype=torch.bool), jacobian=jacobian, prior=prior)


def _running_off(density: LogDensity, u: torch.Tensor, init: torch.Tensor, moved: torch.Tensor, *,
                 jacobian: bool, prior: bool) -> list[str]:
    """:func:`runaway_sites`'s test along the rays that move the coordinates ``moved`` (a boolean
    mask) of ``u`` away from ``init`` and from the origin: the sites it names, or none."""
    with torch.no_grad():
        for origin in (init, torch.zeros_like(u)):
            direction = torch.where(moved, u - origin, torch.zeros_like(u))
            if not bool(direction.abs().max() > 0):
                continue
            points = torch.stack([u] + [u + (k - 1) * direction for k in _RUNAWAY_SCALES])
            try:
                values = torch.cat([density.log_density(p[None], jacobian=jacobian, prior=prior) for p in points])
            except Exception as exc:
                if not is_numerical_error(exc):
                    raise
                continue
            if not bool(torch.isfinite(values).all()):
                continue
            rounding = 64 * torch.finfo(values.dtype).eps * max(1.0, float(values[0].abs()))
            steps = values[1:] - values[:-1]
            if not (steps[0] > rounding and bool((steps[1:] >= -rounding).all())):
                continue
            start = density.constrain(points[[0]])
            far = density.constrain(points[[-1]])
            names = [site.name for site in density.layout
                     if bool(((far[site.name] - start[site.name]).abs()
                              > start[site.name].abs().clamp(min=1.0)).any())]
            if names:
                return names
    return []


def _normalised(precision: torch.Tensor) -> torch.Tensor:
    """``precision`` scaled to unit diagonal (where its diagonal is positive): its eigenvalues
    then say how close it is to singular whatever the units of the parameters (a coefficient
    of income in dollars has a curvature 1e10 times that of a noise scale, and is identified)."""
    diagonal = torch.diagonal(precision)
    if not bool((diagonal > 0).all()):
        return precision
    root = diagonal.sqrt()
    return precision / root[:, None] / root[None, :]


def _singular(precision: torch.Tensor) -> bool:
    """Whether a positive-definite ``precision`` is singular up to rounding: the smallest
    eigenvalue of :func:`_normalised` below :data:`_SINGULAR_RTOL` times the largest (a
    Cholesky factorisation succeeds on such a matrix and its inverse is rounding noise)."""
    values = torch.linalg.eigvalsh(_normalised(precision))
    return bool(values[0] <= _SINGULAR_RTOL * values[-1])


def curvature_directions(precision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Eigenvalues and eigenvectors of a finite ``precision`` scaled to unit diagonal
    (:func:`_normalised`, so that the parameters' units do not matter), and the indices of the
    flat directions (eigenvalues within :data:`_SINGULAR_RTOL` of zero relative to the largest)
    and of those of upward curvature (negative beyond that)."""
    values, vectors = torch.linalg.eigh(_normalised(precision))
    scale = float(values.abs().max()) if values.numel() else 0.0
    tolerance = _SINGULAR_RTOL * max(scale, torch.finfo(values.dtype).tiny)
    flat = [i for i in range(len(values)) if abs(float(values[i])) <= tolerance]
    negative = [i for i in range(len(values)) if float(values[i]) < -tolerance]
    return values, vectors, flat, negative


def curvature_message(precision: torch.Tensor, labels: list[str], sites: list[str], *, prior: bool = False,
                      consequence: str = "standard errors are undefined (NaN) and the draws sit at the point") -> str:
    """Why a negative Hessian ``precision`` is not positive definite, naming the directions.

    Rule: the eigenvalues of the matrix scaled to unit diagonal (:func:`_normalised`, so
    that the units of the parameters do not matter) are split into negative ones beyond rounding (the point is a
    saddle or a minimum along that direction, not a maximum) and those within
    :data:`_SINGULAR_RTOL` of zero relative to the largest (a flat direction the data do
    not determine: collinear covariates, a parameter the objective does not involve, two
    parameters that enter only through their product). Each such direction is written as
    its eigenvector's coordinates with weight at least :data:`_DIRECTION_WEIGHT` (by label,
    e.g. ``0.71*beta[0] - 0.71*beta[1]``), and the sites involved are listed.

    Parameters
    ----------
    precision : Tensor
        Minus the symmetrised Hessian, ``(dim, dim)``.
    labels : list of str
        A name for each coordinate (:func:`coordinate_labels`).
    sites : list of str
        The site of each coordinate.
    prior : bool
        Whether the objective includes the prior (``map``): the remedy offered is then a more
        informative prior, not ``engine='map'``.
    consequence : str
        What follows for the fit, said after "so".
    """
    if not bool(torch.isfinite(precision).all()):
        bad = sorted({sites[i] for i in (~torch.isfinite(precision)).any(1).nonzero().flatten().tolist()})
        return ("the Hessian is not finite (for " + ", ".join(f"'{s}'" for s in bad)
                + "), so standard errors are undefined")
    values, vectors, flat, negative = curvature_directions(precision)

    def describe(i: int) -> tuple[str, set[str]]:
        v = vectors[:, i]
        v = v * (1 if float(v[v.abs().argmax()]) > 0 else -1)
        order = v.abs().argsort(descending=True).tolist()
        heavy = [j for j in order if abs(float(v[j])) >= _DIRECTION_WEIGHT]
        spread = not heavy  # no coordinate stands out: show the heaviest few all the same
        shown = sorted((heavy or order)[:_DIRECTION_TERMS])
        text = " ".join(f"{'-' if float(v[j]) < 0 else '+'} {abs(float(v[j])):.2g}*{labels[j]}"
                        for j in shown).lstrip("+ ")
        if spread:
            text += f" + ... (spread over {len(v)} coordinates)"
        elif len(heavy) > _DIRECTION_TERMS:
            text += f" + ... ({len(heavy) - _DIRECTION_TERMS} more terms)"
        return text, {sites[j] for j in (heavy or shown)}

    parts, involved_all = [], set()
    for kind, indices in (("flat (not identified by the data)", flat),
                          ("of upward curvature (a saddle, not a maximum)", negative)):
        if not indices:
            continue
        descriptions = []
        for i in indices:
            text, involved = describe(i)
            if len(descriptions) < _DIRECTIONS_SHOWN:
                descriptions.append(text)
            involved_all |= involved
        more = f"; and {len(indices) - _DIRECTIONS_SHOWN} more" if len(indices) > _DIRECTIONS_SHOWN else ""
        parts.append(f"{len(indices)} direction(s) {kind}: " + "; ".join(descriptions) + more)
    if not parts:
        return ("the information matrix is numerically not positive definite (ill-conditioned: "
                f"eigenvalues from {float(values.min()):.3g} to {float(values.max()):.3g}), so standard "
                "errors are undefined")
    names = ", ".join(f"'{s}'" for s in dict.fromkeys(sites) if s in involved_all)
    what = ("is singular" if not negative else "is not positive definite (the point is not a maximum)"
            if not flat else "is singular and not positive definite")
    remedy = "a more informative prior" if prior else "a prior (engine='map')"
    causes = ("Typical causes: collinear covariates, a parameter the likelihood does not depend on, or "
              "parameters that enter only through their sum or product (a symmetry such as rotating "
              f"the factors of a matrix factorisation); drop or combine them, or give them {remedy}"
              if flat else f"The optimiser stopped at a saddle point; try another seed or {remedy}")
    imputed = [s for s in dict.fromkeys(sites) if s in involved_all and s.endswith("_unobserved")]
    if imputed and flat:
        causes += (f". Site(s) {', '.join(repr(s) for s in imputed)} come from pyro.sample(..., obs_mask=...): "
                   "Pyro makes them as large as the data, and their entries at observed positions have no "
                   "density at all; sample only the missing entries as a latent site instead")
    return (f"the information matrix (minus the Hessian) {what}, so {consequence}: " + "; ".join(parts)
            + f" (coefficients in units of each parameter's curvature). Sites involved: {names}. {causes}")


#: How near a bound of its support an estimate lies to count as on it: within this fraction of
#: the width of a bounded interval (a probability within 1e-8 of 0 or 1; 100 machine epsilons
#: where that is more, in float32), or exactly at a one-sided bound (a scale that underflowed to 0).
_BOUNDARY_RTOL = 1e-8
#: An unconstrained sd above which a coordinate next to a one-sided bound counts as flat towards
#: it: one sd of log(scale) spanning a factor of e^10 (22,000) says nothing about the scale.
_FLAT_SD = 10.0
#: Entries on a boundary named in the message; the rest are counted.
_BOUNDARY_SHOWN = 10


def boundary_entries(density: LogDensity, point: dict[str, torch.Tensor],
                     unconstrained_sd: torch.Tensor) -> list[tuple[str, str, tuple[int, ...]]]:
    """The entries of an estimate that lie on a finite bound of their site's support.

    A maximum there (a transition probability the data never take, a variance at 0) is
    reached only as the unconstrained coordinate runs to infinity: the objective flattens
    along it, so its curvature, and the delta method's standard error (0 where the
    transform saturates), say nothing about the estimate's uncertainty. Near a one-sided
    bound (a scale), where no width sets what "near" means, the sign is that flatness: an
    unconstrained sd above :data:`_FLAT_SD` (eight schools' MAP stops at tau = 1e-5, with a
    log-scale sd of 3e5, and the normal approximation's draws of tau are 0 or infinite).

    Parameters
    ----------
    density : LogDensity
    point : dict
        The estimate, site -> constrained value.
    unconstrained_sd : Tensor
        The conditional sd of each coordinate of the flat unconstrained vector, the others held
        at the point (``1 / sqrt`` of the negative Hessian's diagonal): large along a coordinate
        the objective does not curve in, not along a ridge of two correlated ones.

    Returns
    -------
    list of (label, site, index)
        ``label`` such as ``"trans[0, 2]"``, the site's name and the entry's index in its value.
    """
    found = []
    # the supports at the estimate: a bound may be another latent site (theta ~ Uniform(0, b))
    at_point = density.trace_constrained({name: value[None] for name, value in point.items()}, plated=False,
                                         enumerate=False)
    tolerance = max(_BOUNDARY_RTOL, 100 * torch.finfo(next(iter(point.values())).dtype).eps)
    for site in (site for site in density.layout if site.size):  # a one-entry simplex has nothing free
        value = point[site.name]
        flat = None
        if tuple(site.unconstrained_shape) == tuple(site.shape):  # an entrywise transform: one sd per entry
            flat = unconstrained_sd[site.offset:site.offset + site.size].reshape(site.shape) > _FLAT_SD
        near = _at_bound(at_point.nodes[site.name]["fn"].support, value, flat, tolerance)
        if near is None:
            continue
        for index in (tuple(int(i) for i in row) for row in near.nonzero()):
            label = f"{site.name}[{', '.join(map(str, index))}]" if index else site.name
            found.append((label, site.name, index))
    return found


def _at_bound(support: constraints.Constraint, value: torch.Tensor, flat: torch.Tensor | None,
              tolerance: float) -> torch.Tensor | None:
    """Where ``value`` lies on a finite bound of ``support`` (a boolean mask), or None for a
    support without one (the real line, correlation matrices): within ``tolerance`` of the
    width of a bounded support, or exactly at a one-sided bound; ``flat`` marks the entries whose
    objective is flat in their unconstrained coordinate (one that runs off towards a bound)."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if isinstance(support, type(constraints.simplex)):
        return (value < tolerance) | (value > 1 - tolerance)
    low, high = getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)
    low = None if isinstance(low, torch.Tensor) and low.numel() != 1 else low  # per-entry bounds: left alone
    high = None if isinstance(high, torch.Tensor) and high.numel() != 1 else high
    flat = torch.zeros_like(value, dtype=torch.bool) if flat is None else flat
    if low is not None and high is not None:
        width = float(high) - float(low)
        return (value - float(low) < tolerance * width) | (float(high) - value < tolerance * width) | flat
    if low is not None:
        return (value <= float(low)) | flat
    if high is not None:
        return (value >= float(high)) | flat
    return None


def _boundary_message(labels: list[str], *, prior: bool, engine: str) -> str:
    shown = ", ".join(labels[:_BOUNDARY_SHOWN]) + (f" and {len(labels) - _BOUNDARY_SHOWN} more"
                                                   if len(labels) > _BOUNDARY_SHOWN else "")
    objective = "posterior density" if prior else "likelihood"
    kinds = "a Dirichlet or Beta concentration above 1, a Gamma or log-normal prior of a scale"
    remedy = (f"a prior whose density falls to 0 at the bound ({kinds})" if prior
              else f"a prior that keeps them inside (engine='map' with {kinds})")
    return (f"engine '{engine}': the estimate lies on the boundary of its support at {shown}: the {objective} "
            "is largest at the edge (a probability of 0 or 1, a scale of 0), where no normal approximation "
            "holds, so their standard errors are NaN and the draws do not describe their uncertainty; "
            f"engine='nuts' gives their posterior, or use {remedy}")


def _constrained_flat(density: LogDensity, u: torch.Tensor) -> torch.Tensor:
    values = density.constrain(u[None])
    return torch.cat([values[s.name].reshape(-1) for s in density.layout])


def mode_result(density: LogDensity, mode: Mode, *, jacobian: bool, prior: bool, kind: str,
                num_draws: int, generator: torch.Generator, started: float) -> EngineResult:
    """Turn a mode into an EngineResult: point, delta-method standard errors and Gaussian draws.

    The covariance in the unconstrained space is the inverse of the negative Hessian of
    the same objective that was maximised (observed information for MLE). Draws come
    from that Gaussian, mapped to each site's support, so they always respect it.

    Where the negative Hessian is not positive definite there is no covariance: standard
    errors are NaN, the draws sit at the point, ``info["hessian_positive_definite"]`` is
    False and ``info["hessian_message"]`` says why, naming the flat or upward-curving
    directions and their sites (:func:`curvature_message`).
    """
    optimised = time.perf_counter()
    precision = negative_hessian(density, mode.u, jacobian=jacobian, prior=prior)
    cholesky, info = torch.linalg.cholesky_ex(precision)
    positive = int(info) == 0 and bool(torch.isfinite(precision).all()) and not _singular(precision)
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
    # the conditional sd of each coordinate (the others held at the point): flat towards a bound,
    # not merely correlated with another coordinate along a ridge
    boundary = [] if jacobian else boundary_entries(density, point, torch.diagonal(precision).rsqrt())
    for _, name, index in boundary:  # the delta method's 0 (or a huge value) there means nothing
        stderr[name][index] = float("nan")
    draws = {k: v[None] for k, v in density.constrain(u_draws).items() if k in density.latent_names}
    info = {"converged": mode.converged, "message": mode.message, "hessian_positive_definite": positive}
    if boundary:
        info["boundary_entries"] = [label for label, _, _ in boundary]
    if mode.failed_evaluations:
        info["failed_evaluations"] = mode.failed_evaluations
    if not positive:
        info["hessian_message"] = curvature_message(precision, coordinate_labels(density), site_of(density),
                                                    prior=prior)
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


def _runaway_message(density: LogDensity, u: torch.Tensor, names: list[str], *, prior: bool,
                     engine: str) -> str:
    """The finding for sites that run off to infinity (:func:`runaway_sites`), with the remedy."""
    values = density.constrain(u[None])
    sizes = ", ".join(f"max |{name}| = {float(values[name].abs().max()):.3g}" for name in names)
    quoted = ", ".join(f"'{name}'" for name in names)
    objective = "log posterior density" if prior else "likelihood"
    remedy = ("give these sites a proper, tighter prior (e.g. Normal(0, 1) on standardised covariates)"
              if prior else
              "fit with engine='map' and a proper prior on these sites (e.g. Normal(0, 1) on standardised "
              "covariates), which keeps them finite")
    return (f"engine '{engine}': the {objective} has no finite maximum: it keeps increasing as sites {quoted} "
            f"run off to infinity ({sizes} and growing), as with perfectly separable classes in a "
            f"logistic regression; the estimates of {quoted} and their standard errors are meaningless. "
            f"Remedy: {remedy}")


def run_mode(problem: Problem, *, seed: int, num_steps: int, num_draws: int, jacobian: bool,
             prior: bool, kind: str, engine: str) -> EngineResult:
    """Optimise ``problem``'s log density from a seeded start and build the EngineResult.

    An objective with no finite maximum (:func:`runaway_sites`) is said out loud: a
    ``UserWarning`` naming the sites and the remedy, ``info["converged"] = False`` with the
    same text in ``info["message"]``, and ``info["runaway_sites"]`` listing the sites.
    """
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
    runaway = runaway_sites(density, mode.u, init, jacobian=jacobian, prior=prior)
    if runaway:
        message = _runaway_message(density, mode.u, runaway, prior=prior, engine=engine)
        warnings.warn(message, UserWarning, stacklevel=4)
        mode = dataclasses.replace(mode, converged=False, message=f"{message} ({mode.message})")
    result = mode_result(density, mode, jacobian=jacobian, prior=prior, kind=kind,
                         num_draws=num_draws, generator=generator, started=started)
    boundary = result.info.pop("boundary_entries", [])
    if runaway:
        result.info["runaway_sites"] = runaway
        if not result.info["hessian_positive_definite"]:
            result.info["hessian_message"] = ("standard errors are undefined: there is no finite maximum "
                                              "to take the curvature at (see the message)")
    elif boundary:
        message = _boundary_message(boundary, prior=prior, engine=engine)
        result.info["boundary_entries"] = boundary
        result.info["boundary_message"] = message
        if not result.info["hessian_positive_definite"]:
            result.info["hessian_message"] = ("standard errors are undefined: the estimate lies on the boundary "
                                              "of its support, where the curvature says nothing (see "
                                              "boundary_message)")
        warnings.warn(message, UserWarning, stacklevel=4)
    elif not result.info["hessian_positive_definite"]:
        # said out loud, as a runaway is: the draws all sit at the point, which ArviZ and
        # bg.loo_compare would otherwise take for a posterior with no uncertainty
        warnings.warn(f"engine '{engine}': {result.info['hessian_message']}", UserWarning, stacklevel=4)
    return result
