"""Bayesian linear regression with weakly-informative priors on standardised data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "load_data", "model", "simulate"]


def model(X: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """``y ~ Normal(alpha + X @ beta, sigma)`` with ``beta ~ Normal(0, 1)``, ``alpha ~ Normal(0, 2)``,
    ``sigma ~ HalfNormal(1)``: weakly informative when X and y are standardised.

    Parameters
    ----------
    X : Tensor, shape ``(N, D)``
        Covariates.
    y : Tensor, shape ``(N,)``, optional
        Responses; None simulates them.
    """
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
    alpha = pyro.sample("alpha", dist.Normal(0.0, 2.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Normal(alpha + (X * beta).sum(-1), sigma), obs=y)


def load_data() -> dict[str, Any]:
    """scikit-learn's diabetes data (442 patients, 10 baseline covariates), X and y standardised."""
    try:
        from sklearn.datasets import load_diabetes
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the diabetes data come from scikit-learn: pip install 'bayesgen[examples]'") from exc
    data = load_diabetes()
    X = (data.data - data.data.mean(0)) / data.data.std(0)
    y = (data.target - data.target.mean()) / data.target.std()
    return {"X": X, "y": y}


def simulate(seed: int, num_obs: int = 200, num_features: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw covariates, coefficients and responses; returns ``(data, truth)``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_obs, num_features))
    beta = rng.normal(size=num_features)
    alpha, sigma = rng.normal(0.0, 1.0), rng.uniform(0.3, 1.0)
    y = alpha + X @ beta + rng.normal(0.0, sigma, num_obs)
    return {"X": X, "y": y}, {"alpha": alpha, "beta": beta, "sigma": sigma}


SPEC = ModelSpec(
    name="linear_regression",
    model=model,
    observed={"y": "y"},
    dims={"beta": ("feature",), "y": ("obs",)},
    description="Bayesian linear regression (diabetes progression from 10 baseline covariates)",
    card=(
        "Gaussian linear regression with weakly-informative priors, meant for standardised "
        "covariates and response. Its default data are the diabetes study of Efron et al. "
        "(2004), 'Least angle regression', Ann. Statist. 32(2), shipped with scikit-learn. "
        "With a flat prior its MLE is ordinary least squares; see Gelman, Hill & Vehtari (2020), "
        "Regression and Other Stories, ch. 9, for the Bayesian treatment."
    ),
    load_data=load_data,
    simulate=simulate,
)
