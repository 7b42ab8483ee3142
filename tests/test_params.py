"""Programs with pyro.param / pyro.module parameters: MLE and MAP by Adam through Pyro's SVI."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

import bayesgen as bg
from programs import regression_data

X, Y = regression_data(n=200)
LSTSQ = np.linalg.lstsq(np.c_[np.ones(len(Y)), X], Y, rcond=None)[0]


def make_program(subsample_size=None):
    net = torch.nn.Linear(3, 1)

    def network_regression(X, y=None):
        module = pyro.module("net", net)
        sigma = pyro.param("sigma", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("obs", X.shape[0], subsample_size=subsample_size) as idx:
            mean = module(X[idx]).squeeze(-1)
            pyro.sample("y", dist.Normal(mean, sigma), obs=None if y is None else y[idx])

    return network_regression


def test_mle_of_network_weights_is_least_squares():
    fit = bg.fit(make_program(), {"X": X, "y": Y}, engine="mle", num_steps=3000, lr=0.05)
    assert fit.kind == "point" and fit.stderr is None
    np.testing.assert_allclose(fit.point["net$$$bias"], [LSTSQ[0]], atol=2e-3)
    np.testing.assert_allclose(fit.point["net$$$weight"][0], LSTSQ[1:], atol=2e-3)
    assert fit.sample_stats["loss"].shape == (1, 3000) and fit.info["converged"]


def test_minibatch_mle_pays_for_a_minibatch_and_lands_near_the_optimum():
    fit = bg.fit(make_program(subsample_size=32), {"X": X, "y": Y}, engine="mle", num_steps=3000,
                 lr=0.02)
    np.testing.assert_allclose(fit.point["net$$$weight"][0], LSTSQ[1:], atol=0.1)


def test_map_with_parameters_and_a_latent_site():
    def shrunk_mean(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        sigma = pyro.param("sigma", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("obs", 50):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    y = np.random.default_rng(0).normal(2.0, 0.5, size=50)
    map_ = bg.fit(shrunk_mean, {"y": y}, engine="map", num_steps=3000, lr=0.02)
    mle = bg.fit(shrunk_mean, {"y": y}, engine="mle", num_steps=3000, lr=0.02)
    assert mle.point["mu"] == pytest.approx(y.mean(), abs=2e-3)
    assert mle.point["sigma"] == pytest.approx(y.std(), abs=2e-3)
    assert map_.point["mu"] < mle.point["mu"]  # shrunk towards the prior mean 0
    assert map_.posterior["mu"].shape == (1, 1)
