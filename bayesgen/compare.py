"""bg.compare: the cross-engine report, one row per engine and scalar parameter."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from bayesgen._files import save_figure
from bayesgen._hints import did_you_mean
from bayesgen._lazy import LazyModule
from bayesgen.convert import plot_densities
from bayesgen.diagnostics import ess, loo_table
from bayesgen.metrics import mmd_test
from bayesgen.result import Fit

__all__ = ["compare", "loo_compare", "plot_compare"]

pd: Any = LazyModule("pandas")
stats: Any = LazyModule("scipy.stats")

_MAX_POINTS = 500  # draws per side in the joint MMD test (its cost is quadratic)


def _named(fits: Mapping[str, Fit] | Sequence[Fit], least: int = 1) -> dict[str, Fit]:
    """Label -> fit, the labels of a sequence being the engines' names (``svi-2`` for a second);
    a ``TypeError`` for anything but fits (a path: ``bg.load`` reads it), a ``ValueError`` for
    fewer than ``least``."""
    if isinstance(fits, Mapping):
        named = dict(fits)
    else:
        named = {}
        for fit in fits:
            name, k = getattr(fit, "engine", ""), 2
            while name in named:
                name, k = f"{getattr(fit, 'engine', '')}-{k}", k + 1
            named[name] = fit
    for label, fit in named.items():
        if not isinstance(fit, Fit):
            raise TypeError(f"fits must be bg.Fit objects (bg.load(path) reads a saved one); "
                            f"'{label}' is a {type(fit).__name__}" if label else
                            f"fits must be bg.Fit objects (bg.load(path) reads a saved one), got a {type(fit).__name__}")
    if len(named) < least:
        raise ValueError(f"comparing needs at least {least} fits, got {len(named)}")
    return named


def scalar_draws(fit: Fit, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Parameter label (``beta[1]``) -> ``(chain, draw)`` array, for every scalar of ``names``.

    Parameters
    ----------
    fit : Fit
    names : sequence of str
        Posterior sites of ``fit``.

    Returns
    -------
    dict of str to array
        A scalar site under its name; each element of a site of shape ``s`` under
        ``name[i,j]`` (no spaces), in C order; each value of shape ``(chain, draw)``.
    """
    out = {}
    for name in names:
        draws = fit.posterior[name]
        if draws.ndim == 2:
            out[name] = draws
            continue
        flat = draws.reshape(draws.shape[:2] + (-1,))
        for i, index in enumerate(np.ndindex(draws.shape[2:])):
            out[f"{name}[{','.join(map(str, index))}]"] = flat[..., i]
    return out


def _without_mirrors(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both fits' scalars without those whose draws repeat an earlier scalar's exactly in both fits
    (a correlation matrix's ``corr[0,1,0]`` is its ``corr[0,0,1]``): a row, and a dimension of the
    joint test, each would count twice."""
    seen: set[tuple[bytes, bytes]] = set()
    kept = []
    for name in reference:  # digests, not the draws: a site of many scalars would be held twice over
        key = tuple(hashlib.blake2b(np.ascontiguousarray(draws[name]).tobytes()).digest()
                    for draws in (reference, other))
        if key not in seen:
            seen.add(key)
            kept.append(name)
    return {name: reference[name] for name in kept}, {name: other[name] for name in kept}


def _kept(draws: np.ndarray, kind: str) -> float:
    """How many of a scalar's ``(chain, draw)`` draws the tests keep: half their bulk ESS for a
    sampler's autocorrelated draws (see :func:`_thinning`), all of an approximation's or a point
    fit's independent ones (halving them would halve the tests' power for nothing)."""
    size = draws.shape[0] * draws.shape[1]
    if kind != "samples" or size <= 8:
        return size
    effective = ess(draws)
    return effective / 2 if np.isfinite(effective) else size


def _thinning(shape: tuple[int, ...], keep: float) -> np.ndarray:
    """Flat indices of about ``keep`` (at least 20) evenly spaced draws of a ``(chain, draw)`` array.

    Draws spaced by the ESS alone stay correlated (an AR(1) chain with coefficient 0.95 keeps 0.13
    at that spacing, and two fits of one posterior were told apart 10-13% of the time at the 5%
    level); at twice the spacing, half the ESS, the tests' sizes were 4.5-6% in 200 repetitions."""
    chains, length = shape[:2]
    keep = int(np.clip(keep, 20, chains * length))
    if chains == 1 or keep >= chains * length:
        return np.linspace(0, chains * length - 1, keep).round().astype(int)
    index = np.linspace(0, length - 1, max(keep // chains, 1)).round().astype(int)
    return (np.arange(chains)[:, None] * length + index).reshape(-1)


def _thinned(draws: np.ndarray, kind: str) -> np.ndarray:
    """The draws of one scalar that the tests keep (:func:`_kept`), evenly spaced."""
    return draws.reshape(-1)[_thinning(draws.shape, _kept(draws, kind))]


def _wasserstein_test(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    result = stats.permutation_test((x, y), lambda a, b: stats.wasserstein_distance(a, b),
                                    permutation_type="independent", n_resamples=199,
                                    alternative="greater", rng=np.random.default_rng(seed))
    return float(result.statistic), float(result.pvalue)


def compare(fits: Mapping[str, Fit] | Sequence[Fit], reference: str | None = None, *,
            var_names: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """Compare posteriors from several fits against a reference, parameter by parameter.

    Parameters
    ----------
    fits : mapping of name -> Fit, or a sequence of fits
        At least two. A sequence's fits are named by engine (``svi-2`` for a second ``svi``).
    reference : str, optional
        The name of the reference fit; by default the first MCMC fit, else the first.
    var_names : sequence of str, optional
        Posterior sites to compare (all of each fit's sites shared with the reference by
        default); the joint MMD test then covers these sites only.
    seed : int, default 0
        Seed of the permutation tests (and of the subsampling of the MMD test to 500 draws a side).

    Returns
    -------
    pandas.DataFrame
        One row per (engine, scalar parameter) with the reference mean and sd, the mean
        difference in reference-sd units, the sd ratio, the two-sample Kolmogorov-Smirnov
        statistic and Wasserstein-1 distance with p-values (both computed on draws thinned
        to half their effective sample size for a sampler's draws, so that autocorrelation
        does not shrink the p-values; the Wasserstein p-value is a permutation test), and per
        engine a joint MMD test over all parameters, standardised by the reference sd, on
        draws thinned as one to half the smallest of their ESS. Parameters with non-finite
        draws are left out, with a warning.
    """
    named = _named(fits, least=2)
    if reference is None:
        reference = next((k for k, f in named.items() if f.kind == "samples"), next(iter(named)))
    if reference not in named:
        raise ValueError(f"reference '{reference}' is not one of the fits: {', '.join(named)}")
    ref = named[reference]
    for label, fit in named.items():
        if not fit.posterior:
            raise ValueError(f"fit '{label}' has no posterior draws to compare (its unknowns are trained "
                             "parameters, such as network weights): compare such fits by held-out likelihood "
                             "and sample tests, bg.evaluate(fit, heldout) for each")
    unknown = [name for name in var_names or () if name not in ref.posterior]
    if unknown:
        raise ValueError(f"var_names {unknown} are not posterior sites of the reference '{reference}' "
                         f"(its sites: {', '.join(ref.posterior)})")
    rows = []
    for label, fit in named.items():
        if label == reference:
            continue
        common = [k for k in (var_names or ref.posterior) if k in fit.posterior]
        if not common:
            raise ValueError(f"fit '{label}' shares no posterior site with the reference '{reference}'")
        for name in common:
            if fit.posterior[name].shape[2:] != ref.posterior[name].shape[2:]:
                raise ValueError(f"site '{name}' has shape {fit.posterior[name].shape[2:]} in fit '{label}' but "
                                 f"{ref.posterior[name].shape[2:]} in the reference '{reference}': they are not "
                                 "the same parameter (fits of one model to other data, or of another model)")
        ref_scalars, scalars = _without_mirrors(scalar_draws(ref, common), scalar_draws(fit, common))
        broken = [name for name in ref_scalars
                  if not (np.isfinite(ref_scalars[name]).all() and np.isfinite(scalars[name]).all())]
        if broken:
            warnings.warn(f"fit '{label}' or the reference has non-finite draws of {', '.join(broken)}; they are "
                          "left out of the comparison (bg.check says why)", UserWarning, stacklevel=2)
        joint_ref, joint, first_row = [], [], len(rows)
        for name, ref_draws in ref_scalars.items():
            draws = scalars[name]
            if name in broken:
                continue
            if all(np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())) for d in (ref_draws, draws)):
                continue  # a structural constant up to rounding (a Cholesky factor's fixed 0, a correlation's 1)
            ref_mean, ref_sd = ref_draws.mean(), ref_draws.std()
            a, b = _thinned(ref_draws, ref.kind), _thinned(draws, fit.kind)
            ks = stats.ks_2samp(a, b)
            w1, w1_p = _wasserstein_test(a, b, seed)
            with np.errstate(divide="ignore", invalid="ignore"):  # a reference held fixed: inf, as it is
                shift, ratio = (draws.mean() - ref_mean) / ref_sd, draws.std() / ref_sd
            rows.append({"engine": label, "parameter": name, "ref_mean": ref_mean, "ref_sd": ref_sd,
                         "mean": draws.mean(), "sd": draws.std(), "mean_diff_sd": shift, "sd_ratio": ratio,
                         "ks_stat": ks.statistic, "ks_pvalue": ks.pvalue, "w1": w1, "w1_pvalue": w1_p})
            if ref_sd > 0:  # a scalar the reference holds fixed (a stuck chain) has no scale for the joint test
                joint_ref.append((ref_draws - ref_mean) / ref_sd)
                joint.append((draws - ref_mean) / ref_sd)
        mmd, mmd_p = math.nan, math.nan
        if joint and min(joint_ref[0].size, joint[0].size) >= 2:  # the unbiased MMD needs two draws a side
            # thinned as one: every parameter at the same draws, as many as the least effective one's ESS
            sides = [np.stack([d.reshape(-1) for d in side], -1)[_thinning(side[0].shape,
                                                                            min(_kept(d, kind) for d in side))]
                     for side, kind in ((joint_ref, ref.kind), (joint, fit.kind))]
            mmd, mmd_p = mmd_test(*(_subsample(points, seed) for points in sides), seed=seed)
        for row in rows[first_row:]:  # this fit's rows (none if all its parameters were constant)
            row["mmd"], row["mmd_pvalue"] = mmd, mmd_p
    return pd.DataFrame(rows)


def _subsample(points: np.ndarray, seed: int) -> np.ndarray:
    if len(points) <= _MAX_POINTS:
        return points
    index = np.random.default_rng(seed).choice(len(points), _MAX_POINTS, replace=False)
    return points[index]


def plot_compare(fits: Mapping[str, Fit] | Sequence[Fit], var_names: Sequence[str] | None = None,
                 path: str | None = None) -> np.ndarray:
    """Overlay every fit's marginal posterior densities (``arviz.plot_density``).

    Fits with non-finite draws of a site are left out of its panel, with a warning.

    Parameters
    ----------
    fits : mapping of name -> Fit, or a sequence of fits
        At least one; a sequence's fits are named by engine, as for :func:`compare`. The names
        label the legend.
    var_names : sequence of str, optional
        Posterior sites to plot, each of at least one fit (else ``ValueError``); ``"~name"``
        leaves a site out, as in ArviZ. By default every site of any fit.
    path : str, optional
        Also save the figure there (its format from the suffix, PNG without one); by default it
        is not saved.

    Returns
    -------
    numpy.ndarray of matplotlib Axes
        One panel per scalar parameter.
    """
    named = _named(fits)
    sites = sorted({site for fit in named.values() for site in fit.posterior})
    for name in var_names or ():
        if not name.startswith("~") and name not in sites:  # "~name" leaves a site out, as in ArviZ
            raise ValueError(f"var_names: '{name}' is not a posterior site of any of the fits."
                             f"{did_you_mean(name, sites)} Sites: {', '.join(sites)}")
    left_out = {name[1:] for name in var_names or () if name.startswith("~")}
    chosen = [name for name in [n for n in var_names or () if not n.startswith("~")] or sites if name not in left_out]
    broken = [f"{label}: {name}" for label, fit in named.items() for name in chosen
              if name in fit.posterior and not np.isfinite(fit.posterior[name]).all()]
    if broken:  # ArviZ leaves such a fit out of the panel without a word
        warnings.warn(f"non-finite draws are not plotted ({'; '.join(broken)}); bg.check says why",
                      UserWarning, stacklevel=2)
    axes = plot_densities([f.to_arviz() for f in named.values()], list(named),
                          list(var_names) if var_names else None)
    if path is not None:
        save_figure(np.ravel(axes)[0].figure, path)
    return axes


def loo_compare(fits: Mapping[str, Fit] | Sequence[Fit], ic: str = "loo") -> pd.DataFrame:
    """Rank models by expected log predictive density (PSIS-LOO or WAIC), via ``arviz.compare``.

    Every fit must carry the pointwise log-likelihood of the same observations (enumerated
    discrete latents summed out); fits whose observed data differ are refused, as their elpds
    are of different data. Several observed sites of one plate are left out together, item by
    item (their log-likelihoods summed); the terms of sites in other plates are other
    observations. Non-finite log-likelihoods are refused by name. ``fits`` is a mapping of name -> fit, or
    a sequence of fits named by engine, as for :func:`compare`.

    Parameters
    ----------
    fits : mapping of name -> Fit, or a sequence of fits
        Each with varying posterior draws and a pointwise log-likelihood of two or more terms,
        all of the same observations; else ``ValueError``.
    ic : {"loo", "waic"}, default "loo"
        The information criterion: ``"loo"`` is Pareto-smoothed importance-sampling leave-one-out
        cross-validation, ``"waic"`` the widely applicable information criterion. Anything else
        raises ``ValueError``.

    Returns
    -------
    pandas.DataFrame
        ``arviz.compare``'s table, one row per fit (indexed by name), best first: ``rank``, the elpd
        (``elpd_loo`` or ``elpd_waic``), the effective number of parameters, ``elpd_diff`` from the
        best, ``weight``, ``se``, ``dse``, ``warning`` and ``scale``.
    """
    if ic not in ("loo", "waic"):
        raise ValueError(f"ic must be 'loo' or 'waic', got '{ic}'")
    fits = _named(fits)
    _same_observations(fits)
    for name, fit in fits.items():
        if not fit.log_likelihood:
            raise ValueError(f"fit '{name}' has no pointwise log-likelihood to compare")
        for site, values in fit.log_likelihood.items():
            bad = ~np.isfinite(values)
            if bad.any():
                raise ValueError(f"fit '{name}' has {int(bad.sum())} non-finite values of {values.size} in the "
                                 f"log-likelihood of site '{site}' (draws where the model gives the data no density, "
                                 "or non-finite draws: see bg.check), so its elpd, and every fit's weight beside it, "
                                 "would be NaN; refit it, or leave it out")
        if sum(int(np.prod(values.shape[2:])) for values in fit.log_likelihood.values()) < 2:
            raise ValueError(f"fit '{name}' has one likelihood term (a whole series or sequence is one "
                             "observation), so there is no observation to leave out: compare such fits by "
                             "held-out likelihood, bg.evaluate(fit, heldout)['lpd']")
        if not fit.posterior and fit.params:
            raise ValueError(f"fit '{name}' has no posterior draws (its unknowns are network weights, fitted as "
                             "points), so leave-one-out has nothing to reweight: compare such fits by held-out "
                             "likelihood, bg.evaluate(fit, heldout)['lpd_per_obs']")
        if all(np.ptp(values.reshape(-1, *values.shape[2:]), axis=0).max(initial=0.0) == 0
               for values in fit.log_likelihood.values()):
            raise ValueError(f"fit '{name}' has draws that all sit at one point (a point fit whose curvature gave "
                             "no covariance: see bg.check), so its elpd is the plug-in fit to the very data it "
                             "was fitted to, which ranks above any posterior; refit it with draws that vary "
                             "(engine='nuts', or 'laplace' of a well-posed model)")
    return loo_table({name: _one_log_likelihood(fit).to_arviz() for name, fit in fits.items()}, ic)


def _one_log_likelihood(fit: Fit) -> Fit:
    """``fit`` with one pointwise log-likelihood, as ArviZ's comparison takes. Sites whose terms
    index the same plates (the same ArviZ dims: ``y1`` and ``y2`` of one ``plate("obs", 25)``)
    are summed term by term, so that each item is left out with all its observations; the terms
    of sites in other plates (or without a plate) are other observations, and are set beside them."""
    if len(fit.log_likelihood) == 1:
        return fit
    groups: dict[tuple[str, ...], np.ndarray] = {}
    for site, values in fit.log_likelihood.items():
        batch = values.ndim - 2
        named = list(fit.dims.get(site, []))[:batch]
        dims = tuple(named + [f"{site}_dim_{i}" for i in range(len(named), batch)]) or (site,)  # unnamed: its own
        groups[dims] = groups.get(dims, 0.0) + np.asarray(values, dtype=float)
    joint = np.concatenate([values.reshape(values.shape[:2] + (-1,)) for values in groups.values()], axis=-1)
    return dataclasses.replace(fit, _log_likelihood={"observations": joint})


def _same_observations(fits: dict[str, Fit]) -> None:
    """A ``ValueError`` unless every fit holds the same observed values (site names may differ
    between models; the values, in site order, may not)."""
    def values(fit: Fit) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=float).reshape(-1) for v in fit.observed_data.values()] or
                              [np.empty(0)])

    named = [(name, values(fit)) for name, fit in fits.items() if fit.observed_data]
    for name, observed in named[1:]:
        first, reference = named[0]
        if observed.shape != reference.shape or not np.allclose(observed, reference, equal_nan=True):
            what = f"{reference.size} and {observed.size} values" if observed.shape != reference.shape else \
                f"{int(np.sum(~np.isclose(observed, reference, equal_nan=True)))} of {observed.size} values differ"
            raise ValueError(f"fits '{first}' and '{name}' were fitted to different observations ({what}): "
                             "leave-one-out ranks models of the same data only")
