"""Work shared by the processes of a ``torch.distributed`` group, launched with ``torchrun``.

bayesgen has no cluster code of its own: ``torchrun`` starts the processes (on one machine or
many) and PyTorch's collectives carry the data between them. Inside an initialised process
group, ``bg.fit(..., distributed=True)`` gives each process its own share of every minibatch and
averages the gradients (data-parallel SVI and network training) or runs its share of the chains
(NUTS, HMC), and ``bg.sbc(..., distributed=True)`` gives each process its share of the simulations; every process
ends with the same result, and ``bayesgen fit --distributed`` writes it from rank 0 only.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist

__all__ = ["Ranks", "abandon", "init_process_group"]


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes that share a fit: ``rank`` of ``world_size``.

    ``Ranks()`` is the single process of an ordinary fit, for which every collective below
    does nothing.
    """

    rank: int = 0
    world_size: int = 1

    @classmethod
    def of_group(cls) -> Ranks:
        """The ranks of the initialised default process group; a ``ValueError`` saying how to
        start one when there is none."""
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("distributed=True needs an initialised torch.distributed process group: launch "
                             "the script with torchrun and call torch.distributed.init_process_group() (or "
                             "bayesgen.distributed.init_process_group()) first, or run "
                             "`torchrun --nproc_per_node=N -m bayesgen fit (or sbc) ... --distributed`")
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size())

    @property
    def is_root(self) -> bool:
        """Whether this process is rank 0, the one that writes files."""
        return self.rank == 0

    def mine(self, count: int) -> range:
        """The items of ``range(count)`` this process takes: every ``world_size``-th from ``rank``."""
        return range(self.rank, count, self.world_size)

    def average_gradients(self, params: Sequence[torch.Tensor], loss: float) -> float:
        """Replace each parameter's gradient by its mean over the processes, in one all-reduce,
        and return the mean of ``loss``; ``params`` must be the same tensors, in the same order,
        in every process (a missing gradient counts as zeros)."""
        if self.world_size == 1:
            return loss
        pieces = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype,
                                                                             device=p.device) for p in params]
        reference = params[0] if params else torch.zeros(())
        flat = torch.cat(pieces + [torch.tensor([loss], dtype=reference.dtype, device=reference.device)])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            average = flat[offset:offset + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = average.clone()
            else:
                p.grad.copy_(average)
            offset += p.numel()
        return float(flat[-1])

    def largest(self, value: int) -> int:
        """The largest ``value`` over the processes, in every process."""
        if self.world_size == 1:
            return value
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor)

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's, in every process."""
        if self.world_size == 1:
            return
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)

    def require_same(self, values: Mapping[str, str]) -> None:
        """A ``ValueError``, on every process, naming the keys of ``values`` (what a process was
        given: its data's digest, seed, options) on which the processes differ: data merged or
        gradients averaged across other data or seeds would be a wrong fit without a sign."""
        if self.world_size == 1:
            return
        gathered = self.gather(dict(values))
        differ = [key for key in values if any(other.get(key) != values[key] for other in gathered)]
        if differ:
            raise ValueError(f"the {self.world_size} processes of this distributed fit were given different "
                             f"{', '.join(differ)}: start every process with the same model, data, seed and "
                             "options")

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (any picklable object), in rank order, in every process."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def init_process_group(device: str | torch.device | None = None) -> Ranks:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with gloo on CPU or nccl on GPUs, and return
    this process's ranks. A process with a GPU per rank takes ``cuda:LOCAL_RANK``. The process
    leaves the group when it exits normally."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError("--distributed needs the environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, "
                         "MASTER_PORT): launch with `torchrun --nproc_per_node=N -m bayesgen ...`")
    if not dist.is_initialized():
        cuda = device is not None and torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        # leave the group before the interpreter tears down: a process that exits with gloo's
        # threads still running aborts ("terminate called without an active exception")
        atexit.register(_leave)
        previous = sys.excepthook

        def failed(*details: Any) -> None:
            _failed.set()
            previous(*details)

        sys.excepthook = failed
    return Ranks.of_group()


#: Set when this process dies of an uncaught exception: it must then leave without waiting for the others.
_failed = threading.Event()


def abandon() -> None:
    """Mark this process as failed, so that at exit it leaves the group without waiting for the
    others (who may be waiting in another collective: the run would hang). The command line
    calls it for an error it reports rather than raises."""
    _failed.set()


def _leave() -> None:
    """Leave the group at exit: after the others reach the same point (unless this process
    failed, when waiting for them would hang the run), then free the group's pending work while
    the interpreter is whole."""
    if dist.is_initialized():
        if not _failed.is_set():
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()
