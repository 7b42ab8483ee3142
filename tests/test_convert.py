"""fit.to_arviz(): the ArviZ schema's groups, stat names and dims; ArviZ functions run on it."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesgen as bg
from programs import linear_regression, regression_data

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

X, Y = regression_data()


@pytest.fixture(scope="module")
def idata():
    fit = bg.fit(linear_regression, {"X": X, "y": Y}, engine="nuts", num_warmup=150, num_samples=100,
                 num_chains=2, seed=0)
    fit.predict()
    return fit.to_arviz()


def test_groups_and_dims(idata):
    assert set(idata.groups()) == {"posterior", "sample_stats", "log_likelihood", "observed_data",
                                   "constant_data", "posterior_predictive"}
    assert "chain" not in idata.constant_data.sizes  # the covariates, as the program took them
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive"):
        assert idata[group].sizes["chain"] == 2 and idata[group].sizes["draw"] == 100
    assert idata.posterior["beta"].dims[:2] == ("chain", "draw")
    assert idata.attrs["inference_library"] == "bayesgen"


def test_sample_stats_use_the_schema_names(idata):
    names = set(idata.sample_stats.data_vars)
    assert names == {"lp", "diverging", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate"}
    assert idata.sample_stats["diverging"].dtype == bool


def test_loo_and_summary_run(idata):
    with warnings.catch_warnings():
        # 200 draws: ArviZ flags Pareto k above 1 - 1/log10(200) = 0.57, which some seeds' draws reach
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo) and loo.pareto_k.shape == (len(Y),)
    table = az.summary(idata)
    assert {"mean", "sd", "ess_bulk", "ess_tail", "r_hat"} <= set(table.columns)


def test_model_dims_name_the_axes():
    fit = bg.fit("eight_schools", engine="laplace")
    idata = fit.to_arviz()
    assert idata.posterior["theta"].dims == ("chain", "draw", "school")
    assert idata.observed_data["y"].dims == ("school",)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "school")


def test_an_optimisers_loss_goes_to_a_group_of_steps_not_among_the_draws(tmp_path):
    fit = bg.fit(linear_regression, {"X": X, "y": Y}, engine="svi", guide="mvn", num_steps=300, num_draws=100)
    idata = fit.to_arviz()
    assert "sample_stats" not in idata.groups()  # 300 losses posed as draws beside 100 posterior draws
    assert dict(idata.optimization["loss"].sizes) == {"chain": 1, "step": 300}
    fit.save(str(tmp_path / "svi.nc"))
    assert np.array_equal(bg.load(str(tmp_path / "svi.nc")).sample_stats["loss"], fit.sample_stats["loss"])
    as_many = bg.fit(linear_regression, {"X": X, "y": Y}, engine="svi", guide="mvn", num_steps=40, num_draws=40)
    assert "optimization" in as_many.to_arviz().groups()  # by name, not by length: 40 steps are not 40 draws


def test_zoo_models_name_the_dims_of_their_arguments_too():
    """So that xarray aligns covariates with the sites (sigma / y was an 8 x 8 array)."""
    schools = bg.fit("eight_schools", engine="laplace", num_draws=20).to_arviz()
    assert schools.constant_data["sigma"].dims == ("school",) == schools.observed_data["y"].dims
    assert (schools.observed_data["y"] / schools.constant_data["sigma"]).dims == ("school",)
    diabetes = bg.fit("linear_regression", engine="laplace", num_draws=20).to_arviz()
    predictor = (diabetes.constant_data["X"] * diabetes.posterior["beta"]).sum("feature")
    assert set(predictor.dims) == {"obs", "chain", "draw"}


def test_a_discrete_sites_values_are_integers_for_arviz_and_floats_again_after_load(tmp_path):
    """az.plot_ppc draws integer data as counts, floats as a smooth density (a binary outcome as two humps)."""
    fit = bg.fit("logistic_regression", engine="laplace", num_draws=20)
    fit.predict()
    idata = fit.to_arviz()
    assert idata.observed_data["y"].dtype == np.int64 and idata.posterior_predictive["y"].dtype == np.int64
    assert fit.observed_data["y"].dtype == np.float64  # the fit keeps the values as the program took them
    fit.save(str(tmp_path / "fit.nc"))
    loaded = bg.load(str(tmp_path / "fit.nc"))
    assert loaded.observed_data["y"].dtype == np.float64 and loaded.posterior_predictive["y"].dtype == np.float64
    assert np.array_equal(loaded.observed_data["y"], fit.observed_data["y"])


def test_a_site_without_a_declared_support_converts_and_integer_data_keep_their_dtype(tmp_path):
    import pyro
    import pyro.distributions as dist

    class Unit(dist.Normal):  # an observed site's distribution need not declare its support
        @property
        def support(self):
            raise NotImplementedError

    def counts(y=None):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        with pyro.plate("n", 20):
            pyro.sample("y", dist.Poisson(rate), obs=y)
        pyro.sample("z", Unit(rate, 1.0), obs=torch.tensor(2.0))

    y = np.random.default_rng(0).poisson(2.0, 20)  # int64
    fit = bg.fit(counts, {"y": y}, engine="laplace", num_draws=20)
    fit.predict()
    fit.save(str(tmp_path / "fit.nc"))  # to_arviz read the support of z, which raised
    loaded = bg.load(str(tmp_path / "fit.nc"))
    assert loaded.observed_data["y"].dtype == fit.observed_data["y"].dtype  # not the predictive's


def two_observations(y1=None, y2=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", 25):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("y1", dist.Normal(mu + a, 1.0), obs=y1)
        pyro.sample("y2", dist.Normal(mu, 1.0), obs=y2)
    pyro.deterministic("total", a.sum())


def test_plates_name_the_dims_so_that_sites_of_one_plate_line_up():
    rng = np.random.default_rng(0)
    data = {"y1": rng.normal(size=25), "y2": rng.normal(size=25)}
    fit = bg.fit(two_observations, data, engine="laplace", num_draws=50)
    idata = fit.to_arviz()
    assert idata.log_likelihood["y1"].dims == idata.log_likelihood["y2"].dims == ("chain", "draw", "obs")
    assert idata.posterior["a"].dims == ("chain", "draw", "obs") and idata.observed_data["y1"].dims == ("obs",)
    joint = idata.log_likelihood["y1"] + idata.log_likelihood["y2"]  # an outer sum of 25 x 25 before
    assert joint.shape == (1, 50, 25)
    # the prior holds the deterministic sites too, as PyMC's does, with the same dims
    prior = bg.sample_prior(two_observations, data, num_samples=20).prior
    assert prior["a"].dims == ("chain", "draw", "obs") and prior["total"].shape == (1, 20)
    np.testing.assert_allclose(prior["total"].values, prior["a"].values.sum(-1), rtol=1e-12)
