"""bg.sample_prior: prior and prior predictive draws as ArviZ data, checked against closed forms."""

import numpy as np
import pyro
import pytest
import torch

import bayesgen as bg
from programs import PRIOR_SD, beta_bernoulli, network_regression, normal_normal

Y = np.random.default_rng(0).normal(1.0, 1.0, size=20)


def test_the_prior_and_prior_predictive_of_the_normal_model_have_their_closed_forms():
    idata = bg.sample_prior(normal_normal, {"y": Y}, num_samples=4000, seed=1)
    assert set(idata.groups()) == {"prior", "prior_predictive", "observed_data"}  # n was not given: no constant
    mu, y = idata.prior["mu"].values, idata.prior_predictive["y"].values
    assert mu.shape == (1, 4000) and y.shape == (1, 4000, 20)
    # mu ~ N(0, PRIOR_SD^2); each y_i ~ N(0, PRIOR_SD^2 + 1) and y_i - mu ~ N(0, 1) whatever mu
    assert abs(mu.mean()) < 4 * PRIOR_SD / np.sqrt(4000)
    assert mu.std() == pytest.approx(PRIOR_SD, rel=4 / np.sqrt(2 * 4000))
    assert y[..., 0].std() == pytest.approx(np.sqrt(PRIOR_SD**2 + 1), rel=4 / np.sqrt(2 * 4000))
    residual = y - mu[..., None]
    assert residual.std() == pytest.approx(1.0, rel=4 / np.sqrt(2 * 80_000))
    np.testing.assert_array_equal(idata.observed_data["y"].values, Y)
    again = bg.sample_prior(normal_normal, {"y": Y}, num_samples=4000, seed=1)
    np.testing.assert_array_equal(again.prior["mu"].values, mu)  # seeded


def test_discrete_data_come_as_integers_with_the_zoo_dims_and_join_a_fits_data():
    flips = (np.random.default_rng(2).random(30) < 0.3).astype(float)
    idata = bg.sample_prior(beta_bernoulli, {"y": flips}, num_samples=500)
    drawn = idata.prior_predictive["y"].values
    assert drawn.dtype == np.int64 and set(np.unique(drawn)) <= {0, 1}
    # y_i ~ Bernoulli(p), p ~ Beta(2, 3): P(y_i = 1) = 2 / 5; a draw's mean of 30 flips has variance
    # Var(p) + E[p (1 - p)] / 30 = 0.04 + 0.2 / 30
    assert abs(drawn.mean() - 0.4) < 4 * np.sqrt((0.04 + 0.2 / 30) / 500)
    schools = bg.sample_prior("eight_schools", num_samples=50)
    assert schools.prior_predictive["y"].dims == ("chain", "draw", "school")
    fit = bg.fit("eight_schools", engine="laplace")
    idata = fit.to_arviz()
    idata.extend(schools)
    assert {"posterior", "prior", "prior_predictive"} <= set(idata.groups())


def test_networks_run_at_fresh_weights_and_leave_the_parameter_store_alone():
    pyro.clear_param_store()
    sentinel = pyro.param("net$$$weight", torch.full((1, 1), 100.0))  # a trained weight left by another fit
    x = np.linspace(-1, 1, 10)
    idata = bg.sample_prior(network_regression, {"x": x, "y": np.sin(x)}, num_samples=200)
    assert idata.prior_predictive["y"].shape == (1, 200, 10)
    assert list(pyro.get_param_store().keys()) == ["net$$$weight"] and pyro.param("net$$$weight") is sentinel
    # drawn with the module's own small weights, not the store's 100: |y| stays near the noise's scale
    assert np.abs(idata.prior_predictive["y"].values).mean() < 10
    pyro.clear_param_store()


def test_a_program_without_observations_or_latents_is_refused_by_name():
    with pytest.raises(ValueError, match="observes no data, so there is nothing to simulate"):
        bg.sample_prior(normal_normal, {"n": 5})
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        bg.sample_prior(normal_normal, {"y": Y}, num_samples=0)
