"""The batched, differentiable log density of a Pyro program (DESIGN.md section 4)."""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator, Mapping

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from opt_einsum import get_symbol
from pyro.infer import config_enumerate
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import scale_and_mask
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.uncondition_messenger import UnconditionMessenger
from torch.distributions.transforms import Transform

from bayesgen._replay import Replayed
from bayesgen._transforms import bijection
from bayesgen.program import (BATCH_PLATE, LastSite, is_deterministic, is_latent, is_subsample, on_device,
                              support_bijection, trace_prototype)

__all__ = ["CHUNK", "CHUNK_ELEMENTS", "LogDensity", "SiteLayout", "Uncondition", "factor_tree", "log_factor",
           "per_draw", "plate_symbols", "score_trace"]

#: Points per program run when mapping or post-processing many draws at once...
CHUNK = 1000
#: ... fewer where the draws times the elements of the largest data tensor would pass this
#: bound: a program written to broadcast over draws, such as a regression's ``(X * beta).sum(-1)``,
#: materialises a draws x observations x covariates tensor in every eager run (1000 draws of a
#: 20000 x 50 regression's predictions: 9.3 GB). 2**24 float64 elements are 134 MB.
CHUNK_ELEMENTS = 2**24


#: Torch's words where a tensor of several values met code that takes one (``if z:``, ``z.item()``).
_ONE_VALUE_EXPECTED = ("cannot be converted to Scalar", "Boolean value of Tensor with more than one value",
                       "only one element tensors can be converted")


@dataclass(frozen=True)
class SiteLayout:
    """Where one continuous latent site lives in the flat unconstrained vector.

    Attributes
    ----------
    name : str
        The sample site's name.
    shape : tuple of int
        Shape of the site's constrained value (batch and event dims, no chain/draw).
    unconstrained_shape : tuple of int
        Shape of its unconstrained value (differs from ``shape`` for e.g. simplexes).
    offset, size : int
        Slice ``[offset, offset + size)`` of the flat vector.
    pad : int
        Number of singleton dims between the outer batch plate and the site's own dims.
    """

    name: str
    shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]
    offset: int
    size: int
    pad: int


class Uncondition(UnconditionMessenger):
    """Sample observed sites from their distributions, but keep ``pyro.deterministic`` sites
    (observed Deltas) as computed."""

    def _pyro_sample(self, msg: Any) -> None:
        if not is_deterministic(msg):
            super()._pyro_sample(msg)


class _SetLatents(Messenger):
    """Fix latent sites to given values; ``values_for(msg)`` returns a value or None."""

    def __init__(self, values_for: Callable[[Any], torch.Tensor | None]) -> None:
        super().__init__()
        self.values_for = values_for

    def _pyro_sample(self, msg: Any) -> None:
        if msg["is_observed"] or is_deterministic(msg):
            return
        value = self.values_for(msg)
        if value is not None:
            msg["value"] = value
            msg["done"] = True
            msg["infer"] = {**msg["infer"], "_bg_fixed": True}


class _Enumerate(EnumMessenger):
    """Pyro's parallel enumeration (``poutine.enum``), able to run under ``torch.func.vmap``.

    After each sample site Pyro notes which enumeration dims the site's value has, reading its
    shape as ``value.data.shape``, and a tensor that vmap maps refuses ``.data``. The shape is all
    that is read, so a mapped value is shown to Pyro as a meta tensor (no memory) of its shape,
    the shape of one row, which is what the unbatched program has.
    """

    def _pyro_post_sample(self, msg: Any) -> None:
        value = msg["value"]
        if not (isinstance(value, torch.Tensor) and torch._C._functorch.is_batchedtensor(value)):
            super()._pyro_post_sample(msg)
            return
        msg["value"] = torch.empty(value.shape, dtype=value.dtype, device="meta")
        try:
            super()._pyro_post_sample(msg)
        finally:
            msg["value"] = value


class _Reached(Exception):
    """Raised by :class:`_StopAfter` to end a run of the program early."""


class _StopAfter(Messenger):
    """End the program at its first sample site after all of ``names`` have run.

    :meth:`LogDensity.constrain` needs only the latent and deterministic sites; the
    likelihood that usually follows them is often most of a run's cost (the logits of a
    5000 x 20 regression for a thousand draws at once).
    """

    def __init__(self, names: Collection[str]) -> None:
        super().__init__()
        self.pending = set(names)

    def _pyro_sample(self, msg: Any) -> None:
        if not self.pending:
            raise _Reached

    def _pyro_post_sample(self, msg: Any) -> None:
        self.pending.discard(msg["name"])


def _sum_to_batch(log_prob: torch.Tensor, batch_size: int, batch_dim: int) -> torch.Tensor:
    """Sum a log-prob tensor over every dim except the outer batch plate's, giving ``(batch,)``."""
    ndim = -batch_dim
    if log_prob.dim() < ndim:
        log_prob = log_prob.reshape((1,) * (ndim - log_prob.dim()) + log_prob.shape)
    return log_prob.reshape(log_prob.shape[0], -1).sum(-1).expand(batch_size)


def _scored(name: str, site: Any) -> bool:
    """Sites whose log-prob is part of the joint density."""
    return not is_deterministic(site) and not is_subsample(site)


def score_trace(trace: Trace) -> None:
    """Compute every scored site's log-prob, without Pyro's NaN warnings (NaN is handled by callers)
    and without checking the values against each distribution's support: the values are the
    constrained images of unconstrained points, inside it by construction, and the check reads a
    tensor into Python, which keeps the density from being recorded (:mod:`bayesgen._replay`).
    Distributions built before the program ran (a ``PyroSample`` prior on a module) check by
    default, so their flag is switched off while they are scored and restored after.

    Parameters
    ----------
    trace : pyro.poutine.Trace
        Scored in place: each scored site gets its ``log_prob`` (deterministic and subsample
        sites get none).
    """
    checking = [fn for site in trace.nodes.values() if site["type"] == "sample"
                for fn in _nested(site["fn"]) if getattr(fn, "_validate_args", False)]
    for fn in checking:
        fn._validate_args = False
    try:
        with pyro.validation_enabled(False):
            trace.compute_log_prob(site_filter=_scored)
    finally:
        for fn in checking:
            fn._validate_args = True


def _nested(fn: Any) -> Iterator[Any]:
    """A distribution and those it wraps (``Independent``, ``ExpandedDistribution``, masks)."""
    while fn is not None:
        yield fn
        fn = getattr(fn, "base_dist", None)


def present_dims(tree: Mapping[frozenset[str], list[torch.Tensor]], symbols: set[str]) -> frozenset[str]:
    """The plate symbols among ``symbols`` that some packed factor has: a plate of size 1 (a batch
    of one point) is dropped by packing and cannot be a contraction target.

    Parameters
    ----------
    tree : mapping of frozenset of str to list of Tensor
        Packed factors by their plate symbols (:func:`factor_tree`).
    symbols : set of str

    Returns
    -------
    frozenset of str
    """
    have = {dim for factors in tree.values() for factor in factors for dim in factor._pyro_dims}
    return frozenset(symbols & have)


def plate_symbols(trace: Trace, site: Mapping[str, Any]) -> frozenset[str]:
    """The symbols of the vectorised plates a site lives in (its ordinal in Pyro's contraction).

    Parameters
    ----------
    trace : pyro.poutine.Trace
        A packed trace (``trace.pack_tensors()``), whose ``plate_to_symbol`` names the plates.
    site : mapping
        One of its sites.

    Returns
    -------
    frozenset of str
    """
    return frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)


def factor_tree(trace: Trace, keep: Callable[[str], bool] = lambda name: True,
                plate_to_symbol: dict[str, str] | None = None,
                factor: Callable[[str, Mapping[str, Any]], torch.Tensor] | None = None,
                ) -> tuple[OrderedDict[frozenset[str], list[torch.Tensor]], set[str]]:
    """The packed log-prob factors of a scored trace, by the set of plate symbols they live in,
    and the symbols of the enumerated dims to sum out: what Pyro's contractions take.

    The one way every contraction in bayesgen (the log density, the pointwise log-likelihood of
    an enumerated program, the discrete marginals) gathers its factors. ``keep`` chooses the
    sites by name; ``plate_to_symbol`` fixes the symbols of some plates
    (``Trace.pack_tensors``); ``factor(name, site)`` gives a site's factor, :func:`log_factor`
    by default.

    Parameters
    ----------
    trace : pyro.poutine.Trace
        A scored trace (:func:`score_trace`); packed here.
    keep : callable, optional
        Site name -> whether its factor enters; by default every site's.
    plate_to_symbol : dict of str to str, optional
        Plate name -> the symbol to give it; by default Pyro chooses.
    factor : callable, optional
        ``factor(name, site)`` -> the site's packed factor; by default :func:`log_factor`.

    Returns
    -------
    tree : OrderedDict of frozenset of str to list of Tensor
        The factors by the set of plate symbols they live in, in trace order.
    sum_dims : set of str
        The symbols of the enumerated dims.
    """
    trace.pack_tensors(plate_to_symbol)
    tree: OrderedDict[frozenset[str], list[torch.Tensor]] = OrderedDict()
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and "packed" in site and "log_prob" in site["packed"] and keep(name):
            value = log_factor(site) if factor is None else factor(name, site)
            tree.setdefault(plate_symbols(trace, site), []).append(value)
    return tree, set(trace.symbol_to_dim) - set(trace.plate_to_symbol.values())


def log_factor(site: Mapping[str, Any]) -> torch.Tensor:
    """The packed log-prob factor of a scored, packed site in the enumerated log joint.

    An enumerated site enters unmasked, as in ``TraceEnum_ELBO``: its distribution is what the sum
    over its values weighs them by. Masked, each value would weigh 1 and the sum count the states
    (log K more per masked step of an HMM whose padded steps are masked, as in Pyro's
    ``examples/hmm.py``), and a masked step inside a chain would pass on a sum rather than a
    marginal. The sites that depend on it keep their mask: that is what leaves their data out.

    Parameters
    ----------
    site : mapping
        A trace site with a ``packed`` entry.

    Returns
    -------
    Tensor
        The packed log-prob, with its ``_pyro_dims``.
    """
    packed = site["packed"]
    if site["infer"].get("_enumerate_dim") is None or packed["mask"] is None:
        return packed["log_prob"]
    return scale_and_mask(packed["unscaled_log_prob"], scale=site["scale"])


def per_draw(value: torch.Tensor, batch_size: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Reshape a value traced under the batch plate to ``(batch, *shape)``.

    A value that did not depend on the batch (e.g. a deterministic of the data only)
    is expanded over it.

    Parameters
    ----------
    value : Tensor
        The site's value in the batched trace.
    batch_size : int
    shape : tuple of int
        The value's shape for one draw.

    Returns
    -------
    Tensor, shape ``(batch_size, *shape)``
    """
    if value.numel() == math.prod(shape):
        return value.reshape(shape).expand((batch_size,) + shape)
    return value.reshape((batch_size,) + shape)



def _subsample_size(site: Mapping[str, Any]) -> int:
    """The items a plate's index site takes in one run: its ``subsample_size``, or the length of
    the indices the program gave as ``subsample=`` (Pyro then records no size)."""
    if site["fn"].subsample_size is not None:
        return int(site["fn"].subsample_size)
    return len(site["value"])


class LogDensity:
    """The joint log density of a Pyro program over a flat unconstrained vector, batched.

    The program is traced once to find its continuous latent sites; each is mapped to
    an unbounded vector through ``biject_to(site.support)``. Evaluations take a batch
    of such vectors, shape ``(batch, dim)``, and run the program ONCE inside an outer
    ``pyro.plate`` over the batch, so K chains or particles cost one program run.
    Discrete latent sites with enumerable support are summed out by parallel
    enumeration (as ``TraceEnum_ELBO`` does).

    Parameters
    ----------
    model : callable
        The Pyro program (a zoo model's is ``bg.get_model(name).model``).
    data : mapping, optional
        Keyword arguments for the program. Tensors are used as they are; numpy arrays and
        lists become tensors on the tensors' device, floats in torch's default floating dtype
        (integers stay integers). ``bg.fit`` chooses the dtype instead (:mod:`bayesgen.dtypes`:
        float64 data are fitted in float64).

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(y=None):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("n", 3):
    ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> ld = LogDensity(model, {"y": torch.zeros(3)})
    >>> ld.dim, [s.name for s in ld.layout]
    (1, ['mu'])
    """

    def __init__(self, model: Callable[..., Any], data: Mapping[str, Any] | None = None) -> None:
        if not callable(model):
            raise TypeError(f"LogDensity takes a Pyro program (a callable), got {model!r}; a zoo model's program "
                            "is bg.get_model(name).model")
        self.model = model
        self.data = dict(data or {})
        arrays = {key: value for key, value in self.data.items() if isinstance(value, (np.ndarray, list, tuple))}
        if arrays:  # as bg.fit takes them
            from bayesgen.validate import to_tensors

            self.data.update(to_tensors(arrays, self.device))
        with on_device(self.device):
            prototype = trace_prototype(model, self.data)
        self.prototype = prototype
        sites = [s for s in prototype.nodes.values() if s["type"] == "sample" and not is_subsample(s)]
        self.max_plate_nesting = max(
            [len(s["fn"].batch_shape) for s in sites]
            + [-f.dim for s in sites for f in s["cond_indep_stack"] if f.dim is not None]
            + [0]
        )
        self.enumerated = [s["name"] for s in sites if is_latent(s) and s["fn"].has_enumerate_support]
        self.layout = self._make_layout([s for s in sites if is_latent(s) and s["name"] not in self.enumerated])
        self.dim = sum(s.size for s in self.layout)
        self.observed = [
            s["name"] for s in sites if s["is_observed"] and not is_deterministic(s)
        ]
        self.deterministic = [s["name"] for s in sites if is_deterministic(s)]
        #: Plates that take a subsample of their items at each run, by ``subsample_size`` or as the
        #: program's own ``subsample=`` indices (wavenet's random windows): name -> (subsample size, size).
        self.subsampled = {s["name"]: (_subsample_size(s), s["fn"].size) for s in prototype.nodes.values()
                           if s["type"] == "sample" and is_subsample(s) and _subsample_size(s) < s["fn"].size}
        self.vectorized = self._check_vectorized()

    def _make_layout(self, sites: list[dict[str, Any]]) -> tuple[SiteLayout, ...]:
        layout, offset = [], 0
        #: Discrete latent sites that cannot be enumerated (a vector of binary units): the density
        #: engines cannot use this program (see :meth:`require_continuous`); Pyro's ELBOs can.
        self.discrete_latents = {site["name"]: type(site["fn"]).__name__ for site in sites
                                 if site["fn"].support.is_discrete}
        for site in sites:
            if site["name"] in self.discrete_latents:
                continue
            shape = tuple(site["value"].shape)
            transform: Transform = support_bijection(site)  # a clear error where torch has no bijection
            unconstrained = tuple(transform.inverse_shape(torch.Size(shape)))
            size = math.prod(unconstrained)
            pad = self.max_plate_nesting - len(site["fn"].batch_shape)
            layout.append(SiteLayout(site["name"], shape, unconstrained, offset, size, pad))
            offset += size
        return tuple(layout)

    # ------------------------------------------------------------------ tracing
    def _batched(self, batch_size: int | None, enumerate: bool = True) -> Callable[..., Any]:
        """The program inside an outer batch plate (``batch_size=None``: the bare program).

        Enumerable discrete sites are marked for parallel enumeration; ``enumerate=False``
        leaves out the enumeration handler itself, so that they are sampled (simulation)
        or left to a handler the caller adds (``pyro.infer.infer_discrete``).
        """
        model = config_enumerate(self.model, "parallel") if self.enumerated else self.model
        batch_dim = -self.max_plate_nesting - 1

        def batched_model(**data: Any) -> Any:
            with pyro.plate(BATCH_PLATE, batch_size, dim=batch_dim):
                return model(**data)

        program = model if batch_size is None else batched_model
        if self.enumerated and enumerate:
            return _Enumerate(first_available_dim=batch_dim - 1)(program)
        return program

    def _trace(self, values_for: Callable[[Any], torch.Tensor | None], batch_size: int | None,
               until: Collection[str] | None = None) -> Trace:
        """Run the program with latent values from ``values_for``; with ``until``, only until those sites ran."""
        program = _SetLatents(values_for)(self._batched(batch_size))
        if until is not None:
            program = _StopAfter(until)(program)
        with on_device(self.device), pyro.validation_enabled(False), poutine.trace() as tracer, \
                contextlib.suppress(_Reached):
            try:
                program(**self.data)
            except (RuntimeError, TypeError) as exc:
                if self.enumerated and any(sign in str(exc) for sign in _ONE_VALUE_EXPECTED):
                    raise type(exc)(f"{exc}: site(s) {', '.join(repr(name) for name in self.enumerated)} are "
                                    "enumerated, so the program runs with all their values at once (a tensor "
                                    "with a dimension of its own), and Python control flow or .item() on them "
                                    "fails; write their effect with tensor operations (index a tensor of "
                                    "parameters by them, torch.where, pyro.ops.indexing.Vindex)") from exc
                raise
        return tracer.trace

    def fixed_program(self, values: Mapping[str, torch.Tensor], *, plated: bool = True,
                      enumerate: bool = True, uncondition: bool = False) -> Callable[..., Any]:
        """The program with latent sites fixed to constrained ``values`` of shape ``(batch, *shape)``.

        It runs under the outer batch plate (``plated=False``: a single point, bare
        program). With ``enumerate=False`` enumerable discrete sites are sampled rather
        than enumerated; with ``uncondition=True`` observed sites are sampled too, in the
        shape of their data (replicated data for the posterior predictive).

        Parameters
        ----------
        values : mapping of str to Tensor, each of shape ``(batch, *shape)``
            Constrained values of latent sites, by name; a latent site not among them is drawn (or
            enumerated) as the program draws it. The batch size is the first value's leading dim
            (1 where ``values`` is empty).
        plated : bool, default True
            Run under the outer batch plate; False runs one point (batch 1) through the bare
            program, the values' leading dim dropped.
        enumerate : bool, default True
            Enumerate enumerable discrete sites in parallel; False samples them.
        uncondition : bool, default False
            Sample observed sites too (``pyro.deterministic`` sites stay as computed).

        Returns
        -------
        callable
            The program, taking the program's keyword arguments.
        """
        batch_size = next(iter(values.values())).shape[0] if values else 1
        pads = {s.name: s.pad for s in self.layout}

        def values_for(msg: Any) -> torch.Tensor | None:
            value = values.get(msg["name"])
            if value is None:
                return None
            if not plated:
                return value.reshape(value.shape[1:])
            pad = pads.get(msg["name"], self.max_plate_nesting - len(msg["fn"].batch_shape))
            return value.reshape((batch_size,) + (1,) * pad + value.shape[1:])

        program = self._batched(batch_size if plated else None, enumerate)
        return _SetLatents(values_for)(Uncondition()(program) if uncondition else program)

    def trace_unconstrained(self, u: torch.Tensor, plated: bool = True,
                            until: Collection[str] | None = None) -> tuple[Trace, torch.Tensor]:
        """Run the program at a batch of unconstrained points.

        Returns the trace and the log|det Jacobian| of the maps to each support, ``(batch,)``.
        With ``plated=False`` the single point ``u`` of shape ``(1, dim)`` is run through the
        bare program, with no batch plate. With ``until`` the run ends at the first sample
        site after those sites (the trace then holds only the sites before it).

        Parameters
        ----------
        u : Tensor, shape ``(batch, dim)``
            Unconstrained points, one per row (``(1, dim)`` with ``plated=False``).
        plated : bool, default True
            Run under the outer batch plate of size ``batch``.
        until : collection of str, optional
            Site names after which the run may stop; by default the whole program runs.

        Returns
        -------
        trace : pyro.poutine.Trace
            The run, latent sites at the constrained images of ``u`` (not yet scored).
        log_jac : Tensor, shape ``(batch,)``
            The log|det Jacobian| of the maps from ``u`` to the constrained values.
        """
        batch_size = u.shape[0]
        view = (lambda site: (batch_size,) + (1,) * site.pad) if plated else (lambda site: ())
        pieces = {s.name: s for s in self.layout}
        log_jac = torch.zeros(batch_size, dtype=u.dtype, device=u.device)

        def values_for(msg: Any) -> torch.Tensor | None:
            nonlocal log_jac
            site = pieces.get(msg["name"])
            if site is None:
                return None
            piece = u[:, site.offset : site.offset + site.size]
            piece = piece.reshape(view(site) + site.unconstrained_shape)
            transform = bijection(msg["fn"].support)
            value = transform(piece)
            ldj = transform.log_abs_det_jacobian(piece, value)
            log_jac = log_jac + ldj.reshape(batch_size, -1).sum(-1)
            return value

        trace = self._trace(values_for, batch_size if plated else None, until)
        self._check_static(trace)
        return trace, log_jac

    def trace_constrained(self, values: Mapping[str, torch.Tensor], data: Mapping[str, Any] | None = None,
                          plated: bool = True, enumerate: bool = True, uncondition: bool = False) -> Trace:
        """Run the program with latent sites fixed to constrained ``values`` of shape ``(batch, *shape)``.

        ``data`` replaces the program's keyword arguments (e.g. new covariates for prediction).
        With ``plated=False`` a single point (batch 1) runs through the bare program; with
        ``enumerate=False`` enumerable discrete sites are sampled and with ``uncondition=True``
        observed sites too (see ``fixed_program``).

        Parameters
        ----------
        values : mapping of str to Tensor, each of shape ``(batch, *shape)``
            Constrained values of latent sites, by name.
        data : mapping, optional
            The program's keyword arguments; by default those this density was made with.
        plated, enumerate, uncondition : bool, default True, True, False
            As for :meth:`fixed_program`.

        Returns
        -------
        pyro.poutine.Trace
            The run (not scored).
        """
        program = self.fixed_program(values, plated=plated, enumerate=enumerate, uncondition=uncondition)
        with on_device(self.device), pyro.validation_enabled(False):
            return poutine.trace(program).get_trace(**(self.data if data is None else data))

    def _check_static(self, trace: Trace) -> None:
        for site in trace.nodes.values():
            if site["type"] == "sample" and is_latent(site) and site["name"] not in self.enumerated \
                    and not site["infer"].get("_bg_fixed"):
                raise ValueError(
                    f"latent site '{site['name']}' did not appear in the first trace of the program; "
                    "bayesgen needs the set of latent sites to be the same on every run"
                )

    # ------------------------------------------------------------ log density
    def log_density(self, u: torch.Tensor, *, jacobian: bool = True, prior: bool = True) -> torch.Tensor:
        """Log joint density at a batch of unconstrained points.

        Parameters
        ----------
        u : Tensor, shape ``(batch, dim)``
            Unconstrained points, one per row (layout order, :attr:`layout`).
        jacobian : bool, default True
            Add the log|det Jacobian| of the unconstraining maps (True for sampling and
            variational inference; False for MAP/MLE in the constrained space).
        prior : bool, default True
            Include the prior terms of the continuous latent sites (False gives the
            likelihood, with enumerated discrete sites still summed out).

        Returns
        -------
        Tensor, shape ``(batch,)``
            The log density of each row (differentiable with respect to ``u``).
        """
        if u.dim() != 2 or u.shape[1] != self.dim:
            raise ValueError(f"expected unconstrained points of shape (batch, {self.dim}), got {tuple(u.shape)}")
        if self.vectorized:
            return self._log_density(u, jacobian, prior, True)
        if self.mapped:
            return self._mapped_log_density(u, jacobian, prior)
        return torch.cat([self._log_density(row[None], jacobian, prior, False) for row in u])

    def _mapped_log_density(self, u: torch.Tensor, jacobian: bool, prior: bool) -> torch.Tensor:
        """The program run at one point, vectorised over the rows of ``u`` by ``torch.func.vmap``
        (one random state for all rows: a plate that subsamples takes one minibatch, as under the
        batch plate). Programs with enumerated sites: see :meth:`_mapped_contraction`."""
        if self.enumerated:
            return self._mapped_contraction(u, jacobian, prior)

        def one(row: torch.Tensor) -> torch.Tensor:
            return self._log_density(row[None], jacobian, prior, False)[0]

        return torch.func.vmap(one, randomness="same")(u)

    def _mapped_contraction(self, u: torch.Tensor, jacobian: bool, prior: bool) -> torch.Tensor:
        """:meth:`_mapped_log_density` of a program with enumerated sites: vmap maps the program
        only up to its packed log-prob factors, which come out with the rows as their leading dim;
        that dim then joins Pyro's contraction as a plate, as the batch plate does in a batched
        run.

        The contraction itself stays outside vmap because Pyro's log-space einsum takes its
        logarithm through an ``autograd.Function`` without a vmap rule
        (``pyro.ops.special.safe_log``), which vmap refuses to map. A user's HMM written as Pyro's
        ``examples/hmm.py`` (``probs_x[x]`` indexes the parameter with the enumerated state, which
        cannot broadcast over an outer batch plate) takes this path.
        """
        skip = set() if prior else {s.name for s in self.layout}
        rows = get_symbol(0)  # the symbol of the rows' plate, left free in each row's packing
        labels: list[tuple[frozenset[str], str]] = []
        sum_dims: set[str] = set()

        def factors(row: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
            trace, log_jac = self.trace_unconstrained(row[None], plated=False)
            score_trace(trace)
            tree, enumerated = factor_tree(trace, lambda name: name not in skip, {BATCH_PLATE: rows})
            labels[:] = [(ordinal | {rows}, factor._pyro_dims)
                         for ordinal, group in tree.items() for factor in group]
            sum_dims.update(enumerated)
            return log_jac[0], [factor for group in tree.values() for factor in group]

        log_jac, flat = torch.func.vmap(factors, randomness="same")(u)
        tree: OrderedDict[frozenset[str], list[torch.Tensor]] = OrderedDict()
        for (ordinal, dims), factor in zip(labels, flat):
            factor._pyro_dims = rows + dims
            tree.setdefault(ordinal, []).append(factor)
        total = contract_to_tensor(tree, sum_dims, target_ordinal=frozenset({rows}))
        return total + log_jac if jacobian else total

    def log_density_in_chunks(self, u: torch.Tensor) -> torch.Tensor:
        """:meth:`log_density` of many points, :meth:`chunk_size` points per run of the program.

        The chunks keep memory bounded for many points (the draws of an approximation, say).

        Parameters
        ----------
        u : Tensor, shape ``(n, dim)``
            Unconstrained points, one per row.

        Returns
        -------
        Tensor, shape ``(n,)``
            The log density of each row, with the Jacobian and prior terms (:meth:`log_density`'s
            defaults).
        """
        return torch.cat([self.log_density(part) for part in u.split(self.chunk_size())])

    def _log_density(self, u: torch.Tensor, jacobian: bool, prior: bool, plated: bool) -> torch.Tensor:
        trace, log_jac = self.trace_unconstrained(u, plated)
        skip = set() if prior else {s.name for s in self.layout}
        total = self._sum_log_probs(trace, u.shape[0], skip, plated)
        return total + log_jac if jacobian else total

    def _sum_log_probs(self, trace: Trace, batch_size: int, skip: set[str], plated: bool) -> torch.Tensor:
        score_trace(trace)
        if self.enumerated:
            return self._contract(trace, skip, plated)
        batch_dim = -self.max_plate_nesting - 1
        total = torch.zeros(batch_size, device=self.device)
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and "log_prob" in site and name not in skip:
                lp = site["log_prob"]
                total = total + (_sum_to_batch(lp, batch_size, batch_dim) if plated else lp.sum())
        return total

    def _contract(self, trace: Trace, skip: set[str], plated: bool) -> torch.Tensor:
        tree, sum_dims = factor_tree(trace, lambda name: name not in skip)
        target = present_dims(tree, {trace.plate_to_symbol[BATCH_PLATE]} if plated else set())
        return contract_to_tensor(tree, sum_dims, target_ordinal=target).reshape(-1)

    def value_and_grad(self, u: torch.Tensor, *, jacobian: bool = True,
                       prior: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Log density and its gradient for each row of ``u``: ``(batch,)`` and ``(batch, dim)``.

        From the third call at one batch size on, the program's tensor operations (forward and
        backward) are recorded once and replayed (:class:`bayesgen._replay.Replayed`): the same
        kernels on the same numbers, so the results are bitwise those of running the program,
        without Pyro's per-call overhead. Programs whose operations depend on the values (Python
        control flow on tensors, ``.item()``) keep running the program.

        Parameters
        ----------
        u : Tensor, shape ``(batch, dim)``
            Unconstrained points, one per row (detached first).
        jacobian, prior : bool, default True
            As for :meth:`log_density`.

        Returns
        -------
        value : Tensor, shape ``(batch,)``
            The log density of each row (detached).
        grad : Tensor, shape ``(batch, dim)``
            Its gradient with respect to that row.
        """
        replayed = self._replays.get((jacobian, prior))
        if replayed is None:
            evaluate = functools.partial(self._value_and_grad, jacobian=jacobian, prior=prior)
            replayed = self._replays[(jacobian, prior)] = Replayed(evaluate)
        return replayed(u.detach())

    @functools.cached_property
    def _replays(self) -> dict[tuple[bool, bool], Replayed]:
        """The replayed ``value_and_grad`` for each ``(jacobian, prior)``, made on first use."""
        return {}

    def _replayable(self, u: torch.Tensor, *, jacobian: bool = True, prior: bool = True) -> bool:
        """Record ``value_and_grad`` at the shape of ``u`` now; whether calls at it replay.

        True means the recording agreed with the program at random points, so the density may be
        recorded again inside a larger step (the sampler's fused leapfrog step).
        """
        self.value_and_grad(u, jacobian=jacobian, prior=prior)
        return self._replays[(jacobian, prior)].ready(u.detach())

    def _value_and_grad(self, u: torch.Tensor, *, jacobian: bool, prior: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the program at ``u`` and differentiate it (the reference that replays must match)."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            value = self.log_density(u, jacobian=jacobian, prior=prior)
            (grad,) = torch.autograd.grad(value.sum(), u)
        return value.detach(), grad

    # ---------------------------------------------------------------- mapping
    def constrain(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map unconstrained points ``(batch, dim)`` to named constrained values ``(batch, *shape)``.

        Deterministic sites are included. Large batches run in chunks of
        :meth:`chunk_size` points to bound memory. The program runs only as far as those sites.

        Parameters
        ----------
        u : Tensor, shape ``(batch, dim)``
            Unconstrained points, one per row.

        Returns
        -------
        dict of str to Tensor
            Each continuous latent site (layout order), then each deterministic site, of shape
            ``(batch, *shape)``; a deterministic that does not depend on the draw is repeated.
        """
        if self.vectorized:
            size = self.chunk_size()
            parts = [self._constrain(u[i:i + size], True) for i in range(0, u.shape[0], size)]
        else:
            parts = [self._constrain(row[None], False) for row in u]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}

    def _constrain(self, u: torch.Tensor, plated: bool) -> dict[str, torch.Tensor]:
        needed = [s.name for s in self.layout] + self.deterministic
        trace, _ = self.trace_unconstrained(u, plated, until=needed)
        batch_size = u.shape[0]
        out = {s.name: trace.nodes[s.name]["value"].reshape((batch_size,) + s.shape) for s in self.layout}
        for name in self.deterministic:
            out[name] = per_draw(trace.nodes[name]["value"], batch_size,
                                 tuple(self.prototype.nodes[name]["value"].shape))
        return out

    def unconstrain(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Map named constrained values to unconstrained points: the inverse of :meth:`constrain`.

        Parameters
        ----------
        values : mapping of str to Tensor, each of shape ``(batch, *shape)``
            A value for every continuous latent site (:attr:`latent_names`), inside its support;
            other entries are ignored. The program runs once with them, to find each support.

        Returns
        -------
        Tensor, shape ``(batch, dim)``
            The unconstrained points, sites in layout order.
        """
        trace = self.trace_constrained({s.name: values[s.name] for s in self.layout})
        pieces = []
        for s in self.layout:
            batch_size = values[s.name].shape[0]
            site = trace.nodes[s.name]
            u = bijection(site["fn"].support).inv(site["value"])
            pieces.append(u.reshape(batch_size, s.size))
        return torch.cat(pieces, dim=-1)

    def _site_totals(self, u: torch.Tensor, plated: bool) -> dict[str, torch.Tensor]:
        """Per-site log-prob sums ``(batch,)`` (the joint only, for enumerated programs), and the
        values of ``pyro.deterministic`` sites ``(batch, size)``, whose log-prob is 0 whatever
        they hold: ``a.sum()`` over a plate's site sums the draws of a batch too."""
        trace, log_jac = self.trace_unconstrained(u, plated)
        values = {f"{name} (deterministic)": per_draw(site["value"], u.shape[0], tuple(
                      self.prototype.nodes[name]["value"].shape)).reshape(u.shape[0], -1)
                  if plated else site["value"].reshape(1, -1)
                  for name, site in trace.nodes.items()
                  if site["type"] == "sample" and is_deterministic(site) and name in self.prototype.nodes}
        if self.enumerated:
            return {"joint": self._sum_log_probs(trace, u.shape[0], set(), plated) + log_jac, **values}
        score_trace(trace)
        batch_dim = -self.max_plate_nesting - 1
        return {
            **{name: _sum_to_batch(site["log_prob"], u.shape[0], batch_dim) if plated
               else site["log_prob"].sum().reshape(1)
               for name, site in trace.nodes.items()
               if site["type"] == "sample" and "log_prob" in site},
            **values,
        }

    def _check_vectorized(self) -> bool:
        """Compare a batched run with row-by-row runs; where they differ, map the unbatched program
        with ``torch.func.vmap`` (:attr:`mapped`), else fall back to a loop, with a warning."""
        #: Whether the unbatched program is vectorised by ``torch.func.vmap`` instead of a batch plate.
        self.mapped = False
        if self.dim == 0:
            return True
        gen = torch.Generator().manual_seed(0)
        u = torch.rand(2, self.dim, generator=gen, dtype=torch.get_default_dtype(), device="cpu")
        u = (u * 2 - 1).to(self.device)
        # each run from the same random state, so that a plate that subsamples takes the same minibatch
        try:
            rows = []
            for row in u:
                with poutine.seed(rng_seed=0):
                    rows.append(self._site_totals(row[None], False))
        except Exception:  # noqa: BLE001 - the program fails at these points even unbatched
            return True
        last = LastSite()
        try:
            with last, poutine.seed(rng_seed=0):
                batched = self._site_totals(u, True)
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot batch"
            first_line = (str(exc).splitlines() or [""])[0]
            reason = f"site '{last.name}' raised {type(exc).__name__} under a batch plate: {first_line}"
        else:
            for name, value in batched.items():
                expected = torch.cat([row[name] for row in rows])
                if value.shape != expected.shape or not torch.allclose(
                        value, expected, rtol=1e-5, atol=1e-6, equal_nan=True):
                    reason = f"site '{name}' does not broadcast over an outer batch plate"
                    break
            else:
                return True
        self.mapped = self._check_mapped(u)
        if not self.mapped:
            warnings.warn(
                f"the program cannot be vectorised over chains/particles: {reason}, and torch.func.vmap "
                "cannot map it either. Falling back to one program run per point, which is much slower; "
                "let every site broadcast over leading batch dimensions to avoid this.",
                RuntimeWarning,
                stacklevel=3,
            )
        return False

    def _check_mapped(self, u: torch.Tensor) -> bool:
        """Whether ``torch.func.vmap`` evaluates the unbatched program at the rows of ``u`` (and its
        gradient) as a loop over them does. It does for programs whose sites do not broadcast over
        an outer plate but whose operations are all tensor operations: a ``PyroModule`` whose
        weights are ``PyroSample`` priors (a Bayesian neural network), which ``F.linear`` cannot
        batch, or an HMM that indexes its parameters with its enumerated states (``probs_x[x]``,
        as Pyro's ``examples/hmm.py`` does). It does not for ``.item()``, ``float(tensor)`` or
        Python control flow on values."""
        try:
            with torch.enable_grad():
                points = u.detach().clone().requires_grad_(True)
                mapped = self._mapped_log_density(points, True, True)
                (grad,) = torch.autograd.grad(mapped.sum(), points)
            looped = []
            for row in u:
                with torch.enable_grad():
                    point = row[None].detach().clone().requires_grad_(True)
                    value = self._log_density(point, True, True, False)
                    looped.append((value.detach(), torch.autograd.grad(value.sum(), point)[0]))
        except Exception:  # noqa: BLE001 - any failure means "vmap cannot map it"
            return False
        expected = torch.cat([value for value, _ in looped])
        expected_grad = torch.cat([g for _, g in looped])
        return bool(torch.allclose(mapped.detach(), expected, rtol=1e-5, atol=1e-6)
                    and torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-6))

    def subsampling_plate(self, site: Mapping[str, Any]) -> str | None:
        """The name of a plate that subsamples and holds the trace site ``site``, or None: each
        run of the program gives such a site for a random minibatch of the plate's items only.

        Parameters
        ----------
        site : mapping
            A trace site.

        Returns
        -------
        str or None
        """
        return next((f.name for f in site["cond_indep_stack"] if f.name in self.subsampled), None)

    @property
    def minibatched_latents(self) -> dict[str, str]:
        """Latent sites inside a plate that subsamples, with that plate's name."""
        plates = {name: self.subsampling_plate(self.prototype.nodes[name]) for name in self.latent_names}
        return {name: plate for name, plate in plates.items() if plate is not None}

    def require_continuous(self, engine: str) -> None:
        """Raise where a discrete latent site cannot be enumerated: the density over the flat
        vector of continuous latents leaves it out, so engines built on it cannot fit it.

        Parameters
        ----------
        engine : str
            The engine's name, for the error.
        """
        for name, family in self.discrete_latents.items():
            raise ValueError(f"site '{name}' is a discrete latent variable ({family}) that cannot be "
                             f"enumerated; engine '{engine}' needs continuous or enumerable latents: fit it "
                             "with engine='svi' and a guide for it (e.g. the model's own, or a guide callable)")

    def require_exact(self, engine: str) -> None:
        """Raise where a plate subsamples: the log density is then a random estimate (the
        minibatch's, rescaled), which a sampler or a deterministic optimiser would take for the
        density itself and answer wrongly without a sign; and where a discrete latent cannot be
        enumerated (:meth:`require_continuous`).

        Parameters
        ----------
        engine : str
            The engine's name, for the error.
        """
        self.require_continuous(engine)
        for name, (subsample_size, size) in self.subsampled.items():
            raise ValueError(f"engine '{engine}' needs the program's exact log density, but plate '{name}' "
                             f"draws a random subsample of {subsample_size} of its {size} items at each run; "
                             "remove subsample_size from the plate, or fit with engine='svi', which takes "
                             "minibatches")

    def chunk_size(self, data: Mapping[str, Any] | None = None) -> int:
        """Draws per batched run of the program when evaluating many.

        :data:`CHUNK`, or fewer where the largest tensor of the program's data (or of ``data``)
        has more than :data:`CHUNK_ELEMENTS` / :data:`CHUNK` elements: then
        ``CHUNK_ELEMENTS // largest_data(data)``.

        Parameters
        ----------
        data : mapping, optional
            New data to run the program with, whose tensors count too; by default only the
            program's data.

        Returns
        -------
        int
            From 1 to :data:`CHUNK`.
        """
        return max(1, min(CHUNK, CHUNK_ELEMENTS // max(self.largest_data(data), 1)))

    def largest_data(self, data: Mapping[str, Any] | None = None) -> int:
        """Elements of the largest tensor of the program's data or of ``data``.

        What a run of the program costs per point, in time and memory, grows with it.

        Parameters
        ----------
        data : mapping, optional
            New data to run the program with; by default only the program's data counts.

        Returns
        -------
        int
            The largest ``numel()`` of their tensors, 0 if there are none (other values are not counted).
        """
        tensors = [v for source in (self.data, data or {}) for v in source.values() if isinstance(v, torch.Tensor)]
        return max((v.numel() for v in tensors), default=0)

    @property
    def latent_names(self) -> list[str]:
        """Names of the continuous latent sites, in layout order."""
        return [s.name for s in self.layout]

    @property
    def device(self) -> torch.device:
        """The device of the program's data (CPU if it has none)."""
        for value in self.data.values():
            if isinstance(value, torch.Tensor):
                return value.device
        return torch.device("cpu")
