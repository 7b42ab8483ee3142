"""Batched multi-chain leapfrog integrator, NUTS tree building and static HMC transitions."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import torch

from bayesgen._replay import Fused, layout_of, tracing
from bayesgen.inference._numerical import is_numerical_error

LogDensityFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: Energy error above which a leapfrog step is declared divergent (Stan and NumPyro use 1000).
MAX_DELTA_ENERGY = 1000.0

_T = TypeVar("_T", bound=tuple)


class Metric(NamedTuple):
    """Per-chain ``(C, D)`` diagonal or ``(C, D, D)`` dense inverse mass matrix, with its lower
    Cholesky factor (``None`` when diagonal)."""

    inverse_mass_matrix: torch.Tensor
    cholesky: torch.Tensor | None


class PhaseState(NamedTuple):
    """Position of every chain with its log density and gradient (each leading dim ``C``)."""

    z: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor


class Transition(NamedTuple):
    """Outcome of one batched transition: the new state and per-chain ``(C,)`` statistics."""

    state: PhaseState
    diverging: torch.Tensor
    energy: torch.Tensor
    tree_depth: torch.Tensor
    n_steps: torch.Tensor
    accept_prob: torch.Tensor


class PhasePoint(NamedTuple):
    """A point of phase space, with velocity ``M^{-1} p``, log density and gradient."""

    z: torch.Tensor
    p: torch.Tensor
    v: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor


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


class _Context(NamedTuple):
    """Quantities fixed during one NUTS transition."""

    build_leaves: BuildLeaves
    step_size: torch.Tensor
    energy0: torch.Tensor
    metric: Metric
    generator: torch.Generator
    empty: _Subtree


class GuardedDensity:
    """A batched log density whose numerical failures reject points instead of ending the run.

    Chains are evaluated as one batch, so one row where the density raises (a covariance matrix
    that is not positive definite, say) raises for the whole batch. On such an error
    (:func:`is_numerical_error`) the rows are evaluated one by one with ``rowwise``, eagerly
    (outside any recorded or compiled path), and a row that raises gets log density ``-inf``
    and gradient zero: the kernels read a non-finite log density as infinite energy, so that
    leapfrog step is a divergence and the chain's proposal is rejected while the other chains
    go on. NaN log densities need no guard: they already count as divergences.

    Programming errors are not swallowed: exceptions that are not numerical propagate, and
    when every row of a batch fails before any evaluation has succeeded (a bug that raises at
    every point), the original error is re-raised. Once some point has been evaluated (the
    chains' initial points always are), a batch whose rows all fail is a batch of bad points:
    with one chain, that is every failure.

    Calls made while a larger step is being recorded (:func:`bayesgen._replay.tracing`) go
    straight to ``fn``, so that the recording holds the density's operations and nothing else;
    a recording cannot catch errors, so the callers of recorded steps (:class:`FusedLeaves`,
    :class:`FusedHMCStep`) rerun a step that raises eagerly, through this guard.

    Parameters
    ----------
    fn : LogDensityFn
        The batched density ``x (C, D) -> (logp (C,), grad (C, D))``.
    rowwise : LogDensityFn, optional
        The eager density for one row ``(1, D)``; ``fn`` if None.

    Attributes
    ----------
    failures : int
        Rows that raised so far (each a rejected point).
    first_error : str or None
        ``"Type: message"`` (first line) of the first failure, for reports.
    succeeded : bool
        Whether some point has been evaluated without error.
    """

    def __init__(self, fn: LogDensityFn, rowwise: LogDensityFn | None = None) -> None:
        self.fn = fn
        self.rowwise = fn if rowwise is None else rowwise
        self.failures = 0
        self.first_error: str | None = None
        self.succeeded = False

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.evaluate(x)

    def evaluate(self, x: torch.Tensor, *, reraise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Log density and gradient at the rows of ``x``, ``-inf`` and zero where a row raises.

        With ``reraise=False`` a batch whose rows all fail is returned too (all ``-inf``), for
        callers that re-draw such points and report the failure themselves
        (:func:`bayesgen.inference._mcmc.initial_points`).
        """
        if tracing():
            return self.fn(x)
        try:
            logp, grad = self.fn(x)
        except Exception as exc:
            if not is_numerical_error(exc):
                raise
            return self._row_by_row(x, exc, reraise)
        self.succeeded = True
        return logp, grad

    def _row_by_row(self, x: torch.Tensor, error: Exception,
                    reraise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate the rows of ``x`` one at a time after the batch raised ``error``."""
        logps, grads, failed = [], [], []
        for row in x.detach():
            try:
                logp, grad = self.rowwise(row[None])
            except Exception as exc:
                if not is_numerical_error(exc):
                    raise
                failed.append(exc)
                logp, grad = row.new_full((1,), -torch.inf), torch.zeros_like(row)[None]
            logps.append(logp.detach().reshape(1))
            grads.append(grad.detach().reshape(1, -1))
        if len(failed) == x.shape[0] and reraise and not self.succeeded:
            raise error
        if len(failed) < x.shape[0]:
            self.succeeded = True
        if failed and self.first_error is None:
            self.first_error = describe_error(failed[0])
        self.failures += len(failed)
        return torch.cat(logps), torch.cat(grads)


def describe_error(exc: BaseException) -> str:
    """``"Type: first line of the message"``, for reports of failed evaluations."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def failure_count(logp_and_grad: LogDensityFn) -> int:
    """Rows that a :class:`GuardedDensity` has rejected so far (0 for other densities)."""
    return getattr(logp_and_grad, "failures", 0)


def make_metric(inverse_mass_matrix: torch.Tensor) -> Metric:
    """Build a :class:`Metric`, factorising a dense ``(C, D, D)`` inverse mass matrix."""
    if inverse_mass_matrix.dim() == 2:
        return Metric(inverse_mass_matrix, None)
    return Metric(inverse_mass_matrix, torch.linalg.cholesky(inverse_mass_matrix))


def velocity(metric: Metric, p: torch.Tensor) -> torch.Tensor:
    """Return ``M^{-1} p`` for momenta ``p`` of shape ``(C, D)``."""
    if metric.cholesky is None:
        return metric.inverse_mass_matrix * p
    return torch.matmul(metric.inverse_mass_matrix, p.unsqueeze(-1)).squeeze(-1)


def kinetic_energy(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Return ``0.5 p^T M^{-1} p`` per chain given momenta and velocities."""
    return 0.5 * (p * v).sum(-1)


def uniform_like(
    like: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Uniform ``[0, 1)`` draws of ``shape`` with the dtype and device of ``like``."""
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def sample_momentum(metric: Metric, generator: torch.Generator) -> torch.Tensor:
    """Draw momenta ``p ~ N(0, M)`` ``(C, D)``: ``z / sqrt(M^{-1})``, or ``L^{-T} z`` (dense)."""
    inv = metric.inverse_mass_matrix
    noise = torch.randn(inv.shape[:2], generator=generator, dtype=inv.dtype, device=inv.device)
    if metric.cholesky is None:
        return noise * torch.rsqrt(inv)
    lower_t = metric.cholesky.mT
    return torch.linalg.solve_triangular(lower_t, noise.unsqueeze(-1), upper=True).squeeze(-1)


def initial_state(logp_and_grad: LogDensityFn, z: torch.Tensor) -> PhaseState:
    """Evaluate the log density at ``z`` ``(C, D)``, checking the shapes it returns."""
    logp, grad = logp_and_grad(z)
    if logp.shape != z.shape[:1] or grad.shape != z.shape:
        raise ValueError(
            f"logp_and_grad must return shapes {tuple(z.shape[:1])} and {tuple(z.shape)}, "
            f"got {tuple(logp.shape)} and {tuple(grad.shape)}"
        )
    return PhaseState(z, logp.detach(), grad.detach())


def leapfrog(
    logp_and_grad: LogDensityFn, point: PhasePoint, step_size: torch.Tensor, metric: Metric
) -> PhasePoint:
    """Take one leapfrog step per chain with signed step sizes ``step_size`` of shape ``(C, 1)``."""
    half = 0.5 * step_size
    p_half = point.p + half * point.grad
    z = point.z + step_size * velocity(metric, p_half)
    logp, grad = logp_and_grad(z)
    logp, grad = logp.detach(), grad.detach()
    p = p_half + half * grad
    return PhasePoint(z, p, velocity(metric, p), logp, grad)


def energy_error(point: PhasePoint, energy0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the Hamiltonian at ``point`` and ``H - H0`` (non-finite errors become ``+inf``)."""
    energy = kinetic_energy(point.p, point.v) - point.logp
    delta = energy - energy0
    return energy, torch.where(torch.isfinite(delta), delta, torch.inf)


def _where(mask: torch.Tensor, new: _T, old: _T) -> _T:
    """Field-wise ``torch.where`` over two named tuples of per-chain tensors."""
    column = mask.unsqueeze(-1)
    fields = (torch.where(mask if n.dim() == 1 else column, n, o) for n, o in zip(new, old))
    return type(new)(*fields)


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
        edge=_where(alive, leaf, sub.edge),
        proposal=_where(take, proposal, sub.proposal),
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


def _metric_tensors(metric: Metric) -> tuple[torch.Tensor, ...]:
    """The metric's one (diagonal) or two (dense) tensors; inverse of :func:`_bind_metric`."""
    return tuple(metric) if metric.cholesky is not None else (metric.inverse_mass_matrix,)


def _bind_metric(flat: Sequence[torch.Tensor], dense: bool) -> tuple[Metric, Sequence[torch.Tensor]]:
    """Take the metric's one (diagonal) or two (dense) tensors off the front of ``flat``."""
    return (Metric(flat[0], flat[1]), flat[2:]) if dense else (Metric(flat[0], None), flat[1:])


def _bind_where_defined(fused: Fused, args: Sequence[torch.Tensor],
                        logp_and_grad: LogDensityFn) -> Callable[..., tuple[torch.Tensor, ...]]:
    """``fused.bind(args)``, but a recording that failed because the density raised at ``args``
    is forgotten, so that the next call with this layout records again.

    :meth:`Fused.bind` runs the step eagerly (the guard rejects the failing chains) and records
    it at the same point, where the density raises again: the recording fails and that layout
    would run eagerly, 10-20 times slower, for the rest of the run. A failed recording at a point
    where the guard counted no failure is a step that cannot be recorded, and stays eager.
    """
    failures = failure_count(logp_and_grad)
    step = fused.bind(args)
    if step is fused.fn and failure_count(logp_and_grad) > failures:
        fused.replays.pop(layout_of(args), None)
    return step


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
    """:data:`BuildLeaves` whose leaf step is recorded at its first call and replayed after.

    Leapfrog, density, gradient and the tree bookkeeping of one leaf become one recorded graph
    run by TorchScript, or compiled by TorchInductor with ``compile`` or after
    :meth:`compile` (:class:`bayesgen._replay.Fused`); where that is not possible the step runs
    eagerly. The loop over leaves passes the replay's flat outputs straight back in; it checks
    the arguments' layout once per subtree (10 us for 26 tensors) and remembers, per layout, the
    replay and that its outputs come back laid out as its inputs. ``logp_and_grad`` should have
    been validated as recordable (a ``bg.LogDensity`` whose ``value_and_grad`` replays). A
    compiled replay reuses its output buffers every other call, so the subtree returned is only
    valid until leaves are built again: :func:`_combine` merges it into the trajectory (new
    tensors) before that.
    """

    def __init__(self, logp_and_grad: LogDensityFn, compile: bool = False) -> None:  # noqa: A002
        self.logp_and_grad = logp_and_grad
        self.fused = {dense: Fused(self._flat_step(dense), compile=compile) for dense in (False, True)}
        # per argument layout: the bound replay, and whether its outputs come back laid out as its
        # inputs (None until its first call), so that each subtree checks the layout only once
        self._bound: dict[tuple[Any, ...], tuple[Callable[..., tuple[torch.Tensor, ...]], bool | None]] = {}

    def compile(self) -> None:
        """Compile the recorded step with TorchInductor from now on."""
        for fused in self.fused.values():
            fused.compile_recordings()
        self._bound.clear()

    def _flat_step(self, dense: bool) -> Callable[..., tuple[torch.Tensor, ...]]:
        def step(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
            metric, rest = _bind_metric(flat, dense)
            energy0, signed, state, (test, store, uniform) = rest[0], rest[1], rest[2:-3], rest[-3:]
            sub, ckpts = subtree_step(self.logp_and_grad, metric, energy0, signed, *_unpack_state(state),
                                      test, store, uniform)
            return (*_pack(sub, ckpts), sub.active.any())

        return step

    def __call__(self, metric: Metric, energy0: torch.Tensor, signed: torch.Tensor, sub: _Subtree,
                 ckpts: _Checkpoints, uniforms: torch.Tensor) -> _Subtree:
        fused = self.fused[metric.cholesky is not None]
        head = (*_metric_tensors(metric), energy0, signed)
        state = _pack(sub, ckpts)
        n_leaves, size = uniforms.shape[0], ckpts.v.shape[1]
        step, stable = fused.fn, False
        for leaf_idx, uniform in enumerate(uniforms.unbind(0)):
            test, store = _checkpoint_masks(leaf_idx, size, uniforms.device)
            args = (*head, *state, test, store, uniform)
            if not stable:  # until the outputs are laid out as the inputs, look the replay up
                key = layout_of(args)
                step, stable = self._bound.get(key) or (_bind_where_defined(fused, args, self.logp_and_grad), None)
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
                if stable is None and step is fused.fn and key not in fused.replays:
                    stable = False  # the recording was put off (_bind_where_defined): try again
                elif stable is None:
                    stable = layout_of(out[:_STATE_SIZE]) == layout_of(state)
                    self._bound[key] = (step, stable)
            state = out[:_STATE_SIZE]
            if leaf_idx + 1 < n_leaves and not bool(out[_STATE_SIZE]):
                break
        return _unpack_subtree(state)


def _empty_subtree(tree: _Tree) -> _Subtree:
    """A subtree with no leaves yet, made once per transition: every doubling starts from it
    with its own edge, proposal and running chains."""
    no = torch.zeros_like(tree.running)
    zeros = torch.zeros_like(tree.log_weight)
    return _Subtree(tree.left, tree.proposal, torch.full_like(zeros, -torch.inf), torch.zeros_like(tree.r_sum),
                    tree.running, no, no, torch.zeros_like(tree.n_steps), zeros)


def _build_subtree(
    ctx: _Context, tree: _Tree, ckpts: _Checkpoints, going_right: torch.Tensor, depth: int
) -> _Subtree:
    """Build ``2**depth`` leaves from the outer edge of each running chain's trajectory."""
    step_size = ctx.step_size
    signed = torch.where(going_right, step_size, -step_size).unsqueeze(-1)
    n_leaves = 1 << depth
    uniforms = uniform_like(step_size, (n_leaves, step_size.shape[0]), ctx.generator)
    sub = ctx.empty._replace(edge=_where(going_right, tree.right, tree.left), proposal=tree.proposal,
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
    left = _where(going_right, tree.left, sub.edge)
    right = _where(going_right, sub.edge, tree.right)
    r_sum = tree.r_sum + sub.r_sum
    return _Tree(
        left=left,
        right=right,
        proposal=_where(take, sub.proposal, tree.proposal),
        log_weight=torch.logaddexp(tree.log_weight, sub.log_weight),
        r_sum=r_sum,
        running=run & kept & ~_is_turning(left, right, r_sum),
        diverging=tree.diverging | sub.diverging,
        depth=tree.depth + run,
        n_steps=tree.n_steps + sub.n_steps,
        sum_accept=tree.sum_accept + sub.sum_accept,
    )


def start_point(
    state: PhaseState, metric: Metric, generator: torch.Generator
) -> tuple[PhasePoint, torch.Tensor]:
    """Draw fresh momenta at ``state``; return the phase point and its Hamiltonian ``(C,)``."""
    p = sample_momentum(metric, generator)
    point = PhasePoint(state.z, p, velocity(metric, p), state.logp, state.grad)
    return point, kinetic_energy(p, point.v) - state.logp


def _initial_tree(state: PhaseState, metric: Metric, generator: torch.Generator) -> _Tree:
    """Draw momenta and wrap the current state as a one-point trajectory."""
    point, energy0 = start_point(state, metric, generator)
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
    generator: torch.Generator,
    max_tree_depth: int,
    build_leaves: BuildLeaves | None = None,
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
    generator : torch.Generator
        Source of all randomness.
    max_tree_depth : int
        Maximum number of trajectory doublings.
    build_leaves : BuildLeaves or None
        The leaf loop, possibly recorded (:class:`FusedLeaves`); None runs it eagerly
        (:func:`eager_leaves`).

    Returns
    -------
    Transition
        New state and per-chain statistics.
    """
    if build_leaves is None:
        build_leaves = eager_leaves(logp_and_grad)
    tree = _initial_tree(state, metric, generator)
    energy0 = tree.proposal.energy
    chains, dim = state.z.shape
    buffer = state.z.new_zeros((chains, max_tree_depth, dim))
    ckpts = _Checkpoints(buffer, torch.zeros_like(buffer))
    ctx = _Context(build_leaves, step_size, energy0, metric, generator, _empty_subtree(tree))
    for depth in range(max_tree_depth):
        if depth > 0 and not bool(tree.running.any()):
            break
        uniforms = uniform_like(state.logp, (2, chains), generator)
        going_right = uniforms[0] < 0.5
        sub = _build_subtree(ctx, tree, ckpts, going_right, depth)
        tree = _combine(tree, sub, going_right, uniforms[1])
    prop = tree.proposal
    accept_prob = tree.sum_accept / tree.n_steps.clamp(min=1)
    new_state = PhaseState(prop.z, prop.logp, prop.grad)
    return Transition(new_state, tree.diverging, prop.energy, tree.depth, tree.n_steps, accept_prob)


def hmc_step(
    logp_and_grad: LogDensityFn,
    metric: Metric,
    energy0: torch.Tensor,
    step: torch.Tensor,
    point: PhasePoint,
    ok: torch.Tensor,
) -> tuple[PhasePoint, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One leapfrog step of static HMC: chains no longer ``ok`` (diverged) stay frozen.

    Returns the new point, the updated ``ok`` flags, the Hamiltonian of the step and its error
    (``+inf`` where not ok). Pure, like :func:`subtree_step`, so that it can be recorded.
    """
    new = leapfrog(logp_and_grad, point, step, metric)
    energy, delta = energy_error(new, energy0)
    ok = ok & (delta <= MAX_DELTA_ENERGY)
    return _where(ok, new, point), ok, energy, torch.where(ok, delta, torch.inf)


#: ``hmc_step`` with its density bound: ``(metric, energy0, step, point, ok) -> (point, ok, energy, delta)``.
HMCStep = Callable[..., tuple[PhasePoint, torch.Tensor, torch.Tensor, torch.Tensor]]


class FusedHMCStep:
    """:func:`hmc_step` bound to ``logp_and_grad``, recorded and replayed as :class:`FusedLeaves` is
    (compiled with TorchInductor with ``compile``); a call's outputs are valid until the call
    after next."""

    def __init__(self, logp_and_grad: LogDensityFn, compile: bool = False) -> None:  # noqa: A002
        self.logp_and_grad = logp_and_grad
        self.fused = {dense: Fused(self._flat_step(dense), compile=compile) for dense in (False, True)}

    def _flat_step(self, dense: bool) -> Callable[..., tuple[torch.Tensor, ...]]:
        def step(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
            metric, rest = _bind_metric(flat, dense)
            energy0, step_size, point, ok = rest[0], rest[1], rest[2:-1], rest[-1]
            point, ok, energy, delta = hmc_step(self.logp_and_grad, metric, energy0, step_size,
                                                PhasePoint(*point), ok)
            return (*point, ok, energy, delta)

        return step

    def __call__(self, metric: Metric, energy0: torch.Tensor, step_size: torch.Tensor, point: PhasePoint,
                 ok: torch.Tensor) -> tuple[PhasePoint, torch.Tensor, torch.Tensor, torch.Tensor]:
        fused = self.fused[metric.cholesky is not None]
        args = (*_metric_tensors(metric), energy0, step_size, *point, ok)
        step = _bind_where_defined(fused, args, self.logp_and_grad)
        try:
            out = step(*args)
        except Exception as exc:
            if step is fused.fn or not is_numerical_error(exc):
                raise
            out = fused.fn(*args)  # a recorded step cannot catch: rerun it eagerly (guarded density)
        return PhasePoint(*out[:5]), out[5], out[6], out[7]


def hmc_transition(
    logp_and_grad: LogDensityFn,
    state: PhaseState,
    step_size: torch.Tensor,
    metric: Metric,
    *,
    generator: torch.Generator,
    num_steps: int,
    leapfrog_step: HMCStep | None = None,
) -> Transition:
    """One static HMC transition (``num_steps`` leapfrog steps, Metropolis test) for all chains.

    A chain whose energy error exceeds :data:`MAX_DELTA_ENERGY` (or is non-finite) at any step is
    frozen, flagged divergent and rejected. Parameters are as for :func:`nuts_transition`;
    ``leapfrog_step`` is :func:`hmc_step` bound to ``logp_and_grad`` (None: run it eagerly).
    """
    if leapfrog_step is None:
        leapfrog_step = functools.partial(hmc_step, logp_and_grad)
    tree = _initial_tree(state, metric, generator)
    energy0 = tree.proposal.energy
    uniform, jitter = uniform_like(energy0, (2,) + energy0.shape, generator)
    # jitter the step size by +-20% so that a fixed trajectory length cannot lock onto a
    # period of the posterior (Neal 2011, "MCMC using Hamiltonian dynamics", section 5.4.2.3)
    column = (step_size * (0.8 + 0.4 * jitter)).unsqueeze(-1)
    point, ok = tree.left, torch.isfinite(energy0)
    energy, delta = energy0, torch.zeros_like(energy0)
    for _ in range(num_steps):
        point, ok, energy, delta = leapfrog_step(metric, energy0, column, point, ok)
    accept_prob = torch.exp(-delta).clamp(max=1.0)
    accept = uniform < accept_prob
    new_state = _where(accept, PhaseState(point.z, point.logp, point.grad), state)
    steps = torch.full_like(energy0, num_steps, dtype=torch.int64)
    energy = torch.where(accept, energy, energy0)
    return Transition(new_state, ~ok, energy, torch.zeros_like(steps), steps, accept_prob)
