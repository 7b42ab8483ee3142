"""The runtime policy: when to record (:class:`Replayed`, after a few calls at one shape; :class:`Fused`,
at the first), how to replay (TorchScript, or Inductor's compiled program), and when to keep the
eager function (a recording that disagrees with it, or is slower)."""

from __future__ import annotations

import copy
import logging
import math
import operator
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx

from bayesgen._replay.fallback import fell_back
from bayesgen._replay.inductor import compile_graph
from bayesgen._replay.recording import agrees, name_of, record, same, tracing

__all__ = ["Fused", "PROBE_SCALES", "RECORD_AFTER", "Replayed", "layout_of", "script"]

_log = logging.getLogger(__name__)

#: Calls at one input shape after which :class:`Replayed` records the function (so that one-off
#: calls never pay for recording, which costs about as much as a hundred eager calls).
RECORD_AFTER = 3
#: Scales of the random points (standard normal times scale) at which a recording is validated.
PROBE_SCALES = (0.1, 1.0, 3.0)


_aten = torch.ops.aten

#: The ``linalg`` functions that a recording splits into an unchecked ``*_ex`` call and
#: ``_linalg_check_errors`` on its ``info`` (``torch.linalg.cholesky``, ``inv``, ``solve``), each
#: with the checking function that gives the same first result and raises itself.
_CHECKING = {_aten.linalg_cholesky_ex.default: _aten.linalg_cholesky.default,
             _aten.linalg_inv_ex.default: _aten.linalg_inv.default,
             _aten._linalg_solve_ex.default: _aten.linalg_solve.default}


def _with_checks_fused(graph_module: fx.GraphModule) -> fx.GraphModule:
    """The graph with each ``*_ex`` call and its ``_linalg_check_errors`` made one checking call.

    TorchScript's tracer drops ``_linalg_check_errors``, which returns nothing, so a scripted
    replay would give NaN where the program raises (a Cholesky factor of a matrix that is not
    positive-definite), and the sampler's guard would take the point for a divergence without
    counting a failed density. Rule: a check is fused where its call is in :data:`_CHECKING`
    and nothing but the check uses the call's results other than the first (a solve whose LU
    factors the gradient reuses keeps its check, which TorchScript then drops); the graph itself
    is returned when nothing is fused, else a copy that shares its constants.
    """
    if not graph_module.graph.find_nodes(op="call_function", target=_aten._linalg_check_errors.default):
        return graph_module
    fused = fx.GraphModule(graph_module, copy.deepcopy(graph_module.graph))
    graph, changed = fused.graph, False
    for check in graph.find_nodes(op="call_function", target=_aten._linalg_check_errors.default):
        info = check.args[0]
        call = info.args[0] if info.target is operator.getitem else None
        checking = _CHECKING.get(getattr(call, "target", None))
        if checking is None or len(info.users) != 1:
            continue
        firsts = [user for user in call.users if user is not info]
        if any(user.target is not operator.getitem or user.args[1] != 0 for user in firsts):
            continue
        with graph.inserting_after(call):
            # the same tensors and keyword options (upper, left), less check_errors
            options = {k: v for k, v in call.kwargs.items() if k != "check_errors"}
            replacement = graph.call_function(checking, call.args, options)
        for first in firsts:
            first.replace_all_uses_with(replacement)
            graph.erase_node(first)
        for node in (check, info, call):
            graph.erase_node(node)
        changed = True
    if not changed:
        return graph_module
    graph.lint()
    fused.recompile()
    return fused


def script(graph_module: fx.GraphModule, args: Sequence[torch.Tensor]) -> Callable[..., Any] | None:
    """The recorded graph as a TorchScript function, or None if that fails (:func:`fell_back`).

    A recording is straight-line code of ATen calls, so tracing it is exact and takes
    milliseconds; TorchScript's interpreter then dispatches each operation from C++, about a
    third of the cost of calling it from Python (140 against 510 microseconds for the eight
    schools density and its gradient, 80 operations). ``torch.jit`` is deprecated in favour of
    ``torch.compile``, whose compilation takes seconds to tens of seconds on a CPU: the
    replay falls back to the graph itself when TorchScript is not available. The checks that
    TorchScript would drop are fused into their calls first (:func:`_with_checks_fused`).
    """
    checked = _with_checks_fused(graph_module)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            return torch.jit.trace(checked, tuple(args), check_trace=False)
    except Exception as exc:  # noqa: BLE001 - no TorchScript, an operation it cannot hold, ...
        fell_back("torchscript", f"{type(exc).__name__}: {exc}")
        return None


class Replayed:
    """A function of one tensor that replays per-shape recordings of itself once they pay.

    The first calls at an input shape (and dtype and device) run ``fn`` eagerly; the
    :data:`RECORD_AFTER`-th records it (:func:`record`) and keeps the recording only if it
    :func:`agrees` with ``fn`` at that call's input and at seeded standard-normal points scaled by
    :data:`PROBE_SCALES` (points where ``fn`` raises are skipped). Later calls at that shape replay
    the recording if it ran faster than ``fn`` did (a recording decomposes some operations,
    such as ``logsumexp`` or ``einsum``, into several: a program made of few large operations
    can replay slower than it runs), and otherwise keep calling ``fn``. Replays compute the same
    values as ``fn``, so that choice never changes a result.

    Parameters
    ----------
    fn : callable
        Maps a tensor to a tensor or a tuple of tensors, with no side effects and no randomness.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        self.fn = fn
        self._calls: dict[tuple[Any, ...], int] = {}
        self._eager_seconds: dict[tuple[Any, ...], float] = {}
        self.recordings: dict[tuple[Any, ...], Callable[..., Any] | None] = {}
        self.replays: dict[tuple[Any, ...], bool] = {}

    def __call__(self, x: torch.Tensor) -> Any:
        key = (tuple(x.shape), x.dtype, x.device)
        if tracing():  # being recorded inside a larger step: record the operations themselves
            return self.fn(x)
        if self.replays.get(key):
            return self.recordings[key](x)
        if key in self.recordings:
            return self.fn(x)
        self._calls[key] = self._calls.get(key, 0) + 1
        seconds, expected = _timed(self.fn, x)
        if self._calls[key] > 1:  # the first call pays for one-off work (caches, lazy imports)
            self._eager_seconds[key] = min(seconds, self._eager_seconds.get(key, math.inf))
        if self._calls[key] >= RECORD_AFTER:
            self._record(key, x, expected)
        return expected

    def ready(self, x: torch.Tensor) -> bool:
        """Record at the shape of ``x`` now (whatever the count of calls); whether the recording
        is valid (it may still not be replayed, if it is slower than ``fn``)."""
        key = (tuple(x.shape), x.dtype, x.device)
        if key not in self.recordings:
            seconds, expected = _timed(self.fn, x)
            self._eager_seconds.setdefault(key, seconds)
            self._record(key, x, expected)
        return self.recordings[key] is not None

    def _record(self, key: tuple[Any, ...], x: torch.Tensor, expected: Any) -> None:
        """Record at ``x``, validate, and decide whether calls at ``key`` replay."""
        graph = self.recordings[key] = self._validated(x, expected)
        if graph is None:
            self.replays[key] = False
            return
        scripted = script(graph, [x])
        if scripted is not None and same(graph(x), scripted(x)):
            self.recordings[key] = graph = scripted
        replay_seconds = min(_timed(graph, x)[0] for _ in range(3))
        eager_seconds = self._eager_seconds.get(key, math.inf)
        self.replays[key] = replay_seconds < eager_seconds
        if not self.replays[key]:
            _log.debug("not replaying %s: %.3g ms a replay against %.3g ms a call", name_of(self.fn),
                       1e3 * replay_seconds, 1e3 * eager_seconds)

    def _validated(self, x: torch.Tensor, expected: Any) -> fx.GraphModule | None:
        """A recording at ``x`` that agrees with ``fn`` at the probe points, or None."""
        graph = record(self.fn, [x])
        if graph is None:
            return None
        generator = torch.Generator().manual_seed(0)
        checks = [(x, expected)]
        for scale in PROBE_SCALES:
            point = (torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu") * scale).to(x.device)
            try:
                checks.append((point, self.fn(point)))
            except Exception:  # noqa: BLE001, S112 - no reference at this point; the others decide
                continue
        for point, reference in checks:
            try:
                ok = agrees(reference, graph(point))
            except Exception:  # noqa: BLE001 - a replay that raises is a wrong recording
                ok = False
            if not ok:
                _log.debug("not replaying %s: the recording disagrees with it", name_of(self.fn))
                return None
        return graph


def layout_of(tensors: Sequence[torch.Tensor]) -> tuple[Any, ...]:
    """Shapes, dtypes, devices and strides of ``tensors``: what a recording is specific to."""
    return tuple((t.shape, t.dtype, t.device, t.stride()) for t in tensors)


def _timed(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> tuple[float, Any]:
    """Seconds that ``fn(x)`` took (waiting for the GPU to finish) and its result."""
    synchronize = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    synchronize()
    started = time.perf_counter()
    result = fn(x)
    synchronize()
    return time.perf_counter() - started, result


class Fused:
    """A pure function of tensors, recorded at its first call and replayed as one TorchScript graph.

    Used for a sampler's inner step (leapfrog, density and bookkeeping in one graph): the first
    call at given argument shapes, dtypes, devices and strides records ``fn`` (:func:`record`,
    with broadcast products turned into matrix products), scripts the recording
    (:func:`script`; the recording itself where that fails), or with ``compile`` compiles it
    (:func:`compile_graph`), and keeps the result only if it
    :func:`agrees` with ``fn`` at that call. Later calls with the same argument layout replay it;
    others record again, and a layout whose recording failed runs ``fn``. The caller should
    pass functions whose inner density was itself validated at random points
    (:class:`Replayed`), since this class checks one point only. The outputs of a compiled
    replay on the CPU live in buffers that the call after next writes again
    (:func:`_reusing_buffers`): the caller uses them, or passes them back in, before then.

    Parameters
    ----------
    fn : callable
        Maps tensors to a tuple of tensors; no side effects, no randomness (pass random draws in).
    compile : bool
        Compile the recording with TorchInductor (falling back to TorchScript if that fails).
    """

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], compile: bool = False) -> None:  # noqa: A002
        self.fn = fn
        self.compile = compile
        self.replays: dict[tuple[Any, ...], Callable[..., Any] | None] = {}
        self._recordings: dict[tuple[Any, ...], tuple[fx.GraphModule, tuple[torch.Tensor, ...], Any]] = {}

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = layout_of(args)
        if key in self.replays:
            replay = self.replays[key]
            return self.fn(*args) if replay is None else replay(*args)
        expected = self.fn(*args)
        self.replays[key] = self._build(key, args, expected)
        return expected

    def bind(self, args: Sequence[torch.Tensor]) -> Callable[..., tuple[torch.Tensor, ...]]:
        """The function to call with arguments laid out as ``args``: the replay (recorded now if
        this layout is new) or ``fn`` where it could not be recorded.

        A loop that calls the step many times with one layout binds once and skips the per-call
        lookup (a few microseconds per argument).
        """
        key = layout_of(args)
        if key not in self.replays:
            self.replays[key] = self._build(key, args, self.fn(*args))
        return self.replays[key] or self.fn

    def compile_recordings(self) -> None:
        """Compile the recordings made so far with TorchInductor and replay the compilations from
        now on (where they agree with ``fn``); later recordings are compiled too.

        Lets a caller start with the cheap TorchScript replay and pay for compilation only once
        it knows the step will run long enough (``NUTS(jit_compile=None)``). If no recording
        compiles (no C++ compiler, say), later recordings are not compiled either.
        """
        compiled_any = not self._recordings
        for key, (graph, args, expected) in self._recordings.items():
            started = time.perf_counter()
            compiled = compile_graph(graph, args)
            if compiled is not None and self._replays_correctly(compiled, args, expected):
                self.replays[key] = compiled
                compiled_any = True
                _log.debug("compiled %s in %.2f s", name_of(self.fn), time.perf_counter() - started)
        self.compile = compiled_any

    def _build(self, key: tuple[Any, ...], args: Sequence[torch.Tensor], expected: Any) -> Callable[..., Any] | None:
        started = time.perf_counter()
        graph = record(self.fn, args, contract=True)
        if graph is None:
            return None
        self._recordings[key] = (graph, tuple(a.clone() for a in args), _clone(expected))
        candidates = {"compiled": lambda: compile_graph(graph, args) if self.compile else None,
                      "TorchScript": lambda: script(graph, args), "fx graph": lambda: graph}
        for kind, make in candidates.items():  # made one by one: a compiled step needs no script
            replay = make()
            if replay is not None and self._replays_correctly(replay, args, expected):
                _log.debug("recorded %s (%s) in %.2f s", name_of(self.fn), kind, time.perf_counter() - started)
                return replay
        _log.debug("running %s eagerly", name_of(self.fn))
        return None

    def _replays_correctly(self, replay: Callable[..., Any], args: Sequence[torch.Tensor], expected: Any) -> bool:
        """Whether ``replay(*args)`` runs and :func:`agrees` with ``fn``'s ``expected`` outputs."""
        try:
            return agrees(expected, replay(*args))
        except Exception as exc:  # noqa: BLE001 - a replay that raises is wrong
            _log.debug("the recording of %s raised %s", name_of(self.fn), exc)
            return False


def _clone(outputs: Any) -> Any:
    """A copy of a tensor or a nested tuple of tensors."""
    if isinstance(outputs, torch.Tensor):
        return outputs.clone()
    return tuple(_clone(item) for item in outputs)
