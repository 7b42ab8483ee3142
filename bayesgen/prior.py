"""bg.sample_prior: draws of a program's latent sites from their priors and of its data from those,
before any fit (PyMC's ``sample_prior_predictive``), for prior predictive checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import pyro
import torch
from pyro.infer import Predictive

from bayesgen._counts import check_count
from bayesgen._seeding import check_seed, rng_restored
from bayesgen.dtypes import computing_in
from bayesgen.engine import Problem
from bayesgen.postprocess import deterministic_sites, simulate_sites
from bayesgen.program import on_device
from bayesgen.spec import ModelSpec
from bayesgen.validate import has_discrete_support

if TYPE_CHECKING:
    from bayesgen.convert import InferenceData

__all__ = ["prior_draws", "sample_prior"]


def prior_draws(problem: Problem, num_samples: int, seed: int) -> dict[str, torch.Tensor]:
    """Draws of the continuous latent sites from the prior, ``(1, S, *shape)``.

    The program runs with its data in place, which its latents do not depend on (a latent site
    draws from its prior; only observed sites see the data), so that local latents come at the
    data's size."""
    layout = problem.density.layout
    if not layout:
        raise ValueError("the program has no continuous latent sites whose prior could be sampled")
    pyro.set_rng_seed(seed)
    predictive = Predictive(problem.spec.model, num_samples=num_samples, parallel=problem.density.vectorized,
                            return_sites=[site.name for site in layout])
    with on_device(problem.device), torch.no_grad():
        prior = predictive(**problem.data)
    return {site.name: prior[site.name].reshape((1, num_samples) + site.shape) for site in layout}


@rng_restored()
def sample_prior(model: Callable[..., Any] | str | ModelSpec, data: Mapping[str, Any] | None = None, *,
                 num_samples: int = 500, seed: int = 0) -> "InferenceData":
    """Prior and prior predictive draws of a program, as ArviZ data.

    Each draw takes every continuous latent site from its prior and then simulates the
    observed sites from the program at those values, in the shape of their data. Look at
    them before fitting: do the priors give data of the scale and kind the real data have?
    (``az.plot_ppc(idata, group="prior")``; Gabry, Simpson, Vehtari, Betancourt & Gelman
    2019, "Visualization in Bayesian workflow", JRSS A 182). Discrete latent sites are drawn
    in each simulation but not kept. Networks run at their initial weights, which the
    program's ``pyro.module`` makes afresh (Pyro's parameter store is left as it was).

    Parameters
    ----------
    model : callable, str or ModelSpec
        As for ``bg.fit``.
    data : mapping, optional
        As for ``bg.fit`` (a zoo model's own data by default): the covariates and sizes the
        draws are made at, and the observed data, shown beside them (``observed_data``).
    num_samples : int
        Draws.
    seed : int
        Seeds the draws.

    Returns
    -------
    arviz.InferenceData
        Groups ``prior`` (the latent and ``pyro.deterministic`` sites), ``prior_predictive``
        (the observed sites), both
        with one chain of ``num_samples`` draws, ``observed_data`` and ``constant_data``;
        ``fit.to_arviz().extend(...)`` puts them beside a fit's posterior.
    """
    from bayesgen.convert import prior_inference_data
    from bayesgen.fitting import constant_arguments, prepare, site_dims

    num_samples = check_count("num_samples", num_samples)
    seed = check_seed(seed)
    problem = prepare(model, data)
    if not problem.spec.observed:
        raise ValueError("the program observes no data, so there is nothing to simulate: pass the observed "
                         "arguments in data (their values are shown beside the draws), or declare them in a "
                         "ModelSpec(observed={site: argument})")
    with computing_in(problem.dtype), pyro.get_param_store().scope():
        draws = prior_draws(problem, num_samples, seed)
        with torch.no_grad():
            simulated = simulate_sites(problem.density, draws, problem.data, list(problem.spec.observed))
            draws = {**draws, **deterministic_sites(problem.density, draws)}  # as PyMC's prior holds Deterministics
    nodes = problem.prototype.nodes
    observed = {name: torch.as_tensor(nodes[name]["value"]).cpu().numpy() for name in problem.spec.observed}
    return prior_inference_data({name: value.cpu().numpy() for name, value in draws.items()},
                                {name: value.cpu().numpy() for name, value in simulated.items()},
                                observed, constant_arguments(problem), site_dims(problem),
                                {name for name in observed if has_discrete_support(nodes[name]["fn"])})
