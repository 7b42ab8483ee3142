"""Eight schools: the classic hierarchical model of coaching effects (Rubin 1981), centred or not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "load_data", "model", "simulate"]

_EFFECTS = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
_STDERRS = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


def model(sigma: torch.Tensor, y: torch.Tensor | None = None, centered: bool = False) -> None:
    """Eight schools: ``y_j ~ Normal(theta_j, sigma_j)``, ``theta_j ~ Normal(mu, tau)``.

    Parameters
    ----------
    sigma : Tensor, shape ``(J,)``
        Known standard errors of the schools' estimated effects.
    y : Tensor, shape ``(J,)``, optional
        Estimated effects; None simulates them.
    centered : bool
        Sample ``theta`` directly (the centred form, whose funnel makes NUTS diverge) or
        as ``mu + tau * theta_tilde`` (non-centred, the default).
    """
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", sigma.shape[-1]):
        if centered:
            theta = pyro.sample("theta", dist.Normal(mu, tau))
        else:
            theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            theta = pyro.deterministic("theta", mu + tau * theta_tilde)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def load_data() -> dict[str, Any]:
    """The SAT coaching data of Rubin (1981), as in Gelman et al., BDA3 section 5.5.

    Returns
    -------
    dict
        The program's arguments: ``"sigma"`` (standard errors) and ``"y"`` (estimated effects), float ndarrays
        ``(8,)``, in SAT points.
    """
    return {"sigma": np.array(_STDERRS), "y": np.array(_EFFECTS)}


def simulate(seed: int, num_schools: int = 8, mu: float = 4.0, tau: float = 3.0
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate effects from known ``mu``, ``tau`` and school effects; returns ``(data, truth)``.

    ``theta_j ~ Normal(mu, tau)``, the standard errors ``sigma_j ~ Uniform(5, 15)`` and ``y_j ~ Normal(theta_j,
    sigma_j)``.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same data.
    num_schools : int
        J, the number of schools.
    mu : float
        The true population mean effect.
    tau : float
        The true between-school sd.

    Returns
    -------
    data : dict
        The program's arguments: ``"sigma"`` and ``"y"``, float ndarrays ``(J,)``.
    truth : dict
        ``"mu"``, ``"tau"`` and ``"theta"``, float ndarray ``(J,)``.
    """
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(5.0, 15.0, num_schools)
    theta = rng.normal(mu, tau, num_schools)
    y = rng.normal(theta, sigma)
    return {"sigma": sigma, "y": y}, {"mu": mu, "tau": tau, "theta": theta}


SPEC = ModelSpec(
    name="eight_schools",
    model=model,
    observed={"y": "y"},
    dims={"theta": ("school",), "theta_tilde": ("school",), "y": ("school",), "sigma": ("school",)},
    description="Hierarchical normal model of SAT coaching effects in eight schools (centred or not)",
    card=(
        "Eight schools estimates the effect of SAT coaching programmes in eight US high "
        "schools from each school's estimated effect and its standard error, partially "
        "pooling the schools towards a common mean mu with between-school spread tau. "
        "With few groups and noisy data, the centred form has a funnel-shaped posterior "
        "that makes HMC diverge; the non-centred form removes it. References: Rubin (1981), "
        "J. Educ. Stat. 6(4); Gelman et al. (2013), Bayesian Data Analysis, 3rd ed., sec. 5.5; "
        "Betancourt & Girolami (2015), arXiv:1312.0906."
    ),
    load_data=load_data,
    simulate=simulate,
)
