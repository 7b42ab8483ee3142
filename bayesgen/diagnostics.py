"""Diagnostics: the ArviZ summary and bg.check's plain-language verdict."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from bayesgen._lazy import LazyModule

if TYPE_CHECKING:
    import pandas as pd

    from bayesgen.result import Fit

__all__ = ["check", "ess", "loo_table", "pareto_khat", "short_run_findings", "summary"]

#: ArviZ, imported at first use (with :mod:`bayesgen.convert`, bayesgen's boundary with it)
_az: Any = LazyModule("arviz", quiet=FutureWarning)

RHAT_MAX = 1.01
ESS_MIN = 400
EBFMI_MIN = 0.3
PARETO_K_MAX = 0.7


def summary(fit: "Fit") -> "pd.DataFrame":
    """ArviZ summary of the posterior draws.

    MCMC fits get the full table (mean, sd, hdi, mcse, ess_bulk, ess_tail, r_hat; one chain
    has no R-hat, which compares chains, so its column is left out rather than NaN);
    approximations, whose draws are independent and come in one chain, get mean, sd and hdi,
    since their MCSE, ESS and R-hat diagnose nothing; point estimates (``mle``, ``map``) get
    the estimate and its standard error first (``point``, ``stderr``; NaN for deterministic
    sites, which the optimum does not hold), then the mean, sd and hdi of the normal
    approximation's draws. A fit without posterior sites (a VAE's networks
    are all parameters, in ``fit.params``) gets an empty table.

    Parameters
    ----------
    fit : Fit

    Returns
    -------
    pandas.DataFrame
        One row per scalar of each posterior site (``beta[0]``), the columns above.
    """
    import pandas as pd

    if not fit.posterior:
        return pd.DataFrame(columns=["mean", "sd"])
    if fit.kind == "point" and fit.point:
        table = _az.summary(fit.to_arviz(), var_names=list(fit.posterior), kind="stats")
        estimates = {label: (value, error) for name in fit.point
                     for label, value, error in _labelled(name, fit.point[name], (fit.stderr or {}).get(name))}
        table.insert(0, "stderr", [estimates.get(label, (np.nan, np.nan))[1] for label in table.index])
        table.insert(0, "point", [estimates.get(label, (np.nan, np.nan))[0] for label in table.index])
        return table
    if fit.kind != "samples":
        return _az.summary(fit.to_arviz(), var_names=list(fit.posterior), kind="stats")
    if fit.num_chains > 1:
        return _az.summary(fit.to_arviz(), var_names=list(fit.posterior), kind="all")
    idata = fit.to_arviz()
    with _one_chain_quiet():
        return _az.summary(idata, var_names=list(fit.posterior), kind="all").drop(columns="r_hat")


@contextlib.contextmanager
def _one_chain_quiet() -> Iterator[None]:
    """Inside the block ArviZ logs errors only: its "Shape validation failed ... chains=2" on one
    chain is about the R-hat that the callers leave out."""
    import arviz

    arviz_log = arviz._log  # a Logger of ArviZ's own, which logging.getLogger does not return
    level = arviz_log.level
    arviz_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        arviz_log.setLevel(level)


def _labelled(name: str, value: np.ndarray, error: np.ndarray | None) -> list[tuple[str, float, float]]:
    """``(label, value, standard error)`` for every scalar of a site, labelled as ArviZ's summary
    labels its rows (``beta[0]``, ``corr[0, 1]``)."""
    value = np.asarray(value)
    error = np.full(value.shape, np.nan) if error is None else np.asarray(error)
    if value.ndim == 0:
        return [(name, float(value), float(error))]
    return [(f"{name}[{', '.join(map(str, index))}]", float(value[index]), float(error[index]))
            for index in np.ndindex(value.shape)]


#: The beginnings of bg.check's findings that too few draws (MCMC) or optimiser steps (SVI, and
#: Adam on network weights) bring about, by the fit's kind or engine; laplace, map and the mle of
#: programs without networks run to their end whatever they are asked, so none of theirs are here.
_SHORT_RUN_FINDINGS = {
    "samples": re.compile(r"\d+ divergent transitions|E-BFMI below|[\d.]+% of transitions hit max_tree_depth"
                          r"|R-hat above|(bulk|tail) ESS below"),
    "svi": re.compile(r"the optimiser did not converge|Pareto k-hat = "),
    "mle": re.compile(r"the optimiser did not converge"),
    "gan": re.compile(r"the optimiser did not converge"),
}


def short_run_findings(fit: "Fit", findings: list[str]) -> list[str]:
    """Those of ``findings`` (``check(fit)``'s) that a deliberately short run (a smoke test, a demo's
    quick mode) brings about whatever the engine's merit: unconverged chains or optimisers, too
    few effective draws. The others (a mean-field Gaussian too narrow, non-finite draws, an
    indefinite Hessian) say something about the engine at any length and are not among them.

    Parameters
    ----------
    fit : Fit
        The fit ``findings`` are about; its kind and engine decide which findings a short run explains.
    findings : list of str
        ``check(fit)``'s findings.

    Returns
    -------
    list of str
        Those findings, in their order; none for ``mle`` and ``map`` fits without network weights.
    """
    if fit.engine in ("mle", "map") and not fit.params:  # L-BFGS on a log density runs to its end
        return []
    pattern = _SHORT_RUN_FINDINGS.get("samples" if fit.kind == "samples" else fit.engine)
    return [finding for finding in findings if pattern is not None and pattern.match(finding)]


#: Fewest draws whose importance weights PSIS fits a tail to: its tail is about 3 sqrt(n) of
#: them, and with fewer than 20 draws (13 in the tail) k-hat is noise, with 1 undefined.
PARETO_MIN_DRAWS = 20


def pareto_khat(log_weights: np.ndarray) -> float | None:
    """Pareto k-hat of importance weights p/q (PSIS): above 0.7 the approximation q is unreliable.

    Parameters
    ----------
    log_weights : array, shape ``(draws,)``
        Log importance weights ``log p - log q`` at draws from q (unnormalised).

    Returns
    -------
    float or None
        The k-hat of the fitted tail; None for fewer than :data:`PARETO_MIN_DRAWS` draws.
    """
    log_weights = np.asarray(log_weights, dtype=float)
    if log_weights.size < PARETO_MIN_DRAWS:
        return None
    _, khat = _az.psislw(log_weights)
    return float(khat)


def ess(draws: np.ndarray) -> float:
    """Bulk effective sample size of one scalar's draws (ArviZ's rank-normalised estimator).

    Parameters
    ----------
    draws : array, shape ``(chain, draw)``

    Returns
    -------
    float
        The bulk ESS; NaN for constant draws.
    """
    return float(_az.ess(draws))


def loo_table(datasets: Mapping[str, Any], ic: str) -> "pd.DataFrame":
    """ArviZ's comparison of models by PSIS-LOO or WAIC (``arviz.compare``), best first.

    Parameters
    ----------
    datasets : mapping of str to arviz.InferenceData
        Model name -> its data, each with a ``log_likelihood`` group.
    ic : {"loo", "waic"}

    Returns
    -------
    pandas.DataFrame
        One row per model, indexed by name, best first.
    """
    with warnings.catch_warnings():
        # ArviZ 0.23 calls a pandas method that pandas 3.1 deprecates; nothing for users to act on
        warnings.filterwarnings("ignore", message="The inplace keyword")
        return _az.compare(dict(datasets), ic=ic)


def _ebfmi(energy: np.ndarray) -> np.ndarray:
    """Energy Bayesian fraction of missing information, per chain."""
    diff = np.diff(energy, axis=1)
    return (diff**2).mean(axis=1) / energy.var(axis=1)


def _divergence_advice(centred: list[str] | None) -> str:
    """What to do about divergences, given the centred sites the engine found (None: unknown)."""
    if centred is None:
        return "reparameterise (e.g. non-centre a hierarchy) or raise target_accept"
    if centred:
        return (f"non-centre {_quoted(centred)}, whose prior takes its location or scale from other parameters (draw "
                "z ~ Normal(0, 1) and compute loc + scale * z, or pyro.infer.reparam.LocScaleReparam), "
                "or raise target_accept")
    return ("no site's prior takes its location or scale from another parameter, so there is no hierarchy "
            "to non-centre; raise target_accept (e.g. 0.95), tighten weak priors or rescale the data")


def _mcmc_findings(fit: "Fit") -> list[str]:
    found = []
    stats = fit.sample_stats
    if "diverging" in stats and stats["diverging"].sum() > 0:
        n = int(stats["diverging"].sum())
        found.append(f"{n} divergent transitions after warmup ({n / stats['diverging'].size:.1%} of draws): "
                     f"the sampler missed part of the posterior; {_divergence_advice(fit.info.get('centred_sites'))}")
    if "energy" in stats and stats["energy"].shape[1] > 2:
        low = [i for i, value in enumerate(_ebfmi(stats["energy"])) if not value >= EBFMI_MIN]
        if low:
            centred = fit.info.get("centred_sites")
            remedy = (f"non-centre {_quoted(centred)}, whose prior takes its location or scale from other "
                      "parameters (a funnel), or lengthen warmup" if centred else
                      "reparameterise heavy-tailed or weakly identified parameters, or lengthen warmup")
            found.append(f"E-BFMI below {EBFMI_MIN} in chain(s) {low}: the momentum resampling explores "
                         f"the energy distribution poorly (heavy tails or bad adaptation); {remedy}")
    depth = fit.settings.get("max_tree_depth")
    if depth is not None and "tree_depth" in stats:
        saturated = float((stats["tree_depth"] >= depth).mean())
        if saturated > 0:
            found.append(f"{saturated:.1%} of transitions hit max_tree_depth={depth}: "
                         "trajectories were cut short; raise max_tree_depth or reparameterise")
    return found


def _constant_entries(fit: "Fit") -> set[str]:
    """ArviZ labels of posterior entries that never vary (e.g. the fixed 1 and 0 entries of a
    Cholesky factor): their R-hat and ESS are undefined by construction, not a failure."""
    constant = set()
    for name, draws in fit.posterior.items():
        flat = draws.reshape(draws.shape[:2] + (-1,))
        fixed = np.ptp(flat, axis=(0, 1)) == 0
        shape = draws.shape[2:]
        for position in np.flatnonzero(fixed):
            index = np.unravel_index(position, shape) if shape else ()
            constant.add(f"{name}[{', '.join(map(str, index))}]" if shape else name)
    return constant


def _convergence_findings(fit: "Fit") -> list[str]:
    with warnings.catch_warnings(), _one_chain_quiet():
        # ArviZ divides by zero for constant entries; those are dropped just below
        warnings.simplefilter("ignore", RuntimeWarning)
        table = _az.summary(fit.to_arviz(), var_names=list(fit.posterior), round_to="none")
    table = table.drop(index=list(_constant_entries(fit) & set(table.index)))
    found = []
    if fit.num_chains > 1:
        bad = table["r_hat"][~(table["r_hat"] <= RHAT_MAX)]
        if len(bad):
            centred = fit.info.get("centred_sites")
            advice = (f"; if they stop in different parts of a funnel, non-centre {_quoted(centred)}" if centred
                      else "")
            if fit.problem is not None and fit.problem.density.enumerated:  # a mixture's exchangeable components
                advice += ("; in a mixture, chains may label the components differently (label switching), which "
                           "longer chains do not mend: order the components by one location (as "
                           "bayesgen.models.gmm's locs_first)")
            found.append(f"R-hat above {RHAT_MAX} (or undefined) for {_worst(bad, '.4f', largest=True)}: chains "
                         f"disagree; run longer chains{advice}")
    for column, label in (("ess_bulk", "bulk"), ("ess_tail", "tail")):
        bad = table[column][~(table[column] >= ESS_MIN)]
        if len(bad):
            found.append(f"{label} ESS below {ESS_MIN} (or undefined) for {_worst(bad, '.0f', largest=False)}: "
                         "draw more samples or run more chains")
    return found


#: Entries a finding names at most, the worst first.
_NAMED_MAX = 10


def _worst(values: "pd.Series", fmt: str, *, largest: bool) -> str:
    """Labels with their values, ``beta[2] (1.034)``, the worst first (an undefined value first
    of all), at most :data:`_NAMED_MAX` of them and then how many more."""
    ordered = values.fillna(np.inf if largest else -np.inf).sort_values(ascending=not largest)
    named = [f"{label} ({values[label]:{fmt}})" if np.isfinite(values[label]) else f"{label} (undefined)"
             for label in ordered.index[:_NAMED_MAX]]
    more = len(ordered) - _NAMED_MAX
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _optimiser_findings(fit: "Fit") -> list[str]:
    found = []
    if fit.info.get("runaway_sites"):
        found.append(fit.info["message"])  # no finite optimum: the message names the sites and the remedy
    elif fit.info.get("converged") is False and not fit.info.get("interrupted"):  # that finding says it
        # L-BFGS (mle, map and laplace of small parameter vectors) has no learning rate to lower
        adam = fit.engine in ("svi", "gan") or (fit.engine in ("mle", "map") and bool(fit.params))
        found.append(f"the optimiser did not converge in {fit.settings.get('num_steps')} steps "
                     f"({fit.info.get('message', 'no message')}); raise num_steps"
                     + (" or lower lr" if adam else ""))
    if fit.info.get("boundary_message"):
        found.append(fit.info["boundary_message"])
    if fit.info.get("hessian_positive_definite") is False:
        found.append(fit.info.get("hessian_message") or (
            "the Hessian at the optimum is not negative definite: the optimum is not a strict maximum "
            "(non-identified parameters?), so standard errors and draws are undefined"))
    khat = fit.info.get("pareto_k")
    if khat is not None and not khat <= PARETO_K_MAX:
        found.append(f"Pareto k-hat = {khat:.2f} > {PARETO_K_MAX}: importance weights of the posterior "
                     "against the approximation are heavy-tailed (the posterior's tails are not the "
                     "approximation's), so its joint distribution and tails are unreliable, though its means "
                     "and sds may be close; compare with engine='nuts'")
    found += _dispersion_findings(fit)
    if fit.info.get("curvature_message"):
        found.append(f"at the approximation's mean {fit.info['curvature_message']}")
    loss = fit.sample_stats.get("loss")
    if loss is not None and loss.shape[-1] and not np.all(np.isfinite(loss[..., -1])):
        found.append("the final loss is not finite: the optimiser diverged")
    return found


def _fault_findings(fit: "Fit") -> list[str]:
    """Findings about a run that did not go as asked, whatever the engine: an interrupted run
    (``fit.info["interrupted"]``, set by an engine that caught Ctrl-C and handed back the work
    done so far), points where the log density raised and were rejected
    (``info["density_failures"]``), and chains whose draws or log densities are not finite
    (read from the draws themselves, so that a fit loaded from a file is checked too)."""
    found = []
    info = fit.info or {}
    if info.get("interrupted"):
        note = info.get("interrupted_note")
        found.append("the run was interrupted (KeyboardInterrupt) and is incomplete"
                     + (f": {note}" if note else "") + "; its diagnostics describe the shorter run")
    failures = info.get("density_failures")
    if failures:
        found.append(f"the log density raised at {failures} point(s) (first: {info.get('density_error')}); "
                     "each was rejected (re-drawn at initialisation, a divergent transition after): the model "
                     "is numerically fragile there; add jitter, reparameterise or tighten the priors")
    lp = fit.sample_stats.get("lp") if fit.kind == "samples" else None
    if lp is not None and lp.ndim == 2 and lp.size:
        bad = ~np.isfinite(lp)
        for draws in fit.posterior.values():
            if np.issubdtype(draws.dtype, np.number) and draws.shape[:2] == lp.shape:
                bad |= ~np.isfinite(draws.reshape(lp.shape + (-1,))).all(-1)
        chains = [int(c) for c in np.flatnonzero(bad.any(1))]
        if chains:
            found.append(f"chain(s) {chains} produced non-finite positions or log densities "
                         f"({int(bad.sum())} draw(s), the first at draw {int(np.argmax(bad.any(0)))}): "
                         "their draws are invalid; look for overflow in the model or run in float64")
    return found


def _dispersion_findings(fit: "Fit") -> list[str]:
    """The parameters whose sd under a Gaussian approximation is off from the Laplace sd at its
    mean by more than SVI's factor (``info["sd_vs_laplace"]``, ratios of q's sd over Laplace's,
    in the unconstrained space)."""
    ratios = fit.info.get("sd_vs_laplace")
    if not ratios:
        return []
    narrow = [f"{name} ({ratio:.2g}x)" for name, ratio in ratios.items() if ratio < 1]
    wide = [f"{name} ({ratio:.2g}x)" for name, ratio in ratios.items() if ratio >= 1]
    mean_field = fit.info.get("family") == "normal"
    found = []
    if narrow:
        cause = (" a mean-field Gaussian cannot represent correlations between parameters, and it "
                 "understates the sd of correlated ones;") if mean_field else ""
        remedy = "use guide='mvn', more num_steps, or engine='nuts'" if fit.info.get("family") != "mvn" else \
            "a full-rank Gaussian cannot follow the posterior's shape there: use engine='nuts' (or more num_steps)"
        found.append(f"the approximation is too narrow: the sd of {', '.join(narrow)} is a fraction of what the "
                     f"curvature of the posterior at its mean gives (the Laplace sd; both on the unconstrained scale, "
                     f"where a positive site is its log, so not the sd ratio bg.compare reports);{cause} {remedy}")
    if wide:
        found.append(f"the approximation is too wide: the sd of {', '.join(wide)} is a multiple of the Laplace "
                     "sd at its mean (on the unconstrained scale); run more num_steps or use engine='nuts'")
    return found


def check(fit: "Fit") -> list[str]:
    """The diagnostics verdict: a list of plain-language findings (empty when all is well).

    Checks R-hat > 1.01 and bulk/tail ESS < 400 (sampling engines), divergences, E-BFMI
    < 0.3 and tree-depth saturation (MCMC), unconverged or diverged optimisers, and Gaussian
    approximations whose sds are off from the Laplace sds at their mean by more than a factor 2.
    NaN diagnostics count as failures. Every fit is also checked for an interrupted run, points
    where the log density raised, and non-finite draws or log densities; a fit that is not a
    sampler's also for no finite optimum, an indefinite Hessian and Pareto k-hat > 0.7.

    Parameters
    ----------
    fit : Fit
        A fit (``bg.load(path)`` reads a saved one); anything else raises ``TypeError``.

    Returns
    -------
    list of str
        One sentence per problem found, saying what it means and what to do; empty when all is well.
    """
    from bayesgen.result import Fit

    if not isinstance(fit, Fit):
        raise TypeError(f"bg.check needs a bg.Fit (bg.load(path) reads a saved one), got a {type(fit).__name__}")
    found = _fault_findings(fit)
    bad_sites = [name for name, value in fit.posterior.items()
                 if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value))]
    if bad_sites:
        found.append(f"non-finite posterior values in {', '.join(bad_sites)}")
    if fit.kind == "samples":
        found += _mcmc_findings(fit)
        found += _convergence_findings(fit)
    else:
        found += _optimiser_findings(fit)
    return found


