"""Discrete latent sites recovered after the fact: posterior samples, MAP (Viterbi) values, marginals.

Engines sum enumerable discrete sites out of the density (DESIGN.md section 4). Given a
fit's draws of the continuous latents, ``infer_discrete`` brings them back with Pyro's
``infer_discrete``: at temperature 1 a draw from ``p(z | y, theta)`` per posterior draw,
at temperature 0 the most probable joint assignment (Viterbi decoding for a hidden Markov
chain written with ``pyro.markov``). ``discrete_marginals`` gives each site's exact
conditional marginal ``p(z_i | y, theta)``, by the same contraction that sums the sites out
of the density, averaged over the posterior draws of ``theta``.

Both run the program once for a batch of posterior draws, inside an outer plate over the
draws, where the program broadcasts over such a plate (:attr:`LogDensity.vectorized`). A
program that indexes a parameter with an enumerated value by plain indexing, as Pyro's
Gaussian mixture tutorial does (``locs[assignment]``), does not: the index lands on the
draws' dimension. Such programs are run once per draw instead, with a warning, as the log
density falls back to a per-point loop; the results are the same, only slower.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pyro
import torch
from opt_einsum import shared_intermediates
from pyro import poutine
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.ops.einsum.adjoint import require_backward
from pyro.ops.rings import MarginalRing
from pyro.poutine.trace_struct import Trace

from bayesgen._seeding import rng_restored
from bayesgen.dtypes import computing_in
# the density's own scoring and factor layout, so that the marginals contract exactly the factors
# (enumerated sites unmasked) that the density sums over
from bayesgen.logdensity import LogDensity, factor_tree, log_factor, per_draw, score_trace
from bayesgen.program import LastSite, on_device
from bayesgen.result import Fit

__all__ = ["discrete_marginals", "infer_discrete"]

#: How to write a program whose enumerated values index parameters so that it broadcasts over an
#: outer plate. ``Vindex`` alone is not enough where the indexed dimension is a plate's: the
#: tutorial's ``locs``, sampled in ``plate("components")`` at the data plate's dim, has the draws
#: left of the components under the outer plate, and indexing consumes the components' dim, so
#: the draws shift onto the data plate's dim. An event dimension is not a plate's.
_VINDEX_FIX = ("index parameters with enumerated values through pyro.ops.indexing.Vindex, with the "
               "indexed dimension an event dimension rather than a plate's: e.g. "
               "locs = pyro.sample('locs', dist.Normal(0., 10.).expand([K]).to_event(1)) outside the "
               "components plate, then Vindex(locs)[..., assignment] instead of locs[assignment]; and "
               "add no dims at the right of a sample site's value (sigma, not sigma[..., None], where it "
               "broadcasts as it is)")


def _draws(fit: Fit, density: LogDensity, num_samples: int | None, repeat: bool = False) -> dict[str, torch.Tensor]:
    """The draws of the continuous latents to decode at, ``(chain, draw, *shape)``: ``num_samples``
    per chain, evenly spaced (all by default); of a point fit its estimate, once, or with
    ``repeat`` as many times as it has draws (``num_samples`` where given), so that sampling the
    discrete sites at temperature 1 gives as many samples as from draws."""
    missing = [name for name in density.latent_names if name not in fit.posterior]
    if missing:
        raise ValueError(f"the program's continuous latent sites {missing} are not in the fit's posterior; "
                         "a program passed as model= must have the same continuous sites as the fitted one")
    dtype = fit._require_problem().dtype
    if fit.kind == "point" and fit.point is not None and set(density.latent_names) <= set(fit.point):
        # an estimate is decoded at the estimate, not at draws of its normal approximation
        copies = (num_samples or fit.num_draws) if repeat else 1
        return {name: torch.as_tensor(np.asarray(fit.point[name]), dtype=dtype).expand(
                    (1, copies) + np.shape(fit.point[name])) for name in density.latent_names}
    index = (np.linspace(0, fit.num_draws - 1, num_samples).round().astype(int) if num_samples
             else np.arange(fit.num_draws))
    return {name: torch.as_tensor(fit.posterior[name][:, index], dtype=dtype) for name in density.latent_names}


@rng_restored()
def infer_discrete(fit: Fit, *, model: Callable[..., Any] | None = None, temperature: int = 1,
                   num_samples: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Values of the enumerated discrete sites at each posterior draw, ``(chain, draw, *shape)``.

    Parameters
    ----------
    fit : Fit
        A fit of a program with enumerable discrete latent sites (any engine). A point fit
        (``mle``, ``map``) is decoded at its estimate ``fit.point``, not at the draws of its
        normal approximation: ``num_samples`` (by default as many as its draws) samples of
        ``z`` given the estimate, or as many copies of the most probable assignment.
    model : callable, optional
        The program to decode with, by default the fitted one. It must have the same
        continuous latent sites and data arguments: e.g. a hidden Markov model fitted
        with the forward algorithm (``DiscreteHMM``) is decoded with its ``pyro.markov``
        twin whose states are sample sites.
    temperature : {1, 0}
        1 samples ``z ~ p(z | y, theta)``; 0 takes the jointly most probable assignment
        (Viterbi for Markov chains), both per draw of ``theta``.
    num_samples : int, optional
        Draws per chain to use (evenly spaced); all by default. Of a point fit, how many times
        to decode at its estimate.
    seed : int
        Seed of the sampling at temperature 1.

    Returns
    -------
    dict
        Discrete site -> integer array ``(chain, draw, *site_shape)``.

    Warns
    -----
    RuntimeWarning
        Where the program does not broadcast over an outer plate of draws (plain indexing
        with an enumerated value, ``locs[assignment]``): it then runs once per draw, which is
        slower but gives the same values.

    Raises
    ------
    ValueError
        Where the program fails even for one draw under Pyro's enumeration: the message names
        the site and the fix (``pyro.ops.indexing.Vindex``).
    """
    if temperature not in (0, 1):
        raise ValueError(f"temperature must be 0 (MAP / Viterbi) or 1 (posterior samples), got {temperature!r}")
    density = _density(fit, model)
    draws = _draws(fit, density, num_samples, repeat=True)
    lead = tuple(next(iter(draws.values())).shape[:2])
    problem = fit._require_problem()
    batch_dim = -density.max_plate_nesting - 1
    pyro.set_rng_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {}
    with computing_in(problem.dtype):
        for chunk, size, plated in _chunks(density, draws, "infer_discrete"):
            program = density.fixed_program(chunk, plated=plated, enumerate=False)
            trace = _run(program, density, problem.data, plated, decode=lambda p: pyro.infer.infer_discrete(
                p, first_available_dim=batch_dim - 1, temperature=temperature))
            for name in density.enumerated:
                shape = tuple(density.prototype.nodes[name]["value"].shape)
                parts.setdefault(name, []).append(per_draw(trace.nodes[name]["value"], size, shape))
    # a Bernoulli's values come as floats: every enumerated site's values are category indices
    return {name: torch.cat(values).reshape(lead + values[0].shape[1:]).cpu().numpy().astype(np.int64)
            for name, values in parts.items()}


def discrete_marginals(fit: Fit, *, model: Callable[..., Any] | None = None,
                       num_samples: int | None = None) -> dict[str, np.ndarray]:
    """Posterior probabilities of each value of every enumerated discrete site, ``(*site_shape, K)``.

    For each posterior draw of the continuous latents ``theta`` the exact conditional marginal
    ``p(z_i = k | y, theta)`` of each site (Bayes' rule, by the contraction that sums the
    enumerated sites out of the log density, forward-backward for a ``pyro.markov`` chain),
    averaged over the draws: ``p(z_i = k | y)`` up to Monte Carlo error over ``theta`` only.
    This is the Rao-Blackwellised form of counting one sample of ``z`` per draw, with a
    smaller error and no randomness. These are, e.g., a mixture's cluster responsibilities or
    an HMM's state marginals.

    Parameters
    ----------
    fit, model, num_samples
        As for :func:`infer_discrete`.

    Returns
    -------
    dict
        Discrete site -> float array ``(*site_shape, K)`` whose last axis sums to 1, ``K`` the
        size of the site's support (probabilities of its values in ``enumerate_support`` order).

    Warns, Raises
    -------------
    As :func:`infer_discrete`.
    """
    density = _density(fit, model)
    draws = _draws(fit, density, num_samples)
    problem = fit._require_problem()
    totals: dict[str, torch.Tensor] = {}
    count = 0
    with computing_in(problem.dtype):
        for chunk, size, plated in _chunks(density, draws, "discrete_marginals"):
            program = density.fixed_program(chunk, plated=plated, enumerate=True)
            trace = _run(program, density, problem.data, plated)
            for name, probs in _site_marginals(trace, density, size, plated).items():
                totals[name] = totals[name] + probs.sum(0) if name in totals else probs.sum(0)
            count += size
    return {name: (total / count).cpu().numpy() for name, total in totals.items()}


def _density(fit: Fit, model: Callable[..., Any] | None) -> LogDensity:
    problem = fit._require_problem()
    if model is None:
        density = problem.density
    else:
        with computing_in(problem.dtype):
            density = LogDensity(model, problem.data)
    if not density.enumerated:
        raise ValueError("the program has no enumerable discrete latent sites to infer (a program that sums "
                         "them out itself has its own decoder, as the zoo hmm's bayesgen.models.hmm.viterbi "
                         "and state_marginals)")
    for name in density.enumerated:
        if density.prototype.nodes[name]["fn"].enumerate_support(expand=False).shape[0] == 1:
            raise ValueError(f"site '{name}' takes one value only (one category: e.g. gmm with "
                             "num_components=1): every draw of it is that value, with probability 1, and there "
                             "is nothing to infer")
    return density


def _chunks(density: LogDensity, draws: dict[str, torch.Tensor], caller: str
            ) -> Iterator[tuple[dict[str, torch.Tensor], int, bool]]:
    """The posterior draws in the pieces the program runs on: ``(values, number of draws, plated)``.

    A program that broadcasts over an outer plate (:attr:`LogDensity.vectorized`) takes
    :meth:`LogDensity.chunk_size` draws per run under the batch plate; any other program takes
    one draw per run of the bare program (``plated=False``), after a warning that says why.
    The density's check decides, not a trial run: a program may run under the plate without
    an error and still mix up the draws (an index that lands on the draws' dimension but
    stays in range).
    """
    flat = {k: v.reshape((-1,) + v.shape[2:]).to(density.device) for k, v in draws.items()}
    total = next(iter(flat.values())).shape[0]
    if density.vectorized:
        step = density.chunk_size()
        for start in range(0, total, step):
            chunk = {k: v[start:start + step] for k, v in flat.items()}
            yield chunk, next(iter(chunk.values())).shape[0], True
        return
    warnings.warn(
        f"{caller}: the program cannot be run batched over posterior draws: {_unbatched_reason(density, flat)}. "
        f"Falling back to one program run per draw, which is much slower; {_VINDEX_FIX} to avoid this.",
        RuntimeWarning,
        stacklevel=3,
    )
    for start in range(total):
        yield {k: v[start:start + 1] for k, v in flat.items()}, 1, False


def _unbatched_reason(density: LogDensity, flat: dict[str, torch.Tensor]) -> str:
    """Why the program does not run under the plate of draws: the site at which a batched run of
    the first two draws fails (what the density's check also saw), or, where it runs, that its
    values do not broadcast."""
    two = {k: v[:2] for k, v in flat.items()}
    last = LastSite()
    try:
        with torch.no_grad(), last, pyro.validation_enabled(False), on_device(density.device):
            poutine.trace(density.fixed_program(two)).get_trace(**density.data)
    except Exception as exc:  # noqa: BLE001 - any failure here is the reason to report
        first_line = (str(exc).splitlines() or [""])[0]
        return f"site '{_failing_site(density, last)}' raised {type(exc).__name__} under the plate of draws: {first_line}"
    return "its sites do not broadcast over an outer plate of draws"


def _failing_site(density: LogDensity, last: LastSite) -> str:
    """The sample site at which a run failed: the one after the last site that :class:`LastSite`
    saw, in the order of the program's first trace. The handlers inside the program (its plates,
    the enumeration) and the construction of the site's distribution see a site before a handler
    around the program does, so a failure there leaves :class:`LastSite` at the site before."""
    names = [name for name, site in density.prototype.nodes.items()
             if site["type"] == "sample" and site["name"] in _sample_sites(density)]
    if last.name not in names:
        return names[0] if names else "?"
    index = names.index(last.name)
    return names[min(index + 1, len(names) - 1)]


def _sample_sites(density: LogDensity) -> set[str]:
    """Sample sites of the program but the plates' index sites."""
    return set(density.latent_names) | set(density.enumerated) | set(density.observed) | \
        set(density.deterministic) | set(density.discrete_latents)


def _run(program: Callable[..., Any], density: LogDensity, data: dict[str, Any], plated: bool,
         decode: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None) -> Trace:
    """Trace ``program`` on ``data`` (wrapped by ``decode``, Pyro's ``infer_discrete``, if given);
    where it fails, a ValueError naming the site and the fix.

    A run of one draw (``plated=False``) that fails cannot be helped by running per draw; a
    batched run fails only where the density's check could not run the program even unbatched
    (:meth:`LogDensity._check_vectorized` then keeps the batched path), e.g. a twin passed as
    ``model=`` that cannot take enumerated values at all.
    """
    last = LastSite()
    watched = last(program)  # inside decode's handlers: infer_discrete blocks its first run's sites
    if decode is not None:
        watched = decode(watched)
    try:
        with torch.no_grad(), on_device(density.device), pyro.validation_enabled(False):
            return poutine.trace(watched).get_trace(**data)
    except Exception as exc:  # noqa: BLE001 - any failure of the program is reported with its site
        first_line = (str(exc).splitlines() or [""])[0]
        where = "a batch of posterior draws" if plated else "one posterior draw"
        raise ValueError(
            f"site '{_failing_site(density, last)}' fails when the discrete sites are enumerated, run at "
            f"{where} ({type(exc).__name__}: {first_line}); {_VINDEX_FIX}, and use no Python control flow "
            "on enumerated values") from exc


def _site_marginals(trace: Trace, density: LogDensity, batch_size: int, plated: bool) -> dict[str, torch.Tensor]:
    """``p(z_i = k | y, theta)`` of each enumerated site from an enumerated trace of the program at
    ``batch_size`` draws: site -> ``(batch, *batch_shape, K)``.

    One forward-backward pass over the log factors that the density contracts (enumerated sites
    unmasked, :func:`~bayesgen.logdensity.log_factor`): Pyro's ``MarginalRing`` sums the
    enumerated dims out (the forward pass, as the log density does) and passes messages back to
    each site's own factor, which then holds the posterior joint of the enumerated values it
    depends on, per plate item, in log space. Summing out all but the site's own dim and
    normalising gives its marginal. The cost is that of two contractions, linear in the length of
    a Markov chain, where contracting to each site in turn (``TraceEnum_ELBO.compute_marginals``)
    is quadratic.
    """
    score_trace(trace)
    queries: dict[str, torch.Tensor] = {}

    def factor(name: str, node: Mapping[str, Any]) -> torch.Tensor:
        """A site's factor; an enumerated site's is a leaf of its own that receives the messages."""
        value = log_factor(node)
        if name not in density.enumerated:
            return value
        if node["infer"].get("_enumerate_dim") is None:
            raise ValueError(f"site '{name}' was not enumerated in parallel; discrete_marginals needs "
                             "infer={'enumerate': 'parallel'} (config_enumerate's default)")
        value = value.clone()  # a site's log_prob may be shared with another
        value._pyro_dims = node["packed"]["log_prob"]._pyro_dims
        require_backward(value)
        queries[name] = value
        return value

    tree, sum_dims = factor_tree(trace, factor=factor)
    with shared_intermediates() as cache:
        roots = contract_tensor_tree(tree, sum_dims, ring=MarginalRing(cache=cache))
    for terms in roots.values():
        for term in terms:
            if hasattr(term, "_pyro_backward"):
                term._pyro_backward()
    nesting = density.max_plate_nesting
    keep = nesting + 2 if plated else nesting + 1  # (batch,) plates, values
    out = {}
    for name, factor in queries.items():
        node = trace.nodes[name]
        enum_dim, symbol = node["infer"]["_enumerate_dim"], node["infer"]["_enumerate_symbol"]
        log_joint = factor._pyro_backward_result  # in the factor's shape, except where it says otherwise
        dims = getattr(log_joint, "_pyro_dims", factor._pyro_dims)
        others = [i for i, d in enumerate(dims) if d in sum_dims and d != symbol]
        logits = log_joint.logsumexp(others) if others else log_joint
        logits._pyro_dims = "".join(d for d in dims if d not in sum_dims or d == symbol)
        logits = packed.unpack(logits, trace.symbol_to_dim)
        logits = logits.reshape((1,) * (-enum_dim - logits.dim()) + logits.shape)
        logits = logits.unsqueeze(-1).transpose(-1, enum_dim - 1)  # values last, a 1 in their place
        logits = logits.reshape(logits.shape[-keep:])  # the dims left of the batch's are all 1
        if not plated:
            logits = logits[None]
        batch_shape = tuple(density.prototype.nodes[name]["fn"].batch_shape)
        full = (batch_size,) + (1,) * (nesting - len(batch_shape)) + batch_shape + logits.shape[-1:]
        probs = torch.softmax(logits, -1).expand(full)
        out[name] = probs.reshape((batch_size,) + batch_shape + logits.shape[-1:])
    return out
