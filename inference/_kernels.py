"""Sampler kernels: NUTS and static HMC as objects that the driver (:func:`~bayesgen.inference._sampler.run_hmc`) takes.

The driver owns the chains' state, the warmup (step-size and mass-matrix adaptation) and the loop;
a kernel owns one transition. A kernel is a frozen dataclass of its own settings whose
:meth:`transition_for` builds, for one run, the transition ``(state, step_size, metric) ->
Transition`` that the driver calls (BlackJAX's split between a kernel's ``step`` and the
adaptation that tunes it). A new sampler is a kernel class in a module of its own and an engine
that passes it to ``run_mcmc``; the driver does not change.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from bayesgen._counts import check_count
from bayesgen.inference._hmc import FusedHMCStep, hmc_transition
from bayesgen.inference._integrator import LogDensityFn, Metric, PhaseState, Transition
from bayesgen.inference._nuts import FusedLeaves, nuts_transition
from bayesgen.inference._streams import ChainStreams

__all__ = ["COMPILE_MIN_STEPS", "HMCKernel", "NUTSKernel", "PROJECT_AFTER", "PROJECT_AFTER_STEPS",
           "SamplerKernel", "StepFn"]

#: A run's transition: ``(state, step_size, metric) -> Transition``, all chains at once.
StepFn = Callable[[PhaseState, torch.Tensor, Metric], Transition]

#: Leapfrog steps a run must still have ahead for ``jit_compile=None`` to compile its recorded
#: step (and the merge of subtrees) with TorchInductor: about where compiling pays for itself on a
#: machine that never compiled the model. There a C++ compiler builds the kernels, which takes
#: seconds on a CPU, and the compiled step saves a few hundred microseconds a leapfrog step over
#: the TorchScript replay, so it breaks even after several thousand steps. A later process that
#: records the same step loads the compiled program instead (:mod:`bayesgen._replay.saved`), but
#: the rule does not look at that: a seed gives the same draws whether a program was saved or not.
COMPILE_MIN_STEPS = 10_000

#: NUTS transitions from whose leapfrog steps ``jit_compile=None`` projects those of the run...
PROJECT_AFTER = 20
#: ... or fewer, once they took this many leapfrog steps: each runs in the TorchScript replay,
#: 10-20 times slower than compiled, and a few hundred steps tell a long run (breast cancer's
#: first 20 transitions take 1,550 steps, 0.65 s of replay).
PROJECT_AFTER_STEPS = 400


class SamplerKernel(Protocol):
    """What the driver needs of a sampler."""

    def transition_for(self, logp_and_grad: LogDensityFn, streams: ChainStreams, num_transitions: int,
                       fuse: bool, jit_compile: bool | None) -> StepFn:
        """The transition of one run of ``num_transitions`` (warmup and sampling) on ``logp_and_grad``.

        ``streams`` are the run's only source of randomness, one stream per chain (a chain's
        draws must depend on its own stream and trajectory only, so that it samples the same
        beside any other chains and in any process); ``fuse`` says that the density may
        be recorded and replayed with the kernel's own step, and ``jit_compile`` whether to
        compile that recording (True, False, or None: the kernel decides by the run's length).
        """
        ...


@dataclass(frozen=True)
class NUTSKernel:
    """Multinomial NUTS with at most ``max_tree_depth`` doublings per transition."""

    max_tree_depth: int = 10

    def __post_init__(self) -> None:
        check_count("max_tree_depth", self.max_tree_depth)

    def transition_for(self, logp_and_grad: LogDensityFn, streams: ChainStreams, num_transitions: int,
                       fuse: bool, jit_compile: bool | None) -> StepFn:
        return _NUTSTransition(logp_and_grad, streams, self.max_tree_depth, num_transitions, fuse, jit_compile)


class _NUTSTransition:
    """A run's NUTS transition.

    With ``jit_compile=None`` and a recorded step it counts the leapfrog steps of the first
    :data:`PROJECT_AFTER` transitions (or of fewer that took :data:`PROJECT_AFTER_STEPS`) and, if
    the run projects to :data:`COMPILE_MIN_STEPS` more, compiles the step. The decision depends
    on step counts only, never on timings, so a seed gives the same draws on every run; the
    count is that of the longest trajectory over all the run's chains, in every process, so that
    a run split over processes decides as the same run in one process does.
    """

    def __init__(self, logp_and_grad: LogDensityFn, streams: ChainStreams, max_tree_depth: int,
                 num_transitions: int, fuse: bool, jit_compile: bool | None) -> None:
        self.transitions = num_transitions
        self.done = self.steps = 0
        self.leaves = FusedLeaves(logp_and_grad, compile=bool(jit_compile)) if fuse else None
        self.project = jit_compile is None and fuse
        self.streams = streams
        self.step: StepFn = functools.partial(nuts_transition, logp_and_grad, streams=streams,
                                              max_tree_depth=max_tree_depth, build_leaves=self.leaves,
                                              combine=self.leaves.combine if fuse else None)

    def __call__(self, state: PhaseState, step_size: torch.Tensor, metric: Metric) -> Transition:
        info = self.step(state, step_size, metric)
        if self.project:
            self.done += 1
            self.steps += self.streams.largest_over_chains(info.n_steps)  # chains in lockstep: the longest
            if self.done == min(PROJECT_AFTER, self.transitions) or self.steps >= PROJECT_AFTER_STEPS:
                self.project = False
                if self.steps / self.done * (self.transitions - self.done) >= COMPILE_MIN_STEPS:
                    self.leaves.compile()
        return info


@dataclass(frozen=True)
class HMCKernel:
    """Static HMC: ``num_steps`` leapfrog steps per transition and a Metropolis correction."""

    num_steps: int = 10

    def __post_init__(self) -> None:
        check_count("num_steps", self.num_steps)

    def transition_for(self, logp_and_grad: LogDensityFn, streams: ChainStreams, num_transitions: int,
                       fuse: bool, jit_compile: bool | None) -> StepFn:
        """With ``jit_compile=None`` the recorded leapfrog step is compiled when the run takes at
        least :data:`COMPILE_MIN_STEPS` of them (known in advance: the trajectories are fixed)."""
        long_run = num_transitions * self.num_steps >= COMPILE_MIN_STEPS
        compile = long_run if jit_compile is None else jit_compile  # noqa: A001
        leapfrog_step = FusedHMCStep(logp_and_grad, compile) if fuse else None
        return functools.partial(hmc_transition, logp_and_grad, streams=streams, num_steps=self.num_steps,
                                 leapfrog_step=leapfrog_step)
