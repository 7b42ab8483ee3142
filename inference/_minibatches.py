"""The minibatches of the step-wise engines: each plate that subsamples takes its indices from here.

Plain ``pyro.plate(..., subsample_size=B)`` draws ``torch.randperm(N)[:B]`` at every run, which
costs O(N) per step (a quarter of a second at N = 10^7, a hundred times the step itself) and
knows nothing of other processes. While a step-wise engine runs, :class:`Minibatches` supplies
the indices instead, as a data loader with shuffling does: each epoch a fresh permutation of the
N items, seeded by the fit's seed and the epoch, cut into consecutive batches. Step ``i``'s
indices depend on nothing but the seed and ``i``, so a resumed run takes the batches the
uninterrupted run would have, and ``W`` processes of a distributed fit each take their own
``B`` of one batch of ``W * B`` items (rank ``r`` the ``r``-th slice): together they see what one
process with ``subsample_size = W * B`` would.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any, Iterator, Mapping

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from bayesgen.engine import Problem
from bayesgen.mapped import MappedRows

__all__ = ["Minibatches", "minibatches_for"]


class Minibatches(Messenger):
    """Supplies step ``i``'s indices to every plate that subsamples (see the module notes).

    Parameters
    ----------
    plates : mapping
        Plate name -> ``(subsample_size, size)``, as ``LogDensity.subsampled``.
    seed : int
        The fit's seed.
    data : mapping
        The program's arguments; memory-mapped ones (:class:`~bayesgen.mapped.MappedRows`) with
        a plate's number of rows have the next step's rows read in the background.
    rank, world_size : int
        This process's rank and the number of processes sharing each batch.
    device : torch.device
        Where the indices live (the fit's device).
    """

    def __init__(self, plates: Mapping[str, tuple[int, int]], seed: int, data: Mapping[str, Any], *,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__()
        for name, (subsample_size, size) in plates.items():
            if subsample_size * world_size > size:
                raise ValueError(f"plate '{name}' takes minibatches of {subsample_size} of its {size} items in "
                                 f"each of {world_size} processes: {subsample_size * world_size} items per step "
                                 "are more than it has; lower subsample_size or the number of processes")
        self.plates, self.seed, self.rank, self.world_size = dict(plates), seed, rank, world_size
        self.device = torch.device(device)
        self.mapped = {name: [rows for rows in data.values() if isinstance(rows, MappedRows) and len(rows) == size]
                       for name, (_, size) in plates.items()}
        self._permutations: dict[str, tuple[int, torch.Tensor]] = {}
        self._current: dict[str, torch.Tensor] = {}
        self._next: tuple[int, dict[str, torch.Tensor]] | None = None

    def indices(self, plate: str, step: int) -> torch.Tensor:
        """The indices this process's plate ``plate`` takes at step ``step``."""
        subsample_size, size = self.plates[plate]
        batch = subsample_size * self.world_size
        per_epoch = size // batch
        epoch, position = divmod(step, per_epoch)
        cached = self._permutations.get(plate)
        if cached is None or cached[0] != epoch:
            mixed = (self.seed * 1_000_003 + zlib.crc32(plate.encode()) * 7_919 + epoch) % 2 ** 63
            generator = torch.Generator().manual_seed(mixed)  # not hash(): it differs between processes
            dtype = torch.int32 if size < 2 ** 31 else torch.int64  # half the memory for 10^7 items
            cached = (epoch, torch.randperm(size, generator=generator, dtype=dtype))
            self._permutations[plate] = cached
        start = position * batch + self.rank * subsample_size
        return cached[1][start:start + subsample_size].to(device=self.device, dtype=torch.int64)

    @contextlib.contextmanager
    def step(self, step: int) -> Iterator[None]:
        """Run one step of the engine with step ``step``'s indices, then start reading the
        memory-mapped rows of step ``step + 1`` in the background."""
        if self._next is not None and self._next[0] == step:
            self._current = self._next[1]
        else:
            self._current = {name: self.indices(name, step) for name in self.plates}
        with self:
            yield
        if any(self.mapped.values()):  # only memory-mapped rows are worth reading ahead
            self._next = (step + 1, {name: self.indices(name, step + 1) for name in self.plates})
            for name, arrays in self.mapped.items():
                for rows in arrays:
                    rows.prefetch(self._next[1][name])

    def _process_message(self, msg: Any) -> None:
        if msg["value"] is None and isinstance(msg["fn"], _Subsample) and msg["name"] in self._current:
            msg["value"] = self._current[msg["name"]]


def minibatches_for(problem: Problem, seed: int) -> Minibatches | None:
    """The minibatch stream of a fit of ``problem`` with ``seed`` (this process's share of it in a
    distributed fit); None where no plate subsamples."""
    # a plate given its indices by the program (subsample=, as wavenet's windows) takes no others
    plates = {name: sizes for name, sizes in problem.density.subsampled.items()
              if problem.prototype.nodes[name]["fn"].subsample_size is not None}
    ranks = problem.ranks
    if not plates:
        if ranks.world_size > 1:
            raise ValueError("distributed=True shares out the minibatches of plates that subsample, and no plate "
                             "of this program does: give the plate of the observations a subsample_size "
                             "(pyro.plate('data', N, subsample_size=B)), each process's share of a step")
        return None
    return Minibatches(plates, seed, problem.data, rank=ranks.rank, world_size=ranks.world_size,
                       device=problem.device)
