"""A user's own network programs, written as in Pyro's VAE tutorial: fitted with their own guide or
a Gaussian family, scored held out, and refused clearly where the fit cannot serve them."""

import functools

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from torch import nn

import bayesgen as bg
from bayesgen.datasets import binary_digits

TRAIN, TEST = binary_digits()
IMAGES, HELDOUT = torch.as_tensor(TRAIN[:200]), torch.as_tensor(TEST[:120])
OPTIONS = {"engine": "svi", "num_steps": 30, "num_particles": 1, "lr": 3e-3, "progress": False}

torch.manual_seed(0)
DECODER = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 64))
ENCODER = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 4))


def model(images, num_images=16):
    pyro.module("decoder", DECODER)
    with pyro.plate("data", num_images if images is None else images.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        logits = DECODER(z).reshape(z.shape[:-1] + (8, 8))
        pyro.sample("images", dist.Bernoulli(logits=logits).to_event(2), obs=images)


def guide(images, num_images=16):
    pyro.module("encoder", ENCODER)
    with pyro.plate("data", images.shape[0]):
        loc, raw = ENCODER(images).split(2, -1)
        pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def test_a_guide_callable_is_the_proposal_of_the_held_out_likelihood():
    """Scored as the same guide shipped in a ModelSpec is: the importance-weighted bound, not NaN."""
    fit = bg.fit(model, {"images": IMAGES}, guide=guide, **OPTIONS)
    spec = bg.ModelSpec(name="own_vae", model=model, guide=guide, observed={"images": "images"})
    shipped = bg.fit(spec, {"images": IMAGES}, **OPTIONS)
    report = bg.evaluate(fit, {"images": HELDOUT}, num_samples=10)
    expected = bg.evaluate(shipped, {"images": HELDOUT}, num_samples=10)
    assert np.isfinite(report["lpd_per_obs"].iloc[0]) and report["lpd_per_obs"].iloc[0] < 0
    np.testing.assert_allclose(report["lpd_per_obs"].iloc[0], expected["lpd_per_obs"].iloc[0], rtol=1e-12)
    assert np.isfinite(bg.anomaly_scores(fit, {"images": HELDOUT[:5]})).all()


@pytest.mark.parametrize("given", [guide, functools.partial(guide)], ids=["function", "partial"])
def test_a_fit_of_its_own_guide_function_loads_with_the_guide_in_a_spec_and_warns_without(tmp_path, given):
    """The file holds the encoder's weights, not its code: loaded with the program alone, the held-out
    likelihood was NaN without a word, and with a spec that ships the guide it stayed NaN."""
    fit = bg.fit(model, {"images": IMAGES}, guide=given, **OPTIONS)
    fit.save(str(tmp_path / "own.nc"))
    with pytest.warns(UserWarning, match=r"own guide function .* load with bg.load\(path, model=bg.ModelSpec"):
        bg.load(str(tmp_path / "own.nc"), model=model)
    spec = bg.ModelSpec(name="own_vae", model=model, guide=guide, observed={"images": "images"})
    loaded = bg.load(str(tmp_path / "own.nc"), model=spec)
    expected = bg.evaluate(fit, {"images": HELDOUT}, num_samples=10)["lpd_per_obs"].iloc[0]
    assert bg.evaluate(loaded, {"images": HELDOUT}, num_samples=10)["lpd_per_obs"].iloc[0] == pytest.approx(
        expected, rel=1e-12)


def test_a_gaussian_family_trains_the_program_networks_and_leaves_the_user_modules_as_they_were():
    before = {name: value.detach().clone() for name, value in DECODER.named_parameters()}
    fit = bg.fit(model, {"images": IMAGES}, guide="normal", **OPTIONS)
    moved = max(float(np.abs(fit.params[f"decoder$$${name}"] - value.numpy()).max()) for name, value in before.items())
    assert moved > 1e-3  # trained with q (it stayed at the initial weights before)
    assert all(torch.equal(value, before[name]) for name, value in DECODER.named_parameters())
    assert fit.posterior["z"].shape == (1, 1000, 200, 2) and fit.info["family"] == "normal"


def test_codes_held_for_the_training_images_are_not_paired_with_more_held_out_images():
    fit = bg.fit(model, {"images": IMAGES}, guide=AutoNormal, **OPTIONS)
    with pytest.raises(ValueError, match=r"draws of site 'z' have shape \(200, 2\).*\(120, 2\) \(a local latent"):
        bg.evaluate(fit, {"images": HELDOUT})


def test_a_zoo_model_scored_against_its_prior_takes_the_data_size():
    report = bg.evaluate("vae", {"images": TEST[:60]}, num_samples=5)
    assert report["num_obs"].iloc[0] == 60 and np.isfinite(report["lpd_per_obs"]).all()


def test_a_fit_loaded_with_another_program_is_refused_not_run_untrained(tmp_path):
    fit = bg.fit("vae", {"images": TRAIN[:100]}, **{**OPTIONS, "num_steps": 3})
    fit.save(str(tmp_path / "vae.nc"))
    with pytest.raises(ValueError, match=r"model= \('sigmoid_belief_net'\) has parameters \['generative.*that the "
                                         r"fit in .*vae.nc does not hold: pass the program it was fitted with"):
        bg.load(str(tmp_path / "vae.nc"), model="sigmoid_belief_net")  # refused at load, not at first use


def test_svi_refuses_a_program_whose_only_unknowns_are_network_weights():
    with pytest.warns(UserWarning, match="not among those model .pixelcnn. is meant for"):
        with pytest.raises(ValueError, match="engine 'svi' approximates .* has none.*engine='mle'"):
            bg.fit("pixelcnn", {"images": TRAIN[:20], "channels": 4}, engine="svi", num_steps=2, progress=False)


def test_fits_of_network_weights_are_pointed_from_posterior_comparisons_to_bg_evaluate():
    vae = bg.fit("vae", {"images": TRAIN[:50]}, **{**OPTIONS, "num_steps": 2})
    pixelcnn = bg.fit("pixelcnn", {"images": TRAIN[:50], "channels": 4}, engine="mle", num_steps=2, progress=False)
    with pytest.raises(ValueError, match="fit 'vae' has no posterior draws to compare.*bg.evaluate"):
        bg.compare({"vae": vae, "pixelcnn": pixelcnn})
    with pytest.raises(ValueError, match="fit 'vae' has no posterior draws .*bg.evaluate"):
        bg.loo_compare({"vae": vae, "pixelcnn": pixelcnn})


def toy(x=None, n=50):
    """z_i ~ N(0, 1), x_i ~ N(z_i, 0.1): x_i ~ N(0, sqrt(1.01)), and z_i | x_i ~ N(x_i / 1.01, 0.1 / sqrt(1.01))."""
    with pyro.plate("obs", n if x is None else x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.1), obs=x)


def toy_encoder(x=None, n=50):
    shrink = pyro.param("shrink", torch.tensor(0.5))
    with pyro.plate("obs", x.shape[0]):
        pyro.sample("z", dist.Normal(shrink * x, 0.1 / 1.01**0.5))


def test_replicates_encode_each_observation_and_the_held_out_bound_meets_the_exact_marginal():
    x = torch.randn(50, generator=torch.Generator().manual_seed(1)) * 1.01**0.5
    fit = bg.fit(toy, {"x": x}, engine="svi", guide=toy_encoder, num_steps=500, lr=0.05, num_particles=4,
                 progress=False)
    assert abs(float(fit.params["shrink"]) - 1 / 1.01) < 0.02  # the exact posterior's
    replicates = fit.predict(num_samples=20)["x"][0]  # codes from the encoder, not the prior
    assert np.corrcoef(replicates.mean(0), x.numpy())[0, 1] > 0.99
    heldout = torch.randn(200, generator=torch.Generator().manual_seed(2)) * 1.01**0.5
    report = bg.evaluate(fit, {"x": heldout}, num_samples=10)
    exact = dist.Normal(0.0, 1.01**0.5).log_prob(heldout).mean()
    assert abs(report["lpd_per_obs"].iloc[0] - float(exact)) < 0.01


def mixture(y):
    """Two components with parameter locations and enumerated assignments (Pyro's GMM tutorial)."""
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
    scale = pyro.sample("scale", dist.HalfNormal(2.0))
    with pyro.plate("n", len(y)):
        k = pyro.sample("k", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
        pyro.sample("y", dist.Normal(locs[k], scale), obs=y)


def test_a_gaussian_family_with_parameters_sums_out_enumerated_sites_and_keeps_to_full_size_latents():
    y = torch.cat([torch.randn(30, generator=torch.Generator().manual_seed(0)) - 2.5,
                   torch.randn(30, generator=torch.Generator().manual_seed(1)) + 2.5])
    fit = bg.fit(mixture, {"y": y}, engine="svi", num_steps=300, progress=False)
    np.testing.assert_allclose(np.sort(fit.params["locs"]), [-2.5, 2.5], atol=0.5)

    def minibatched(y, batch_size=10):
        shift = pyro.param("shift", torch.tensor(0.0))
        with pyro.plate("n", len(y), subsample_size=batch_size) as index:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(z + shift, 1.0), obs=y[index])

    with pytest.raises(ValueError, match="guide 'mvn' needs every latent site at its full size.*site 'z'"):
        bg.fit(minibatched, {"y": y}, engine="svi", guide="mvn", num_steps=2, progress=False)


def test_a_guide_with_a_parameter_per_observation_scores_no_new_observations_and_saves(tmp_path):
    def two_views(a, b):
        with pyro.plate("n", len(a)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("a", dist.Normal(z, 0.5), obs=a)
            pyro.sample("b", dist.Normal(z, 0.5), obs=b)

    def per_observation(a, b):
        loc = pyro.param("z_loc", torch.zeros(len(a)))
        with pyro.plate("n", len(a)):
            pyro.sample("z", dist.Normal(loc, 0.3))

    a = torch.randn(20, generator=torch.Generator().manual_seed(3))
    fit = bg.fit(two_views, {"a": a, "b": a + 0.1}, engine="svi", guide=per_observation, num_steps=20,
                 progress=False)
    fit.save(str(tmp_path / "fit.nc"))  # two observed sites: no importance-weighted bound, no error
    new = torch.randn(7, generator=torch.Generator().manual_seed(4))
    report = bg.evaluate(fit, {"a": new, "b": new + 0.1}, num_samples=5)
    assert report["lpd"].isna().all() and np.isfinite(report["ks_pvalue"]).all()


def test_a_string_argument_that_chooses_the_network_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    networks = {"small": nn.Linear(1, 1), "deep": nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))}

    def regression(x, y=None, kind="small"):
        net = pyro.module(kind, networks[kind])
        noise = pyro.sample("noise", dist.HalfNormal(1.0))
        with pyro.plate("n", len(x)):
            pyro.sample("y", dist.Normal(net(x[:, None]).squeeze(-1), noise), obs=y)

    x = torch.linspace(-1, 1, 30)
    fit = bg.fit(regression, {"x": x, "y": torch.sin(3 * x), "kind": "deep"}, engine="mle", num_steps=20,
                 progress=False)
    fit.save(str(tmp_path / "fit.nc"))
    bg.load(str(tmp_path / "fit.nc")).save(str(tmp_path / "again.nc"))  # loaded without its program, saved again
    loaded = bg.load(str(tmp_path / "again.nc"), model=regression)
    assert loaded.problem.data["kind"] == "deep" and "kind" in loaded.to_arviz().constant_data
    np.testing.assert_array_equal(loaded.predict(num_samples=5, seed=1)["y"], fit.predict(num_samples=5, seed=1)["y"])


def test_a_zoo_network_fit_is_scored_with_its_own_sizes_unless_told_others(tmp_path):
    fit = bg.fit("vae", {"images": TRAIN[:60], "hidden": 20, "latent_dim": 3}, **{**OPTIONS, "num_steps": 3})
    assert np.isfinite(bg.evaluate(fit, {"images": TEST[:60]}, num_samples=2)["lpd_per_obs"]).all()
    assert bg.anomaly_scores(fit, {"images": TEST[:3]}).shape == (3,)
    fit.save(str(tmp_path / "vae.nc"))
    loaded = bg.load(str(tmp_path / "vae.nc"))
    assert np.isfinite(bg.evaluate(loaded, {"images": TEST[:60]}, num_samples=2)["lpd"]).all()
    with pytest.raises(ValueError, match=r"data\['hidden'\] is 200, but the fit was made with 20"):
        bg.evaluate(fit, {"images": TEST[:60], "hidden": 200})
