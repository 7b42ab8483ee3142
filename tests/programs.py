"""Small Pyro programs with known posteriors, shared by the tests, and the skip mark of tests
that compile with TorchInductor."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

PRIOR_SD = 2.0


def cpp_compiler() -> bool:
    """Whether a C++ compiler is on the PATH: TorchInductor needs one to compile for the CPU."""
    return any(shutil.which(name) for name in ("c++", "g++", "clang++"))


#: Skips a test that compiles with TorchInductor where there is no C++ compiler.
needs_compiler = pytest.mark.skipif(not cpp_compiler(), reason="TorchInductor needs a C++ compiler on the CPU")


def normal_normal(y=None, n=20):
    """y_i ~ N(mu, 1), mu ~ N(0, PRIOR_SD^2): the posterior of mu is normal."""
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("obs", n if y is None else y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def normal_normal_posterior(y: np.ndarray) -> tuple[float, float]:
    precision = 1 / PRIOR_SD**2 + len(y)
    return float(np.sum(y) / precision), math.sqrt(1 / precision)


def beta_bernoulli(y=None):
    """y_i ~ Bernoulli(p), p ~ Beta(2, 3): the posterior of p is Beta(2 + k, 3 + n - k)."""
    p = pyro.sample("p", dist.Beta(2.0, 3.0))
    with pyro.plate("obs", y.shape[0]):
        pyro.sample("y", dist.Bernoulli(p), obs=y)


def beta_bernoulli_posterior(y: np.ndarray) -> tuple[float, float]:
    a, b = 2 + y.sum(), 3 + len(y) - y.sum()
    return float(a / (a + b)), float(math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))))


def linear_regression(X, y=None):
    """Gaussian linear regression with an intercept and a positive noise scale."""
    beta = pyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[-1]]).to_event(1))
    alpha = pyro.sample("alpha", dist.Normal(0.0, 10.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    pyro.deterministic("sigma2", sigma**2)
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Normal(alpha + (X * beta).sum(-1), sigma), obs=y)


def line(x, y=None):
    """``y ~ N(a + b x, s)`` in a plate the size of ``y``: a line with noise, three latents."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    s = pyro.sample("s", dist.HalfNormal(1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(a + b * x, s), obs=y)


#: The one-unit linear network of :func:`network_regression` (its weights stay as made: no test trains it).
NETWORK = torch.nn.Linear(1, 1)


def network_regression(x, y=None):
    """y_i ~ N(net(x_i), noise^2) with ``NETWORK`` as a ``pyro.module``: a program with weights fitted as points."""
    pyro.module("net", NETWORK)
    noise = pyro.sample("noise", dist.HalfNormal(1.0))
    with pyro.plate("n", len(x)):
        pyro.sample("y", dist.Normal(NETWORK(x[:, None]).squeeze(-1), noise), obs=y)


def regression_data(seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = 0.5 + X @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.8, size=n)
    return X, y


def gaussian_mixture(y=None, k=2):
    """Two-component mixture with the assignments enumerated out."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(k)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([k]).to_event(1))
    with pyro.plate("obs", y.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("y", dist.Normal(pyro.ops.indexing.Vindex(locs)[..., z], 1.0), obs=y)
