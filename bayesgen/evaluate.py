"""bg.evaluate: samples of a fitted (or prior) model against held-out real data, site by site."""

from __future__ import annotations

import importlib.util
import math
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from bayesgen._counts import check_count
from bayesgen._lazy import LazyModule
from bayesgen._seeding import check_seed, rng_restored
from bayesgen.dtypes import computing_in
from bayesgen.engine import Problem
from bayesgen.fitting import prepare, with_fixed_arguments
from bayesgen.generate import local_latents, trained
from bayesgen.marginal import observation_log_likelihood, undrawn_local_latents
from bayesgen.metrics import c2st, chi_square_test, ks_test, mmd_test
from bayesgen.postprocess import simulate_sites
from bayesgen.prior import prior_draws
from bayesgen.result import Fit
from bayesgen.spec import ModelSpec

__all__ = ["evaluate"]

pd: Any = LazyModule("pandas")
special: Any = LazyModule("scipy.special")

_MAX_MMD_POINTS = 500  # points of each side in the MMD test (its cost is quadratic)
_MIN_C2ST_OBS = 50  # fewer held-out observations cannot train and validate a classifier


@rng_restored()
def evaluate(fit_or_model: Fit | ModelSpec | str | Callable[..., Any], real_data: Mapping[str, Any], *,
             num_samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Compare a model's samples with held-out real data: two-sample tests and predictive density.

    For a ``Fit``, the model samples are posterior predictive draws at the held-out
    covariates (the same simulation as ``fit.predict``, at ``num_samples`` posterior
    draws evenly spaced over the chains); for a model (a zoo name, a ``ModelSpec`` or a
    Pyro program) they are prior predictive draws: the program run with its observed
    arguments set to None, latents drawn from the prior.

    Parameters
    ----------
    fit_or_model : Fit, ModelSpec, str or callable
    real_data : mapping
        Program arguments, as for ``bg.fit``: the held-out observations under their
        observed arguments, plus the covariates they go with. Where the fit holds draws of
        local latents (one value per observation, such as an AutoGuide's codes), observation
        ``i`` takes the draws of the fit's observation ``i``, as NumPyro's ``Predictive`` and
        PyMC pair them; data of another size are refused (score new observations through an
        amortising guide).
    num_samples : int
        Parameter draws (posterior or prior), one predictive data set each; at least 2.
    seed : int
        Seeds the predictive simulation, the subsampling and the tests.

    Returns
    -------
    pandas.DataFrame
        One row per observed site and feature. The first dimension of a site's value
        indexes its observations (the rows compared as points), the remaining dimensions,
        flattened, are its features. A site with no dimensions, or whose distribution scores
        its whole value as one event (an autoregressive series, an HMM's sequence: its time
        points are not exchangeable observations), is one observation: its tests are NaN,
        with a ``UserWarning``, and ``lpd`` scores it. Columns:

        - ``site``, ``feature``: the observed site and the feature's flat index
          (0 for a site with one feature).
        - ``num_obs``: held-out observations of the site.
        - ``ks_stat``, ``ks_pvalue``: two-sample Kolmogorov-Smirnov test of this
          feature, held-out values against model points (below).
        - ``chi2_stat``, ``chi2_pvalue``: for sites with discrete support only (NaN
          otherwise), chi-square test that the held-out values of this feature and all
          model samples of it come from one distribution (the noise of both counted:
          a point fit's one simulated data set is no larger than the data), with sparse
          categories pooled (``bayesgen.metrics.chi_square_test``).
        - ``mmd``, ``mmd_pvalue``: joint kernel two-sample test over all features of
          the site (``bayesgen.metrics.mmd_test``, on at most 500 points of each side, drawn
          at random), same for every row of a site.
        - ``c2st_accuracy``, ``c2st_pvalue``: classifier two-sample test over all
          features (``bayesgen.metrics.c2st``; accuracy 0.5 is chance); NaN with fewer
          than 50 held-out observations or without scikit-learn.
        - ``lpd``: held-out log predictive density, ``sum_i log (1/S) sum_s
          p(y_i | theta_s)`` over the site's likelihood terms ``i`` and the ``S``
          parameter draws (posterior, or prior for a model); higher is better.
          NaN for programs with enumerated discrete latents. For a fit that holds no
          draws of the local latents (a VAE's codes) and trained an amortising guide
          (the one its model ships, or a guide callable passed as ``guide=``), each
          term is the importance-weighted bound on ``log p(y_i)`` with that guide as
          proposal (``bayesgen.marginal``, 1,000 samples per observation); NaN where
          nothing integrates them out (a GAN's noise).
        - ``lpd_per_obs``: ``lpd`` divided by the number of likelihood terms, those the
          program masks out (padding after a sequence's end) not counted: nats per
          observation, per image, per symbol.

        The model points are one predictive observation per parameter draw, at an
        observation index chosen uniformly at random: independent draws from the
        predictive distribution pooled over the held-out design, which the held-out
        observations, taken as exchangeable, are tested against (a fit with one
        parameter value, such as network weights fitted by ``mle``, contributes all the
        observations of its one simulated data set). Small p-values say that the model's
        samples do not look like the data.
    """
    num_samples, seed = check_count("num_samples", num_samples, minimum=2), check_seed(seed)
    if isinstance(fit_or_model, Fit):
        if fit_or_model.problem is None:
            raise ValueError("this fit was loaded from a file without its program; "
                             "pass the model to bg.load(path, model=...) to evaluate it")
        fitted = fit_or_model.problem
        heldout = prepare(fitted.spec, with_fixed_arguments(fitted, real_data), fitted.device, fitted.dtype)
    else:
        heldout = prepare(fit_or_model, real_data)
    with computing_in(heldout.dtype):
        return _evaluate(fit_or_model, heldout, num_samples, seed)


def _evaluate(fit_or_model: Fit | ModelSpec | str | Callable[..., Any], heldout: Problem, num_samples: int,
              seed: int) -> pd.DataFrame:
    """:func:`evaluate` on the prepared held-out problem, in its dtype."""
    if isinstance(fit_or_model, Fit):
        draws = posterior_draws(fit_or_model, heldout, num_samples, undrawn_local_latents(fit_or_model, heldout))
    else:
        draws = prior_draws(heldout, num_samples, seed)
    if not heldout.spec.observed:
        raise ValueError("real_data holds no observed site's data: pass the held-out observations "
                         "under the program arguments that carry them")
    for plate, (subsample_size, size) in heldout.density.subsampled.items():
        raise ValueError(f"with real_data, plate '{plate}' draws a minibatch of {subsample_size} of its {size} "
                         "items: held-out data are scored whole, so leave out the minibatch argument "
                         "(batch_size)")
    params = fit_or_model.params if isinstance(fit_or_model, Fit) else {}
    with torch.no_grad(), trained(heldout, params):
        simulated = _simulate(heldout, draws, seed)
        fit = fit_or_model if isinstance(fit_or_model, Fit) else None
        loglik = observation_log_likelihood(fit, heldout, draws, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for site in heldout.spec.observed:
        proto = heldout.prototype.nodes[site]
        if tuple(simulated[site].shape[2:]) != tuple(proto["value"].shape):
            raise ValueError(f"simulating site '{site}' with its data argument None gives shape "
                             f"{tuple(simulated[site].shape[2:])}, but the held-out data have shape "
                             f"{tuple(proto['value'].shape)}: pass the program's size arguments in real_data too")
        whole = not _factors(proto["fn"]).batch_shape  # one event: a series, whose values are not observations
        rows += _site_rows(site, proto["value"].cpu().numpy(), simulated[site][0].cpu().numpy(),
                           loglik[site].cpu().numpy() if site in loglik else None, _likelihood_terms(proto),
                           whole=whole, discrete=proto["fn"].support.is_discrete, rng=rng, seed=seed)
    return pd.DataFrame(rows)


def _simulate(heldout: Problem, draws: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The predictive draws of the observed sites: the program run with its observed arguments
    None, as a generative program simulates its data.

    A program that takes its observations' number and size from the data alone (an image model)
    simulates the wrong number with them None (its default), or cannot run at all (it reads
    ``images.shape``, or its local latents' draws are of the data's size): such a program, whose
    observed sites have exactly the shape of their data, is run with the data in place, its
    observed sites drawn afresh. Not so a program that reads its observations as inputs (an
    autoregressive one, whose every draw would then continue the real data's prefix): it must be
    given its size arguments, which the shape check of :func:`_evaluate` asks for.
    """
    observed = list(heldout.spec.observed)
    blank = {**heldout.data, **{argument: None for argument in heldout.spec.observed.values()}}
    pyro.set_rng_seed(seed)
    first: Exception | None = None
    try:
        simulated = simulate_sites(heldout.density, draws, blank, observed)
    except (AttributeError, TypeError, ValueError) as exc:
        if not _sized_by_data(heldout) or _reads_its_observations(heldout, seed):
            raise
        first = exc
    else:
        if _shapes_match(simulated, heldout) or not _sized_by_data(heldout) or _reads_its_observations(heldout, seed):
            return simulated
    pyro.set_rng_seed(seed)
    try:
        return simulate_sites(heldout.density, draws, heldout.data, observed)
    except Exception as exc:
        if first is not None:  # the program fails both ways: its error without the data is the one to see
            raise first from exc
        raise


def _reads_its_observations(heldout: Problem, seed: int) -> bool:
    """Whether the program's observed sites depend on the values of their own data arguments
    beyond observing them: the likelihood of the held-out data differs between two runs (same
    seed) with those arguments all zeros and all ones. A program that fails on such data counts
    as reading them."""
    arguments = [argument for argument in heldout.spec.observed.values()
                 if isinstance(heldout.data.get(argument), torch.Tensor)]
    scores = []
    for fill in (0, 1):
        data = {**heldout.data, **{argument: torch.full_like(heldout.data[argument], fill) for argument in arguments}}
        pyro.set_rng_seed(seed)
        try:
            trace = poutine.trace(heldout.spec.model).get_trace(**data)
            scores.append([trace.nodes[site]["fn"].log_prob(heldout.prototype.nodes[site]["value"])
                           for site in heldout.spec.observed])
        except Exception:
            return True
    return any(not torch.allclose(first, second, equal_nan=True) for first, second in zip(*scores))


def _shapes_match(simulated: Mapping[str, torch.Tensor], heldout: Problem) -> bool:
    return all(tuple(simulated[site].shape[2:]) == tuple(heldout.prototype.nodes[site]["value"].shape)
               for site in heldout.spec.observed)


def _sized_by_data(heldout: Problem) -> bool:
    """Whether each observed site's distribution has exactly the shape of its held-out data (so
    that drawing it afresh with the data in place gives observations of that shape)."""
    return all(tuple(site["fn"].shape()) == tuple(site["value"].shape)
               for site in (heldout.prototype.nodes[name] for name in heldout.spec.observed))


def _factors(fn: Any) -> Any:
    """The distribution under its ``.to_event``: iid values written ``Normal(mu, 1).expand([n]).to_event(1)``
    are n observations, where an AR series or an HMM sequence, one event of a distribution that
    does not factor, is one."""
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return fn


def _likelihood_terms(site: Mapping[str, Any]) -> int:
    """How many likelihood terms an observed site has: its batch elements that the program does not
    mask out (with ``poutine.mask`` or a distribution's ``.mask(...)``: a sequence's padding after
    its end symbol, say)."""
    shape = site["fn"].batch_shape
    mask = torch.ones(shape, dtype=torch.bool)
    for given in (site["mask"], getattr(site["fn"], "_mask", None)):
        if isinstance(given, torch.Tensor):
            mask = mask & given.to(mask.device).expand(shape)
        elif given is False:
            return 0
    return int(mask.sum())


def _as_tensor(value: np.ndarray, problem: Problem) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, dtype=float), dtype=problem.dtype, device=problem.device)


def posterior_draws(fit: Fit, heldout: Problem, num_samples: int, undrawn: set[str]) -> dict[str, torch.Tensor]:
    """``num_samples`` posterior draws evenly spaced over the pooled chains, shape ``(1, S, *shape)``;
    the ``undrawn`` local latents are left to the simulation, which draws them from the prior."""
    names = [name for name in heldout.density.latent_names if name not in undrawn]
    missing = [name for name in names if name not in fit.posterior]
    if missing:
        raise ValueError(f"the fit has no posterior draws of the latent site(s) {missing or names} "
                         "that the program has with real_data")
    if not names:
        return {}  # network weights only: the program is one model, run once
    local = local_latents(heldout.prototype, list(heldout.spec.observed))
    for site in (site for site in heldout.density.layout if site.name in names):
        drawn = tuple(fit.posterior[site.name].shape[2:])
        if drawn != site.shape:
            whose = (" (a local latent: the fit holds its values for the observations it was fitted to, which "
                     "new observations do not share; a guide callable that amortises it, such as an encoder, "
                     "scores them)") if site.name in local else ""
            raise ValueError(f"the fit's draws of site '{site.name}' have shape {drawn}, but the program with "
                             f"these data has it of shape {site.shape}{whose}")
    total = fit.num_chains * fit.num_draws
    index = np.linspace(0, total - 1, min(num_samples, total)).round().astype(int)
    return {name: _as_tensor(fit.posterior[name].reshape((total,) + fit.posterior[name].shape[2:])[index][None],
                             heldout) for name in names}


def _site_rows(site: str, real: np.ndarray, simulated: np.ndarray, loglik: np.ndarray | None, terms: int, *,
               whole: bool, discrete: bool, rng: np.random.Generator, seed: int) -> list[dict[str, Any]]:
    """The rows of one observed site: ``real`` has the site's shape, ``simulated`` ``(S, *shape)``,
    ``terms`` the number of its likelihood terms that count; ``whole`` where the site's value is one
    event of its distribution (one observation, however many values it holds)."""
    num_obs = real.shape[0] if real.ndim and not whole else 1
    if num_obs < 2:
        what = (f"its distribution scores its {real.size} values as one event (a series or a joint draw), "
                "whose values are not independent observations" if whole and real.size > 1
                else "it holds one value")
        warnings.warn(f"site '{site}' is one observation: {what}; the two-sample tests need several and are NaN, "
                      "and only lpd scores it", UserWarning, stacklevel=3)
    points = real.reshape(num_obs, -1).astype(float)
    sims = simulated.reshape(len(simulated), num_obs, -1).astype(float)
    if not np.isfinite(sims).all():
        raise ValueError(f"the model's simulations of site '{site}' hold {int((~np.isfinite(sims)).sum())} "
                         f"non-finite values of {sims.size}: its draws include non-finite values or values that "
                         "overflow the program (bg.check(fit) says which); the tests need finite simulations")
    if len(sims) > 1:
        model = sims[np.arange(len(sims)), rng.integers(num_obs, size=len(sims))]
    else:  # one parameter value (a point fit of network weights): its simulated observations, all iid given it
        model = sims[0]
    joint: dict[str, float] = {"mmd": math.nan, "mmd_pvalue": math.nan,
                               "c2st_accuracy": math.nan, "c2st_pvalue": math.nan}
    if num_obs >= 2:
        # the test's cost is quadratic in its points: at most _MAX_MMD_POINTS from each side
        kept = points if num_obs <= _MAX_MMD_POINTS else points[rng.choice(num_obs, _MAX_MMD_POINTS, replace=False)]
        joint["mmd"], joint["mmd_pvalue"] = mmd_test(kept, model[:_MAX_MMD_POINTS], seed=seed)
    if num_obs >= _MIN_C2ST_OBS:
        if importlib.util.find_spec("sklearn") is None:
            warnings.warn("scikit-learn is not installed, so the c2st columns are NaN: pip install scikit-learn",
                          RuntimeWarning, stacklevel=3)
        else:
            joint["c2st_accuracy"], joint["c2st_pvalue"] = c2st(points, model, seed=seed)
    lpd = math.nan
    if loglik is not None:
        flat = loglik.reshape(-1, int(np.prod(loglik.shape[2:])))
        lpd = float(np.sum(special.logsumexp(flat, axis=0) - math.log(len(flat))))
    rows = []
    for feature in range(points.shape[1]):
        ks = ks_test(points[:, feature], model[:, feature]) if num_obs >= 2 else (math.nan, math.nan)
        chi2 = chi_square_test(points[:, feature], model_samples=sims[:, :, feature]) if discrete and num_obs >= 2 \
            else (math.nan, math.nan)
        rows.append({"site": site, "feature": feature, "num_obs": num_obs, "ks_stat": ks[0], "ks_pvalue": ks[1],
                     "chi2_stat": chi2[0], "chi2_pvalue": chi2[1], **joint, "lpd": lpd,
                     "lpd_per_obs": lpd / terms})
    return rows
