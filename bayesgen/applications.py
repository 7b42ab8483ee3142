"""What fitted generative models are for: scoring observations as anomalies, and new training data."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pyro
import torch

from bayesgen._counts import check_count
from bayesgen._seeding import check_seed, rng_restored
from bayesgen.evaluate import posterior_draws
from bayesgen.fitting import prepare, with_fixed_arguments
from bayesgen.generate import generate, trained
from bayesgen.marginal import observation_log_likelihood, undrawn_local_latents
from bayesgen.result import Fit

__all__ = ["anomaly_scores", "augment"]


@rng_restored()
def anomaly_scores(fit: Fit, data: Mapping[str, Any], *, num_samples: int = 1000, seed: int = 0) -> np.ndarray:
    """One score per observation: minus the log posterior predictive density of the observation
    under the fit, in nats; higher is more anomalous.

    ``score_n = -log (1/S) sum_s p(y_n | theta_s)`` over ``S`` posterior draws (evenly spaced
    over the chains), the log-sum-exp taken per observation: the density the fitted model, with
    its parameter uncertainty, gives the observation. Discrete latents are summed out, as in the
    log density; the local latents of a deep model whose guide was trained with it (a VAE's
    codes) are integrated out by importance sampling with that guide (the bound of
    ``bg.evaluate``, one value per observation, with the trained weights). An observation is a
    row of the observed site, the first dimension of its likelihood terms; its terms along the
    others (an image's pixels, a text's characters) are summed, and where a program has several
    observed sites of the same rows, theirs too.

    Parameters
    ----------
    fit : Fit
        A fit that holds its program (not one loaded without ``model=``).
    data : mapping
        The program's arguments with the observations to score (the training data, to find its
        outliers, or new data).
    num_samples : int
        Posterior draws averaged over.
    seed : int
        Seeds the importance samples of deep models' local latents.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` scores, one per row of the observations.

    Raises
    ------
    ValueError
        If the fit has no program, or no observed site has one likelihood term per observation
        (a program that scores all its data in one term, such as one long time series).
    """
    if not isinstance(fit, Fit):
        raise TypeError(f"anomaly_scores needs a bg.Fit, got {type(fit).__name__}")
    if fit.problem is None:
        raise ValueError("this fit was loaded from a file without its program; "
                         "pass the model to bg.load(path, model=...) to score observations")
    num_samples, seed = check_count("num_samples", num_samples), check_seed(seed)
    problem = prepare(fit.problem.spec, with_fixed_arguments(fit.problem, data), fit.problem.device, fit.problem.dtype)
    if not problem.spec.observed:
        raise ValueError("data hold no observed site's values: pass the observations to score under the "
                         "program arguments that carry them")
    with torch.no_grad(), trained(problem, fit.params):
        draws = posterior_draws(fit, problem, num_samples, undrawn_local_latents(fit, problem))
        pyro.set_rng_seed(seed)
        loglik = observation_log_likelihood(fit, problem, draws, seed=seed)
    per_observation = _per_observation(loglik, list(problem.spec.observed))
    flat = per_observation.reshape(-1, per_observation.shape[-1]).double()
    return (math.log(flat.shape[0]) - torch.logsumexp(flat, dim=0)).cpu().numpy()


def _per_observation(loglik: Mapping[str, torch.Tensor], observed: list[str]) -> torch.Tensor:
    """``(chain, draw, N)``: each observed site's terms summed over all but their first batch
    dimension, and over the sites, which must agree on ``N``."""
    totals: dict[str, torch.Tensor] = {}
    for site in observed:
        if site not in loglik:
            raise ValueError(f"observed site '{site}' has no pointwise log-likelihood under this fit (its plate "
                             "subsamples, or nothing integrates its local latents out): it cannot be scored")
        terms = loglik[site]
        if terms.dim() < 3:
            raise ValueError(f"observed site '{site}' has one likelihood term for all its observations, not one "
                             "per observation: there is nothing to score one by one")
        totals[site] = terms.reshape(terms.shape[:3] + (-1,)).sum(-1)
    rows = {site: int(total.shape[-1]) for site, total in totals.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(f"the observed sites have different numbers of observations ({rows}); "
                         "score a program whose observed sites share their rows")
    return sum(totals.values())


def augment(fit: Fit, num_samples: int, *, seed: int = 0, predictive: bool = True, **conditions: Any) -> Any:
    """Synthetic observations from a fitted generative model, to train another model on.

    Each observed site gets ``num_samples`` new observations, drawn as ``fit.generate`` draws
    them: global latent sites and network weights from the fit, local latents (a VAE's codes, a
    mixture's assignments) afresh from their prior.

    For class-conditional data, fit one model per class and augment each (the labels are then
    the classes of the fits), or fit a conditional model (one that takes the class as an
    argument) once and pass the class as a condition.

    Parameters
    ----------
    fit : Fit
        A fit that holds its program.
    num_samples : int
        Observations per observed site.
    seed : int
        Seeds the simulation and the choice of posterior draws; a seed gives the same samples.
    predictive : bool
        True: each run of the program takes a random posterior draw of the global sites, so the
        samples carry the fit's parameter uncertainty (the posterior predictive distribution).
        False: every run takes one point, each global site at the centre of its posterior (its
        mean in the unconstrained space, mapped back to its support): the plug-in model.
    **conditions
        Program arguments to generate with instead of the fit's: covariates to generate
        responses for, the class of a conditional model. The observed arguments are left out,
        so that the observations take their sizes from the conditions.

    Returns
    -------
    dict or decoded observations
        As ``fit.generate``: observed site -> array ``(num_samples, *event_shape)``, or what the
        model's decoder returns (strings, a signal).
    """
    if not isinstance(fit, Fit):
        raise TypeError(f"augment needs a bg.Fit, got {type(fit).__name__}")
    if not isinstance(predictive, bool):
        raise TypeError(f"predictive must be True or False, got {predictive!r}")
    return generate(fit, num_samples, seed=seed, conditions=conditions, point=not predictive)
