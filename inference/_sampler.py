"""Driver running batched multi-chain NUTS / static HMC with Stan-style windowed warmup."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from tqdm import tqdm

from bayesgen.inference._adaptation import WindowedAdaptation, find_reasonable_step_size
from bayesgen.inference._hmc_kernel import (
    FusedHMCStep,
    FusedLeaves,
    GuardedDensity,
    LogDensityFn,
    Metric,
    PhaseState,
    Transition,
    hmc_transition,
    initial_state,
    make_metric,
    nuts_transition,
)

__all__ = ["HMCResult", "LogDensityFn", "run_hmc"]

StepFn = Callable[[PhaseState, torch.Tensor, Metric], Transition]

#: Names of the per-draw statistics in :attr:`HMCResult.stats`.
STAT_NAMES = ("lp", "diverging", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate")

_PROGRESS_EVERY = 25

#: Leapfrog steps a run must still have ahead for ``jit_compile=None`` to compile its recorded
#: step with TorchInductor: about where compiling pays for itself. On a two-core CPU compilation
#: costs 2.1-2.4 s with scalar kernels only (eight schools) and 3.0-3.5 s with SIMD ones for
#: the likelihood (the benchmark's regressions; the first in a process also probes the CPU,
#: 1.2 s), and the compiled step saves 350-500 microseconds a leapfrog step of the sampler's
#: loop over the TorchScript replay (eight schools 368 -> 16, breast cancer 410 -> 46, the
#: synthetic 5000 x 20 regression 658 -> 160), so it breaks even after 6,000-10,000 steps.
COMPILE_MIN_STEPS = 10_000

#: NUTS transitions from whose leapfrog steps ``jit_compile=None`` projects those of the run...
PROJECT_AFTER = 20
#: ... or fewer, once they took this many leapfrog steps: each runs in the TorchScript replay,
#: 10-20 times slower than compiled, and a few hundred steps tell a long run (breast cancer's
#: first 20 transitions take 1,550 steps, 0.65 s of replay).
PROJECT_AFTER_STEPS = 400


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
    counts: tuple[int, int, int, int],
    algorithm: str,
    target_accept: float,
    init_step_size: float | None,
) -> None:
    """Raise ``ValueError`` for inconsistent arguments of :func:`run_hmc`."""
    if init.dim() != 2 or not init.is_floating_point():
        raise ValueError(f"init must be a floating (C, D) tensor, got shape {tuple(init.shape)}")
    if algorithm not in ("nuts", "hmc"):
        raise ValueError(f"algorithm must be 'nuts' or 'hmc', got {algorithm!r}")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
    num_warmup, num_samples, max_tree_depth, num_steps = counts
    if num_warmup < 0 or num_samples < 0:
        raise ValueError("num_warmup and num_samples must be non-negative")
    if max_tree_depth < 1 or num_steps < 1:
        raise ValueError("max_tree_depth and num_steps must be at least 1")
    if init_step_size is not None and not init_step_size > 0.0:
        raise ValueError(f"init_step_size must be positive, got {init_step_size}")


class _Kernel:
    """The transition kernel ``(state, step_size, metric) -> Transition`` of a run.

    With ``jit_compile=None`` and a recorded NUTS step it counts the leapfrog steps of the first
    :data:`PROJECT_AFTER` transitions (or of fewer that took :data:`PROJECT_AFTER_STEPS`) and, if
    the run projects to :data:`COMPILE_MIN_STEPS` more, compiles the step. The decision depends
    on step counts only, never on timings, so a seed gives the same draws on every run.
    """

    def __init__(self, logp_and_grad: LogDensityFn, generator: torch.Generator, algorithm: str,
                 counts: tuple[int, int, int, int], fuse: bool, jit_compile: bool | None) -> None:
        num_warmup, num_samples, max_tree_depth, num_steps = counts
        self.transitions = num_warmup + num_samples
        self.leaves: FusedLeaves | None = None
        self.done = self.steps = 0
        if algorithm == "nuts":
            self.leaves = FusedLeaves(logp_and_grad, compile=bool(jit_compile)) if fuse else None
            self.project = jit_compile is None and fuse
            self.step: StepFn = functools.partial(nuts_transition, logp_and_grad, generator=generator,
                                                  max_tree_depth=max_tree_depth, build_leaves=self.leaves)
        else:
            self.project = False
            long_run = self.transitions * num_steps >= COMPILE_MIN_STEPS
            compile = long_run if jit_compile is None else jit_compile
            leapfrog_step = FusedHMCStep(logp_and_grad, compile) if fuse else None
            self.step = functools.partial(hmc_transition, logp_and_grad, generator=generator,
                                          num_steps=num_steps, leapfrog_step=leapfrog_step)

    def __call__(self, state: PhaseState, step_size: torch.Tensor, metric: Metric) -> Transition:
        info = self.step(state, step_size, metric)
        if self.project:
            self.done += 1
            self.steps += int(info.n_steps.max())  # chains in lockstep: the longest trajectory's
            if self.done == min(PROJECT_AFTER, self.transitions) or self.steps >= PROJECT_AFTER_STEPS:
                self.project = False
                if self.steps / self.done * (self.transitions - self.done) >= COMPILE_MIN_STEPS:
                    self.leaves.compile()
        return info


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
    generator: torch.Generator,
    algorithm: str = "nuts",
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    num_steps: int = 10,
    dense_mass: bool = False,
    init_step_size: float | None = None,
    adapt_step_size: bool = True,
    adapt_mass_matrix: bool = True,
    progress: bool = False,
    fuse: bool = False,
    jit_compile: bool | None = False,
) -> HMCResult:
    """Sample all chains in lockstep with NUTS or static HMC after Stan-style windowed warmup.

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
    generator : torch.Generator
        Source of all randomness (same seed gives bitwise identical output).
    algorithm : {"nuts", "hmc"}
        Multinomial NUTS or static HMC with ``num_steps`` leapfrog steps.
    target_accept : float
        Target of the step-size dual averaging.
    max_tree_depth : int
        Maximum number of NUTS doublings.
    num_steps : int
        Leapfrog steps per static HMC transition.
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
        once the run proves long (None; see :data:`COMPILE_MIN_STEPS`, and ``NUTS``).

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
    counts = (num_warmup, num_samples, max_tree_depth, num_steps)
    _validate(init, counts, algorithm, target_accept, init_step_size)
    if not isinstance(logp_and_grad, GuardedDensity):
        logp_and_grad = GuardedDensity(logp_and_grad)
    state = initial_state(logp_and_grad, init.detach())
    chains, dim = init.shape
    eye = torch.eye(dim, dtype=init.dtype, device=init.device)
    identity = eye.expand(chains, dim, dim) if dense_mass else torch.ones_like(init)
    metric = make_metric(identity.clone())
    retune = functools.partial(find_reasonable_step_size, logp_and_grad, generator=generator)
    step_size = _initial_step_size(retune, state, metric, init_step_size)
    step = _Kernel(logp_and_grad, generator, algorithm, counts, fuse, jit_compile)
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
