"""Per-chain random streams: a chain's random numbers depend on the seed and its own index only.

The batched sampler advances all chains together, but a chain's draws must not depend on how
many chains share its batch, or on which process runs it: the same seed must give the same
chain whether the run has 4 chains in one process or 2 in each of two (``bg.fit(...,
distributed=True)``). One ``torch.Generator`` for the batch cannot give that: its values are
handed out across the batch, and a NUTS transition draws for as many doublings as the deepest
tree in the batch takes. So each chain has a counter-based stream (Salmon et al. 2011,
"Parallel random numbers: as easy as 1, 2, 3"; JAX's keys work the same way): its ``k``-th
number is a hash of the chain's key and ``k`` (SplitMix64's output function, Steele, Lea &
Flood 2014), and a chain advances its counter only by what it draws itself. Draws for all the
chains of a batch are one vectorised computation, on any device, for any number of chains.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from bayesgen.distributed import Ranks

__all__ = ["ChainStreams"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

#: Numbers made per chain at a time (a NUTS transition of a small model takes a few dozen).
_BLOCK = 512


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of 64-bit integers whose outputs pass BigCrush for
    consecutive inputs (arithmetic modulo 2^64, as numpy's unsigned integers wrap)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


class ChainStreams:
    """The random numbers of a run's chains, one stream per chain.

    Parameters
    ----------
    seed : int
        The run's seed (non-negative).
    chains : sequence of int
        The global indices of the chains this process runs, in the order of its batch: the
        streams of chain ``i`` are the same whichever process runs it, and beside whichever chains.
    dtype, device
        Of the tensors returned.
    ranks : Ranks
        The processes that share the run (by default this one alone), for
        :meth:`largest_over_chains`.
    """

    def __init__(self, seed: int, chains: Sequence[int], *, dtype: torch.dtype, device: torch.device | str,
                 ranks: Ranks = Ranks()) -> None:
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.keys = np.array([np.random.SeedSequence([int(seed), int(chain)]).generate_state(1, np.uint64)[0]
                              for chain in chains], dtype=np.uint64)
        self.chains = [int(chain) for chain in chains]
        self.dtype, self.device, self.ranks = dtype, torch.device(device), ranks
        # (k + 1/2) 2^-bits = (2k + 1) 2^-(bits + 1) for k < 2^bits, with bits the significand's
        # stored bits (52 in float64, 23 in float32), is exact in the dtype and strictly inside (0, 1)
        self._bits = round(-math.log2(torch.finfo(dtype).eps))
        # numbers are made a block per chain at a time and handed out from it: a draw is then a
        # few numpy operations, not the dozen of the hash (numbers are the same either way)
        self._start = np.zeros(len(self.keys), dtype=np.uint64)  # counter of each block's first number
        self._used = np.zeros(len(self.keys), dtype=np.int64)  # numbers each chain took from its block
        self._rows = np.arange(len(self.keys))[:, None]
        self._uniforms = self._normals = np.empty((len(self.keys), 0))

    @property
    def num_chains(self) -> int:
        """The number of chains in this process's batch."""
        return len(self.keys)

    def uniform(self, size: int, active: torch.Tensor | None = None) -> torch.Tensor:
        """``(C, size)`` uniform draws in the open interval (0, 1), a row per chain.

        Only the chains where ``active`` (a ``(C,)`` bool tensor; None: all) is true draw and
        advance their streams; the rows of the others hold 1/2 and are meant to be ignored.
        """
        return self._take(size, active, normal=False)

    def normal(self, size: int, active: torch.Tensor | None = None) -> torch.Tensor:
        """``(C, size)`` standard normal draws (the inverse normal CDF of :meth:`uniform`'s),
        a row per chain; the rows of chains not ``active`` hold zeros and advance nothing."""
        return self._take(size, active, normal=True)

    def _take(self, size: int, active: torch.Tensor | None, normal: bool) -> torch.Tensor:
        """The next ``size`` numbers of each (active) chain's stream, from its block."""
        if self._used.max() + size > self._uniforms.shape[1]:
            self._refill(size)
        table = self._normals if normal else self._uniforms
        values = table[self._rows, self._used[:, None] + np.arange(size)]
        if active is None:
            self._used += size
        else:
            mask = active.detach().cpu().numpy()
            self._used += size * mask
            values[~mask] = 0.0 if normal else 0.5
        return torch.from_numpy(values).to(self.device)

    def _refill(self, size: int) -> None:
        """New blocks of at least ``size`` numbers, each starting at its chain's next counter."""
        self._start += self._used.astype(np.uint64)
        self._used[:] = 0
        steps = np.arange(max(_BLOCK, size), dtype=np.uint64)
        with np.errstate(over="ignore"):
            bits = _mix(self.keys[:, None] + (self._start[:, None] + steps[None, :]) * _GOLDEN)
        uniforms = ((bits >> np.uint64(64 - self._bits)).astype(np.float64) + 0.5) * 2.0 ** -self._bits
        self._uniforms = torch.from_numpy(uniforms).to(self.dtype).numpy()
        self._normals = torch.special.ndtri(torch.from_numpy(self._uniforms)).numpy()

    def largest_over_chains(self, values: torch.Tensor) -> int:
        """The largest of ``values`` ``(C,)`` over every chain of the run, in every process."""
        return self.ranks.largest(int(values.max()))
