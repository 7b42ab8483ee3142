"""Gaussian (or robust Student-t) mixture with full or diagonal covariances; assignments enumerated out."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from bayesgen.datasets import rdataset
from bayesgen.models._priors import ordered_locations
from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "load_data", "model", "simulate"]


def model(y: torch.Tensor | None = None, num_components: int = 2, full_covariance: bool = True,
          robust: bool = False, num_obs: int = 200, num_features: int = 2) -> None:
    """``y_n ~ sum_k w_k MultivariateNormal(loc_k, Sigma_k)`` with the assignments ``z_n`` summed out.

    Parameters
    ----------
    y : Tensor, shape ``(N, D)``, optional
        Observations (standardised); None simulates ``num_obs`` of ``num_features``.
    num_components : int
        K, the number of mixture components.
    full_covariance : bool
        ``Sigma_k = diag(scale_k) L_k L_k^T diag(scale_k)`` with an LKJ(2) prior on the
        correlation matrix, sampled as its Cholesky factor ``corr_cholesky`` (``L_k``) and
        reported as ``corr`` (``L_k L_k^T``, a deterministic site); False gives diagonal
        covariances.
    robust : bool
        True replaces each Gaussian component by a multivariate Student-t with the same location
        and scale matrix and ``df`` degrees of freedom, shared by the components, ``df ~ Gamma(2,
        0.1)`` (Juarez & Steel 2010): heavy tails let a component ignore the few points far from
        it instead of stretching its covariance to cover them, which is what a fit that must
        find those points (anomaly detection) needs. Peel & McLachlan (2000), "Robust mixture
        modelling using the t distribution", Statistics and Computing 10.
    num_obs, num_features : int
        Size of simulated data (ignored when ``y`` is given).

    Notes
    -----
    Label switching is ruled out by ordering the components on the first feature
    (``locs[:, 0]`` increasing, see ``ordered_locations``); the other coordinates of the
    locations are ``Normal(0, 1.5)``. ``weights ~ Dirichlet(2, ..., 2)`` keeps components
    away from empty; ``scales ~ HalfNormal(1)``.
    """
    num_obs, num_features = (y.shape[0], y.shape[1]) if y is not None else (num_obs, num_features)
    k = num_components
    weights = pyro.sample("weights", dist.Dirichlet(torch.full((k,), 2.0)))
    first = pyro.sample("locs_first", ordered_locations(k))
    locs = first[..., None]
    if num_features > 1:
        rest = pyro.sample("locs_rest", dist.Normal(0.0, 1.5).expand([k, num_features - 1]).to_event(2))
        locs = torch.cat([locs, rest], dim=-1)
    locs = pyro.deterministic("locs", locs, event_dim=2)
    scales = pyro.sample("scales", dist.HalfNormal(1.0).expand([k, num_features]).to_event(2))
    if full_covariance:
        factor = pyro.sample("corr_cholesky", dist.LKJCholesky(num_features, 2.0).expand([k]).to_event(1))
        pyro.deterministic("corr", factor @ factor.transpose(-1, -2), event_dim=3)  # what a reader calls corr
        scale_tril = scales[..., None] * factor
    elif robust:
        scale_tril = torch.diag_embed(scales)
    if robust:
        df = pyro.sample("df", dist.Gamma(2.0, 0.1))
    with pyro.plate("obs", num_obs):
        z = pyro.sample("z", dist.Categorical(weights))
        if robust:
            component = dist.MultivariateStudentT(df, Vindex(locs)[..., z, :],
                                                  Vindex(scale_tril)[..., z, :, :])
        elif full_covariance:
            component = dist.MultivariateNormal(Vindex(locs)[..., z, :], scale_tril=Vindex(scale_tril)[..., z, :, :])
        else:
            component = dist.Normal(Vindex(locs)[..., z, :], Vindex(scales)[..., z, :]).to_event(1)
        pyro.sample("y", component, obs=y)


def load_data() -> dict[str, Any]:
    """Old Faithful: 272 eruptions' durations and waiting times (R's ``datasets::faithful``), standardised.

    Returns
    -------
    dict
        The program's arguments: ``"y"``, float ndarray ``(272, 2)``, columns duration and waiting time,
        each with mean 0 and sd 1.
    """
    frame = rdataset("datasets", "faithful")
    values = frame[["eruptions", "waiting"]].to_numpy(dtype=float)
    return {"y": (values - values.mean(0)) / values.std(0)}


def simulate(seed: int, num_obs: int = 200, num_components: int = 2, num_features: int = 2,
             full_covariance: bool = True, robust: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Well-separated components (first-feature locations 3 apart, increasing); returns ``(data, truth)``.

    ``robust=True`` draws Student-t components with ``df = 4``. Weights ``~ Dirichlet(5, ..., 5)``, scales
    ``~ Uniform(0.4, 0.9)``, the other location coordinates ``~ Normal(0, 1)`` and, with full covariances, one
    correlation in ``(-0.6, 0.6)`` between the first two features of each component.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same data.
    num_obs : int
        N, the number of observations.
    num_components : int
        K, the number of mixture components.
    num_features : int
        D, the dimension of each observation.
    full_covariance : bool
        Correlated features within components; False gives diagonal covariances.
    robust : bool
        Student-t components instead of Gaussian ones.

    Returns
    -------
    data : dict
        The program's arguments: ``"y"``, float ndarray ``(N, D)``, with ``"num_components"``,
        ``"full_covariance"`` and ``"robust"``.
    truth : dict
        ``"weights"`` ``(K,)``, ``"locs"`` and ``"scales"`` ``(K, D)``; ``"corr"`` ``(K, D, D)`` with full
        covariances; ``"df"`` when robust.
    """
    rng = np.random.default_rng(seed)
    k, d = num_components, num_features
    weights = rng.dirichlet(np.full(k, 5.0))
    locs = rng.normal(0.0, 1.0, (k, d))
    locs[:, 0] = 3.0 * np.arange(k) - 1.5 * (k - 1) + rng.normal(0.0, 0.2, k)
    scales = rng.uniform(0.4, 0.9, (k, d))
    corr = np.tile(np.eye(d), (k, 1, 1))
    if full_covariance and d > 1:
        for j in range(k):
            rho = rng.uniform(-0.6, 0.6)
            corr[j, 1, 0], corr[j, 1, 1] = rho, np.sqrt(1.0 - rho**2)
    z = rng.choice(k, size=num_obs, p=weights)
    noise = np.einsum("nij,nj->ni", corr[z], rng.normal(size=(num_obs, d)))
    truth = {"weights": weights, "locs": locs, "scales": scales}
    if robust:
        truth["df"] = 4.0
        noise *= np.sqrt(truth["df"] / rng.chisquare(truth["df"], size=(num_obs, 1)))
    y = locs[z] + scales[z] * noise
    if full_covariance:
        truth["corr"] = corr @ np.swapaxes(corr, -1, -2)
    return {"y": y, "num_components": k, "full_covariance": full_covariance, "robust": robust}, truth


SPEC = ModelSpec(
    name="gmm",
    model=model,
    observed={"y": "y"},
    dims={"weights": ("component",), "locs_first": ("component",), "locs_rest": ("component", "feature_rest"),
          "locs": ("component", "feature"), "scales": ("component", "feature"),
          "corr": ("component", "feature", "feature_bis"), "corr_cholesky": ("component", "feature", "feature_bis"),
          "df": (), "y": ("obs", "feature")},
    description="Gaussian mixture, full or diagonal covariance (Old Faithful eruptions and waiting times)",
    card=(
        "A finite mixture of multivariate Gaussians whose component assignments are summed out "
        "by enumeration, so NUTS, Laplace and SVI (TraceEnum_ELBO) all see the marginal "
        "likelihood; bg.infer_discrete recovers the assignments and bg.discrete_marginals the "
        "responsibilities afterwards. Components are ordered on the first feature to rule out "
        "label switching. robust=True gives Student-t components (Peel & McLachlan 2000), "
        "which the anomaly-detection example uses. Default data: the 272 eruptions of Old Faithful (Azzalini & Bowman "
        "1990, Appl. Statist. 39), two well-known clusters. See Bishop (2006), Pattern "
        "Recognition and Machine Learning, ch. 9, and Betancourt (2017), 'Identifying Bayesian "
        "mixture models' (Stan case study) on ordering."
    ),
    load_data=load_data,
    simulate=simulate,
)
