"""The batched leapfrog integrator and what it works on: phase points, the metric (inverse mass
matrix), momenta, kinetic energy and energy errors, for all chains at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import torch

from bayesgen.inference._streams import ChainStreams

__all__ = ["LogDensityFn", "MAX_DELTA_ENERGY", "Metric", "PhasePoint", "PhaseState", "Transition", "bind_metric",
           "energy_error", "initial_state", "kinetic_energy", "leapfrog", "make_metric", "metric_tensors",
           "sample_momentum", "start_point", "velocity", "where_chains"]


LogDensityFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: Energy error above which a leapfrog step is declared divergent (Stan and NumPyro use 1000).
MAX_DELTA_ENERGY = 1000.0

_T = TypeVar("_T", bound=tuple)


class Metric(NamedTuple):
    """Per-chain ``(C, D)`` diagonal or ``(C, D, D)`` dense inverse mass matrix, with its lower
    Cholesky factor (``None`` when diagonal)."""

    inverse_mass_matrix: torch.Tensor
    cholesky: torch.Tensor | None


class PhaseState(NamedTuple):
    """Position of every chain with its log density and gradient (each leading dim ``C``)."""

    z: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor


class Transition(NamedTuple):
    """Outcome of one batched transition: the new state and per-chain ``(C,)`` statistics."""

    state: PhaseState
    diverging: torch.Tensor
    energy: torch.Tensor
    tree_depth: torch.Tensor
    n_steps: torch.Tensor
    accept_prob: torch.Tensor


class PhasePoint(NamedTuple):
    """A point of phase space, with velocity ``M^{-1} p``, log density and gradient."""

    z: torch.Tensor
    p: torch.Tensor
    v: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor


def make_metric(inverse_mass_matrix: torch.Tensor) -> Metric:
    """Build a :class:`Metric`, factorising a dense ``(C, D, D)`` inverse mass matrix."""
    if inverse_mass_matrix.dim() == 2:
        return Metric(inverse_mass_matrix, None)
    return Metric(inverse_mass_matrix, torch.linalg.cholesky(inverse_mass_matrix))


def velocity(metric: Metric, p: torch.Tensor) -> torch.Tensor:
    """Return ``M^{-1} p`` for momenta ``p`` of shape ``(C, D)``."""
    if metric.cholesky is None:
        return metric.inverse_mass_matrix * p
    return torch.matmul(metric.inverse_mass_matrix, p.unsqueeze(-1)).squeeze(-1)


def kinetic_energy(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Return ``0.5 p^T M^{-1} p`` per chain given momenta and velocities."""
    return 0.5 * (p * v).sum(-1)


def sample_momentum(metric: Metric, streams: ChainStreams, active: torch.Tensor | None = None) -> torch.Tensor:
    """Draw momenta ``p ~ N(0, M)`` ``(C, D)``: ``z / sqrt(M^{-1})``, or ``L^{-T} z`` (dense).

    Only the chains where ``active`` is true (None: all) draw; the others get zero momenta."""
    inv = metric.inverse_mass_matrix
    noise = streams.normal(inv.shape[1], active)
    if metric.cholesky is None:
        return noise * torch.rsqrt(inv)
    lower_t = metric.cholesky.mT
    return torch.linalg.solve_triangular(lower_t, noise.unsqueeze(-1), upper=True).squeeze(-1)


def initial_state(logp_and_grad: LogDensityFn, z: torch.Tensor) -> PhaseState:
    """Evaluate the log density at ``z`` ``(C, D)``, checking the shapes it returns."""
    logp, grad = logp_and_grad(z)
    if logp.shape != z.shape[:1] or grad.shape != z.shape:
        raise ValueError(
            f"logp_and_grad must return shapes {tuple(z.shape[:1])} and {tuple(z.shape)}, "
            f"got {tuple(logp.shape)} and {tuple(grad.shape)}"
        )
    return PhaseState(z, logp.detach(), grad.detach())


def leapfrog(
    logp_and_grad: LogDensityFn, point: PhasePoint, step_size: torch.Tensor, metric: Metric
) -> PhasePoint:
    """Take one leapfrog step per chain with signed step sizes ``step_size`` of shape ``(C, 1)``."""
    half = 0.5 * step_size
    p_half = point.p + half * point.grad
    z = point.z + step_size * velocity(metric, p_half)
    logp, grad = logp_and_grad(z)
    logp, grad = logp.detach(), grad.detach()
    p = p_half + half * grad
    return PhasePoint(z, p, velocity(metric, p), logp, grad)


def energy_error(point: PhasePoint, energy0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the Hamiltonian at ``point`` and ``H - H0`` (non-finite errors become ``+inf``)."""
    energy = kinetic_energy(point.p, point.v) - point.logp
    delta = energy - energy0
    return energy, torch.where(torch.isfinite(delta), delta, torch.inf)


def where_chains(mask: torch.Tensor, new: _T, old: _T) -> _T:
    """Field-wise ``torch.where`` over two named tuples of per-chain tensors."""
    column = mask.unsqueeze(-1)
    fields = (torch.where(mask if n.dim() == 1 else column, n, o) for n, o in zip(new, old))
    return type(new)(*fields)


def metric_tensors(metric: Metric) -> tuple[torch.Tensor, ...]:
    """The metric's one (diagonal) or two (dense) tensors; inverse of :func:`bind_metric`."""
    return tuple(metric) if metric.cholesky is not None else (metric.inverse_mass_matrix,)


def bind_metric(flat: Sequence[torch.Tensor], dense: bool) -> tuple[Metric, Sequence[torch.Tensor]]:
    """Take the metric's one (diagonal) or two (dense) tensors off the front of ``flat``."""
    return (Metric(flat[0], flat[1]), flat[2:]) if dense else (Metric(flat[0], None), flat[1:])


def start_point(
    state: PhaseState, metric: Metric, streams: ChainStreams, active: torch.Tensor | None = None
) -> tuple[PhasePoint, torch.Tensor]:
    """Draw fresh momenta at ``state`` (for the ``active`` chains, see :func:`sample_momentum`);
    return the phase point and its Hamiltonian ``(C,)``."""
    p = sample_momentum(metric, streams, active)
    point = PhasePoint(state.z, p, velocity(metric, p), state.logp, state.grad)
    return point, kinetic_energy(p, point.v) - state.logp
