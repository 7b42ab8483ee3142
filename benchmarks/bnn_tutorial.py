"""NUTS on Pyro's Bayesian regression tutorial: a PyroModule with PyroSample weights.

``PyroModule[nn.Linear]`` with ``PyroSample`` priors on its weight and bias cannot run under a
batch plate (``F.linear`` takes one weight matrix), so bayesgen maps the unbatched program over
the chains with ``torch.func.vmap`` and records the result (``bg.LogDensity.mapped``). This
script fits it with bayesgen (4 chains in one mapped density call) and with Pyro's own NUTS (4
chains one after the other, in this process), 500 warmup + 500 draws each, float64, one thread,
on 170 simulated points with 3 features, and prints each one's wall time, min bulk ESS over the
parameters and ESS per second, and their ratio.

Run ``python benchmarks/bnn_tutorial.py``.
"""

from __future__ import annotations

import time

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS
from pyro.nn import PyroModule, PyroSample
from torch import nn

import bayesgen as bg


class BayesianRegression(PyroModule):
    """The tutorial's model: ``obs ~ Normal(linear(x), sigma)`` with priors on the layer's weights."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def min_ess(posterior: dict[str, np.ndarray]) -> float:
    """The smallest bulk ESS over every scalar of the draws ``(chain, draw, ...)``."""
    dataset = az.convert_to_dataset({k: np.asarray(v).reshape(v.shape[0], v.shape[1], -1)
                                     for k, v in posterior.items()})
    return min(float(az.ess(dataset)[k].min()) for k in posterior)


def main() -> None:
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(170, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(170, generator=generator)
    started = time.perf_counter()
    fit = bg.fit(BayesianRegression(3, 1), {"x": x, "y": y}, engine="nuts", num_warmup=500, num_samples=500,
                 num_chains=4, progress=False)
    ours_seconds, ours_ess = time.perf_counter() - started, min_ess(fit.posterior)
    print(f"bayesgen: {ours_seconds:.1f} s, min ESS {ours_ess:.0f}, ESS/s {ours_ess / ours_seconds:.1f}")
    started = time.perf_counter()
    pyro.set_rng_seed(0)
    chains = []
    for _ in range(4):
        mcmc = MCMC(NUTS(BayesianRegression(3, 1)), num_samples=500, warmup_steps=500, disable_progbar=True)
        mcmc.run(x, y)
        chains.append({k: v.numpy() for k, v in mcmc.get_samples().items()})
    pyro_seconds = time.perf_counter() - started
    pyro_ess = min_ess({k: np.stack([chain[k] for chain in chains]) for k in chains[0]})
    print(f"pyro (4 chains in sequence): {pyro_seconds:.1f} s, min ESS {pyro_ess:.0f}, "
          f"ESS/s {pyro_ess / pyro_seconds:.1f}")
    print(f"bayesgen / pyro ESS/s: {ours_ess / ours_seconds / (pyro_ess / pyro_seconds):.1f}x")


if __name__ == "__main__":
    main()
