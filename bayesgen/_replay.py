"""Record a tensor function once as a graph of ATen operations, then replay it.

A log density with static control flow performs the same sequence of tensor operations at every
point of a given batch shape; only the numbers change. :func:`record` runs such a function once
under ``torch.fx``'s ``make_fx``, which keeps the ATen operations (the autograd backward pass
included) and drops every Python-level step around them — Pyro's handler stack, distribution
constructors, support transforms. Replaying the graph computes the same values with the same
kernels, so it is bitwise identical to the eager function, only cheaper; :func:`script` makes it
cheaper still by running it in TorchScript's interpreter. A sampler's whole leapfrog step may
also have its broadcast products summed over a dimension turned into matrix products
(``record(..., contract=True)``, used by :class:`Fused`), which reorders sums.

A recording is only trusted after :func:`agrees` compared it with the eager function at points
other than the one it was recorded at: a function whose operations depend on the values it sees
(Python ``if`` on a tensor, ``.item()``) either fails to record or disagrees there, and callers
then keep the eager function.
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
import time
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import fx
from torch.fx.experimental.proxy_tensor import get_proxy_mode, make_fx

__all__ = ["RECORD_AFTER", "Fused", "Replayed", "agrees", "compile_graph", "layout_of", "record", "script",
           "tracing"]

_log = logging.getLogger(__name__)

#: The fast paths that have fallen back in this process (see :func:`_fell_back`).
_FELL_BACK: set[str] = set()


def _fell_back(path: str, reason: str) -> None:
    """Log that a fast path (TorchScript, Inductor's compilation, the buffer-reusing wrapper) is
    not available: at warning level the first time in a process, then at debug level.

    These fail for reasons of the installed torch (a private Inductor interface that changed, a
    missing compiler), not of the program: the fit still runs, several times slower, so the
    first one is said where a user sees it instead of being swallowed.
    """
    level = logging.DEBUG if path in _FELL_BACK else logging.WARNING
    _FELL_BACK.add(path)
    _log.log(level, "bayesgen's fast path '%s' is not available (%s); sampling and optimising fall back "
             "to slower code. torch %s is installed; setup.cfg lists the versions it was tested on",
             path, reason, torch.__version__)

#: Calls at one input shape after which :class:`Replayed` records the function (so that one-off
#: calls never pay for recording, which costs about as much as a hundred eager calls).
RECORD_AFTER = 3
#: Scales of the random points (standard normal times scale) at which a recording is validated.
PROBE_SCALES = (0.1, 1.0, 3.0)

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

_aten = torch.ops.aten
#: Operations that return their input unchanged when nothing is differentiated or mutated.
_IDENTITY = (_aten.detach.default, _aten.lift_fresh_copy.default, _aten.alias.default)
#: Operations whose result depends only on the shape of their tensor argument.
_SHAPE_ONLY = (_aten.zeros_like.default, _aten.ones_like.default, _aten.full_like.default)


def _op(node: fx.Node) -> torch._ops.OpOverload | None:
    """The ATen overload a graph node calls (None for inputs, outputs, constants)."""
    target = node.target
    return target if node.op == "call_function" and isinstance(target, torch._ops.OpOverload) else None


def _is_random(op: torch._ops.OpOverload) -> bool:
    """Whether ``op`` draws random numbers (its result would be frozen or wrong on replay)."""
    return torch.Tag.nondeterministic_seeded in op.tags


def _is_view(op: torch._ops.OpOverload) -> bool:
    """Whether ``op`` returns a view of its first argument."""
    returns = op._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write


def _written(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose tensors some operation writes in place, directly or through a view."""
    written: set[fx.Node] = set()
    for node in reversed(graph.nodes):  # a view is used after its base: mark views first
        op = _op(node)
        if op is None:
            continue
        if node in written and _is_view(op) and isinstance(node.args[0], fx.Node):
            written.add(node.args[0])
        for i, argument in enumerate(op._schema.arguments):
            if argument.alias_info is not None and argument.alias_info.is_write:
                value = node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
                if isinstance(value, fx.Node):
                    written.add(value)
    return written


class _Meta(NamedTuple):
    """What the passes need to know of a tensor that depends on the inputs (not its values)."""

    shape: torch.Size
    dtype: torch.dtype
    stride: tuple[int, ...]
    data_ptr: int
    flags: tuple[bool, bool]


def _meta(value: Any) -> Any:
    """The metadata of a tensor (other values unchanged)."""
    if not isinstance(value, torch.Tensor):
        return value
    return _Meta(value.shape, value.dtype, value.stride(), value.data_ptr(), (value.is_neg(), value.is_conj()))


def _varying(graph: fx.Graph, written: set[fx.Node]) -> set[fx.Node]:
    """Nodes whose values depend on the inputs (or are written in place); the others are constant.

    Operations that read only their argument's (fixed) shape do not depend on its values.
    """
    varying: set[fx.Node] = set()
    for node in graph.nodes:
        op = _op(node)
        if node.op == "placeholder" or node in written or (op is not None and op._schema.is_mutable) or (
                node.op == "call_function" and op not in _SHAPE_ONLY
                and any(a in varying for a in node.all_input_nodes)):
            varying.add(node)
    return varying


def _run(graph_module: fx.GraphModule, args: Sequence[torch.Tensor], varying: set[fx.Node]) -> dict[fx.Node, Any]:
    """One run of the graph at ``args``: the value of every constant node, the metadata of the rest.

    Only constants are kept whole (they are folded); keeping every intermediate of a large batch
    would hold gigabytes.
    """
    values: dict[fx.Node, Any] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            values[n] = _meta(value) if n in varying else value
            return value

    with torch.no_grad():
        _Recorder(graph_module).run(*args)
    return values


def _same_tensor(a: Any, b: Any) -> bool:
    """Whether ``a`` is ``b`` viewed with the same shape and strides (a no-op view)."""
    a, b = _meta(a), _meta(b)
    return isinstance(a, _Meta) and a == b


def _operand(node: Any, values: dict[fx.Node, Any]) -> tuple[Any, torch.Size] | None:
    """A tensor operand of a product, looking through ``expand`` (the product broadcasts anyway)."""
    while isinstance(node, fx.Node) and _op(node) is _aten.expand.default:
        node = node.args[0]
    value = _meta(values.get(node)) if isinstance(node, fx.Node) else None
    return (node, value.shape) if isinstance(value, _Meta) else None


def _contract_products(graph: fx.Graph, values: dict[fx.Node, Any]) -> bool:
    """Rewrite ``(a * b).sum(dims)`` as an ``einsum`` of ``a`` and ``b``; whether any was rewritten.

    Programs written to broadcast over a batch of chains compute ``X @ beta`` as
    ``(X * beta).sum(-1)``, which materialises a ``(batch, n, d)`` product (and its gradient
    another); the einsum runs as one matrix product instead. Sums are reordered, so results
    change by rounding: used only where that is accepted (:class:`Fused`).
    """
    letters = "abcdefghijklmnopqrstuvwxyz"
    changed = False
    for node in list(graph.nodes):
        if _op(node) is not _aten.sum.dim_IntList or not isinstance(node.args[0], fx.Node):
            continue
        product = node.args[0]
        if _op(product) is not _aten.mul.Tensor or len(product.users) != 1 or product not in values:
            continue
        operands = [_operand(a, values) for a in product.args[:2]]
        shape, out = values[product].shape, _meta(values.get(node))
        if None in operands or not isinstance(out, _Meta) or len(shape) > len(letters) \
                or values[operands[0][0]].dtype != values[operands[1][0]].dtype:
            continue
        rank = len(shape)
        dims = node.args[1] if len(node.args) > 1 and node.args[1] is not None else list(range(rank))
        reduced = {d % rank for d in dims}
        subscripts, inputs = [], []
        for source, own in operands:
            own = (1,) * (rank - len(own)) + tuple(own)
            kept = [i for i in range(rank) if own[i] == shape[i] and shape[i] != 1]
            if any(own[i] != 1 for i in range(rank) if i not in kept):
                break  # a size-1 dim of the result that is not 1 in this operand: leave it
            subscripts.append("".join(letters[i] for i in kept))
            inputs.append((source, [shape[i] for i in kept]))
        else:
            present = set("".join(subscripts))
            result = "".join(letters[i] for i in range(rank) if i not in reduced and letters[i] in present)
            with graph.inserting_before(node):
                squeezed = [graph.call_function(_aten.reshape.default, (source, size)) for source, size in inputs]
                einsum = graph.call_function(_aten.einsum.default, (f"{subscripts[0]},{subscripts[1]}->{result}", squeezed))
                reshaped = graph.call_function(_aten.reshape.default, (einsum, list(out.shape)))
            node.replace_all_uses_with(reshaped)
            graph.erase_node(node)
            graph.erase_node(product)
            changed = True
    return changed


def _compact(value: torch.Tensor) -> torch.Tensor:
    """``value`` with every dimension along which it does not change cut to size 1, so that a
    folded constant is stored (and read by each replay) at the size it varies in.

    The gradient a sum of a ``(chains, n)`` log-likelihood passes back is a ``(chains, n)``
    tensor of minus ones: stored in full, every leapfrog step would read it from memory (2.5 MB
    at 64 chains of 5,000 observations; 40 MB at 1,024) for nothing.
    """
    for dim, size in enumerate(value.shape):
        if size > 1:
            first = value.narrow(dim, 0, 1)
            if torch.equal(value, first.expand_as(value)):
                value = first
    return value.contiguous()


def _share_exponentials(graph: fx.Graph) -> bool:
    """Compute a logistic log-likelihood and its gradient from one exponential; whether any was.

    A Bernoulli or binomial likelihood on logits ``x`` records
    ``binary_cross_entropy_with_logits(x, y)``, whose backward pass records ``sigmoid(x)``:
    compiled, they evaluate ``exp(-|x|)`` and ``exp(-x)`` at every observation, two of the
    three transcendental functions that dominate a large regression's leapfrog step. Both are
    rewritten from ``e = exp(-|x|)``: the loss as ``max(x, 0) - x y + log(1 + e)`` and the
    sigmoid as ``1 / (1 + e)`` where ``x >= 0``, ``e / (1 + e)`` elsewhere (the same values, up
    to rounding). ``log(1 + e)`` rather than ``log1p(e)``: ``log`` takes about 60% of
    ``log1p``'s time (the synthetic 5000 x 20 regression's compiled 4-chain step 182-236 against
    194-299 us in five alternating timings), and where ``1 + e`` rounds off ``e`` the term is
    below ``1e-16`` in absolute value, far inside the rounding of the sum over observations.
    """
    changed = False
    for node in list(graph.nodes):
        if _op(node) is not _aten.binary_cross_entropy_with_logits.default:
            continue
        bound = {**dict(zip(("self", "target", "weight", "pos_weight", "reduction"), node.args)), **node.kwargs}
        if bound.get("weight") is not None or bound.get("pos_weight") is not None or bound.get("reduction", 1) != 0:
            continue  # weighted or reduced: leave it
        x, y = bound["self"], bound["target"]
        sigmoids = [user for user in x.users if _op(user) is _aten.sigmoid.default] if isinstance(x, fx.Node) else []
        if not sigmoids:
            continue
        order = {n: i for i, n in enumerate(graph.nodes)}
        with graph.inserting_before(min([node, *sigmoids], key=order.__getitem__)):
            op = graph.call_function
            e = op(_aten.exp.default, (op(_aten.neg.default, (op(_aten.abs.default, (x,)),)),))
            one_plus_e = op(_aten.add.Scalar, (e, 1.0))
            inverse = op(_aten.reciprocal.default, (one_plus_e,))
            positive = op(_aten.ge.Scalar, (x, 0.0))
            sigmoid = op(_aten.where.self, (positive, inverse, op(_aten.mul.Tensor, (e, inverse))))
        with graph.inserting_before(node):
            positive_part = op(_aten.clamp_min.default, (x, 0.0))
            linear = op(_aten.sub.Tensor, (positive_part, op(_aten.mul.Tensor, (x, y))))
            loss = op(_aten.add.Tensor, (linear, op(_aten.log.default, (one_plus_e,))))
        node.replace_all_uses_with(loss)
        graph.erase_node(node)
        for user in sigmoids:
            user.replace_all_uses_with(sigmoid)
            graph.erase_node(user)
        changed = True
    return changed


def _simplify(graph_module: fx.GraphModule, args: Sequence[torch.Tensor], contract: bool = False) -> None:
    """Make the recorded graph cheaper to replay without changing any value it computes.

    Drops unused results, operations that return their argument unchanged (``detach``, views
    with the same shape and strides, copies of constants) and folds every node whose value does
    not depend on the inputs into a stored constant; nodes written in place are left alone.
    With ``contract``, products summed over a dimension become matrix products
    (:func:`_contract_products`), which changes values by rounding.
    """
    graph = graph_module.graph
    graph.eliminate_dead_code()
    written = _written(graph)
    values = _run(graph_module, args, _varying(graph, written))
    if contract and not written and (_contract_products(graph, values) | _share_exponentials(graph)):
        graph.eliminate_dead_code()
        graph_module.recompile()
        values = _run(graph_module, args, _varying(graph, written))
    for node in list(graph.nodes):
        op = _op(node)
        if op is None or node in written or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        identity = op in _IDENTITY or (_is_view(op) and _same_tensor(values[node], values.get(source)))
        if identity and source not in written:
            node.replace_all_uses_with(source)
            graph.erase_node(node)
    varying = _varying(graph, written)
    for count, node in enumerate(n for n in list(graph.nodes) if n.op == "call_function" and n not in varying
                                 and isinstance(values.get(n), torch.Tensor)
                                 and any(u in varying or u.op == "output" for u in n.users)):
        name, value = f"_folded{count}", values[node].detach()
        compact = _compact(value)
        graph_module.register_buffer(name, compact)
        with graph.inserting_before(node):
            folded = graph.get_attr(name)
            if compact.shape != value.shape:
                folded = graph.call_function(_aten.expand.default, (folded, list(value.shape)))
            node.replace_all_uses_with(folded)
    graph.eliminate_dead_code()
    # a constant (or its broadcast) or an input returned as an output would be shared with the
    # caller: copy it
    output = next(n for n in graph.nodes if n.op == "output")
    for value in output.all_input_nodes:
        source = value.args[0] if _op(value) is _aten.expand.default else value
        if isinstance(source, fx.Node) and source.op in ("get_attr", "placeholder"):
            with graph.inserting_before(output):
                copy = graph.call_function(_aten.clone.default, (value,))
            output.replace_input_with(value, copy)
    graph.lint()
    graph_module.recompile()


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the eager calls already showed the program's warnings
            graph_module = make_fx(lambda *xs: fn(*xs), tracing_mode="real")(*args)
    except Exception as exc:  # noqa: BLE001 - any failure means "keep the eager function"
        _log.debug("cannot record %s: %s: %s", _name(fn), type(exc).__name__, exc)
        return None
    random = sorted({str(op) for op in map(_op, graph_module.graph.nodes) if op is not None and _is_random(op)})
    if random:
        _log.debug("not recording %s: it draws random numbers (%s)", _name(fn), random)
        return None
    _simplify(graph_module, args, contract)
    return graph_module


def script(graph_module: fx.GraphModule, args: Sequence[torch.Tensor]) -> Callable[..., Any] | None:
    """The recorded graph as a TorchScript function, or None if that fails (:func:`_fell_back`).

    A recording is straight-line code of ATen calls, so tracing it is exact and takes
    milliseconds; TorchScript's interpreter then dispatches each operation from C++, about a
    third of the cost of calling it from Python (140 against 510 microseconds for the eight
    schools density and its gradient, 80 operations). ``torch.jit`` is deprecated in favour of
    ``torch.compile``, whose compilation takes seconds to tens of seconds on a CPU: the
    replay falls back to the graph itself when TorchScript is not available.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            return torch.jit.trace(graph_module, tuple(args), check_trace=False)
    except Exception as exc:  # noqa: BLE001 - no TorchScript, an operation it cannot hold, ...
        _fell_back("torchscript", f"{type(exc).__name__}: {exc}")
        return None


def compile_graph(graph_module: fx.GraphModule, args: Sequence[torch.Tensor]) -> Callable[..., Any] | None:
    """Compile a recorded graph with TorchInductor; None if that fails (:func:`_fell_back`).

    On a CPU a C++ compiler builds the fused kernels, one compiler process for each piece of
    the graph between library calls (matrix products), run side by side from a pool of
    threads (the breast-cancer regression's step has three pieces). Only kernels whose inner
    loop runs over at least :data:`VECTORIZE_MIN_LOOP` values get SIMD instructions
    (:func:`_vectorise_long_loops`); graphs with no tensor that long get scalar kernels only
    (:func:`_scalar_kernels`) and skip the probe of the CPU's instruction sets. The result is
    Inductor's program called directly (:func:`_direct`). Much less time when Inductor's
    on-disk cache already holds the graph. On CUDA, Inductor emits Triton kernels.
    """
    on_cpu = all(a.device.type == "cpu" for a in args)
    # Fused replays a compilation only with the argument layout it was compiled for, so the
    # per-call checks of every input's size and strides (a third of a small step's time) go
    options: dict[str, Any] = {"size_asserts": False}
    scalar = on_cpu and _longest_row(graph_module, args) < VECTORIZE_MIN_LOOP
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notices from Inductor's imports
            from torch._inductor import config
            from torch._inductor.compile_fx import compile_fx, compile_fx_inner

            programs: list[Any] = []

            def compile_program(*inner_args: Any, **inner_kwargs: Any) -> Any:
                programs.append(compile_fx_inner(*inner_args, **inner_kwargs))
                return programs[-1]

            kernels = _scalar_kernels() if scalar else _vectorise_long_loops() if on_cpu else contextlib.nullcontext()
            with config.patch(options), kernels, _cacheable() as fake_mode:
                examples = [fake_mode.from_tensor(a, static_shapes=True) for a in args]
                compiled = compile_fx(graph_module, examples, inner_compile=compile_program)
    except Exception as exc:  # noqa: BLE001 - no compiler, unsupported operation, ...
        _fell_back("inductor", f"{type(exc).__name__}: {exc}")
        return None
    return _direct(compiled, programs, graph_module, args) if on_cpu else compiled


@contextlib.contextmanager
def _cacheable() -> Iterator[Any]:
    """Inside the block, Inductor's on-disk FX graph cache can key the graph; yields the fake
    tensor mode in which to describe the example inputs (``from_tensor(x, static_shapes=True)``).

    Inductor keys a graph only under a tracing context whose fake tensors carry a shape
    environment; without one it bypasses its cache ("No shape env") and every process
    recompiled a model that an earlier one had compiled. The inputs are described with static
    shapes, so the environment never receives a symbolic size and the kernels are those of a
    compilation without it. AOTAutograd's own cache is off: it would answer before Inductor's
    and hand back the program inside its wrappers only, which :func:`_direct` needs to get past.
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
    constants = [value for named in (graph_module.named_parameters, graph_module.named_buffers)
                 for _, value in named(remove_duplicate=False)]
    expected = compiled(*args)
    for candidate in (_reusing_buffers(program), program):
        if candidate is None:
            continue

        def direct(*inputs: torch.Tensor, program: Callable[[list[torch.Tensor]], Any] = candidate) -> Any:
            return program([*constants, *inputs])

        try:
            if _same(expected, direct(*args)) and _same(expected, direct(*args)):  # both sets of buffers
                return direct
        except Exception:  # noqa: BLE001 - a program that cannot be called directly keeps its wrappers
            pass
    return compiled


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
        _fell_back("reused buffers", "Inductor's wrapper is not written as expected")
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
        _fell_back("reused buffers", f"{type(exc).__name__}: {exc}")
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


def _name(fn: Callable[..., Any]) -> str:
    """A readable name of ``fn`` for debug messages."""
    return getattr(fn, "__qualname__", None) or repr(fn)


def _flat(outputs: Any) -> list[torch.Tensor]:
    """The tensors of a tensor or a nested tuple of tensors, in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in _flat(item)]


def agrees(expected: Any, actual: Any) -> bool:
    """Whether two outputs (tensors or nested tuples of them) agree to ``sqrt(eps)`` of their dtype.

    The tolerance is relative to the largest finite magnitude of each expected tensor, so a sum
    of thousands of terms may differ by rounding; non-finite entries must match exactly and
    boolean or integer tensors must be equal.
    """
    left, right = _flat(expected), _flat(actual)
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
        if scripted is not None and _same(graph(x), scripted(x)):
            self.recordings[key] = graph = scripted
        replay_seconds = min(_timed(graph, x)[0] for _ in range(3))
        eager_seconds = self._eager_seconds.get(key, math.inf)
        self.replays[key] = replay_seconds < eager_seconds
        if not self.replays[key]:
            _log.debug("not replaying %s: %.3g ms a replay against %.3g ms a call", _name(self.fn),
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
                _log.debug("not replaying %s: the recording disagrees with it", _name(self.fn))
                return None
        return graph


def layout_of(tensors: Sequence[torch.Tensor]) -> tuple[Any, ...]:
    """Shapes, dtypes, devices and strides of ``tensors``: what a recording is specific to."""
    return tuple((t.shape, t.dtype, t.device, t.stride()) for t in tensors)


def _same(expected: Any, actual: Any) -> bool:
    """Whether two outputs (tensors or nested tuples of them) are bitwise equal."""
    left, right = _flat(expected), _flat(actual)
    return len(left) == len(right) and all(torch.equal(a, b) for a, b in zip(left, right))


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
                _log.debug("compiled %s in %.2f s", _name(self.fn), time.perf_counter() - started)
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
                _log.debug("recorded %s (%s) in %.2f s", _name(self.fn), kind, time.perf_counter() - started)
                return replay
        _log.debug("running %s eagerly", _name(self.fn))
        return None

    def _replays_correctly(self, replay: Callable[..., Any], args: Sequence[torch.Tensor], expected: Any) -> bool:
        """Whether ``replay(*args)`` runs and :func:`agrees` with ``fn``'s ``expected`` outputs."""
        try:
            return agrees(expected, replay(*args))
        except Exception as exc:  # noqa: BLE001 - a replay that raises is wrong
            _log.debug("the recording of %s raised %s", _name(self.fn), exc)
            return False


def _clone(outputs: Any) -> Any:
    """A copy of a tensor or a nested tuple of tensors."""
    if isinstance(outputs, torch.Tensor):
        return outputs.clone()
    return tuple(_clone(item) for item in outputs)
