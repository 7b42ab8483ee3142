"""fit.generate and Fit.params: new data from a fitted model, with its trained weights, before and after save/load."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesgen as bg
from bayesgen.generate import local_latents
from bayesgen.program import run_program


def normal(y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("obs", 20):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def random_effects(y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("obs", 30):
        z = pyro.sample("z", dist.Normal(0.0, 2.0))
        pyro.sample("y", dist.Normal(mu + z, 1.0), obs=y)


NET = torch.nn.Linear(2, 1)


def network_regression(X, y=None):
    pyro.module("net", NET)
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Normal(NET(X).squeeze(-1), 0.5), obs=y)


def network_mean(X, y=None):
    """network_regression with the network's output kept as a pyro.deterministic site."""
    pyro.module("net", NET)
    mean = pyro.deterministic("mean", NET(X).squeeze(-1))
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Normal(mean, 0.5), obs=y)


def test_deterministic_sites_of_a_network_are_computed_with_its_trained_weights():
    """They were computed after the fit had reset the network: the untrained outputs, at the point too."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    y = X @ np.array([1.0, -2.0]) + 0.5 + rng.normal(0.0, 0.5, 60)
    fit = bg.fit(network_mean, {"X": X, "y": y}, engine="mle", num_steps=300, lr=0.05, progress=False)
    trained = X @ fit.params["net$$$weight"][0] + fit.params["net$$$bias"][0]
    np.testing.assert_allclose(fit.point["mean"], trained, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fit.posterior["mean"][0, 0], trained, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def normal_fit():
    y = np.random.default_rng(0).normal(3.0, 1.0, 20)
    return bg.fit(normal, {"y": y}, engine="nuts", num_warmup=300, num_samples=500, seed=0, progress=False)


def test_generated_data_follow_the_posterior_predictive(normal_fit):
    generated = normal_fit.generate(4000, seed=1)["y"]
    assert generated.shape == (4000,)
    mu = normal_fit.posterior["mu"]
    # y = mu + noise: mean of mu's posterior, variance 1 + var(mu); tolerances of 4 Monte Carlo standard errors
    sd = np.sqrt(1.0 + mu.var())
    assert abs(generated.mean() - mu.mean()) < 4 * sd / np.sqrt(4000)
    assert abs(generated.var() / sd**2 - 1.0) < 4 * np.sqrt(2 / 4000)
    assert normal_fit.params == {}  # a purely Bayesian program has no trained parameters


def test_a_seed_gives_the_same_samples_also_after_save_and_load(normal_fit, tmp_path):
    first = normal_fit.generate(50, seed=3)["y"]
    assert np.array_equal(first, normal_fit.generate(50, seed=3)["y"])
    assert not np.array_equal(first, normal_fit.generate(50, seed=4)["y"])
    normal_fit.save(str(tmp_path / "fit.nc"))
    loaded = bg.load(str(tmp_path / "fit.nc"), model=normal)
    assert np.array_equal(first, loaded.generate(50, seed=3)["y"])
    without_program = bg.load(str(tmp_path / "fit.nc"))
    with pytest.raises(ValueError, match=r"bg.load\(path, model=...\)"):
        without_program.generate(5)


def test_local_latents_are_drawn_from_their_prior_and_globals_from_the_fit():
    rng = np.random.default_rng(1)
    y = 3.0 + rng.normal(0.0, 2.0, 30) + rng.normal(0.0, 1.0, 30)
    fit = bg.fit(random_effects, {"y": y}, engine="nuts", num_warmup=300, num_samples=300, seed=0, progress=False)
    assert local_latents(fit.problem.prototype, ["y"]) == {"z"}
    generated = fit.generate(6000, seed=0)["y"]
    # fresh z ~ N(0, 2) for every new observation: variance 4 + 1 + var(mu), not that of the fitted z
    expected = 5.0 + fit.posterior["mu"].var()
    assert generated.shape == (6000,)
    assert abs(generated.var() / expected - 1.0) < 4 * np.sqrt(2 / 6000)
    assert abs(generated.mean() - fit.posterior["mu"].mean()) < 4 * np.sqrt(expected / 6000)


def test_network_weights_are_params_saved_as_arrays_and_drive_generate_after_load(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 2))
    y = X @ np.array([1.0, -2.0]) + 0.5 + rng.normal(0.0, 0.5, 100)
    fit = bg.fit(network_regression, {"X": X, "y": y}, engine="mle", num_steps=800, lr=0.05, progress=False)
    assert set(fit.params) == {"net$$$weight", "net$$$bias"}
    np.testing.assert_allclose(fit.params["net$$$weight"], [[1.0, -2.0]], atol=0.2)
    generated = fit.generate(300, seed=0)["y"]
    assert generated.shape == (300,)
    # the first 100 samples are one run of the program at the training X: mean X @ w + b, sd 0.5
    residual = generated[:100] - (X @ fit.params["net$$$weight"][0] + fit.params["net$$$bias"][0])
    assert abs(residual.std() - 0.5) < 0.15
    fit.save(str(tmp_path / "net.nc"))
    with torch.no_grad():  # a new process would start from an untrained network
        NET.weight.zero_()
        NET.bias.zero_()
    loaded = bg.load(str(tmp_path / "net.nc"), model=network_regression)
    for name, value in fit.params.items():
        assert np.array_equal(loaded.params[name], value)
    assert np.array_equal(loaded.generate(300, seed=0)["y"], generated)
    assert float(NET.weight.detach().abs().sum()) == 0.0  # the network is left as it was
    assert "X" in loaded.to_arviz().constant_data


@pytest.mark.parametrize("call", ["fit", "generate", "predict", "evaluate"])
def test_seeded_functions_leave_the_callers_generators_as_they_were(normal_fit, call):
    """A seed= makes the function's own draws repeatable; it must not reset the caller's streams
    (pyro.set_rng_seed seeds torch's, numpy's and Python's global generators)."""
    import random

    y = np.random.default_rng(1).normal(3.0, 1.0, 20)
    run = {"fit": lambda: bg.fit(normal, {"y": y}, engine="laplace", num_draws=20, seed=5),
           "generate": lambda: normal_fit.generate(3, seed=1), "predict": lambda: normal_fit.predict(10, seed=2),
           "evaluate": lambda: bg.evaluate(normal_fit, {"y": y}, num_samples=10, seed=3)}[call]
    following = []
    for caller_seed in (10, 20):
        np.random.seed(caller_seed)
        random.seed(caller_seed)
        torch.manual_seed(caller_seed)
        expected = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state())
        run()
        assert np.array_equal(np.random.get_state()[1], expected[0]) and random.getstate() == expected[1]
        assert torch.equal(torch.get_rng_state(), expected[2])
        following.append(float(torch.rand(())))
    assert following[0] != following[1]


def test_generate_names_a_bad_num_samples(normal_fit):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            normal_fit.generate(bad)
    assert normal_fit.generate(np.int64(3))["y"].shape == (3,)  # a numpy integer is an integer


def test_the_prototype_of_a_local_latent_program_runs():
    trace = run_program(random_effects, {})
    assert local_latents(trace, ["y"]) == {"z"}


def _normal_guide(y=None):
    loc = pyro.param("q_loc", torch.tensor(0.0))
    scale = pyro.param("q_scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def test_svi_uses_the_guide_a_model_spec_ships_and_keeps_its_parameters():
    spec = bg.ModelSpec(name="normal", model=normal, guide=_normal_guide)
    y = np.random.default_rng(3).normal(3.0, 1.0, 20)
    fit = bg.fit(spec, {"y": y}, engine="svi", num_steps=1500, lr=0.05, progress=False)
    assert set(fit.params) == {"q_loc", "q_scale"} and fit.settings["guide"] is None
    # the conjugate posterior: N(sum(y) / (n + 1/100), 1 / (n + 1/100))
    precision = 20 + 1 / 100
    np.testing.assert_allclose(fit.params["q_loc"], y.sum() / precision, atol=0.05)
    np.testing.assert_allclose(fit.params["q_scale"], precision ** -0.5, rtol=0.25)
    assert abs(fit.posterior["mu"].mean() - y.sum() / precision) < 0.05


NOISY_NET = torch.nn.Linear(2, 1)


def noisy_network_regression(X, y=None):
    pyro.module("noisy_net", NOISY_NET)
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Normal(NOISY_NET(X).squeeze(-1), sigma), obs=y)


def test_a_loaded_network_fit_predicts_and_scores_with_its_trained_weights(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 2))
    y = X @ np.array([0.5, 1.5]) - 1.0 + rng.normal(0.0, 0.5, 60)
    fit = bg.fit(noisy_network_regression, {"X": X, "y": y}, engine="map", num_steps=1500, lr=0.05,
                 progress=False)
    fit.save(str(tmp_path / "net.nc"))
    with torch.no_grad():  # an untrained network, as a new process would build
        NOISY_NET.weight.fill_(5.0)
        NOISY_NET.bias.fill_(5.0)
    loaded = bg.load(str(tmp_path / "net.nc"), model=noisy_network_regression)
    replicated = loaded.predict(seed=0)["y"][0, 0]
    fitted = X @ fit.params["noisy_net$$$weight"][0] + fit.params["noisy_net$$$bias"][0]
    sigma = float(fit.posterior["sigma"].mean())
    assert abs(sigma - 0.5) < 0.15
    assert abs((replicated - fitted).std() / sigma - 1.0) < 0.3 and abs((replicated - fitted).mean()) < 0.2
    heldout = bg.evaluate(loaded, {"X": X, "y": y}, num_samples=50)
    expected = float(np.mean(-np.log(sigma * np.sqrt(2 * np.pi)) - 0.5 * ((y - fitted) / sigma) ** 2))
    assert abs(heldout["lpd_per_obs"].iloc[0] - expected) < 1e-6  # the trained network's likelihood
    assert float(NOISY_NET.weight.detach().sum()) == 10.0  # left as it was


def test_a_program_with_network_weights_only_predicts_and_has_a_pointwise_likelihood():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 2))
    y = X @ np.array([1.0, -1.0]) + rng.normal(0.0, 0.5, 80)
    fit = bg.fit(network_regression, {"X": X, "y": y}, engine="mle", num_steps=800, lr=0.05, progress=False)
    assert fit.posterior == {}  # nothing to draw: the weights are the model
    fitted = X @ fit.params["net$$$weight"][0] + fit.params["net$$$bias"][0]
    expected = -np.log(0.5 * np.sqrt(2 * np.pi)) - 0.5 * ((y - fitted) / 0.5) ** 2
    np.testing.assert_allclose(fit.log_likelihood["y"], expected[None, None], rtol=1e-10)
    replicated = fit.predict(seed=0)["y"]
    assert replicated.shape == (1, 1, 80) and abs((replicated[0, 0] - fitted).std() - 0.5) < 0.15
    table = bg.evaluate(fit, {"X": X, "y": y}, num_samples=10)
    np.testing.assert_allclose(table["lpd"].iloc[0], expected.sum(), rtol=1e-10)
