"""bg.fit and bg.Fit: shapes, seeds, options, devices, prediction, save/load."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesgen as bg
from programs import linear_regression, normal_normal, regression_data

X, Y = regression_data()
DATA = {"X": X, "y": Y}
SMALL = {"num_warmup": 100, "num_samples": 50, "num_chains": 3}


@pytest.fixture(scope="module")
def nuts_fit():
    return bg.fit(linear_regression, DATA, engine="nuts", seed=1, **SMALL)


def test_fit_members_have_the_documented_shapes(nuts_fit):
    fit = nuts_fit
    assert fit.engine == "nuts" and fit.kind == "samples"
    assert fit.posterior["beta"].shape == (3, 50, 3) and fit.posterior["alpha"].shape == (3, 50)
    for stat in ("lp", "diverging", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate"):
        assert fit.sample_stats[stat].shape == (3, 50), stat
    assert fit.log_likelihood["y"].shape == (3, 50, len(Y))
    np.testing.assert_array_equal(fit.observed_data["y"], Y)
    assert fit.settings["num_chains"] == 3 and fit.settings["target_accept"] == 0.8
    assert fit.point is None and fit.stderr is None
    assert fit.timing["total"] > 0
    # one line, not every array (the dataclass's repr printed 88 kB for a small regression)
    assert repr(fit) == f"Fit(engine='nuts', model='{fit.model_name}', chains x draws=3x50, sites=[beta(3,), alpha, sigma, sigma2])"


def test_pointwise_log_likelihood_is_the_normal_density(nuts_fit):
    from scipy.stats import norm

    fit = nuts_fit
    mean = fit.posterior["alpha"][1, 7] + X @ fit.posterior["beta"][1, 7]
    expected = norm.logpdf(Y, mean, fit.posterior["sigma"][1, 7])
    np.testing.assert_allclose(fit.log_likelihood["y"][1, 7], expected, rtol=1e-10)


def test_pointwise_log_likelihood_is_computed_at_first_use_and_kept(monkeypatch):
    from bayesgen import marginal

    calls = []
    evaluate = marginal.pointwise_log_likelihood
    monkeypatch.setattr(marginal, "pointwise_log_likelihood", lambda *args: calls.append(args) or evaluate(*args))
    fit = bg.fit(linear_regression, DATA, engine="nuts", seed=1, **SMALL)
    assert not calls and "log_likelihood" not in fit.timing  # bg.fit returns without it
    first = fit.log_likelihood
    assert len(calls) == 1 and fit.timing["log_likelihood"] > 0
    assert fit.log_likelihood is first and len(calls) == 1  # kept
    assert "log_likelihood" in fit.to_arviz().groups() and len(calls) == 1
    from scipy.stats import norm

    post = fit.posterior
    mean = post["alpha"][..., None] + post["beta"] @ X.T
    assert set(first) == {"y"}
    np.testing.assert_allclose(first["y"], norm.logpdf(Y, mean, post["sigma"][..., None]), rtol=1e-10)


def test_same_seed_gives_identical_draws_and_chains_differ():
    a = bg.fit(normal_normal, {"y": Y}, engine="nuts", seed=5, **SMALL)
    b = bg.fit(normal_normal, {"y": Y}, engine="nuts", seed=5, **SMALL)
    c = bg.fit(normal_normal, {"y": Y}, engine="nuts", seed=6, **SMALL)
    np.testing.assert_array_equal(a.posterior["mu"], b.posterior["mu"])
    assert not np.array_equal(a.posterior["mu"], c.posterior["mu"])
    chains = a.posterior["mu"]
    assert not np.array_equal(chains[0], chains[1]) and not np.array_equal(chains[1], chains[2])


@pytest.mark.parametrize("engine", ["svi", "laplace"])
def test_same_seed_is_reproducible_for_other_engines(engine):
    options = {"num_steps": 200} if engine == "svi" else {}
    a = bg.fit(normal_normal, {"y": Y}, engine=engine, seed=2, **options)
    b = bg.fit(normal_normal, {"y": Y}, engine=engine, seed=2, **options)
    np.testing.assert_array_equal(a.posterior["mu"], b.posterior["mu"])


def test_engine_instance_and_name_are_interchangeable():
    by_name = bg.fit(normal_normal, {"y": Y}, engine="nuts", seed=4, **SMALL)
    by_instance = bg.fit(normal_normal, {"y": Y}, engine=bg.inference.NUTS(**SMALL), seed=4)
    np.testing.assert_array_equal(by_name.posterior["mu"], by_instance.posterior["mu"])


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(TypeError, match="num_samples") as info:
        bg.fit(normal_normal, {"y": Y}, engine="nuts", num_sample=10)
    assert "Did you mean 'num_samples'" in str(info.value) and "max_tree_depth" in str(info.value)


def test_options_with_an_engine_instance_are_rejected():
    with pytest.raises(TypeError, match="engine instance"):
        bg.fit(normal_normal, {"y": Y}, engine=bg.inference.MLE(), num_steps=3)


def test_unknown_engine_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown engine 'nutz'.*Did you mean 'nuts'"):
        bg.fit(normal_normal, {"y": Y}, engine="nutz")


def test_cuda_device_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the GPU path is exercised by benchmarks/gpu_check.sh
    with pytest.raises(ValueError, match="CUDA is not available"):
        bg.fit(normal_normal, {"y": Y}, engine="map", device="cuda")


def test_predict_names_a_covariate_left_at_the_fits_rows_beside_new_ones():
    import torch

    def exposure_model(x, exposure, y=None):
        slope = pyro.sample("slope", dist.Normal(0.0, 1.0))
        with pyro.plate("n", len(x)):
            pyro.sample("y", dist.Poisson(exposure * torch.exp(slope * x)), obs=y)

    rng = np.random.default_rng(0)
    x, exposure = rng.normal(size=40), rng.uniform(1, 2, size=40)
    fit = bg.fit(exposure_model, {"x": x, "exposure": exposure, "y": rng.poisson(exposure)}, engine="laplace")
    with pytest.raises(ValueError, match=r"exposure still has the fit's 40 rows where the new data have 2 "
                                         r"\(pass exposure=\.\.\. for the new rows too\)"):
        fit.predict(x=np.array([0.0, 1.0]))  # torch's "size of tensor a (40) must match" before
    assert fit.predict(x=np.array([0.0, 1.0]), exposure=np.ones(2))["y"].shape[-1] == 2


def test_predict_says_which_observed_arguments_it_set_to_none_when_the_program_needs_them():
    def ar(y=None, horizon=0):
        phi = pyro.sample("phi", dist.Uniform(-1.0, 1.0))
        with pyro.plate("t", len(y) - 1):
            pyro.sample("y", dist.Normal(phi * y[:-1], 1.0), obs=y[1:])
        last = y[-1]
        for h in range(horizon):
            last = pyro.sample(f"forecast_{h}", dist.Normal(phi * last, 1.0))

    series = np.cumsum(np.random.default_rng(0).normal(size=50))
    fit = bg.fit(bg.ModelSpec("ar", ar, observed={"y": "y"}), {"y": series}, engine="laplace")
    with pytest.raises(TypeError, match="no len.*the observed argument.s. y are set to None.*a forecast continues"):
        fit.predict(horizon=3)  # the program's bare "object of type 'NoneType' has no len()" before
    assert fit.predict(horizon=3, y=series, num_samples=5)["forecast_2"].shape == (1, 5)


def test_predict_with_new_data_and_stored_posterior_predictive(nuts_fit):
    fit = nuts_fit
    new = fit.predict(X=X[:7])
    assert new["y"].shape == (3, 50, 7)
    assert "y" not in fit.posterior_predictive
    with pytest.raises(ValueError, match=r"X has shape \(3, 2\) where the fit's has \(\d+, 3\); new data must match"):
        fit.predict(X=X[:3, :2])  # torch's "size of tensor a (2) must match" from inside the program before
    with pytest.raises(ValueError, match="num_samples must be a positive integer or None"):
        fit.predict(0)
    replicated = fit.predict(num_samples=10)
    assert replicated["y"].shape == (3, 10, len(Y))
    assert "y" not in fit.posterior_predictive  # 10 draws would not line up with the posterior's 50
    assert fit.predict()["y"].shape == (3, 50, len(Y)) and fit.posterior_predictive["y"].shape == (3, 50, len(Y))
    # predictive draws scatter around the regression line with the posterior noise scale
    resid = replicated["y"] - Y
    assert 0.5 < resid.std() < 1.5


def test_save_then_load_gives_the_same_summary(tmp_path, nuts_fit):
    path = tmp_path / "fit.nc"
    nuts_fit.save(str(path))
    loaded = bg.load(str(path))
    assert loaded.summary().equals(nuts_fit.summary())
    assert loaded.settings == nuts_fit.settings and loaded.engine == "nuts"
    np.testing.assert_array_equal(loaded.sample_stats["diverging"], nuts_fit.sample_stats["diverging"])
    with pytest.raises(ValueError, match="without its program"):
        loaded.predict()


def test_a_zoo_fit_loads_with_its_program_and_a_wrong_program_is_named(tmp_path):
    fit = bg.fit("eight_schools", engine="laplace", num_draws=50)
    fit.save(str(tmp_path / "schools.nc"))
    loaded = bg.load(str(tmp_path / "schools.nc"))  # found by its zoo name
    assert np.array_equal(loaded.generate(5, seed=2)["y"], fit.generate(5, seed=2)["y"])
    with pytest.raises(TypeError, match=r"the fit in .*schools.nc \(of model 'eight_schools'\) does not run under "
                                         r"the program given as model= \('linear_regression'\)"):
        bg.load(str(tmp_path / "schools.nc"), model="linear_regression")


def _student_normal(y=None, n=20):
    """normal_normal's arguments and sites, but a Student-t likelihood."""
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    with pyro.plate("obs", n if y is None else y.shape[0]):
        pyro.sample("y", dist.StudentT(3.0, mu, 1.0), obs=y)


def _renamed_normal(y=None, n=20):
    """normal_normal's arguments and likelihood, its mean named otherwise."""
    mean = pyro.sample("mean", dist.Normal(0.0, 3.0))
    with pyro.plate("obs", n if y is None else y.shape[0]):
        pyro.sample("y", dist.Normal(mean, 1.0), obs=y)


def test_a_program_of_the_same_arguments_but_other_sites_or_likelihood_is_refused_at_load(tmp_path):
    y = np.random.default_rng(3).normal(1.0, 1.0, size=20)
    fit = bg.fit(normal_normal, {"y": y}, engine="laplace", num_draws=50)
    fit.save(str(tmp_path / "n.nc"))
    loaded = bg.load(str(tmp_path / "n.nc"), model=normal_normal)  # the fitting program passes both checks
    np.testing.assert_allclose(loaded.log_likelihood["y"], fit.log_likelihood["y"])
    with pytest.raises(ValueError, match=r"scores observed site 'y' differently from the program the fit in "):
        bg.load(str(tmp_path / "n.nc"), model=_student_normal)
    with pytest.raises(ValueError, match=r"holds draws of \['mu'\], which the program given as model= "
                                         r"\('_renamed_normal'\) does not sample"):
        bg.load(str(tmp_path / "n.nc"), model=_renamed_normal)


def _observing_data(data=None):
    """The observed site 'obs' takes the argument 'data'."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", 20):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def test_a_program_whose_observed_site_is_named_otherwise_than_its_argument_loads(tmp_path):
    fit = bg.fit(_observing_data, {"data": np.linspace(-1.0, 1.0, 20)}, engine="laplace", num_draws=20)
    fit.save(str(tmp_path / "fit.nc"))
    loaded = bg.load(str(tmp_path / "fit.nc"), model=_observing_data)
    np.testing.assert_array_equal(loaded.predict(seed=2)["obs"], fit.predict(seed=2)["obs"])
    loaded.save(str(tmp_path / "again.nc"))  # the mapping survives a second save
    assert bg.load(str(tmp_path / "again.nc"), model=_observing_data).problem.spec.observed == {"obs": "data"}


def _scoped(y=None):
    """Site names with a '/', as pyro.contrib.autoname.scope writes them."""
    w = pyro.sample("layer/w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    pyro.deterministic("layer/total", w.sum())
    with pyro.plate("n", 20):
        pyro.sample("out/y", dist.Normal(w.sum(), 1.0), obs=y)


def test_site_names_with_a_slash_survive_save_and_load(tmp_path):
    fit = bg.fit(_scoped, {"y": np.linspace(-1.0, 1.0, 20)}, engine="laplace", num_draws=20)
    fit.predict()
    fit.save(str(tmp_path / "fit.nc"))  # netCDF refuses '/' in names
    loaded = bg.load(str(tmp_path / "fit.nc"), model=_scoped)
    assert list(loaded.posterior) == ["layer/w", "layer/total"] and list(loaded.observed_data) == ["out/y"]
    np.testing.assert_array_equal(loaded.posterior["layer/w"], fit.posterior["layer/w"])
    np.testing.assert_array_equal(loaded.posterior_predictive["out/y"], fit.posterior_predictive["out/y"])
    np.testing.assert_array_equal(loaded.log_likelihood["out/y"], fit.log_likelihood["out/y"])


def _counting(y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    pyro.deterministic("positive", mu > 0)
    pyro.deterministic("above", (mu > torch.linspace(-2, 2, 5)).sum())
    with pyro.plate("n", 20):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_integer_and_bool_deterministic_sites_of_a_point_fit_have_no_standard_error():
    fit = bg.fit(_counting, {"y": np.linspace(0.0, 2.0, 20)}, engine="laplace")  # a float's sd failed the fit
    assert bool(fit.point["positive"]) and fit.point["above"] == 3
    assert np.isnan(fit.stderr["positive"]) and np.isnan(fit.stderr["above"])


def test_a_zoo_model_warns_under_an_engine_its_spec_does_not_list():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bg.fit("bnn", engine="mle", num_steps=5)  # (five steps also leave a saddle point, warned about too)
    assert any("engine 'mle' is not among those model 'bnn' is meant for (nuts, hmc" in str(w.message) for w in caught)


def test_point_estimates_survive_save_and_load(tmp_path):
    fit = bg.fit(linear_regression, DATA, engine="mle")
    fit.save(str(tmp_path / "mle.nc"))
    loaded = bg.load(str(tmp_path / "mle.nc"))
    np.testing.assert_allclose(loaded.point["beta"], fit.point["beta"])
    np.testing.assert_allclose(loaded.stderr["sigma"], fit.stderr["sigma"])
    assert loaded.point["sigma2"] == pytest.approx(fit.point["sigma"] ** 2)
    # the delta method: sd(sigma^2) = 2 sigma sd(sigma), here by the Monte Carlo sd of the draws
    assert loaded.stderr["sigma2"] == pytest.approx(2 * fit.point["sigma"] * fit.stderr["sigma"], rel=0.15)
    single = bg.fit(linear_regression, DATA, engine="mle", dtype="float32")
    single.save(str(tmp_path / "single.nc"))
    again = bg.load(str(tmp_path / "single.nc"))
    for name in single.point:  # arrays in their own dtype, not JSON floats
        assert again.point[name].dtype == single.point[name].dtype == np.float32
        np.testing.assert_array_equal(again.point[name], single.point[name])
    for name in single.stderr:
        np.testing.assert_array_equal(again.stderr[name], single.stderr[name])


def test_zoo_name_with_default_data():
    fit = bg.fit("eight_schools", engine="laplace")
    assert fit.model_name == "eight_schools" and fit.posterior["theta"].shape == (1, 1000, 8)


def test_unbatchable_program_still_fits_with_every_kind_of_engine():
    import pyro
    import pyro.distributions as dist
    import torch

    def scalar_only(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        loc = torch.stack([mu, torch.tensor(1.0)])  # a batch of mu cannot stack with a scalar
        pyro.deterministic("loc", loc)
        pyro.sample("y", dist.Normal(loc, 1.0).to_event(1), obs=y)

    data = {"y": np.array([0.5, 1.5])}
    # no batch plate can hold it, but torch.func.vmap maps it: no warning (warnings are errors here)
    nuts = bg.fit(scalar_only, data, engine="nuts", num_warmup=50, num_samples=20, num_chains=2)
    assert nuts.problem.density.mapped and not nuts.problem.density.vectorized
    assert nuts.posterior["mu"].shape == (2, 20) and nuts.posterior["loc"].shape == (2, 20, 2)
    assert nuts.log_likelihood["y"].shape == (2, 20)
    laplace = bg.fit(scalar_only, data, engine="laplace", num_draws=30)
    # y[0] ~ N(mu, 1) with mu ~ N(0, 1): the posterior of mu is N(0.25, 1/2)
    assert laplace.point["mu"] == pytest.approx(0.25, abs=1e-6)
    assert laplace.stderr["mu"] == pytest.approx(0.5**0.5, abs=1e-6)


def forecasting(y=None, horizon=0):
    level = pyro.sample("level", dist.Normal(0.0, 10.0))
    with pyro.plate("time", 30):
        pyro.sample("y", dist.Normal(level, 1.0), obs=y)
    if horizon:
        with pyro.plate("future_time", horizon):
            pyro.sample("future", dist.Normal(level, 1.0))


def test_predict_draws_sites_that_new_data_switch_on():
    y = np.random.default_rng(0).normal(3.0, 1.0, 30)
    spec = bg.ModelSpec(name="level", model=forecasting, observed={"y": "y"})
    fit = bg.fit(spec, {"y": y}, engine="laplace", num_draws=400)
    out = fit.predict(horizon=5)
    assert out["y"].shape == (1, 400, 30) and out["future"].shape == (1, 400, 5)
    # predictive sd of a new point: sqrt(1 + 1/30); its mean is the posterior mean of the level
    assert abs(out["future"].mean() - fit.posterior["level"].mean()) < 4 * np.sqrt(1 + 1 / 30) / np.sqrt(2000)
    assert abs(out["future"].std() - np.sqrt(1 + 1 / 30)) < 0.08


def test_predict_refuses_new_sizes_that_would_reshape_the_fitted_draws():
    def effects(num_groups, group, y=None):
        effect = pyro.sample("effect", dist.Normal(0.0, 1.0).expand([num_groups]).to_event(1))
        with pyro.plate("data", len(group)):
            pyro.sample("y", dist.Normal(effect[group], 1.0), obs=y)

    group = np.arange(40) % 2
    fit = bg.fit(effects, {"num_groups": 2, "group": group, "y": group * 2.0}, engine="laplace", num_draws=10)
    with pytest.raises(ValueError, match=r"draws of site 'effect' have shape \(2,\), but the program with the new "
                                         r"data has it of shape \(3,\)"):
        fit.predict(num_groups=3, group=np.array([0, 2]))  # effect[2] would be read from nowhere
    with pytest.raises(ValueError, match=r"index 2 is out of bounds"):
        fit.predict(group=np.array([0, 2]))
    assert fit.predict(group=np.array([1, 0]))["y"].shape == (1, 10, 2)


def test_predicts_check_of_new_data_runs_at_the_fits_draws_not_the_priors():
    def scale_from_a_normal(x, y=None):  # s < 0 is invalid, and its prior puts 16% there
        s = pyro.sample("s", dist.Normal(1.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(x, s), obs=y)

    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    fit = bg.fit(scale_from_a_normal, {"x": x, "y": x + rng.normal(0.0, 1.3, 50)}, engine="laplace", num_draws=20)
    assert fit.posterior["s"].min() > 0
    for seed in range(10):
        assert fit.predict(seed=seed, x=np.zeros(3))["y"].shape == (1, 20, 3)
