"""Recording a tensor function as a graph of ATen operations (``make_fx``), and comparing outputs:
:func:`agrees` to rounding, :func:`same` bitwise."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx
from torch.fx.experimental.proxy_tensor import get_proxy_mode, make_fx

from bayesgen._replay.rewrites import aten_op, is_random, simplify

__all__ = ["agrees", "flat_tensors", "name_of", "record", "same", "tracing"]

_log = logging.getLogger(__name__)

def record(fn: Callable[..., Any], args: Sequence[torch.Tensor], *, contract: bool = False) -> fx.GraphModule | None:
    """Record ``fn(*args)`` as a graph of ATen operations, or return None if it cannot be.

    Parameters
    ----------
    fn : callable
        A function of tensors returning a tensor or a (nested) tuple of tensors. It may
        differentiate internally (``torch.autograd.grad``); the backward pass is recorded too.
    args : sequence of Tensor
        Example arguments; the graph is specialised to their shapes, dtypes and devices.
    contract : bool
        Turn products summed over a dimension into matrix products (faster; the replay then
        differs from ``fn`` by rounding, so it is no longer bitwise identical).

    Returns
    -------
    torch.fx.GraphModule or None
        Callable with the same signature. None when ``fn`` reads tensor values into Python
        (``.item()``, ``if tensor:``), draws random numbers, or otherwise fails to trace; the
        reason is logged at debug level. The graph is not validated: see :func:`agrees`.
    """
    # distinct copies: make_fx ties a graph input to a tensor object, so one tensor passed as two
    # arguments would make the graph read the same input for both
    args = [a.clone() for a in args]
    try:
        with warnings.catch_warnings(), _one_fake_mode():
            warnings.simplefilter("ignore")  # the eager calls already showed the program's warnings
            graph_module = make_fx(lambda *xs: fn(*xs), tracing_mode="real")(*args)
    except Exception as exc:  # noqa: BLE001 - any failure means "keep the eager function"
        _log.debug("cannot record %s: %s: %s", name_of(fn), type(exc).__name__, exc)
        return None
    random = sorted({str(op) for op in map(aten_op, graph_module.graph.nodes) if op is not None and is_random(op)})
    if random:
        _log.debug("not recording %s: it draws random numbers (%s)", name_of(fn), random)
        return None
    simplify(graph_module, args, contract)
    return graph_module


def _one_fake_mode() -> Any:
    """A tracing context whose fake tensor mode ``make_fx`` uses for the metadata of every value
    it records; without one it makes a mode per value, and each mode saves the Python stack
    (about a millisecond: a third of a second for a NUTS step of a few hundred operations)."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode

    return tracing(TracingContext(FakeTensorMode(allow_non_fake_inputs=True)))


def name_of(fn: Callable[..., Any]) -> str:
    """A readable name of ``fn`` for debug messages."""
    return getattr(fn, "__qualname__", None) or repr(fn)


def flat_tensors(outputs: Any) -> list[torch.Tensor]:
    """The tensors of a tensor or a nested tuple of tensors, in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in flat_tensors(item)]


def agrees(expected: Any, actual: Any) -> bool:
    """Whether two outputs (tensors or nested tuples of them) agree to ``sqrt(eps)`` of their dtype.

    The tolerance is relative to the largest finite magnitude of each expected tensor, so a sum
    of thousands of terms may differ by rounding; non-finite entries must match exactly and
    boolean or integer tensors must be equal.
    """
    left, right = flat_tensors(expected), flat_tensors(actual)
    if len(left) != len(right):
        return False
    for a, b in zip(left, right):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return False
            continue
        finite, infinite = torch.isfinite(a), torch.isinf(a)
        if not (torch.equal(finite, torch.isfinite(b)) and torch.equal(infinite, torch.isinf(b))
                and torch.equal(a[infinite], b[infinite])):
            return False
        if finite.any():
            tol = math.sqrt(torch.finfo(a.dtype).eps) * max(1.0, float(a[finite].abs().max()))
            if float((a[finite] - b[finite]).abs().max()) > tol:
                return False
    return True


def tracing() -> bool:
    """Whether the caller is being recorded by ``make_fx`` right now."""
    return get_proxy_mode() is not None


def same(expected: Any, actual: Any) -> bool:
    """Whether two outputs (tensors or nested tuples of them) are bitwise equal."""
    left, right = flat_tensors(expected), flat_tensors(actual)
    return len(left) == len(right) and all(torch.equal(a, b) for a, b in zip(left, right))
