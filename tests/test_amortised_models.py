"""The zoo's models with an amortised guide: the VAE and the sigmoid belief network."""

import numpy as np
import pytest

import bayesgen as bg
from bayesgen.baselines import BernoulliMixture, IndependentBernoulli
from bayesgen.datasets import binary_digits
from bayesgen.fitting import prepare
from bayesgen.generate import trained
from bayesgen.marginal import importance_log_likelihood
from bayesgen.metrics import c2st

TRAIN, TEST = binary_digits()
SMALL = {"images": TRAIN[:200]}
OPTIONS = {"engine": "svi", "num_particles": 1, "lr": 3e-3, "progress": False}


@pytest.fixture(scope="module", params=["vae", "sigmoid_belief_net"])
def small_fit(request):
    return bg.fit(request.param, SMALL, num_steps=150, **OPTIONS)


def test_the_shipped_guide_is_trained_and_local_codes_stay_out_of_the_posterior(small_fit):
    assert small_fit.posterior == {}  # codes are per image: the encoder's weights stand for them
    roles = {name.split("$$$")[0] for name in small_fit.params}
    assert roles == ({"decoder", "encoder"} if small_fit.model_name == "vae" else {"generative", "recognition"})
    losses = small_fit.sample_stats["loss"][0]
    assert losses.shape == (150,) and losses[-20:].mean() < losses[:20].mean()


def test_generate_gives_binary_images_and_survives_save_and_load(small_fit, tmp_path):
    images = small_fit.generate(30, seed=3)["images"]
    assert images.shape == (30, 8, 8) and set(np.unique(images)) <= {0.0, 1.0}
    path = tmp_path / "fit.nc"
    small_fit.save(str(path))
    loaded = bg.load(str(path), model=small_fit.model_name)
    np.testing.assert_array_equal(loaded.generate(30, seed=3)["images"], images)


def test_same_seed_same_fit(small_fit):
    again = bg.fit(small_fit.model_name, SMALL, num_steps=150, **OPTIONS)
    for name, value in small_fit.params.items():
        np.testing.assert_array_equal(again.params[name], value)


def test_held_out_likelihood_is_the_importance_weighted_bound(small_fit):
    table = bg.evaluate(small_fit, {"images": TEST[:60]}, num_samples=100)
    row = table.iloc[0]
    assert row["num_obs"] == 60 and np.isfinite(row["lpd_per_obs"]) and np.isfinite(row["c2st_accuracy"])
    # the bound with 1,000 samples is above the ELBO (one sample, averaged)
    problem = prepare(small_fit.problem.spec, {"images": TEST[:60]})
    with trained(problem, small_fit.params):
        elbo = np.mean([importance_log_likelihood(problem, num_particles=1, seed=s)["images"].numpy()
                        for s in range(20)])
    assert elbo < row["lpd_per_obs"]
    # the fit's own pointwise log-likelihood is the same bound on its training images
    assert small_fit.log_likelihood["images"].shape == (1, 1, 200)



@pytest.mark.slow
@pytest.mark.parametrize("name, lr", [("vae", 3e-3), ("sigmoid_belief_net", 1e-2)])
def test_beats_the_mixture_of_bernoullis_on_held_out_digits(name, lr, single_precision):
    train, test = TRAIN.astype(np.float32), TEST.astype(np.float32)
    fit = bg.fit(name, {"images": train}, **{**OPTIONS, "lr": lr, "num_steps": 3000})
    nll = -bg.evaluate(fit, {"images": test}, num_samples=100)["lpd_per_obs"].iloc[0]
    mixture = -BernoulliMixture(10).fit(TRAIN).log_likelihood(TEST).mean()
    print(f"{name}: held-out NLL {nll:.2f} nats per image, 10-component mixture {mixture:.2f}")
    assert nll < mixture
    samples = fit.generate(len(TEST), seed=1)["images"]
    independent = IndependentBernoulli().fit(TRAIN).sample(len(TEST), seed=1)
    flat = TEST.reshape(len(TEST), -1)
    # held-out accuracy, the mean of five half splits (one's sd is 0.024 on 450 digits at chance)
    ours, theirs = (np.mean([c2st(flat, s.reshape(len(s), -1), seed=seed).statistic for seed in range(5)])
                    for s in (samples, independent))
    print(f"c2st accuracy: {name} {ours:.3f}, independent Bernoulli {theirs:.3f}")
    assert ours < theirs
