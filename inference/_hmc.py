"""The static HMC transition: a fixed number of leapfrog steps and a Metropolis correction (eagerly, or
as one recorded and replayed leapfrog step)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from bayesgen._replay import Fused
from bayesgen.inference._guard import bind_where_defined
from bayesgen.inference._integrator import (
    MAX_DELTA_ENERGY,
    LogDensityFn,
    Metric,
    PhasePoint,
    PhaseState,
    Transition,
    bind_metric,
    energy_error,
    leapfrog,
    metric_tensors,
    start_point,
    where_chains,
)
from bayesgen.inference._numerical import is_numerical_error
from bayesgen.inference._streams import ChainStreams

__all__ = ["FusedHMCStep", "HMCStep", "hmc_step", "hmc_transition"]


def hmc_step(
    logp_and_grad: LogDensityFn,
    metric: Metric,
    energy0: torch.Tensor,
    step: torch.Tensor,
    point: PhasePoint,
    ok: torch.Tensor,
) -> tuple[PhasePoint, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One leapfrog step of static HMC: chains no longer ``ok`` (diverged) stay frozen.

    Returns the new point, the updated ``ok`` flags, the Hamiltonian of the step and its error
    (``+inf`` where not ok). Pure, like :func:`subtree_step`, so that it can be recorded.
    """
    new = leapfrog(logp_and_grad, point, step, metric)
    energy, delta = energy_error(new, energy0)
    ok = ok & (delta <= MAX_DELTA_ENERGY)
    return where_chains(ok, new, point), ok, energy, torch.where(ok, delta, torch.inf)


#: ``hmc_step`` with its density bound: ``(metric, energy0, step, point, ok) -> (point, ok, energy, delta)``.
HMCStep = Callable[..., tuple[PhasePoint, torch.Tensor, torch.Tensor, torch.Tensor]]


class FusedHMCStep:
    """:func:`hmc_step` bound to ``logp_and_grad``, recorded and replayed as :class:`FusedLeaves` is
    (compiled with TorchInductor with ``compile``); a call's outputs are valid until the call
    after next."""

    def __init__(self, logp_and_grad: LogDensityFn, compile: bool = False) -> None:  # noqa: A002
        self.logp_and_grad = logp_and_grad
        self.fused = {dense: Fused(self._flat_step(dense), compile=compile) for dense in (False, True)}

    def _flat_step(self, dense: bool) -> Callable[..., tuple[torch.Tensor, ...]]:
        def step(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
            metric, rest = bind_metric(flat, dense)
            energy0, step_size, point, ok = rest[0], rest[1], rest[2:-1], rest[-1]
            point, ok, energy, delta = hmc_step(self.logp_and_grad, metric, energy0, step_size,
                                                PhasePoint(*point), ok)
            return (*point, ok, energy, delta)

        return step

    def __call__(self, metric: Metric, energy0: torch.Tensor, step_size: torch.Tensor, point: PhasePoint,
                 ok: torch.Tensor) -> tuple[PhasePoint, torch.Tensor, torch.Tensor, torch.Tensor]:
        fused = self.fused[metric.cholesky is not None]
        args = (*metric_tensors(metric), energy0, step_size, *point, ok)
        step = bind_where_defined(fused, args, self.logp_and_grad)
        try:
            out = step(*args)
        except Exception as exc:
            if step is fused.fn or not is_numerical_error(exc):
                raise
            out = fused.fn(*args)  # a recorded step cannot catch: rerun it eagerly (guarded density)
        return PhasePoint(*out[:5]), out[5], out[6], out[7]


def hmc_transition(
    logp_and_grad: LogDensityFn,
    state: PhaseState,
    step_size: torch.Tensor,
    metric: Metric,
    *,
    streams: ChainStreams,
    num_steps: int,
    leapfrog_step: HMCStep | None = None,
) -> Transition:
    """One static HMC transition (``num_steps`` leapfrog steps, Metropolis test) for all chains.

    A chain whose energy error exceeds :data:`MAX_DELTA_ENERGY` (or is non-finite) at any step is
    frozen, flagged divergent and rejected. Parameters are as for :func:`nuts_transition`;
    ``leapfrog_step`` is :func:`hmc_step` bound to ``logp_and_grad`` (None: run it eagerly).
    """
    if leapfrog_step is None:
        leapfrog_step = functools.partial(hmc_step, logp_and_grad)
    point, energy0 = start_point(state, metric, streams)
    uniform, jitter = streams.uniform(2).T
    # jitter the step size by +-20% so that a fixed trajectory length cannot lock onto a
    # period of the posterior (Neal 2011, "MCMC using Hamiltonian dynamics", section 5.4.2.3)
    column = (step_size * (0.8 + 0.4 * jitter)).unsqueeze(-1)
    ok = torch.isfinite(energy0)
    energy, delta = energy0, torch.zeros_like(energy0)
    for _ in range(num_steps):
        point, ok, energy, delta = leapfrog_step(metric, energy0, column, point, ok)
    accept_prob = torch.exp(-delta).clamp(max=1.0)
    accept = uniform < accept_prob
    new_state = where_chains(accept, PhaseState(point.z, point.logp, point.grad), state)
    steps = torch.full_like(energy0, num_steps, dtype=torch.int64)
    energy = torch.where(accept, energy, energy0)
    return Transition(new_state, ~ok, energy, torch.zeros_like(steps), steps, accept_prob)
