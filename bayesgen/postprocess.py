"""The one shared step after every engine: deterministic sites, pointwise log-likelihood, predictions."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Mapping

import torch
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import unpack
from pyro.poutine.trace_struct import Trace

from bayesgen._replay import agrees, record, script
from bayesgen.logdensity import LogDensity, factor_tree, per_draw, plate_symbols, present_dims, score_trace
from bayesgen.program import is_deterministic, is_subsample, site_log_prob

__all__ = ["deterministic_sites", "pointwise_log_likelihood", "simulate_sites"]

_log = logging.getLogger(__name__)


def _traces(density: LogDensity, flat: Mapping[str, torch.Tensor], data: Mapping[str, Any] | None = None,
            simulate: bool = False) -> Iterator[tuple[Trace, int]]:
    """Traces of the program at flat draws ``(n, *shape)``: one batched run per
    :meth:`~bayesgen.logdensity.LogDensity.chunk_size` draws, or one per draw, each run when
    the caller asks for it (so that only one is held at a time).

    ``simulate=True`` samples enumerable discrete sites and observed sites (rather than
    enumerating the former and conditioning on the latter).
    """
    total = next(iter(flat.values())).shape[0] if flat else 1  # a program without latent sites: one run
    options = {"enumerate": not simulate, "uncondition": simulate}
    if density.vectorized:
        size = density.chunk_size(data)
        for i in range(0, total, size):
            yield density.trace_constrained({k: v[i:i + size] for k, v in flat.items()}, data, **options), \
                min(size, total - i)
    else:
        for i in range(total):
            yield density.trace_constrained({k: v[i:i + 1] for k, v in flat.items()}, data, plated=False, **options), 1


def _site_shape(density: LogDensity, site: Mapping[str, Any]) -> tuple[int, ...]:
    """A site's own shape in a batched trace: its batch dims (as many as in the first trace) and event dims.

    A site that the first trace did not have (one that new data switched on, e.g. a
    forecast) keeps its batch dims inside the batch plate, less the leading ones that
    plate broadcasting added.
    """
    proto = density.prototype.nodes.get(site["name"])
    if proto is not None:
        batch = len(proto["fn"].batch_shape)
    else:
        own = list(site["fn"].batch_shape[-density.max_plate_nesting:]) if density.max_plate_nesting else []
        while own and own[0] == 1:
            own.pop(0)
        batch = len(own)
    keep = batch + len(site["fn"].event_shape)
    return tuple(site["value"].shape[site["value"].dim() - keep:]) if keep else ()


#: Draws per call of the recorded evaluation in :func:`_evaluate`: the two eager calls that
#: record and check it stay cheap even where the program materialises a broadcast product.
RECORD_CHUNK = 100
#: Elements of the largest data tensor times :data:`RECORD_CHUNK` from which the draws are
#: evaluated through a recording. Below, the program's Python overhead dominates and one eager
#: trace per 1000 draws is cheaper than recording (eight schools: 4 ms eagerly, 50 ms recorded).
RECORD_MIN_ELEMENTS = 2**20


def _evaluated_sites(density: LogDensity, trace: Trace, size: int, kind: str) -> dict[str, torch.Tensor]:
    """Site -> ``(size, *shape)`` from one batched trace: the deterministic sites' values
    (``kind="deterministic"``) or the observed sites' pointwise log-likelihood
    (``kind="log_likelihood"``)."""
    if kind == "log_likelihood" and density.enumerated:
        return _enumerated_log_likelihood(density, trace, size)
    out: dict[str, torch.Tensor] = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        if kind == "deterministic" and is_deterministic(site):
            shape = tuple(density.prototype.nodes[name]["value"].shape)
            out[name] = per_draw(site["value"], size, shape)
        elif kind == "log_likelihood" and name in density.observed and density.subsampling_plate(site) is None:
            shape = tuple(density.prototype.nodes[name]["fn"].batch_shape)
            out[name] = per_draw(site_log_prob(site), size, shape)  # masked-out terms 0, as Pyro scores them
    return out


def _recorded_chunks(density: LogDensity, flat: Mapping[str, torch.Tensor], kind: str
                     ) -> Iterator[dict[str, torch.Tensor]] | None:
    """:func:`_evaluated_sites` of every :data:`RECORD_CHUNK` draws (fewer where
    :meth:`~bayesgen.logdensity.LogDensity.chunk_size` says so), through a recording; None
    where the program cannot be recorded or the recording disagrees with it.

    Only for vectorised programs without enumerated sites whose data have at least
    :data:`RECORD_MIN_ELEMENTS` / :data:`RECORD_CHUNK` elements (the choice depends on the
    program and the data's size, never on timings). The program's operations
    at one chunk are recorded as a graph (:func:`bayesgen._replay.record`)
    with products summed over a dimension turned into matrix products, as the samplers' steps
    are: a regression written ``(X * beta).sum(-1)`` to broadcast over draws would otherwise
    materialise a draws x observations x covariates tensor (4000 draws of a 5000 x 20 regression:
    1.0 of the 1.4 s that the log-likelihood took). The recording must agree with the program
    (to rounding, :func:`bayesgen._replay.agrees`) at the first two chunks of draws.
    """
    names, total = list(flat), next(iter(flat.values())).shape[0]
    size = min(RECORD_CHUNK, density.chunk_size())
    if not density.vectorized or density.enumerated or density.largest_data() * RECORD_CHUNK < RECORD_MIN_ELEMENTS \
            or total < 3 * size or any(not v.is_floating_point() for v in flat.values()):
        return None
    chunks = [[flat[name][i:i + size] for name in names] for i in range(0, total, size)]
    keys: list[str] = []

    def evaluate(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        trace = density.trace_constrained(dict(zip(names, values)))
        sites = _evaluated_sites(density, trace, values[0].shape[0], kind)
        keys[:] = sites
        return tuple(sites.values())

    references = [evaluate(*chunks[0]), evaluate(*chunks[1])]
    graph = record(evaluate, chunks[0], contract=True)
    if graph is None:
        return None
    replay = script(graph, chunks[0]) or graph
    if not all(agrees(reference, replay(*chunk)) for reference, chunk in zip(references, chunks)):
        _log.debug("evaluating the draws eagerly: the recording disagrees with the program")
        return None
    rest = (replay(*chunk) if chunk[0].shape[0] == size else evaluate(*chunk) for chunk in chunks[2:])
    return (dict(zip(keys, value)) for value in itertools.chain(references, rest))


def _eager_chunks(density: LogDensity, flat: Mapping[str, torch.Tensor], kind: str
                  ) -> Iterator[dict[str, torch.Tensor]]:
    """:func:`_evaluated_sites` of the draws, one trace of the program per chunk (or per draw)."""
    return (_evaluated_sites(density, trace, size, kind) for trace, size in _traces(density, flat))


def _evaluate(density: LogDensity, draws: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Vectorised traces of the program at constrained draws ``(chain, draw, *shape)``, over
    chunks of draws, recorded and replayed where the program allows it
    (:func:`_recorded_chunks`); site -> ``(chain, draw, *shape)`` of ``kind``."""
    if not draws and density.latent_names:
        return {}
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in draws.items()}
    # a program without latent sites (network weights only) is one run: chain and draw of size 1
    lead = next(iter(draws.values())).shape[:2] if draws else torch.Size((1, 1))
    chunks = _recorded_chunks(density, flat, kind) if flat else None
    return _gather(_eager_chunks(density, flat, kind) if chunks is None else chunks, lead)


def deterministic_sites(density: LogDensity, draws: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``pyro.deterministic`` sites at constrained draws ``(chain, draw, *shape)``, site ->
    ``(chain, draw, *shape)``; no run of the program where it has none."""
    if not any(is_deterministic(site) for site in density.prototype.nodes.values() if site["type"] == "sample"):
        return {}
    return _evaluate(density, draws, "deterministic")


def pointwise_log_likelihood(density: LogDensity, draws: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pointwise log-likelihood at constrained draws ``(chain, draw, *shape)``: observed site ->
    ``(chain, draw, *batch_shape)``, one term per observation.

    In programs with enumerated discrete latents it is the marginal ``log p(y_n | theta)`` with
    the discrete sites summed out (see ``_enumerated_log_likelihood``). Observed sites inside a
    plate that subsamples have none: their terms would be a different random minibatch at
    every draw. Enumerated programs with several observed sites have none either (see
    ``_enumerated_log_likelihood``), known without running the program at each draw (an HMM
    written with ``pyro.markov`` has one observed site per step).
    """
    if density.enumerated and len(density.observed) != 1:
        return {}
    return _evaluate(density, draws, "log_likelihood")


def _enumerated_log_likelihood(density: LogDensity, trace: Trace, size: int) -> dict[str, torch.Tensor]:
    """Pointwise marginal log-likelihood of the one observed site of an enumerated program.

    The factors of the observed site and of the enumerated discrete sites are contracted
    (sum over the enumerated values, product over plates) down to the plates that all of
    them share, as ``TraceEnum_ELBO`` does. When every discrete site lives in the observed
    site's plates (a mixture's assignments) this is ``log p(y_n | theta)`` per observation,
    shape ``(size, *batch_shape)``; when a discrete site is shared across observations the
    observations do not factor and one joint term per draw is returned, shape ``(size,)``.
    Programs with several observed sites get none: their terms share discrete sites.
    """
    if len(density.observed) != 1:
        return {}
    (observed,) = density.observed
    score_trace(trace)
    wanted = [*density.enumerated, observed]
    tree, sum_dims = factor_tree(trace, lambda name: name in wanted)
    ordinals = [plate_symbols(trace, trace.nodes[name]) for name in wanted]
    target = present_dims(tree, set(frozenset.intersection(*ordinals)))
    log_lik = unpack(contract_to_tensor(tree, sum_dims, target_ordinal=target), trace.symbol_to_dim)
    full = tuple(density.prototype.nodes[observed]["fn"].batch_shape)
    # the observed site's own plates as packing left them (a batch of one draw is dropped from both)
    shape = full if target == present_dims(tree, set(ordinals[-1])) else ()
    return {observed: per_draw(log_lik, size, shape)}


def _gather(chunks: Iterable[dict[str, torch.Tensor]], lead: torch.Size) -> dict[str, torch.Tensor]:
    """Consecutive chunks of draws, site -> ``(size, *shape)``, written into one tensor per site,
    ``(*lead, *shape)``, as they come: the peak memory is the result and one chunk (holding every
    chunk and concatenating them made it twice the result: 5.1 GB for the 2.56 GB
    log-likelihood of 64 x 1000 draws of 5000 observations)."""
    total, start = lead[0] * lead[1], 0
    out: dict[str, torch.Tensor] = {}
    for chunk in chunks:
        for name, value in chunk.items():
            if name not in out:
                out[name] = value.new_empty((total, *value.shape[1:]))
            out[name][start:start + value.shape[0]] = value
        start += next(iter(chunk.values())).shape[0] if chunk else 0
    return {k: v.reshape(tuple(lead) + v.shape[1:]) for k, v in out.items()}


def simulate_sites(density: LogDensity, draws: Mapping[str, torch.Tensor], data: Mapping[str, Any],
                   sites: list[str]) -> dict[str, torch.Tensor]:
    """Run the program at the draws with ``data`` and return sites, shape ``(chain, draw, *shape)``.

    This is the posterior (or prior) predictive: sites not fixed by the draws (observed
    sites, in the shape of their data or of the new data) are sampled. The
    result holds ``sites`` and every sample site that the first trace of the program did
    not have (sites that the new data switched on, such as forecasts).
    """
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in draws.items()}
    lead = next(iter(draws.values())).shape[:2] if draws else torch.Size((1, 1))

    def chunks() -> Iterator[dict[str, torch.Tensor]]:
        for trace, size in _traces(density, flat, data, simulate=True):
            new = [name for name, site in trace.nodes.items()
                   if site["type"] == "sample" and name not in density.prototype.nodes and name not in sites
                   and not is_deterministic(site) and not is_subsample(site)]
            yield {name: per_draw(trace.nodes[name]["value"], size, _site_shape(density, trace.nodes[name]))
                   for name in list(sites) + new}

    return _gather(chunks(), lead)
