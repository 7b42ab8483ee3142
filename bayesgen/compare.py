"""bg.compare: the cross-engine report, one row per engine and scalar parameter."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from typing import Any

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
    """Parameter label (``beta[1]``) -> ``(chain, draw)`` array, for every scalar of ``names``."""
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


def _thinned(draws: np.ndarray) -> np.ndarray:
    """About ESS evenly spaced draws, so that tests for independent samples hold."""
    flat = draws.reshape(-1)
    effective = ess(draws) if draws.shape[0] * draws.shape[1] > 8 else len(flat)
    keep = int(np.clip(effective if np.isfinite(effective) else len(flat), 20, len(flat)))
    if draws.shape[0] == 1 or keep >= len(flat):
        return flat[np.linspace(0, len(flat) - 1, keep).round().astype(int)]
    per_chain = max(keep // draws.shape[0], 1)
    index = np.linspace(0, draws.shape[1] - 1, per_chain).round().astype(int)
    return draws[:, index].reshape(-1)


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
    fits : mapping of name -> Fit, or a sequence of fits (named by engine)
    reference : str, optional
        The name of the reference fit; by default the first MCMC fit, else the first.
    var_names : sequence of str, optional
        Posterior sites to compare (all of each fit's sites shared with the reference by
        default); the joint MMD test then covers these sites only.
    seed : int
        Seed of the permutation tests.

    Returns
    -------
    pandas.DataFrame
        One row per (engine, scalar parameter) with the reference mean and sd, the mean
        difference in reference-sd units, the sd ratio, the two-sample Kolmogorov-Smirnov
        statistic and Wasserstein-1 distance with p-values (both computed on draws thinned
        to their effective sample size, so that autocorrelation does not shrink the
        p-values; the Wasserstein p-value is a permutation test), and per engine a joint
        MMD test over all parameters, standardised by the reference sd.
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
        ref_scalars, scalars = scalar_draws(ref, common), scalar_draws(fit, common)
        joint_ref, joint = [], []
        for name, ref_draws in ref_scalars.items():
            draws = scalars[name]
            if all(np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())) for d in (ref_draws, draws)):
                continue  # a structural constant up to rounding (a Cholesky factor's fixed 0, a correlation's 1)
            ref_mean, ref_sd = ref_draws.mean(), ref_draws.std()
            a, b = _thinned(ref_draws), _thinned(draws)
            ks = stats.ks_2samp(a, b)
            w1, w1_p = _wasserstein_test(a, b, seed)
            rows.append({"engine": label, "parameter": name, "ref_mean": ref_mean, "ref_sd": ref_sd,
                         "mean": draws.mean(), "sd": draws.std(),
                         "mean_diff_sd": (draws.mean() - ref_mean) / ref_sd, "sd_ratio": draws.std() / ref_sd,
                         "ks_stat": ks.statistic, "ks_pvalue": ks.pvalue, "w1": w1, "w1_pvalue": w1_p})
            joint_ref.append((ref_draws.reshape(-1) - ref_mean) / ref_sd)
            joint.append((draws.reshape(-1) - ref_mean) / ref_sd)
        mmd, mmd_p = math.nan, math.nan
        if joint and min(len(joint_ref[0]), len(joint[0])) >= 2:  # the unbiased MMD needs two draws a side
            mmd, mmd_p = mmd_test(_subsample(np.stack(joint_ref, -1), seed), _subsample(np.stack(joint, -1), seed),
                                  seed=seed)
        for row in rows[len(rows) - len(joint):]:  # this fit's rows (none if all its parameters were constant)
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

    Returns the matplotlib axes; with ``path`` the figure is also saved there.
    """
    named = _named(fits)
    sites = sorted({site for fit in named.values() for site in fit.posterior})
    for name in var_names or ():
        if not name.startswith("~") and name not in sites:  # "~name" leaves a site out, as in ArviZ
            raise ValueError(f"var_names: '{name}' is not a posterior site of any of the fits."
                             f"{did_you_mean(name, sites)} Sites: {', '.join(sites)}")
    axes = plot_densities([f.to_arviz() for f in named.values()], list(named),
                          list(var_names) if var_names else None)
    if path is not None:
        save_figure(np.ravel(axes)[0].figure, path)
    return axes


def loo_compare(fits: Mapping[str, Fit], ic: str = "loo") -> pd.DataFrame:
    """Rank models by expected log predictive density (PSIS-LOO or WAIC), via ``arviz.compare``.

    Every fit must carry the pointwise log-likelihood of the same observations (models
    with enumerated discrete latents do not yet).
    """
    if ic not in ("loo", "waic"):
        raise ValueError(f"ic must be 'loo' or 'waic', got '{ic}'")
    for name, fit in fits.items():
        if not fit.log_likelihood:
            raise ValueError(f"fit '{name}' has no pointwise log-likelihood to compare")
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
    return loo_table({name: fit.to_arviz() for name, fit in fits.items()}, ic)
