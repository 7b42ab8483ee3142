"""Value-preserving rewrites of a recorded graph: drop identities, share repeated exponentials,
turn broadcast products summed over a dimension into matrix products (only where asked, since that
reorders sums), and the helpers that read ATen operations off graph nodes."""

from __future__ import annotations

import math

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import fx

__all__ = ["aten_op", "is_random", "simplify"]

_aten = torch.ops.aten
#: Operations that return their input unchanged when nothing is differentiated or mutated.
_IDENTITY = (_aten.detach.default, _aten.lift_fresh_copy.default, _aten.alias.default)
#: Operations whose result depends only on the shape of their tensor argument.
_SHAPE_ONLY = (_aten.zeros_like.default, _aten.ones_like.default, _aten.full_like.default)


def aten_op(node: fx.Node) -> torch._ops.OpOverload | None:
    """The ATen overload a graph node calls (None for inputs, outputs, constants)."""
    target = node.target
    return target if node.op == "call_function" and isinstance(target, torch._ops.OpOverload) else None


def is_random(op: torch._ops.OpOverload) -> bool:
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
        op = aten_op(node)
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
        op = aten_op(node)
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
    while isinstance(node, fx.Node) and aten_op(node) is _aten.expand.default:
        node = node.args[0]
    value = _meta(values.get(node)) if isinstance(node, fx.Node) else None
    return (node, value.shape) if isinstance(value, _Meta) else None


#: Elements a broadcast product must have for :func:`_contract_products` to make it a matrix
#: product. Smaller ones cost little as written, and in a compiled step their loops join the
#: kernels around them, where a matrix product is a library call of its own, with the wrapper
#: code around it (the wine regression's 4 x 130 x 13 product and its gradient: two calls per
#: leapfrog step, and three kernels to compile instead of one).
CONTRACT_MIN_ELEMENTS = 2 ** 15


def _contract_products(graph: fx.Graph, values: dict[fx.Node, Any]) -> bool:
    """Rewrite ``(a * b).sum(dims)`` as an ``einsum`` of ``a`` and ``b``; whether any was rewritten.

    Programs written to broadcast over a batch of chains compute ``X @ beta`` as
    ``(X * beta).sum(-1)``, which materialises a ``(batch, n, d)`` product (and its gradient
    another); the einsum runs as one matrix product instead. Sums are reordered, so results
    change by rounding: used only where that is accepted (:class:`Fused`). Products of fewer than
    :data:`CONTRACT_MIN_ELEMENTS` values are left as they are written.
    """
    letters = "abcdefghijklmnopqrstuvwxyz"
    changed = False
    for node in list(graph.nodes):
        if aten_op(node) is not _aten.sum.dim_IntList or not isinstance(node.args[0], fx.Node):
            continue
        product = node.args[0]
        if aten_op(product) is not _aten.mul.Tensor or len(product.users) != 1 or product not in values:
            continue
        operands = [_operand(a, values) for a in product.args[:2]]
        shape, out = values[product].shape, _meta(values.get(node))
        if math.prod(shape) < CONTRACT_MIN_ELEMENTS:
            continue
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
        if aten_op(node) is not _aten.binary_cross_entropy_with_logits.default:
            continue
        bound = {**dict(zip(("self", "target", "weight", "pos_weight", "reduction"), node.args)), **node.kwargs}
        if bound.get("weight") is not None or bound.get("pos_weight") is not None or bound.get("reduction", 1) != 0:
            continue  # weighted or reduced: leave it
        x, y = bound["self"], bound["target"]
        sigmoids = [user for user in x.users if aten_op(user) is _aten.sigmoid.default] if isinstance(x, fx.Node) else []
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


def simplify(graph_module: fx.GraphModule, args: Sequence[torch.Tensor], contract: bool = False) -> None:
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
        op = aten_op(node)
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
        source = value.args[0] if aten_op(value) is _aten.expand.default else value
        if isinstance(source, fx.Node) and source.op in ("get_attr", "placeholder"):
            with graph.inserting_before(output):
                copy = graph.call_function(_aten.clone.default, (value,))
            output.replace_input_with(value, copy)
    graph.lint()
    graph_module.recompile()
