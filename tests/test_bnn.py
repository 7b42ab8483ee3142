"""Bayesian neural network: batching through the layers, shapes, prediction, input errors, recovery."""

import dataclasses

import numpy as np
import pytest
import torch

import bayesgen as bg
from bayesgen.fitting import prepare
from bayesgen.models import bnn
from recovery import assert_recovers


def _forward(params, x, depth):
    """The network written out for one set of weights, in numpy."""
    h = x
    for layer in range(1, depth + 1):
        h = np.tanh(h @ params[f"hidden{layer}_weight"] + params[f"hidden{layer}_bias"])
    return (h @ params["output_weight"] + params["output_bias"])[:, 0]


@pytest.mark.parametrize("depth", [1, 2])
def test_weights_with_chain_dims_broadcast_through_every_layer(depth):
    data, _ = bnn.simulate(0, num_obs=7, width=4, depth=depth)
    density = bg.LogDensity(bnn.model, prepare(bnn.SPEC, data).data)
    assert density.vectorized  # the per-point fallback would warn, and warnings are errors here
    u = torch.randn(3, density.dim, generator=torch.Generator().manual_seed(0))
    values = {k: v.numpy() for k, v in density.constrain(u).items()}
    assert values["mean"].shape == (3, 7)
    for chain in range(3):
        row = {k: v[chain] for k, v in values.items()}
        np.testing.assert_allclose(row["mean"], _forward(row, data["x"], depth), rtol=1e-12)


def test_simulate_returns_the_network_and_noise_that_made_the_data():
    data, truth = bnn.simulate(5, num_obs=400)
    assert data["x"].shape == (400, 1) and data["y"].shape == (400,) and truth["mean"].shape == (400,)
    residual = data["y"] - truth["mean"]
    assert abs(residual.std() / truth["sigma"] - 1) < 0.15  # 400 draws: sd of the ratio ~0.035


def test_predicts_at_new_inputs():
    data, _ = bnn.simulate(0)
    fit = bg.fit(bnn.SPEC, data, engine="laplace", num_draws=50, progress=False)
    grid = np.linspace(-3.0, 3.0, 11)[:, None]
    assert fit.predict(x=grid)["y"].shape == (1, 50, 11)
    assert fit.posterior["mean"].shape == (1, 50, data["x"].shape[0])
    assert fit.to_arviz().posterior["hidden1_weight"].dims == ("chain", "draw", "feature", "hidden")


@pytest.mark.parametrize("change, message", [
    ({"x": np.zeros(5)}, "x must have shape \\(N, D\\)"),
    ({"width": 0}, "width and depth must be positive"),
])
def test_bad_input_is_named(change, message):
    data = {"x": np.zeros((5, 1)), "y": np.zeros(5), **change}
    with pytest.raises(ValueError, match=message):
        bg.fit(bnn.SPEC, data, engine="map")


# --- recovery: data from a network with known weights, every applicable engine ------------------
# Weights are not identifiable (hidden units permute and flip sign), so recovery is judged on
# sigma and on the network's values at the inputs (the deterministic site "mean"). NUTS and SVI
# are judged by their central 95% intervals. MAP and Laplace are judged as point estimates: the
# network at the mode must lie within 3 posterior sds (from NUTS) of the truth. Their own
# Laplace draws cannot be used: at a mode where spare hidden units are switched off the
# Hessian is nearly singular in those units' weights, and the draws pushed through the network
# spread over tens of units of y (measured: sd ~7 on data with noise 0.2).

NUM_OBS = 30


@pytest.fixture(scope="module")
def simulated():
    return bnn.simulate(0, num_obs=NUM_OBS)


@pytest.fixture(scope="module")
def nuts_fit(simulated):
    data, _ = simulated
    return bg.fit(bnn.SPEC, data, engine="nuts", num_warmup=100, num_samples=100, num_chains=4, seed=0,
                  progress=False)


@pytest.mark.slow
def test_nuts_recovers_the_regression_function_and_sigma(simulated, nuts_fit):
    assert_recovers(nuts_fit, simulated[1])


@pytest.mark.slow
def test_mean_field_svi_recovers_the_regression_function_and_sigma(simulated):
    data, truth = simulated
    fit = bg.fit(bnn.SPEC, data, engine="svi", num_steps=2000, lr=0.05, seed=0, progress=False)
    assert_recovers(fit, truth)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["map", "laplace"])
def test_mode_recovers_the_regression_function_and_sigma(engine, simulated, nuts_fit):
    data, truth = simulated
    fit = bg.fit(bnn.SPEC, data, engine=engine, seed=0, progress=False)
    density = fit.problem.density
    at_mode = density.constrain(density.unconstrain({k: torch.as_tensor(v)[None] for k, v in fit.point.items()}))
    judged = dataclasses.replace(
        fit, kind="point", point={"mean": at_mode["mean"][0].numpy(), "sigma": fit.point["sigma"]},
        stderr={"mean": nuts_fit.posterior["mean"].std((0, 1)), "sigma": fit.stderr["sigma"]})
    assert_recovers(judged, truth)
