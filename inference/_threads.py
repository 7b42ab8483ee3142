"""How many CPU threads an engine's inner loop should use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bayesgen.engine import Problem

__all__ = ["PARALLEL_MIN_ELEMENTS", "cpu_threads", "threads_for"]

#: Elements of the largest data tensor times the batch (chains or particles) below which an
#: engine's loop runs on one CPU thread. A leapfrog or optimisation step is hundreds of small
#: operations; with more threads each one pays for waking the others (the enumerated Old
#: Faithful mixture: 1.0 ms a step on one thread, 6.8 ms on two), and torch splits an
#: operation across threads only from 32768 elements on anyway.
PARALLEL_MIN_ELEMENTS = 2**18


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op CPU threads, restoring the number after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def threads_for(problem: Problem, batch: int) -> int:
    """CPU threads for an engine that evaluates ``problem`` ``batch`` points at a time.

    One for small problems on the CPU (see :data:`PARALLEL_MIN_ELEMENTS`), otherwise torch's
    current number. The choice depends only on the data's size, so a seed gives the same
    draws on every run on one machine.
    """
    small = problem.density.largest_data() * batch < PARALLEL_MIN_ELEMENTS
    return 1 if small and problem.device.type == "cpu" else torch.get_num_threads()
