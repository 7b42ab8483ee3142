"""Everything that touches TorchInductor's private interfaces: compiling a recorded graph, calling
Inductor's program without its wrappers, reusing its buffers, and choosing its vector instructions.

These use torch internals (``torch._inductor``'s ``compile_fx``, ``cpu_vec_isa``,
``CppScheduling.kernel_proxy_cls``, the text of the Python wrapper it generates), which change
between torch releases. They were checked on :data:`CHECKED_ON`; ``setup.cfg`` pins torch to
those versions, and ``tests/test_replay.py::test_the_installed_torch_keeps_the_fast_path`` fails
where they break. Where one fails at run time the fit goes on without it, slower, and
:func:`~bayesgen._replay.fallback.fell_back` says so.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import itertools
import logging
import math
import re
import textwrap
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import fx

from bayesgen._replay import saved
from bayesgen._replay.fallback import fell_back
from bayesgen._replay.recording import agrees, same

__all__ = ["CHECKED_ON", "VECTORIZE_MIN_LOOP", "compile_graph"]

_log = logging.getLogger(__name__)

#: torch versions on which these private interfaces were checked (the tests pass).
CHECKED_ON = ("2.13",)


#: Values the innermost loop of a TorchInductor CPU kernel must run over for the kernel to get
#: SIMD instructions (:func:`compile_graph`); kernels with shorter inner loops stay scalar, and
#: a graph with no tensor whose last dimension is this long is compiled without SIMD at all.
#: Vectorised exp and log1p pay over a regression's observations: the breast-cancer
#: likelihood (4 chains x 569 values, summed over the 569) makes a leapfrog step 57 us with
#: SIMD against 103 us without. Loops over a model's parameters (31 there) or over NUTS's
#: U-turn checkpoints gain nothing, and their vector code, with its masked tails, takes g++
#: longer to compile (the whole step 4.8 s against 3.0-3.3 s) or even runs slower (eight
#: schools with 64 chains: 74 against 40 us a step with its checkpoint loop over 10 values
#: vectorised).
VECTORIZE_MIN_LOOP = 256


def compile_graph(graph_module: fx.GraphModule, args: Sequence[torch.Tensor]) -> Callable[..., Any] | None:
    """Compile a recorded graph with TorchInductor; None if that fails (:func:`fell_back`).

    On a CPU a C++ compiler builds the fused kernels, one compiler process for each piece of
    the graph between library calls (matrix products), run side by side from a pool of
    threads (the breast-cancer regression's step has three pieces). Only kernels whose inner
    loop runs over at least :data:`VECTORIZE_MIN_LOOP` values get SIMD instructions
    (:func:`_vectorise_long_loops`); graphs with no tensor that long get scalar kernels only
    (:func:`_scalar_kernels`) and skip the probe of the CPU's instruction sets. The result is
    Inductor's program called directly (:func:`_direct`), which is saved for the next process
    that records the same graph (:mod:`~bayesgen._replay.saved`): that one loads it instead of
    compiling. On CUDA, Inductor emits Triton kernels, and its own on-disk cache is the only one.
    """
    on_cpu = all(a.device.type == "cpu" for a in args)
    # Fused replays a compilation only with the argument layout it was compiled for, so the
    # per-call checks of every input's size and strides (a third of a small step's time) go
    options: dict[str, Any] = {"size_asserts": False}
    scalar = on_cpu and _longest_row(graph_module, args) < VECTORIZE_MIN_LOOP

    def kernels() -> contextlib.AbstractContextManager[None]:
        return _scalar_kernels() if scalar else _vectorise_long_loops() if on_cpu else contextlib.nullcontext()

    key = saved.key_of(graph_module, args, scalar) if on_cpu else None
    if key is not None:
        with kernels():
            program = saved.load(key)
        if program is not None:
            loaded = _checked(program, graph_module, args)
            if loaded is not None:
                return loaded
            saved.forget(key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notices from Inductor's imports
            from torch._inductor import config
            from torch._inductor.compile_fx import compile_fx, compile_fx_inner
            from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

            programs: list[Any] = []

            def compile_program(*inner_args: Any, **inner_kwargs: Any) -> Any:
                programs.append(compile_fx_inner(*inner_args, **inner_kwargs))
                return programs[-1]

            compiled = None
            if on_cpu:  # saved by bayesgen (above), not by Inductor's cache, whose keying costs more
                try:
                    with config.patch({**options, "fx_graph_cache": False}), kernels():
                        compiled = compile_fx(graph_module, list(args), inner_compile=compile_program)
                except (DynamicOutputShapeException, DataDependentOutputException) as exc:
                    # an operation whose output's shape depends on the values (boolean indexing)
                    # needs the symbolic sizes that only a shape environment gives; any other
                    # failure would fail again, so it goes to the fall-back below at once
                    _log.debug("compiling again with a shape environment: %s: %s", type(exc).__name__, exc)
                    programs.clear()
            if compiled is None:
                with config.patch(options), kernels(), _cacheable() as fake_mode:
                    examples = [fake_mode.from_tensor(a, static_shapes=True) for a in args]
                    compiled = compile_fx(graph_module, examples, inner_compile=compile_program)
    except Exception as exc:  # noqa: BLE001 - no compiler, unsupported operation, ...
        fell_back("inductor", f"{type(exc).__name__}: {exc}")
        return None
    if not on_cpu:
        return compiled
    direct = _direct(compiled, programs, graph_module, args)
    if direct is not compiled:
        saved.save(key, programs[0].current_callable)
    return direct


def _checked(program: Callable[[list[torch.Tensor]], Any], graph_module: fx.GraphModule,
             args: Sequence[torch.Tensor]) -> Callable[..., Any] | None:
    """A saved program called directly (:func:`_first_direct`) if it
    :func:`~bayesgen._replay.recording.agrees` with the recording at ``args``; else None."""
    expected = graph_module(*args)
    return _first_direct(program, graph_module, args, lambda outputs: agrees(expected, outputs))


def _first_direct(program: Callable[[list[torch.Tensor]], Any], graph_module: fx.GraphModule,
                  args: Sequence[torch.Tensor], matches: Callable[[Any], bool]) -> Callable[..., Any] | None:
    """``program`` called as the recording is (:func:`_calling`), with its buffers reused
    (:func:`_reusing_buffers`) or else without, whichever first gives outputs that ``matches``
    accepts at two calls (both sets of buffers); None if neither does."""
    for candidate in (_reusing_buffers(program), program):
        if candidate is None:
            continue
        direct = _calling(candidate, saved.constants_of(graph_module))
        try:
            if matches(direct(*args)) and matches(direct(*args)):
                return direct
        except Exception:  # noqa: BLE001, S112 - a program that cannot be called so: try the next
            continue
    return None


def _calling(program: Callable[[list[torch.Tensor]], Any], constants: list[torch.Tensor]) -> Callable[..., Any]:
    """``program`` called as the recording is: with the arguments, its constants put in front."""

    def direct(*inputs: torch.Tensor) -> Any:
        return program([*constants, *inputs])

    return direct


@contextlib.contextmanager
def _cacheable() -> Iterator[Any]:
    """Inside the block, Inductor's on-disk FX graph cache can key the graph; yields the fake
    tensor mode in which to describe the example inputs (``from_tensor(x, static_shapes=True)``).

    Used on CUDA, whose programs bayesgen does not save itself (:mod:`~bayesgen._replay.saved`
    saves CPU programs, and a CPU compilation skips Inductor's cache, whose keying costs a
    cold compilation more than it saves). Inductor keys a graph only under a tracing context whose
    fake tensors carry a shape environment; without one it bypasses its cache ("No shape env").
    The inputs are described with static shapes, so the environment never receives a symbolic
    size. AOTAutograd's own cache is off: it would answer before Inductor's and hand back the
    program inside its wrappers only.
    """
    from torch._functorch import config as functorch_config
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    fake_mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    with functorch_config.patch(enable_autograd_cache=False), tracing(TracingContext(fake_mode)):
        yield fake_mode


def _direct(compiled: Callable[..., Any], programs: list[Any], graph_module: fx.GraphModule,
            args: Sequence[torch.Tensor]) -> Callable[..., Any]:
    """Call Inductor's compiled program without the wrappers around it, where that gives the
    same outputs; else ``compiled``.

    ``compile_fx`` returns the program inside AOTAutograd's runtime wrappers (which put the
    graph's constants in front of the arguments and handle gradients, aliases and mutations that
    a recorded step has none of) and a TorchDynamo guard: 4-5 us of a leapfrog step that takes
    20-60 us. The direct call passes the constants itself, in AOTAutograd's order, to the
    program with its buffers allocated once (:func:`_reusing_buffers`) where that too gives the
    same outputs.
    """
    program = getattr(programs[0], "current_callable", None) if len(programs) == 1 else None
    if program is None:
        return compiled
    expected = compiled(*args)
    return _first_direct(program, graph_module, args, lambda outputs: same(expected, outputs)) or compiled


#: A buffer allocation, with sizes and strides written out as numbers, in the Python wrapper that
#: TorchInductor generates around the kernels of a CPU graph.
_ALLOCATION = re.compile(r"^(?P<indent>[ \t]+)(?P<name>buf\d+) = empty_strided_cpu\((?P<size>\([\d, ]*\)), "
                         r"(?P<stride>\([\d, ]*\)), torch\.(?P<dtype>\w+)\)$", re.MULTILINE)
#: The first line of the wrapper's body, where :func:`_reusing_buffers` picks the set of buffers.
_BODY = re.compile(r"^(def call\(self, args\):\n)(?P<indent>[ \t]+)", re.MULTILINE)


def _reusing_buffers(program: Callable[[list[torch.Tensor]], Any]) -> Callable[[list[torch.Tensor]], Any] | None:
    """Inductor's program with every buffer allocated once, not at every call; None where its
    wrapper is not written as expected.

    Inductor's Python wrapper allocates each intermediate and output buffer of the graph anew at
    every call, 0.5 us apiece: 32 buffers make 15 of eight schools' 19 us a leapfrog step and 20
    of breast cancer's 55. Here the wrapper's source is rewritten to take its buffers from two
    sets allocated up front and used in turn, so that a call's outputs, passed straight back in
    as the next call's inputs, are not overwritten by it. They are overwritten by the call after
    next: callers consume a call's outputs before then (:class:`Fused`).
    """
    func, runner = getattr(program, "__func__", None), getattr(program, "__self__", None)
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):  # not a method defined in a source file
        return None
    sites = list(_ALLOCATION.finditer(source))
    if not sites:  # nothing allocated per call: nothing to reuse
        return None
    if not _BODY.search(source) or func.__name__ != "call":
        fell_back("reused buffers", "Inductor's wrapper is not written as expected")
        return None
    index = itertools.count()
    source = _ALLOCATION.sub(lambda site: f"{site['indent']}{site['name']} = _buffers[{next(index)}]", source)
    source = _BODY.sub(lambda body: f"{body[1]}{body['indent']}_buffers = _sets[next(_turn)]\n{body['indent']}",
                       source, count=1)
    try:
        sets = [[torch.empty_strided(ast.literal_eval(site["size"]), ast.literal_eval(site["stride"]),
                                     dtype=getattr(torch, site["dtype"])) for site in sites] for _ in range(2)]
        namespace = dict(func.__globals__, _sets=sets, _turn=itertools.cycle(range(len(sets))))
        exec(compile(source, f"<{func.__code__.co_filename}, reusing buffers>", "exec"), namespace)  # noqa: S102
    except Exception as exc:  # noqa: BLE001 - a wrapper written otherwise keeps its allocations
        fell_back("reused buffers", f"{type(exc).__name__}: {exc}")
        return None
    return types.MethodType(namespace["call"], runner)


@contextlib.contextmanager
def _scalar_kernels() -> Iterator[None]:
    """Have Inductor's C++ code generator emit scalar loops inside the block.

    Inductor's own switch, ``config.cpp.vec_isa_ok = False``, is read once per process: the
    first code generation caches the instruction sets it allows, so it would either be ignored
    (after a vectorised compilation) or turn SIMD off for the rest of the process, the
    user's own ``torch.compile`` included. Choosing "no instruction set" for this compilation
    alone also skips the probe of the CPU's instruction sets (1.2 s a process, 9 s on a machine
    whose Inductor cache is empty).
    """
    from torch._inductor import cpu_vec_isa

    # every caller of pick_vec_isa (code generation and the compiler's flags) asks this list
    valid = cpu_vec_isa.valid_vec_isa_list
    cpu_vec_isa.valid_vec_isa_list = list
    try:
        yield
    finally:
        cpu_vec_isa.valid_vec_isa_list = valid


@contextlib.contextmanager
def _vectorise_long_loops() -> Iterator[None]:
    """Have Inductor's C++ code generator vectorise only kernels whose inner loop runs over at
    least :data:`VECTORIZE_MIN_LOOP` values inside the block.

    Uses Inductor's hook for customising its kernels (``CppScheduling.kernel_proxy_cls``),
    restored on exit so that other compilations in the process are left as Inductor makes them.
    """
    from torch._inductor.codegen.cpp import CppScheduling

    default = CppScheduling.kernel_proxy_cls
    CppScheduling.kernel_proxy_cls = _long_loops_proxy(default)
    try:
        yield
    finally:
        CppScheduling.kernel_proxy_cls = default


@functools.cache
def _long_loops_proxy(base: type) -> type:
    """A subclass of Inductor's C++ kernel proxy ``base`` that emits scalar code for short loops."""

    class LongLoopsVectorised(base):  # type: ignore[misc,valid-type]
        def codegen_functions(self, fn_list: list[Any], var_sizes_list: list[Any]) -> None:
            if self.picked_vec_isa and _inner_loop(var_sizes_list) < VECTORIZE_MIN_LOOP:
                self.picked_vec_isa = None  # Inductor's own switch for "scalar loops only"
            super().codegen_functions(fn_list, var_sizes_list)

    return LongLoopsVectorised


def _inner_loop(var_sizes_list: list[Any]) -> float:
    """Length of a kernel's innermost loop (the reduction's, if any) from the sizes of its loop
    nest, chosen as Inductor chooses it; infinite where the size is symbolic."""
    group, reduction = max(var_sizes_list, key=lambda sizes: len(sizes[1]))
    loops = (*group, *reduction)
    try:
        return int(loops[-1]) if loops else 1
    except TypeError:
        return math.inf


def _longest_row(graph_module: fx.GraphModule, args: Sequence[torch.Tensor]) -> int:
    """Longest last dimension of an argument, constant or intermediate value of a recorded graph."""
    tensors = [*args, *graph_module.buffers()]
    tensors += [t for t in vars(graph_module).values() if isinstance(t, torch.Tensor)]
    tensors += [node.meta["val"] for node in graph_module.graph.nodes
                if isinstance(node.meta.get("val"), torch.Tensor)]
    return max((t.shape[-1] for t in tensors if t.dim() > 0), default=0)
