"""Bad input gets a clear error naming the site or argument, before any engine runs."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
from pyro import poutine
import pytest
import torch

import bayesgen as bg
from programs import normal_normal

Y = np.random.default_rng(0).normal(size=20)


def test_misspelt_data_key_names_the_argument_and_suggests():
    with pytest.raises(TypeError, match="data key 'yy'.*Did you mean 'y'"):
        bg.fit(normal_normal, {"yy": Y}, engine="map")


def test_missing_required_argument_is_named():
    def needs_x(x, y=None):
        pyro.sample("y", dist.Normal(x.sum(), 1.0), obs=y)

    with pytest.raises(TypeError, match="missing required program argument.*x"):
        bg.fit(needs_x, {"y": 1.0}, engine="map")


def test_data_must_be_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        bg.fit(normal_normal, [Y], engine="map")


def test_observed_shape_mismatch_is_not_broadcast():
    with pytest.raises(ValueError, match=r"observed site 'y' has data of shape \(20, 1\).*\(20,\)"):
        bg.fit(normal_normal, {"y": Y[:, None], "n": 20}, engine="map")


def _regression_sized_by_y(x, y):
    slope = pyro.sample("slope", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(slope * x, 1.0), obs=y)


def test_a_covariate_with_one_row_inside_the_observations_plate_is_warned_about():
    """Pyro's plate broadcasts a (1,) covariate to all 20 observations without a word."""
    with pytest.warns(UserWarning, match=r"data\['x'\] has 1 row .* plate 'data' of size 20.*data\['y'\]"):
        bg.fit(_regression_sized_by_y, {"x": Y[:1], "y": Y}, engine="map")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg.fit(_regression_sized_by_y, {"x": Y, "y": Y}, engine="map")


def test_one_group_of_a_hierarchy_is_not_mistaken_for_a_broadcast_covariate():
    def one_group(group_mean, index, y):
        with pyro.plate("groups", group_mean.shape[0]):
            effect = pyro.sample("effect", dist.Normal(group_mean, 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(effect[index], 1.0), obs=y)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg.fit(one_group, {"group_mean": np.zeros(1), "index": np.zeros(20, dtype=int), "y": Y}, engine="map")


def test_nan_in_data_names_argument_and_index():
    bad = Y.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"data\['y'\] contains nan at index \(7,\)"):
        bg.fit(normal_normal, {"y": bad}, engine="nuts")


def test_inf_in_data_names_argument_and_index():
    bad = Y.copy()
    bad[3] = np.inf
    with pytest.raises(ValueError, match=r"data\['y'\] contains inf at index \(3,\)"):
        bg.fit(normal_normal, {"y": bad}, engine="nuts")


def coin_flips(y=None):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("flips", 6):
        pyro.sample("y", dist.Bernoulli(p), obs=y)


def padded_flips(y=None, length=4):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("flips", 6), poutine.mask(mask=torch.arange(6) < length):  # entries from 4 on are padding
        pyro.sample("y", dist.Bernoulli(p), obs=y)


def test_data_outside_the_support_are_named_for_fitting_and_for_scoring():
    flips = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    fit = bg.fit(coin_flips, {"y": flips}, engine="map")
    bad = flips.copy()
    bad[4] = 2.0
    message = r"site 'y' has a value outside the support of its distribution Bernoulli \(Boolean\(\)\) at index \(4,\): 2; check data\['y'\]"
    with pytest.raises(ValueError, match=message):
        bg.fit(coin_flips, {"y": bad}, engine="map")
    with pytest.raises(ValueError, match=message):  # held-out data are scored without Pyro's validation
        bg.evaluate(fit, {"y": bad})
    padding = flips.copy()
    padding[5] = -1.0  # masked out: not data, so not checked
    bg.fit(padded_flips, {"y": padding}, engine="map")
    with pytest.raises(ValueError, match=r"at index \(2,\): 0.5"):
        bg.fit(padded_flips, {"y": np.where(np.arange(6) == 2, 0.5, padding)}, engine="map")
    # a distribution's own .mask(...), under to_event too, leaves its placeholders unchecked
    kept = torch.arange(6) < 4

    def masked_counts(y=None):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        pyro.sample("y", dist.Poisson(rate).expand([6]).mask(kept).to_event(1), obs=y)

    counts = np.array([1.0, 3.0, 2.0, 0.0, -1.0, -1.0])  # -1: missing
    # Gamma(2 + 6, 1 + 4) from the four counts kept: its mode 1.4
    assert bg.fit(masked_counts, {"y": counts}, engine="map").point["rate"] == pytest.approx(1.4, rel=1e-4)
    with pytest.raises(ValueError, match=r"Poisson .* at index \(1,\): -3"):
        bg.fit(masked_counts, {"y": np.where(np.arange(6) == 1, -3.0, counts)}, engine="map")


def test_whole_number_observations_are_taken_as_pymc_and_stan_take_them():
    """A Bernoulli's 0/1 as integers or bools, and a count passed as a Python int, were refused
    ("pass data['y'] as floats") or crashed inside Pyro ('int' object has no attribute 'lgamma');
    a negative integer count met Pyro's support check without its index."""
    flips = np.array([0, 1, 1, 0, 1, 0])
    floats = bg.fit(coin_flips, {"y": flips.astype(float)}, engine="map").point["p"]
    for whole in (flips, flips.astype(bool), torch.tensor(flips)):
        assert bg.fit(coin_flips, {"y": whole}, engine="map").point["p"] == pytest.approx(floats, rel=1e-12)

    def coin(n, k=None):
        p = pyro.sample("p", dist.Beta(2.0, 3.0))
        pyro.sample("k", dist.Binomial(n, p), obs=k)

    # Beta(2 + 21, 3 + 9): its mode 22 / 33
    assert bg.fit(coin, {"n": 30, "k": 21}, engine="map").point["p"] == pytest.approx(22 / 33, rel=1e-5)

    def coin_named_otherwise(n, heads=None):
        p = pyro.sample("p", dist.Beta(2.0, 3.0))
        pyro.sample("k", dist.Binomial(n, p), obs=heads)

    with pytest.raises(TypeError, match="site 'k' got the Python number 7 as obs, which its distribution cannot "
                                        "score.*name the argument 'k'"):
        bg.fit(coin_named_otherwise, {"n": 21, "heads": 7}, engine="map")  # 'int' has no attribute 'lgamma' before
    with pytest.raises(TypeError, match="dtype torch.bool, which its distribution Normal cannot score"):
        bg.fit(normal_normal, {"y": np.array([True, False])}, engine="map")  # bools stay refused where continuous

    def counts(y=None):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        with pyro.plate("n", 4):
            pyro.sample("y", dist.Poisson(rate), obs=y)

    assert bg.fit(counts, {"y": np.array([5, 0, 3, 1])}, engine="map").observed_data["y"].dtype == np.int64
    with pytest.raises(ValueError, match=r"Poisson .* at index \(3,\): -1; check data\['y'\]"):
        bg.fit(counts, {"y": np.array([5, 0, 3, -1])}, engine="map")


def test_leaving_out_the_observations_of_a_bare_program_is_warned_about():
    def logit(X, y=None):
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("n", len(X)):
            pyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)

    X = np.random.default_rng(0).normal(size=(30, 2))
    # y enumerated away, the posterior was the prior, and nothing said so
    with pytest.warns(UserWarning, match=r"observes no data: its site\(s\) 'y' are sampled as unknowns .* "
                                         r"pass data\['y'\] to condition on them"):
        bg.fit(logit, {"X": X}, engine="laplace")


def test_a_draw_count_under_the_other_engines_name_is_pointed_to_its_own():
    # by spelling, num_samples is closest to num_steps (optimiser steps): the hint was wrong
    with pytest.raises(TypeError, match="engine 'mle' has no option 'num_samples'. Did you mean 'num_draws'?"):
        bg.fit(normal_normal, {"y": Y}, engine="mle", num_samples=100)
    with pytest.raises(TypeError, match="engine 'nuts' has no option 'num_draws'. Did you mean 'num_samples'?"):
        bg.fit(normal_normal, {"y": Y}, engine="nuts", num_draws=100)


def test_wrong_dtype_names_the_argument():
    with pytest.raises(TypeError, match=r"data\['y'\] has dtype <U"):
        bg.fit(normal_normal, {"y": np.array(["a", "b"])}, engine="map")
    with pytest.raises(TypeError, match=r"observed site 'y' got str 'y' as its data; pass its data as numbers"):
        bg.fit(coin_flips, {"y": "y"}, engine="map")

    def numpy_obs(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", 5):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=np.asarray(y))

    with pytest.raises(TypeError, match="observed site 'y' got a numpy array as obs; Pyro scores tensors only"):
        bg.fit(numpy_obs, {"y": np.zeros(5)}, engine="map")  # it said "pass its data as numbers (an array)"


@pytest.mark.parametrize("engine", ["nuts", "map"])
def test_python_control_flow_on_an_enumerated_site_is_explained(engine):
    def switch(y=None):
        w = pyro.sample("w", dist.Beta(1.0, 1.0))
        z = pyro.sample("z", dist.Bernoulli(w))
        pyro.sample("y", dist.Normal(2.0 if z.item() == 1 else -2.0, 1.0), obs=y)

    # "a bug in the program, or priors whose draws it cannot handle" after 100 tries, before
    with pytest.raises(RuntimeError, match="cannot be converted to Scalar: site.s. 'z' are enumerated.*torch.where"):
        bg.fit(switch, {"y": torch.tensor(1.0)}, engine=engine, **({"num_warmup": 5, "num_samples": 5}
                                                                  if engine == "nuts" else {}))


def test_discrete_latent_that_cannot_be_enumerated_is_named():
    def poisson_latent(y=None):
        n = pyro.sample("n", dist.Poisson(3.0))
        pyro.sample("y", dist.Normal(n, 1.0), obs=y)

    with pytest.raises(ValueError, match="site 'n' is a discrete latent variable.*Poisson"):
        bg.fit(poisson_latent, {"y": torch.tensor(2.0)}, engine="nuts")


def test_program_that_raises_names_the_site():
    def broken(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        scale = pyro.sample("scale", dist.HalfNormal(1.0))
        pyro.sample("y", dist.Normal(mu, scale).to_event(1) + 1, obs=y)

    with pytest.raises(ValueError, match=r"raised \w+Error at or after site 'scale'"):
        bg.fit(broken, {"y": torch.zeros(3)}, engine="map")


def test_an_improper_prior_gets_the_masked_proper_prior_instead():
    from torch.distributions import constraints

    def flat(y=None):
        mu = pyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
        with pyro.plate("n", 10):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"ImproperUniform does not support sampling. A program is run once with its "
                                         r"latents drawn from their priors.*Normal\(0.0, 1.0\).mask\(False\)"):
        bg.fit(flat, {"y": np.zeros(10)}, engine="map")


def test_mle_without_observed_data_is_an_error():
    with pytest.warns(UserWarning, match=r"pass data\['y'\]"), pytest.raises(ValueError, match="no observed sites"):
        bg.fit(normal_normal, {"n": 5}, engine="mle")


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="unknown model 'eight_school'.*Did you mean 'eight_schools'"):
        bg.fit("eight_school", engine="map")


def test_unknown_guide_is_named():
    with pytest.raises(ValueError, match="unknown guide 'diag'"):
        bg.fit(normal_normal, {"y": Y}, engine="svi", guide="diag")


def minibatched_mean(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("obs", y.shape[0], subsample_size=10) as index:
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y[index])


Y_MINIBATCHED = torch.as_tensor(np.random.default_rng(2).normal(2.0, 1.0, size=100))


@pytest.mark.parametrize("engine", ["nuts", "hmc", "laplace", "map", "mle"])
def test_engines_that_need_the_exact_density_refuse_a_subsampling_plate(engine):
    """A plate with subsample_size makes the log density a random minibatch estimate: NUTS
    sampled it without complaint (posterior mean 1.2 for 2.0) and Laplace found a wrong mode."""
    with pytest.raises(ValueError, match=rf"engine '{engine}'.*plate 'obs'.*10 of its 100.*engine='svi'"):
        bg.fit(minibatched_mean, {"y": Y_MINIBATCHED}, engine=engine, num_warmup=10, num_samples=10) \
            if engine in ("nuts", "hmc") else bg.fit(minibatched_mean, {"y": Y_MINIBATCHED}, engine=engine)


def test_svi_fits_minibatches_and_reports_no_pointwise_log_likelihood_for_them():
    fit = bg.fit(minibatched_mean, {"y": Y_MINIBATCHED}, engine="svi", num_steps=1500, seed=0, progress=False)
    precision = 1 / 25 + len(Y_MINIBATCHED)
    mean, sd = float(Y_MINIBATCHED.sum()) / precision, precision**-0.5
    assert abs(fit.posterior["mu"].mean() - mean) < sd
    assert "y" not in (fit.log_likelihood or {})  # a different random minibatch at every draw
    # nor importance weights or curvature against a random minibatch's density (k-hat 0.3-3.4 of a good fit)
    assert "pareto_k" not in fit.info and "sd_vs_laplace" not in fit.info


def minibatched_local_latents(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("obs", y.shape[0], subsample_size=10) as index:
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("y", dist.Normal(z, 0.5), obs=y[index])


@pytest.mark.parametrize("guide", ["normal", "mvn", "lowrank"])
def test_gaussian_guides_refuse_local_latents_in_a_subsampling_plate(guide):
    with pytest.raises(ValueError, match=rf"guide '{guide}'.*site 'z'.*plate 'obs'.*AutoNormal"):
        bg.fit(minibatched_local_latents, {"y": Y_MINIBATCHED}, engine="svi", guide=guide, num_steps=10)


def test_autoguides_fit_local_latents_of_minibatches_and_leave_them_out_of_the_draws():
    """The guide holds a minibatch's values of 'z' only, which post-fit runs would pair with
    another minibatch: 'z' is left out (with a warning) and predictions draw it afresh."""
    from pyro.infer.autoguide import AutoNormal

    spec = bg.ModelSpec(name="minibatched", model=minibatched_local_latents, observed={"y": "y"})
    with pytest.warns(UserWarning, match=r"'z' are left out of the posterior draws.*plate 'obs'"):
        fit = bg.fit(spec, {"y": Y_MINIBATCHED}, engine="svi", guide=AutoNormal, num_steps=2000, lr=0.05,
                     seed=0, progress=False)
    assert set(fit.posterior) == {"mu"}
    # y_i ~ N(mu, 1 + 0.5^2) with z summed out; flat-ish prior
    precision = 1 / 25 + len(Y_MINIBATCHED) / 1.25
    mean, sd = float(Y_MINIBATCHED.sum()) / 1.25 / precision, precision**-0.5
    assert abs(fit.posterior["mu"].mean() - mean) < sd
    assert fit.predict(num_samples=50)["y"].shape == (1, 50, 10)


def test_counts_take_numpy_integers_and_refuse_bools_and_fractions_in_the_same_words():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(40, 2))
    # a count read off an array (np.int64) is as good as an int, wherever a count is taken
    assert bg.metrics.c2st(x, y, seed=np.int64(3)) == bg.metrics.c2st(x, y, seed=3)
    assert bg.metrics.mmd_test(x, y, num_permutations=np.int64(20)) == bg.metrics.mmd_test(x, y, num_permutations=20)
    for bad in (True, 2.5, "3", None):
        with pytest.raises(ValueError, match=rf"num_permutations must be a positive integer, got {bad!r}"):
            bg.metrics.mmd_test(x, y, num_permutations=bad)
    fit = bg.fit(normal_normal, {"y": torch.tensor([0.1, -0.3, 0.5])}, engine="map")
    with pytest.raises(ValueError, match=r"num_samples must be a positive integer or None \(all draws\), got 0"):
        fit.predict(num_samples=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        fit.generate(2, seed=-1)
    with pytest.raises(ValueError, match=r"seed must be below 2\*\*32"):  # not numpy's error from inside Pyro
        fit.generate(2, seed=2**40)


def test_switches_sizes_engines_and_progress_are_checked_by_name_before_anything_runs():
    data = bg.get_model("eight_schools").load_data()
    with pytest.raises(TypeError, match=r"data\['centered'\] is a switch of the program \(default False\): pass "
                                        "True or False, got 'no'"):
        bg.fit("eight_schools", {**data, "centered": "no"}, engine="laplace")  # 'no' would count as true
    def masked(y, keep=True):  # a switch's default, an array's value: a mask
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", len(y)), poutine.mask(mask=keep):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    fit = bg.fit(masked, {"y": torch.tensor([0.5, 9.0]), "keep": torch.tensor([True, False])}, engine="map")
    assert abs(float(fit.posterior["mu"].mean()) - 0.25) < 0.01  # the masked 9.0 is left out
    with pytest.raises(TypeError, match=r"data\['hidden'\] must be a number like its default 200, got the string"):
        bg.fit("vae", {"images": np.zeros((4, 8, 8)), "hidden": "400"}, engine="svi")
    with pytest.raises(TypeError, match="engine must be an engine's name .* got None"):
        bg.fit("eight_schools", data, engine=None)
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        bg.fit("eight_schools", data, engine="laplace", progress="yes")
    with pytest.raises(ValueError, match="so fit it with engine='mle'"):  # not svi, which has nothing to approximate
        bg.fit(bg.get_model("pixelcnn").model, {"images": np.zeros((4, 8, 8)), "channels": 2}, engine="nuts")


def test_a_program_error_keeps_pyros_table_of_shapes_out_of_its_message():
    with pytest.raises(bg.program.ProgramError, match="latent_dim must be a positive integer, got 0") as raised:
        bg.fit("vae", {"images": np.zeros((4, 8, 8)), "latent_dim": 0}, engine="svi", num_steps=1, progress=False)
    assert "Trace Shapes" not in str(raised.value) and "Trace Shapes" in str(raised.value.__cause__)


def test_the_data_digest_tells_slices_of_one_map_and_weights_apart_and_names_functions(tmp_path):
    """Processes given other shards of one memory-mapped file, or networks of other weights, had
    equal digests; a function argument had one digest per process (its repr's address)."""
    from bayesgen.validate import data_digest

    np.save(tmp_path / "X.npy", np.arange(200.0).reshape(100, 2))
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert data_digest({"X": mapped[:50]}) != data_digest({"X": mapped[50:]})
    assert data_digest({"X": mapped[:, :1]}) != data_digest({"X": mapped[:, 1:]})
    assert data_digest({"X": mapped}) == data_digest({"X": np.load(tmp_path / "X.npy", mmap_mode="r")})
    assert data_digest({"X": torch.arange(4.0)[::2]}) == data_digest({"X": torch.tensor([0.0, 2.0])})
    first, second = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    assert data_digest({"net": first}) != data_digest({"net": second})
    assert "0x" not in bg.registry.describe_option(torch.tanh) and data_digest({"f": len}) == data_digest({"f": len})
