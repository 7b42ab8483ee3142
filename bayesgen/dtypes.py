"""Which floating-point dtype a fit computes in, and the block that computes in it.

The rule (DESIGN.md section 5, "data keep their dtype"), in order:

1. ``bg.fit(..., dtype=...)`` when given;
2. the dtype of the program's parameters when it has any that were made before the fit (the
   networks of a deep model: they are trained in place, so the data follow them);
3. the widest floating dtype among the data's arrays (float64 numpy arrays, and lists of
   Python floats, compute in float64; float32 tensors in float32; float16 data are raised to
   float32, since torch's distributions are unreliable in half precision);
4. torch's default dtype (a program whose data are all integers or absent).

The chosen dtype becomes torch's default dtype while the fit runs and whenever its program
runs again (predictions, samples, held-out scores), so that the constants a program creates
(``dist.Normal(0.0, 1.0)``, ``torch.zeros(3)``) and every engine's working tensors agree with
the data. Nothing is ever lowered silently: a float64 array and float32 networks in one
program compute in the networks' float32 because they are trained in place; asking for a
dtype that disagrees with the networks is refused.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from pyro.poutine.messenger import Messenger

__all__ = ["ParameterDtypes", "computing_in", "data_dtype", "dtype_name", "requested_dtype"]

#: The dtypes a fit may compute in, by name.
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def requested_dtype(dtype: str | torch.dtype | np.dtype | type | None) -> torch.dtype | None:
    """``dtype`` as a torch dtype: None, ``"float32"``/``"float64"``, ``torch.float64`` or
    ``np.float64`` are accepted; anything else raises a ``ValueError`` naming the choices."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        name = dtype_name(dtype)
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64' (or the torch/numpy dtype), got {dtype!r}")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float64`` -> ``"float64"``, as settings and messages spell it."""
    return str(dtype).removeprefix("torch.")


def data_dtype(data: Mapping[str, Any]) -> torch.dtype | None:
    """The widest floating dtype among the arrays in ``data`` (float16 counts as float32), or
    None when no argument is a floating array (Python numbers do not count: they are scalars
    that take any array's dtype)."""
    widest = None
    for value in data.values():
        if isinstance(value, torch.Tensor):
            floating = value.is_floating_point()
            itemsize = value.element_size()
        elif isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "to_numpy"):
            try:
                kind = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value).dtype
            except (ValueError, TypeError):
                continue  # not an array of numbers: validation names it
            floating, itemsize = kind.kind == "f", kind.itemsize
        else:
            continue
        if floating:
            candidate = torch.float64 if itemsize >= 8 else torch.float32
            if widest is None or candidate == torch.float64:
                widest = candidate
    return widest


class ParameterDtypes(Messenger):
    """Records parameter site name -> dtype for the floating parameters (network weights,
    ``pyro.param``) that a run of the program reads, as it reads them: a run that fails later
    (float64 data meeting float32 weights) still says what the weights are."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, torch.dtype] = {}

    def _pyro_post_param(self, msg: Any) -> None:
        value = msg["value"]
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            self.found[msg["name"]] = value.dtype


@contextlib.contextmanager
def computing_in(dtype: torch.dtype) -> Iterator[None]:
    """Inside the block torch's default dtype is ``dtype``; afterwards it is what it was."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)
