"""Bayesian linear regression with weakly-informative priors, pooled or with varying intercepts."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.util import is_validation_enabled

from bayesgen.spec import ModelSpec

__all__ = ["GLM_DIMS", "SPEC", "intercept", "load_data", "model", "simulate", "simulate_intercepts"]


def _check_groups(group: torch.Tensor | None, num_groups: int | None, num_obs: int) -> None:
    if group is None:
        if num_groups is not None:
            raise ValueError("num_groups is given but group is None; pass group, the group index of each observation")
        return
    if not isinstance(group, torch.Tensor) or group.is_floating_point() or group.dtype == torch.bool:
        kind = group.dtype if isinstance(group, torch.Tensor) else type(group).__name__
        raise TypeError(f"group must hold integer group indices, got {kind}")
    if group.shape != (num_obs,):
        raise ValueError(f"group must have shape ({num_obs},), one index per observation, got {tuple(group.shape)}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int when group is given, got {num_groups!r}")
    if not is_validation_enabled():
        # bayesgen checks the data once, with validation on, then evaluates the density with it
        # off: reading tensor values here would keep its recorded (replayed) density from being used
        return
    low, high = int(group.min()), int(group.max())
    if low < 0 or high >= num_groups:
        raise ValueError(f"group indices must lie in [0, num_groups) = [0, {num_groups}), got values from {low} to {high}")


#: ArviZ dims shared by the zoo's GLMs (coefficients, observations, varying intercepts).
GLM_DIMS = {"beta": ("feature",), "y": ("obs",), "alpha_tilde": ("group",), "alpha_group": ("group",),
            "X": ("obs", "feature"), "group": ("obs",)}  # the arguments too, so that X * beta aligns in xarray


def intercept(group: torch.Tensor | None, num_groups: int | None, num_obs: int) -> torch.Tensor:
    """Sample the intercept of a GLM and return it per observation (or as one scalar when pooled).

    Pooled (``group`` None): ``alpha ~ Normal(0, 2)``. With groups, the non-centred varying
    intercepts ``alpha_group[g] = alpha + tau * alpha_tilde[g]``, ``tau ~ HalfNormal(1)``,
    ``alpha_tilde[g] ~ Normal(0, 1)``: the same ``alpha`` is then the population mean intercept.
    Non-centring avoids the funnel between ``tau`` and the group effects (Betancourt &
    Girolami 2015) that the centred form shows when groups carry little data.

    The indices are checked to lie in ``[0, num_groups)`` while Pyro's validation is on (as
    when ``bg.fit`` checks the data); with it off, an out-of-range index raises torch's
    ``IndexError``.

    Parameters
    ----------
    group : Tensor of int, shape ``(N,)``, optional
        Group index of each observation, in ``[0, num_groups)``.
    num_groups : int, optional
        Number of groups; required with ``group`` (so that groups absent from new data keep their place).
    num_obs : int
        Number of observations ``N`` (to check ``group``'s shape).

    Returns
    -------
    Tensor
        ``alpha`` (broadcasts against the observations) or ``alpha_group[..., group]``, shape ``(..., N)``.
    """
    _check_groups(group, num_groups, num_obs)
    alpha = pyro.sample("alpha", dist.Normal(0.0, 2.0))
    if group is None:
        return alpha
    tau = pyro.sample("tau", dist.HalfNormal(1.0))
    with pyro.plate("group", int(num_groups)):
        alpha_tilde = pyro.sample("alpha_tilde", dist.Normal(0.0, 1.0))
        # event_dim=0: its dims are the plates' dims, so the site keeps its shape when a
        # posterior predictive unconditions it and draws it again from its Delta distribution
        alpha_group = pyro.deterministic("alpha_group", alpha + tau * alpha_tilde, event_dim=0)
    return alpha_group.index_select(-1, group.long())  # unlike indexing, raises for negative indices


def simulate_intercepts(rng: np.random.Generator, num_obs: int, num_groups: int | None, alpha: float,
                        tau: float) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """Draw group indices and varying intercepts for :func:`intercept`'s hierarchical form.

    Returns ``(data, truth, alpha_per_observation)``; with ``num_groups`` None the intercept
    is ``alpha`` and ``data``/``truth`` only hold ``alpha``'s entry. Every group gets at least one
    observation (the indices are ``0 .. num_groups-1`` repeated, then shuffled).

    Parameters
    ----------
    rng : numpy.random.Generator
        The simulation's generator (advanced by the draws).
    num_obs : int
        N, the number of observations.
    num_groups : int, optional
        Number of groups, in ``[1, num_obs]``; None for one pooled intercept.
    alpha : float
        The population mean intercept.
    tau : float
        The sd of the group intercepts around ``alpha`` (unused when pooled).

    Returns
    -------
    data : dict
        ``{"group": int ndarray (N,), "num_groups": num_groups}``, or empty when pooled.
    truth : dict
        ``"alpha"``, and with groups ``"tau"`` and ``"alpha_tilde"``, ``"alpha_group"``, ndarrays ``(num_groups,)``.
    alpha_per_observation : ndarray, shape ``(N,)``
        Each observation's intercept.
    """
    if num_groups is None:
        return {}, {"alpha": alpha}, np.full(num_obs, alpha)
    if num_groups < 1 or num_groups > num_obs:
        raise ValueError(f"num_groups must lie in [1, num_obs={num_obs}], got {num_groups}")
    group = rng.permutation(np.arange(num_obs) % num_groups)  # every group observed
    alpha_tilde = rng.normal(size=num_groups)
    alpha_group = alpha + tau * alpha_tilde
    truth = {"alpha": alpha, "tau": tau, "alpha_tilde": alpha_tilde, "alpha_group": alpha_group}
    return {"group": group, "num_groups": num_groups}, truth, alpha_group[group]


def model(X: torch.Tensor, y: torch.Tensor | None = None, group: torch.Tensor | None = None,
          num_groups: int | None = None) -> None:
    """``y ~ Normal(alpha + X @ beta, sigma)`` with ``beta ~ Normal(0, 1)``, ``alpha ~ Normal(0, 2)``,
    ``sigma ~ HalfNormal(1)``: weakly informative when X and y are standardised.

    With ``group``, the intercept varies by group (see :func:`intercept`).

    Parameters
    ----------
    X : Tensor, shape ``(N, D)``
        Covariates.
    y : Tensor, shape ``(N,)``, optional
        Responses; None simulates them.
    group : Tensor of int, shape ``(N,)``, optional
        Group index of each observation; None fits one pooled intercept.
    num_groups : int, optional
        Number of groups (required with ``group``).
    """
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
    alpha = intercept(group, num_groups, X.shape[0])
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Normal(alpha + (X * beta).sum(-1), sigma), obs=y)


def load_data() -> dict[str, Any]:
    """scikit-learn's diabetes data (442 patients, 10 baseline covariates), X and y standardised.

    Returns
    -------
    dict
        The program's arguments: ``"X"``, float ndarray ``(442, 10)``, and ``"y"`` (disease progression after
        a year), float ndarray ``(442,)``; each column with mean 0 and sd 1.
    """
    try:
        from sklearn.datasets import load_diabetes
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the diabetes data come from scikit-learn: pip install 'bayesgen[examples]'") from exc
    data = load_diabetes()
    X = (data.data - data.data.mean(0)) / data.data.std(0)
    y = (data.target - data.target.mean()) / data.target.std()
    return {"X": X, "y": y}


def simulate(seed: int, num_obs: int = 200, num_features: int = 3, num_groups: int | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw covariates, coefficients and responses; returns ``(data, truth)``.

    With ``num_groups``, observations are spread evenly over the groups and the intercepts
    vary by group with ``tau ~ Uniform(0.5, 1.5)``; ``truth`` then also holds ``tau``,
    ``alpha_tilde`` and the deterministic ``alpha_group``. ``X`` and ``beta`` are standard
    normal, ``alpha ~ Normal(0, 1)`` and ``sigma ~ Uniform(0.3, 1)``.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same data.
    num_obs : int
        N, the number of observations.
    num_features : int
        D, the number of covariates.
    num_groups : int, optional
        Number of groups, in ``[1, num_obs]``; None for one pooled intercept.

    Returns
    -------
    data : dict
        The program's arguments: ``"X"`` ``(N, D)``, ``"y"`` ``(N,)`` and, with groups, ``"group"`` ``(N,)``
        and ``"num_groups"``.
    truth : dict
        ``"alpha"``, ``"beta"`` ``(D,)`` and ``"sigma"``, plus the group entries of :func:`simulate_intercepts`.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_obs, num_features))
    beta = rng.normal(size=num_features)
    alpha, sigma = rng.normal(0.0, 1.0), rng.uniform(0.3, 1.0)
    if num_groups is None:
        y = alpha + X @ beta + rng.normal(0.0, sigma, num_obs)
        return {"X": X, "y": y}, {"alpha": alpha, "beta": beta, "sigma": sigma}
    groups, truth, alpha_obs = simulate_intercepts(rng, num_obs, num_groups, alpha, rng.uniform(0.5, 1.5))
    y = alpha_obs + X @ beta + rng.normal(0.0, sigma, num_obs)
    return {"X": X, "y": y, **groups}, {**truth, "beta": beta, "sigma": sigma}


SPEC = ModelSpec(
    name="linear_regression",
    model=model,
    observed={"y": "y"},
    dims=GLM_DIMS,
    description="Bayesian linear regression (diabetes progression from 10 baseline covariates)",
    card=(
        "Gaussian linear regression with weakly-informative priors, meant for standardised "
        "covariates and response. Its default data are the diabetes study of Efron et al. "
        "(2004), 'Least angle regression', Ann. Statist. 32(2), shipped with scikit-learn. "
        "With a flat prior its MLE is ordinary least squares; see Gelman, Hill & Vehtari (2020), "
        "Regression and Other Stories, ch. 9, for the Bayesian treatment. Passing group (an "
        "integer index per observation) and num_groups gives the varying-intercept "
        "(multilevel) form, non-centred: alpha_group = alpha + tau * alpha_tilde (Gelman & Hill "
        "2007, Data Analysis Using Regression and Multilevel/Hierarchical Models, ch. 12). "
        "Every engine applies to the pooled form; mle does not apply to the hierarchical one, "
        "whose group effects need their prior. "
        "map and laplace work at the joint mode, where tau is overestimated (there tau^4 "
        "equals the sum of the squared group effects); use nuts or svi for tau."
    ),
    load_data=load_data,
    simulate=simulate,
)
