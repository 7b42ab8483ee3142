"""The NUTS transition: multinomial trajectory sampling with iterative U-turn checks, the tree built
leaf by leaf (eagerly, or as one recorded and replayed step)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from bayesgen._replay import Fused, layout_of
from bayesgen.inference._guard import bind_where_defined
from bayesgen.inference._integrator import (
    MAX_DELTA_ENERGY,
    LogDensityFn,
    Metric,
    PhasePoint,
    PhaseState,
    Transition,
    bind_metric,
    energy_error,
    leapfrog,
    metric_tensors,
    start_point,
    where_chains,
)
from bayesgen.inference._numerical import is_numerical_error
from bayesgen.inference._streams import ChainStreams

__all__ = ["BuildLeaves", "Combine", "FusedLeaves", "eager_leaves", "nuts_transition", "subtree_step"]


class _Proposal(NamedTuple):
    """Per-chain multinomial sample of a (sub)tree with its Hamiltonian."""

    z: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor
    energy: torch.Tensor


class _Tree(NamedTuple):
    """Per-chain NUTS trajectory (``running`` marks chains still doubling)."""

    left: PhasePoint
    right: PhasePoint
    proposal: _Proposal
    log_weight: torch.Tensor
    r_sum: torch.Tensor
    running: torch.Tensor
    diverging: torch.Tensor
    depth: torch.Tensor
    n_steps: torch.Tensor
    sum_accept: torch.Tensor


class _Subtree(NamedTuple):
    """Per-chain subtree being built (``edge``: newest leaf, ``active``: chains still extending)."""

    edge: PhasePoint
    proposal: _Proposal
    log_weight: torch.Tensor
    r_sum: torch.Tensor
    active: torch.Tensor
    turning: torch.Tensor
    diverging: torch.Tensor
    n_steps: torch.Tensor
    sum_accept: torch.Tensor


class _Checkpoints(NamedTuple):
    """U-turn checkpoints ``(C, K, D)``: ``shifted`` holds ``r_sum - p / 2``, ``v`` the velocity."""

    shifted: torch.Tensor
    v: torch.Tensor


#: Extends a subtree leaf by leaf (:func:`subtree_step` with its density bound) until it has one
#: leaf per row of ``uniforms`` or no chain is still extending it:
#: ``(metric, energy0, signed_step, sub, ckpts, uniforms) -> sub``.
BuildLeaves = Callable[[Metric, torch.Tensor, torch.Tensor, _Subtree, _Checkpoints, torch.Tensor], _Subtree]


#: Merges a finished subtree into the trajectory: ``(tree, sub, going_right, uniform) -> tree``.
Combine = Callable[[_Tree, _Subtree, torch.Tensor, torch.Tensor], _Tree]


class _Context(NamedTuple):
    """Quantities fixed during one NUTS transition."""

    build_leaves: BuildLeaves
    step_size: torch.Tensor
    energy0: torch.Tensor
    metric: Metric
    empty: _Subtree


def _checkpoint_range(leaf_idx: int) -> tuple[int, int]:
    """NumPyro's ``_leaf_idx_to_ckpt_idxs``: checkpoints to test after leaf ``leaf_idx``."""
    idx_max = bin(leaf_idx >> 1).count("1")
    trailing_ones = len(bin(leaf_idx)) - len(bin(leaf_idx).rstrip("1"))
    return idx_max - trailing_ones + 1, idx_max


def _is_turning(left: PhasePoint, right: PhasePoint, r_sum: torch.Tensor) -> torch.Tensor:
    """Generalised U-turn criterion (Betancourt 2017, appendix A.4.2) per chain."""
    rho = r_sum - 0.5 * (left.p + right.p)
    return ((torch.stack((left.v, right.v)) * rho).sum(-1) <= 0).any(0)  # one product for both ends


@functools.cache
def _checkpoint_masks(leaf_idx: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(size,)`` masks of the checkpoints that leaf ``leaf_idx`` tests and (even leaves) stores.

    Masks instead of slices keep the leaf step one fixed sequence of tensor operations for every
    leaf, so that it can be recorded once (:class:`FusedLeaves`).
    """
    idx_min, idx_max = _checkpoint_range(leaf_idx)
    slots = torch.arange(size, device=device)
    test = (slots >= idx_min) & (slots <= idx_max)
    store = (slots == idx_max) & (leaf_idx % 2 == 0)
    return test, store


def _iterative_turning(
    ckpts: _Checkpoints, test: torch.Tensor, store: torch.Tensor, p: torch.Tensor, v: torch.Tensor,
    r_sum: torch.Tensor,
) -> tuple[_Checkpoints, torch.Tensor]:
    """Store the checkpoint of an even leaf and test all sub-subtrees ending at this leaf.

    ``test`` and ``store`` come from :func:`_checkpoint_masks`; returns the updated checkpoints and
    the per-chain U-turn flag.
    """
    shifted = r_sum - 0.5 * p
    slot = store.unsqueeze(-1)
    ckpts = _Checkpoints(torch.where(slot, shifted.unsqueeze(1), ckpts.shifted),
                         torch.where(slot, v.unsqueeze(1), ckpts.v))
    rho = shifted.unsqueeze(1) - ckpts.shifted
    turning = ((ckpts.v * rho).sum(-1) <= 0) | ((v.unsqueeze(1) * rho).sum(-1) <= 0)
    return ckpts, (turning & test).any(-1)


def subtree_step(
    logp_and_grad: LogDensityFn,
    metric: Metric,
    energy0: torch.Tensor,
    signed_step: torch.Tensor,
    sub: _Subtree,
    ckpts: _Checkpoints,
    test: torch.Tensor,
    store: torch.Tensor,
    uniform: torch.Tensor,
) -> tuple[_Subtree, _Checkpoints]:
    """Add one leaf to every active chain's subtree (uniform progressive sampling).

    A pure function of tensors with no data-dependent control flow: the same operations run at
    every leaf, so :class:`FusedLeaves` can record it (the density included) once per run.
    """
    leaf = leapfrog(logp_and_grad, sub.edge, signed_step, metric)
    energy, delta = energy_error(leaf, energy0)
    active = sub.active
    log_weight = torch.logaddexp(sub.log_weight, -delta)
    take = active & (uniform < torch.exp(-delta - log_weight))
    r_sum = torch.where(active.unsqueeze(-1), sub.r_sum + leaf.p, sub.r_sum)
    ckpts, turning = _iterative_turning(ckpts, test, store, leaf.p, leaf.v, r_sum)
    turning = active & turning
    diverging = active & (delta > MAX_DELTA_ENERGY)
    alive = active & ~turning & ~diverging
    proposal = _Proposal(leaf.z, leaf.logp, leaf.grad, energy)
    return _Subtree(
        edge=where_chains(alive, leaf, sub.edge),
        proposal=where_chains(take, proposal, sub.proposal),
        log_weight=torch.where(active, log_weight, sub.log_weight),
        r_sum=r_sum,
        active=alive,
        turning=sub.turning | turning,
        diverging=sub.diverging | diverging,
        n_steps=sub.n_steps + active,
        sum_accept=sub.sum_accept + torch.where(active, torch.exp(-delta).clamp(max=1.0), 0.0),
    ), ckpts


#: Tensors that :func:`_pack` makes of a subtree (its edge and proposal flattened in place) and of
#: a subtree with its checkpoints, counted from the NamedTuples' fields, so that a new field moves
#: every offset below with it.
_SUBTREE_SIZE = len(PhasePoint._fields) + len(_Proposal._fields) + len(_Subtree._fields) - 2
_STATE_SIZE = _SUBTREE_SIZE + len(_Checkpoints._fields)
assert _Subtree._fields[:2] == ("edge", "proposal"), "_pack flattens a subtree's first two fields"


def _pack(*parts: tuple) -> tuple[torch.Tensor, ...]:
    """Flatten phase points, subtrees and checkpoints into one tuple of tensors (fast, no pytree)."""
    flat: list[torch.Tensor] = []
    for part in parts:
        if isinstance(part, _Subtree):
            flat += [*part.edge, *part.proposal, *part[2:]]
        else:
            flat += part
    return tuple(flat)


def _unpack_subtree(flat: Sequence[torch.Tensor]) -> _Subtree:
    """Inverse of :func:`_pack` for one subtree (its first :data:`_SUBTREE_SIZE` tensors)."""
    edge_end = len(PhasePoint._fields)
    proposal_end = edge_end + len(_Proposal._fields)
    return _Subtree(PhasePoint(*flat[:edge_end]), _Proposal(*flat[edge_end:proposal_end]),
                    *flat[proposal_end:_SUBTREE_SIZE])


def _unpack_state(flat: Sequence[torch.Tensor]) -> tuple[_Subtree, _Checkpoints]:
    """Inverse of :func:`_pack` for a subtree and its checkpoints (the first :data:`_STATE_SIZE`)."""
    return _unpack_subtree(flat), _Checkpoints(*flat[_SUBTREE_SIZE:_STATE_SIZE])


#: Tensors that :func:`_pack_tree` makes of a trajectory (its three points flattened in place).
_TREE_SIZE = 2 * len(PhasePoint._fields) + len(_Proposal._fields) + len(_Tree._fields) - 3
assert _Tree._fields[:3] == ("left", "right", "proposal"), "_pack_tree flattens a trajectory's first three fields"


def _pack_tree(tree: _Tree) -> tuple[torch.Tensor, ...]:
    """Flatten a trajectory into one tuple of tensors; inverse of :func:`_unpack_tree`."""
    return (*tree.left, *tree.right, *tree.proposal, *tree[3:])


def _unpack_tree(flat: Sequence[torch.Tensor]) -> _Tree:
    """A trajectory from the first :data:`_TREE_SIZE` tensors of ``flat`` (see :func:`_pack_tree`)."""
    point = len(PhasePoint._fields)
    proposal_end = 2 * point + len(_Proposal._fields)
    return _Tree(PhasePoint(*flat[:point]), PhasePoint(*flat[point:2 * point]),
                 _Proposal(*flat[2 * point:proposal_end]), *flat[proposal_end:_TREE_SIZE])


def eager_leaves(logp_and_grad: LogDensityFn) -> BuildLeaves:
    """:data:`BuildLeaves` running :func:`subtree_step` operation by operation."""

    def build(metric: Metric, energy0: torch.Tensor, signed: torch.Tensor, sub: _Subtree,
              ckpts: _Checkpoints, uniforms: torch.Tensor) -> _Subtree:
        n_leaves, size = uniforms.shape[0], ckpts.v.shape[1]
        for leaf_idx in range(n_leaves):
            test, store = _checkpoint_masks(leaf_idx, size, uniforms.device)
            sub, ckpts = subtree_step(logp_and_grad, metric, energy0, signed, sub, ckpts, test, store,
                                      uniforms[leaf_idx])
            if leaf_idx + 1 < n_leaves and not bool(sub.active.any()):
                break
        return sub

    return build


class FusedLeaves:
    """:data:`BuildLeaves` whose leaf step is recorded at its first call and replayed after, with
    the merge of each finished subtree into the trajectory (:meth:`combine`) recorded alike.

    Leapfrog, density, gradient and the tree bookkeeping of one leaf become one recorded graph
    run by TorchScript, or compiled by TorchInductor with ``compile`` or after
    :meth:`compile` (:class:`bayesgen._replay.Fused`); where that is not possible the step runs
    eagerly. The loop over leaves passes the replay's flat outputs straight back in; it checks
    the arguments' strides once per subtree and remembers, per layout, the replay and that its
    outputs come back laid out as its inputs. ``logp_and_grad`` should have been validated as
    recordable (a ``bg.LogDensity`` whose ``value_and_grad`` replays).

    The merge is some forty small operations on every subtree: replayed by TorchScript it is no
    faster than eager (its recording decomposes some of them), so it pays only once compiled,
    when it takes a twentieth of the eager time. A compiled replay reuses its output buffers
    every other call: the subtree returned is only valid until leaves are built again, and a
    merged trajectory until the merge after next; :func:`nuts_transition` merges the one
    before building again, and copies what it returns of the other.
    """

    def __init__(self, logp_and_grad: LogDensityFn, compile: bool = False) -> None:  # noqa: A002
        self.logp_and_grad = logp_and_grad
        self.fused = {dense: Fused(self._flat_step(dense), compile=compile) for dense in (False, True)}
        # per argument layout: the bound replay, and whether its outputs come back laid out as its
        # inputs (None until its first call), so that each subtree checks the layout only once
        self._bound: dict[tuple[Any, ...], tuple[Callable[..., tuple[torch.Tensor, ...]], bool | None]] = {}
        self.merge = Fused(_flat_combine, compile=compile)
        self._merges: dict[tuple[Any, ...], Callable[..., tuple[torch.Tensor, ...]]] = {}

    def compile(self) -> None:
        """Compile the recorded step and merge with TorchInductor from now on."""
        for fused in (*self.fused.values(), self.merge):
            fused.compile_recordings()
        self._bound.clear()
        self._merges.clear()

    def combine(self, tree: _Tree, sub: _Subtree, going_right: torch.Tensor, uniform: torch.Tensor) -> _Tree:
        """:func:`_combine`, recorded at its first call and replayed (:data:`Combine`)."""
        args = (*_pack_tree(tree), *_pack(sub), going_right, uniform)
        key = _strides(args)
        merge = self._merges.get(key)
        if merge is None:
            merge = self._merges[key] = self.merge.bind(args)
        return _unpack_tree(merge(*args))

    def _flat_step(self, dense: bool) -> Callable[..., tuple[torch.Tensor, ...]]:
        def step(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
            metric, rest = bind_metric(flat, dense)
            energy0, signed, state, (test, store, uniform) = rest[0], rest[1], rest[2:-3], rest[-3:]
            sub, ckpts = subtree_step(self.logp_and_grad, metric, energy0, signed, *_unpack_state(state),
                                      test, store, uniform)
            return (*_pack(sub, ckpts), sub.active.any())

        return step

    def __call__(self, metric: Metric, energy0: torch.Tensor, signed: torch.Tensor, sub: _Subtree,
                 ckpts: _Checkpoints, uniforms: torch.Tensor) -> _Subtree:
        fused = self.fused[metric.cholesky is not None]
        head = (*metric_tensors(metric), energy0, signed)
        state = _pack(sub, ckpts)
        n_leaves, size = uniforms.shape[0], ckpts.v.shape[1]
        step, stable = fused.fn, False
        for leaf_idx, uniform in enumerate(uniforms.unbind(0)):
            test, store = _checkpoint_masks(leaf_idx, size, uniforms.device)
            args = (*head, *state, test, store, uniform)
            if not stable:  # until the outputs are laid out as the inputs, look the replay up
                key = _strides(args)
                step, stable = self._bound.get(key) or (bind_where_defined(fused, args, self.logp_and_grad), None)
            try:
                out = step(*args)
            except Exception as exc:
                if step is fused.fn or not is_numerical_error(exc):
                    raise
                # a recorded step cannot catch: rerun this leaf eagerly, where the density's guard
                # rejects the failing chains, and look the replay up again at the next leaf (the
                # eager outputs need not be laid out as the replay's inputs)
                out, stable = fused.fn(*args), False
            else:
                if stable is None and step is fused.fn and layout_of(args) not in fused.replays:
                    stable = False  # the recording was put off (bind_where_defined): try again
                elif stable is None:
                    stable = layout_of(out[:_STATE_SIZE]) == layout_of(state)
                    self._bound[key] = (step, stable)
            state = out[:_STATE_SIZE]
            if leaf_idx + 1 < n_leaves and not bool(out[_STATE_SIZE]):
                break
        return _unpack_subtree(state)


def _strides(tensors: Sequence[torch.Tensor]) -> tuple[tuple[int, ...], ...]:
    """What the layout of a run's step arguments can differ in: their strides. Their shapes,
    dtypes and devices are the run's (a :class:`FusedLeaves` serves one run), and checking
    the strides alone takes a third of :func:`~bayesgen._replay.layout_of`'s time."""
    return tuple(t.stride() for t in tensors)


def _empty_subtree(tree: _Tree) -> _Subtree:
    """A subtree with no leaves yet, made once per transition: every doubling starts from it
    with its own edge, proposal and running chains."""
    no = torch.zeros_like(tree.running)
    zeros = torch.zeros_like(tree.log_weight)
    return _Subtree(tree.left, tree.proposal, torch.full_like(zeros, -torch.inf), torch.zeros_like(tree.r_sum),
                    tree.running, no, no, torch.zeros_like(tree.n_steps), zeros)


def _build_subtree(
    ctx: _Context, tree: _Tree, ckpts: _Checkpoints, going_right: torch.Tensor, uniforms: torch.Tensor
) -> _Subtree:
    """Build a leaf per row of ``uniforms`` ``(2**depth, C)`` from the outer edge of each running
    chain's trajectory."""
    step_size = ctx.step_size
    signed = torch.where(going_right, step_size, -step_size).unsqueeze(-1)
    sub = ctx.empty._replace(edge=where_chains(going_right, tree.right, tree.left), proposal=tree.proposal,
                             active=tree.running)
    return ctx.build_leaves(ctx.metric, ctx.energy0, signed, sub, ckpts, uniforms)


def _combine(tree: _Tree, sub: _Subtree, going_right: torch.Tensor, uniform: torch.Tensor) -> _Tree:
    """Merge a finished subtree into the trajectory (biased progressive sampling).

    A chain that was no longer running built nothing: its subtree still holds the edge it started
    from, zero momentum sum, zero steps and log weight ``-inf`` (so it is never taken and its
    ``logaddexp`` is its own weight). The updates below therefore need no mask for it, except
    where it would still turn or deepen.
    """
    run = tree.running
    kept = ~(sub.turning | sub.diverging)
    # the subtree's sample replaces the trajectory's with probability min(1, w_sub / w_tree);
    # uniform < 1, so comparing it with the unclamped ratio decides the same
    take = kept & (uniform < torch.exp(sub.log_weight - tree.log_weight))
    left = where_chains(going_right, tree.left, sub.edge)
    right = where_chains(going_right, sub.edge, tree.right)
    r_sum = tree.r_sum + sub.r_sum
    return _Tree(
        left=left,
        right=right,
        proposal=where_chains(take, sub.proposal, tree.proposal),
        log_weight=torch.logaddexp(tree.log_weight, sub.log_weight),
        r_sum=r_sum,
        running=run & kept & ~_is_turning(left, right, r_sum),
        diverging=tree.diverging | sub.diverging,
        depth=tree.depth + run,
        n_steps=tree.n_steps + sub.n_steps,
        sum_accept=tree.sum_accept + sub.sum_accept,
    )


def _flat_combine(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """:func:`_combine` of flat tensors: a packed trajectory, a packed subtree, the direction
    and the uniform (what :class:`Fused` records)."""
    tree = _unpack_tree(flat)
    sub = _unpack_subtree(flat[_TREE_SIZE:])
    going_right, uniform = flat[_TREE_SIZE + _SUBTREE_SIZE:]
    return _pack_tree(_combine(tree, sub, going_right, uniform))


def _initial_tree(state: PhaseState, metric: Metric, streams: ChainStreams) -> _Tree:
    """Draw momenta and wrap the current state as a one-point trajectory."""
    point, energy0 = start_point(state, metric, streams)
    p = point.p
    zeros = torch.zeros_like(energy0)
    no = torch.zeros_like(energy0, dtype=torch.bool)
    counts = torch.zeros_like(energy0, dtype=torch.int64)
    proposal = _Proposal(state.z, state.logp, state.grad, energy0)
    return _Tree(point, point, proposal, zeros, p, ~no, no, counts, counts, zeros)


def nuts_transition(
    logp_and_grad: LogDensityFn,
    state: PhaseState,
    step_size: torch.Tensor,
    metric: Metric,
    *,
    streams: ChainStreams,
    max_tree_depth: int,
    build_leaves: BuildLeaves | None = None,
    combine: Combine | None = None,
) -> Transition:
    """One multinomial NUTS transition for all chains in lockstep.

    Parameters
    ----------
    logp_and_grad : LogDensityFn
        Batched log density and gradient, called once per leapfrog step.
    state : PhaseState
        Current positions ``(C, D)`` with their log densities and gradients.
    step_size : torch.Tensor
        Per-chain step sizes ``(C,)``.
    metric : Metric
        Per-chain metric.
    streams : ChainStreams
        Source of all randomness: a chain draws its momenta at every transition and, at each
        doubling it takes part in, a direction, the uniform that decides whether the new
        subtree's proposal is taken, and one uniform per leaf, so that what it draws depends on
        its own trajectory only, never on the chains beside it.
    max_tree_depth : int
        Maximum number of trajectory doublings.
    build_leaves : BuildLeaves or None
        The leaf loop, possibly recorded (:class:`FusedLeaves`); None runs it eagerly
        (:func:`eager_leaves`).
    combine : Combine or None
        Merges each subtree into the trajectory, possibly recorded (:meth:`FusedLeaves.combine`);
        None runs :func:`_combine` eagerly.

    Returns
    -------
    Transition
        New state and per-chain statistics.
    """
    if build_leaves is None:
        build_leaves = eager_leaves(logp_and_grad)
    if combine is None:
        combine = _combine
    tree = _initial_tree(state, metric, streams)
    energy0 = tree.proposal.energy
    chains, dim = state.z.shape
    buffer = state.z.new_zeros((chains, max_tree_depth, dim))
    ckpts = _Checkpoints(buffer, torch.zeros_like(buffer))
    ctx = _Context(build_leaves, step_size, energy0, metric, _empty_subtree(tree))
    for depth in range(max_tree_depth):
        if depth > 0 and not bool(tree.running.any()):
            break
        # a stopped chain draws nothing: it builds no leaf, and its direction and take are moot
        uniforms = streams.uniform(2 + (1 << depth), None if depth == 0 else tree.running).T.contiguous()
        going_right = uniforms[0] < 0.5
        sub = _build_subtree(ctx, tree, ckpts, going_right, uniforms[2:])
        tree = combine(tree, sub, going_right, uniforms[1])
    prop = tree.proposal
    accept_prob = tree.sum_accept / tree.n_steps.clamp(min=1)
    # copies: a recorded merge's outputs live in buffers that its call after next writes again
    new_state = PhaseState(prop.z.clone(), prop.logp.clone(), prop.grad.clone())
    return Transition(new_state, tree.diverging.clone(), prop.energy.clone(), tree.depth.clone(),
                      tree.n_steps.clone(), accept_prob)
