"""Data larger than memory: rows of a memory-mapped array, read only when a minibatch asks for them.

``bg.fit`` wraps every ``np.memmap`` argument (``np.load(path, mmap_mode="r")``) in
:class:`MappedRows` instead of copying it to a tensor. A program reads it the way it reads a
minibatch of any tensor, with the indices of a plate that subsamples::

    with pyro.plate("data", X.shape[0], subsample_size=1024) as index:
        pyro.sample("y", dist.Bernoulli(logits=(X[index] * w).sum(-1)), obs=y[index])

and each step then costs the rows of its minibatch, read from the page cache or the disk, never
the whole array. Anything else a program does with the whole array (``X @ w``, ``X.sum()``) is a
``TypeError`` naming the argument, since it would read every row at every step.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = ["MappedRows", "is_mapped", "place_in_file"]

#: Rows checked for non-finite values at a time, so that the check holds one chunk in memory.
_CHECK_ROWS = 1 << 16


def is_mapped(value: Any) -> bool:
    """Whether a data value is a memory-mapped array that the fit should read row by row."""
    return isinstance(value, np.memmap)


def place_in_file(array: np.memmap) -> dict[str, Any]:
    """Where a memory-mapped array's values lie in its file, and how to map them again.

    A slice of a map keeps the whole map's ``offset``, so the byte offset of the array's first
    element is taken from its address against the whole map's.

    Returns
    -------
    dict
        ``filename`` (None where numpy kept none), ``offset`` (bytes from the file's start to the
        first element), ``shape``, ``strides``, ``dtype`` (its ``str``) and ``order``: "C" or "F"
        where the values lie contiguously and ``np.memmap(filename, dtype, offset=offset,
        shape=shape, order=order)`` maps them again, None where they do not (a slice of columns
        or with a step).
    """
    whole = array
    while isinstance(whole.base, np.ndarray):
        whole = whole.base
    start = array.__array_interface__["data"][0] - whole.__array_interface__["data"][0] + int(whole.offset)
    order = "C" if array.flags.c_contiguous else "F" if array.flags.f_contiguous else None
    return {"filename": str(array.filename) if array.filename else None, "offset": int(start),
            "shape": list(array.shape), "strides": list(array.strides), "dtype": array.dtype.str, "order": order}


class MappedRows:
    """The rows of a memory-mapped array, each read as a tensor in the fit's dtype and device.

    Parameters
    ----------
    name : str
        The program argument the array is passed as (named in errors).
    array : np.memmap
        The data, rows along its first axis. Floating arrays are read in ``dtype``;
        integer and bool arrays keep their dtype.
    device, dtype : torch.device, torch.dtype
        Where and in what floating dtype the rows are made.

    Notes
    -----
    :meth:`prefetch` starts reading the rows of an index in a background thread; the next
    ``rows[index]`` with that very index tensor takes them from there, and the rows of the
    last index tensor read are kept for the next read of that same tensor (a step runs the
    guide and the program on one minibatch). The minibatch stream of the step-wise engines
    prefetches the next step's rows while the current step computes.
    """

    _reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bayesgen-rows")

    def __init__(self, name: str, array: np.memmap, device: torch.device, dtype: torch.dtype) -> None:
        if array.ndim == 0:
            raise ValueError(f"data['{name}'] is a memory-mapped scalar; map arrays with rows")
        if array.dtype.kind not in "biuf":
            raise TypeError(f"data['{name}'] has dtype {array.dtype}; expected numbers (bool, int or float)")
        self.name, self.array, self.device = name, array, device
        self.dtype = dtype if array.dtype.kind == "f" else torch.from_numpy(np.zeros(0, array.dtype)).dtype
        self._pending: tuple[torch.Tensor, Future[torch.Tensor]] | None = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.array.shape)

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def dim(self) -> int:
        return self.array.ndim

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return self.array.shape[0]

    def __repr__(self) -> str:
        return f"MappedRows('{self.name}', shape={tuple(self.shape)}, dtype={self.dtype})"

    def __getitem__(self, index: Any) -> torch.Tensor:
        pending = self._pending
        if pending is not None and pending[0] is index:
            self._pending = None
            self._last = (index, pending[1].result())
        if self._last is not None and self._last[0] is index:  # the guide's and the model's runs of one step
            return self._last[1]
        if not isinstance(index, torch.Tensor):
            return self._read(index)
        self._last = (index, self._read(index))
        return self._last[1]

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        """``torch.index_select`` along the rows (the only dimension a minibatch indexes)."""
        if dim not in (0, -self.ndim):
            raise TypeError(f"data['{self.name}'] is memory-mapped: select along its rows (dim 0), not dim {dim}")
        return self[index]

    def prefetch(self, index: torch.Tensor) -> None:
        """Start reading the rows of ``index`` in the background (see the class notes)."""
        self._pending = (index, self._reader.submit(self._read, index))

    def _read(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        rows = np.array(self.array[index])  # a copy: a slice of a memmap is a view of the file
        return torch.from_numpy(rows).to(device=self.device, dtype=self.dtype)

    def check_finite(self) -> None:
        """Raise a ``ValueError`` with the first non-finite value's index, reading the array in chunks."""
        if self.array.dtype.kind != "f":
            return
        for start in range(0, len(self), _CHECK_ROWS):
            chunk = np.asarray(self.array[start:start + _CHECK_ROWS])
            bad = ~np.isfinite(chunk)
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0])
                index = (index[0] + start,) + index[1:]
                raise ValueError(f"data['{self.name}'] contains {self.array[index]} at index {index}; "
                                 "observed data must be finite (drop or impute missing values)")

    def _whole(self, operation: str) -> TypeError:
        return TypeError(f"data['{self.name}'] is memory-mapped ({len(self)} rows, read a minibatch at a time): "
                         f"index it with a subsampling plate's indices ({self.name}[index]) before computing "
                         f"with it; {operation} on the whole array would read every row at every step")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        mapped = next(a for a in list(args) + list((kwargs or {}).values()) if isinstance(a, MappedRows))
        raise mapped._whole(getattr(func, "__name__", str(func)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(f"data['{self.name}'] is memory-mapped: index it with a subsampling plate's "
                        f"indices ({self.name}[index]) instead of converting it whole")


def _refuse(operation: str) -> Any:
    def refused(self: MappedRows, *args: Any) -> Any:
        raise self._whole(operation)
    return refused


for _operation in ("add", "sub", "mul", "truediv", "floordiv", "pow", "matmul", "mod"):
    setattr(MappedRows, f"__{_operation}__", _refuse(_operation))
    setattr(MappedRows, f"__r{_operation}__", _refuse(_operation))
for _operation in ("neg", "abs", "lt", "le", "gt", "ge"):
    setattr(MappedRows, f"__{_operation}__", _refuse(_operation))
