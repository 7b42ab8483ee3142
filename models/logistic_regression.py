"""Bayesian logistic regression with weakly-informative priors, pooled or with varying intercepts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bayesgen.datasets import require
from bayesgen.models.linear_regression import GLM_DIMS, intercept, simulate_intercepts
from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "load_data", "model", "simulate"]


def model(X: torch.Tensor, y: torch.Tensor | None = None, group: torch.Tensor | None = None,
          num_groups: int | None = None) -> None:
    """``y ~ Bernoulli(logit^-1(alpha + X @ beta))`` with ``beta ~ Normal(0, 1)``, ``alpha ~ Normal(0, 2)``.

    On standardised covariates a unit-sd prior says that one sd of a covariate changes the
    odds by a factor below ``e^2`` with 95% probability: weakly informative, and enough to
    keep the posterior proper when the classes are (nearly) separable, where the MLE
    diverges. With ``group``, the intercept varies by group (see
    ``bayesgen.models.linear_regression.intercept``).

    Parameters
    ----------
    X : Tensor, shape ``(N, D)``
        Covariates.
    y : Tensor, shape ``(N,)``, optional
        Binary responses (0/1, bool, int or float); None simulates them.
    group : Tensor of int, shape ``(N,)``, optional
        Group index of each observation; None fits one pooled intercept.
    num_groups : int, optional
        Number of groups (required with ``group``).
    """
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
    alpha = intercept(group, num_groups, X.shape[0])
    logits = alpha + (X * beta).sum(-1)
    # torch's Bernoulli.log_prob needs a floating value; integer and bool labels are cast
    obs = None if y is None else y.to(logits.dtype)
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=obs)


def load_data() -> dict[str, Any]:
    """scikit-learn's Wisconsin breast cancer data: 569 tumours, 30 standardised features, y = 1 benign.

    Returns
    -------
    dict
        The program's arguments: ``"X"``, float ndarray ``(569, 30)`` (each column mean 0, sd 1), and ``"y"``,
        int ndarray ``(569,)`` of 0 (malignant) and 1 (benign).
    """
    datasets = require("sklearn.datasets", "the breast cancer data")
    data = datasets.load_breast_cancer()
    X = (data.data - data.data.mean(0)) / data.data.std(0)
    return {"X": X, "y": data.target}


def simulate(seed: int, num_obs: int = 300, num_features: int = 3, num_groups: int | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw covariates, coefficients and binary responses; returns ``(data, truth)``.

    ``beta ~ Normal(0, 1)``, ``alpha ~ Normal(0, 0.5)``; with ``num_groups`` the intercepts
    vary with ``tau ~ Uniform(0.5, 1.5)`` and ``truth`` also holds ``tau``, ``alpha_tilde``
    and the deterministic ``alpha_group``.

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
        The program's arguments: ``"X"`` ``(N, D)``, ``"y"``, int 0/1 ndarray ``(N,)``, and, with groups,
        ``"group"`` ``(N,)`` and ``"num_groups"``.
    truth : dict
        ``"alpha"`` and ``"beta"`` ``(D,)``, plus the group entries of
        :func:`bayesgen.models.linear_regression.simulate_intercepts`.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_obs, num_features))
    beta = rng.normal(size=num_features)
    groups, truth, alpha_obs = simulate_intercepts(rng, num_obs, num_groups, rng.normal(0.0, 0.5),
                                                   rng.uniform(0.5, 1.5))
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-(alpha_obs + X @ beta))))
    return {"X": X, "y": y, **groups}, {**truth, "beta": beta}


SPEC = ModelSpec(
    name="logistic_regression",
    model=model,
    observed={"y": "y"},
    dims=GLM_DIMS,
    description="Bayesian logistic regression (benign or malignant breast tumours from 30 features)",
    card=(
        "Logistic regression with Normal(0, 1) priors on the coefficients of standardised "
        "covariates and Normal(0, 2) on the intercept, weakly informative in the sense of "
        "Gelman, Jakulin, Pittau & Su (2008), 'A weakly informative default prior distribution "
        "for logistic and other regression models', Ann. Appl. Stat. 2(4). Its default data are "
        "the Wisconsin diagnostic breast cancer set (Street, Wolberg & Mangasarian 1993, "
        "'Nuclear feature extraction for breast tumor diagnosis', SPIE 1905), shipped with "
        "scikit-learn: 569 tumours, 30 strongly correlated nuclear features, y = 1 for benign. "
        "The classes are almost separable, so the likelihood alone has no finite optimum there: "
        "use map or laplace, not mle, on these data (mle applies to simulated data). Passing "
        "group and num_groups gives varying intercepts, non-centred (Gelman & Hill 2007, ch. 14); "
        "mle does not apply to that form. "
        "map and laplace work at the joint mode, where tau is overestimated (there tau^4 "
        "equals the sum of the squared group effects); use nuts or svi for tau."
    ),
    load_data=load_data,
    simulate=simulate,
)
