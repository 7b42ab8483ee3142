"""Driver running batched multi-chain Hamiltonian samplers with Stan-style windowed warmup.

The sampler itself is a kernel object (:mod:`bayesgen.inference._kernels`): NUTS, static HMC,
or any class with their ``transition_for``.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from tqdm import tqdm

from bayesgen.inference._adaptation import WindowedAdaptation, find_reasonable_step_size
from bayesgen.inference._guard import GuardedDensity
from bayesgen.inference._integrator import LogDensityFn, Metric, PhaseState, initial_state, make_metric
from bayesgen.inference._kernels import NUTSKernel, SamplerKernel, StepFn
from bayesgen.inference._streams import ChainStreams

__all__ = ["HMCResult", "LogDensityFn", "run_hmc"]

#: Names of the per-draw statistics in :attr:`HMCResult.stats`.
STAT_NAMES = ("lp", "diverging", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate")

_PROGRESS_EVERY = 25

class HMCResult(NamedTuple):
    """Output of :func:`run_hmc`.

    Attributes
    ----------
    draws : torch.Tensor
        ``(C, num_samples, D)`` unconstrained positions.
    stats : dict[str, torch.Tensor]
        Per-draw ``(C, num_samples)`` statistics named in :data:`STAT_NAMES`.
    step_size : torch.Tensor
        ``(C,)`` adapted step sizes.
    inverse_mass_matrix : torch.Tensor
        ``(C, D)`` diagonal or ``(C, D, D)`` dense adapted inverse mass matrices.
    warmup_divergences : torch.Tensor
        ``(C,)`` number of divergent warmup transitions.
    interrupted : bool
        Whether a ``KeyboardInterrupt`` ended the sampling phase early; ``draws`` and ``stats``
        then hold the transitions completed before it (fewer than ``num_samples``).
    """

    draws: torch.Tensor
    stats: dict[str, torch.Tensor]
    step_size: torch.Tensor
    inverse_mass_matrix: torch.Tensor
    warmup_divergences: torch.Tensor
    interrupted: bool = False


def _validate(
    init: torch.Tensor,
    streams: ChainStreams,
    num_warmup: int,
    num_samples: int,
    kernel: SamplerKernel,
    target_accept: float,
    init_step_size: float | None,
) -> None:
    """Raise ``ValueError`` (``TypeError`` for a kernel that is none) for inconsistent arguments of
    :func:`run_hmc`."""
    if init.dim() != 2 or not init.is_floating_point():
        raise ValueError(f"init must be a floating (C, D) tensor, got shape {tuple(init.shape)}")
    if streams.num_chains != init.shape[0]:
        raise ValueError(f"streams has {streams.num_chains} chains' streams, init {init.shape[0]} chains")
    if not callable(getattr(kernel, "transition_for", None)):
        raise TypeError(f"kernel must be a sampler kernel such as NUTSKernel() or HMCKernel(), got {kernel!r}")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
    if num_warmup < 0 or num_samples < 0:
        raise ValueError("num_warmup and num_samples must be non-negative")
    if init_step_size is not None and not init_step_size > 0.0:
        raise ValueError(f"init_step_size must be positive, got {init_step_size}")


def _show_progress(
    bar: tqdm, step_size: torch.Tensor, divergences: torch.Tensor, iteration: int
) -> None:
    """Advance the progress bar; every few iterations show mean step size and divergences."""
    bar.update(1)
    if not bar.disable and iteration % _PROGRESS_EVERY == 0:
        mean_step = step_size.mean().item()
        bar.set_postfix(step_size=f"{mean_step:.3g}", divergences=int(divergences.sum()))


def _warmup(
    step: StepFn,
    state: PhaseState,
    adapter: WindowedAdaptation,
    retune: Callable[[PhaseState, torch.Tensor, Metric], torch.Tensor],
    num_warmup: int,
    bar: tqdm,
) -> tuple[PhaseState, torch.Tensor]:
    """Run the warmup transitions, adapting as they go; return the last state and divergences."""
    divergences = torch.zeros_like(state.logp, dtype=torch.int64)
    for iteration in range(num_warmup):
        info = step(state, adapter.step_size, adapter.metric)
        state = info.state
        divergences += info.diverging
        updated = adapter.update(iteration, state.z, info.accept_prob)
        if updated and adapter.adapt_step_size:
            adapter.restart(retune(state, adapter.step_size, adapter.metric))
        _show_progress(bar, adapter.step_size, divergences, iteration)
    return state, divergences


def _sample(
    step: StepFn,
    state: PhaseState,
    step_size: torch.Tensor,
    metric: Metric,
    num_samples: int,
    bar: tqdm,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
    """Run the sampling transitions; return draws ``(C, S, D)``, statistics ``(C, S)`` and
    whether a ``KeyboardInterrupt`` cut the phase short.

    On ``KeyboardInterrupt`` the draws and statistics of the transitions completed before it
    are returned (``S`` is then their number); with none completed the interrupt propagates.
    A transition counts once its draw and every statistic are stored, so the returned draws
    never hold a half-written row.
    """
    chains, dim = state.z.shape
    draws = state.z.new_empty((chains, num_samples, dim))
    empty_stat = functools.partial(state.z.new_empty, (chains, num_samples))
    stats = {name: empty_stat() for name in ("lp", "energy", "step_size", "acceptance_rate")}
    stats["diverging"] = empty_stat(dtype=torch.bool)
    stats["tree_depth"] = empty_stat(dtype=torch.int64)
    stats["n_steps"] = empty_stat(dtype=torch.int64)
    divergences = torch.zeros((chains,), dtype=torch.int64, device=state.z.device)
    completed = 0
    try:
        for i in range(num_samples):
            info = step(state, step_size, metric)
            state = info.state
            draws[:, i] = state.z
            row = (state.logp, info.diverging, info.energy, step_size, info.tree_depth, info.n_steps)
            for name, value in zip(STAT_NAMES, row + (info.accept_prob,)):
                stats[name][:, i] = value
            completed = i + 1
            divergences += info.diverging
            _show_progress(bar, step_size, divergences, i)
    except KeyboardInterrupt:
        if completed == 0:
            raise
        return draws[:, :completed], {name: stats[name][:, :completed] for name in STAT_NAMES}, True
    return draws, {name: stats[name] for name in STAT_NAMES}, False


def _initial_step_size(
    retune: Callable[[PhaseState, torch.Tensor, Metric], torch.Tensor],
    state: PhaseState,
    metric: Metric,
    init_step_size: float | None,
) -> torch.Tensor:
    """Per-chain starting step size: the given value or the heuristic started from 1."""
    start = torch.full_like(state.logp, 1.0 if init_step_size is None else init_step_size)
    return start if init_step_size is not None else retune(state, start, metric)


def run_hmc(
    logp_and_grad: LogDensityFn,
    init: torch.Tensor,
    *,
    num_warmup: int,
    num_samples: int,
    streams: ChainStreams,
    kernel: SamplerKernel = NUTSKernel(),
    target_accept: float = 0.8,
    dense_mass: bool = False,
    init_step_size: float | None = None,
    adapt_step_size: bool = True,
    adapt_mass_matrix: bool = True,
    progress: bool = False,
    fuse: bool = False,
    jit_compile: bool | None = False,
) -> HMCResult:
    """Sample all chains in lockstep with ``kernel`` (NUTS by default) after Stan-style windowed warmup.

    Parameters
    ----------
    logp_and_grad : LogDensityFn
        Maps ``x`` ``(C, D)`` to ``(logp (C,), grad (C, D))``; called once per leapfrog step for all
        chains. Non-finite values are treated as infinite energy (a divergence), and so are points
        where it raises a numerical error (see Notes).
    init : torch.Tensor
        ``(C, D)`` initial unconstrained positions; their dtype and device are used throughout.
    num_warmup, num_samples : int
        Numbers of warmup and sampling transitions.
    streams : ChainStreams
        Source of all randomness, a stream per chain: a chain's draws depend on its stream only,
        not on the chains beside it (the same seed gives bitwise identical output, and the same
        chain in another process; in a batch of another size the same chain to rounding, since
        torch may sum a batch's products in another order).
    kernel : SamplerKernel
        The transition: ``NUTSKernel(max_tree_depth)``, ``HMCKernel(num_steps)``, or any object
        with their ``transition_for`` (:mod:`bayesgen.inference._kernels`).
    target_accept : float
        Target of the step-size dual averaging.
    dense_mass : bool
        Adapt a dense ``(D, D)`` rather than a diagonal inverse mass matrix.
    init_step_size : float or None
        Starting step size; ``None`` runs the Hoffman & Gelman heuristic.
    adapt_step_size, adapt_mass_matrix : bool
        Which quantities to adapt during warmup.
    progress : bool
        Show a tqdm progress bar.
    fuse : bool
        Record each leapfrog step, with the density and the tree bookkeeping, once as a graph of
        tensor operations and replay it through TorchScript (:class:`bayesgen._replay.Fused`),
        which removes the driver's and the density's per-operation Python overhead. Needs a
        ``logp_and_grad`` whose tensor operations do not depend on the values (checked at the
        first step; otherwise the step runs eagerly). Broadcast products summed over a dimension
        become matrix products in the recording, which rounds differently from the eager step
        (relative 1e-15 in float64); the same seed still gives identical draws.
    jit_compile : bool or None
        With ``fuse``, compile the recorded step with TorchInductor (True), never (False), or
        once the run proves long (None; see ``_kernels.COMPILE_MIN_STEPS``, and ``NUTS``).

    Returns
    -------
    HMCResult
        Draws, per-draw statistics and the adapted tuning parameters.

    Notes
    -----
    Points where ``logp_and_grad`` raises a numerical error (a Cholesky factor of a matrix that
    is not positive definite, say) are rejected as divergences, chain by chain, rather than
    ending the run: the density is wrapped in a :class:`GuardedDensity` (unless it is one
    already), whose ``failures`` count them. Errors that are not numerical, and errors at every
    point, propagate.

    A ``KeyboardInterrupt`` (Ctrl-C) during the sampling phase ends it and returns the draws of
    the transitions completed so far, with ``interrupted=True``: they are valid draws of the
    adapted chains, as in PyMC, which keeps the trace of an interrupted run. During warmup, or
    before the first draw, the interrupt propagates: there is no draw to return, and adapted
    step sizes alone are no result (CmdStan and NumPyro stop there too).
    """
    _validate(init, streams, num_warmup, num_samples, kernel, target_accept, init_step_size)
    if not isinstance(logp_and_grad, GuardedDensity):
        logp_and_grad = GuardedDensity(logp_and_grad)
    state = initial_state(logp_and_grad, init.detach())
    chains, dim = init.shape
    eye = torch.eye(dim, dtype=init.dtype, device=init.device)
    identity = eye.expand(chains, dim, dim) if dense_mass else torch.ones_like(init)
    metric = make_metric(identity.clone())
    retune = functools.partial(find_reasonable_step_size, logp_and_grad, streams=streams)
    step_size = _initial_step_size(retune, state, metric, init_step_size)
    step = kernel.transition_for(logp_and_grad, streams, num_warmup + num_samples, fuse, jit_compile)
    adapter = WindowedAdaptation(
        num_warmup,
        step_size,
        metric,
        target_accept=target_accept,
        adapt_step_size=adapt_step_size,
        adapt_mass_matrix=adapt_mass_matrix,
    )
    with tqdm(total=num_warmup + num_samples, disable=not progress, desc="Warmup") as bar:
        state, warmup_divergences = _warmup(step, state, adapter, retune, num_warmup, bar)
        step_size, metric = adapter.final_step_size(), adapter.metric
        bar.set_description("Sampling")
        draws, stats, interrupted = _sample(step, state, step_size, metric, num_samples, bar)
    return HMCResult(draws, stats, step_size, metric.inverse_mass_matrix, warmup_divergences, interrupted)
