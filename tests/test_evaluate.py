"""bg.evaluate: held-out checks pass for the right model, fail for a wrong one, and lpd matches closed forms."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
from scipy.stats import norm

import bayesgen as bg
from bayesgen.evaluate import evaluate
from programs import PRIOR_SD, normal_normal, normal_normal_posterior

ALPHA = 0.01
PVALUES = ["ks_pvalue", "mmd_pvalue", "c2st_pvalue"]


def poisson_rate(n=50, y=None):
    """y_i ~ Poisson(rate), rate ~ Gamma(3, 1)."""
    rate = pyro.sample("rate", dist.Gamma(3.0, 1.0))
    with pyro.plate("obs", n if y is None else y.shape[0]):
        pyro.sample("y", dist.Poisson(rate), obs=y)


def two_features(y=None, n=100):
    """Rows y_i in R^2 ~ Normal(loc, 1) with loc ~ Normal(0, 1) per feature."""
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("obs", n if y is None else y.shape[0]):
        pyro.sample("y", dist.Normal(loc, 1.0).to_event(1), obs=y)


def normal_program(y=None):
    """The plain Pyro program of issue 20: no size argument, the observed one named like its site."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", 20):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def normal_fit():
    """Laplace is exact for the normal-normal posterior of mu."""
    y = np.random.default_rng(0).normal(1.5, 1.0, 200)
    return bg.fit(normal_normal, {"y": y}, engine="laplace", num_draws=2000), y


def test_held_out_data_from_the_model_pass_and_lpd_is_the_predictive_density(normal_fit):
    fit, y = normal_fit
    heldout = np.random.default_rng(1).normal(1.5, 1.0, 200)
    table = evaluate(fit, {"y": heldout, "n": 200}, num_samples=2000)
    assert list(table.columns) == ["site", "feature", "num_obs", "ks_stat", "ks_pvalue", "chi2_stat", "chi2_pvalue",
                                   "mmd", "mmd_pvalue", "c2st_accuracy", "c2st_pvalue", "lpd", "lpd_per_obs"]
    row = table.iloc[0]
    assert len(table) == 1 and row["site"] == "y" and row["num_obs"] == 200
    assert all(row[p] > ALPHA for p in PVALUES) and math.isnan(row["chi2_pvalue"])
    mean, sd = normal_normal_posterior(y)
    exact = norm(mean, math.sqrt(1 + sd**2)).logpdf(heldout).sum()  # the posterior predictive is N(m, 1 + s^2)
    # Monte Carlo error of a log mean over 2000 draws whose likelihoods vary by ~7%: about 0.01 nats per point
    assert row["lpd"] == pytest.approx(exact, abs=0.5)
    assert row["lpd_per_obs"] == pytest.approx(row["lpd"] / 200)


def test_shifted_held_out_data_fail_every_test(normal_fit):
    fit, _ = normal_fit
    heldout = np.random.default_rng(2).normal(2.5, 1.0, 200)  # one sd away from the fitted mean
    row = evaluate(fit, {"y": heldout, "n": 200}).iloc[0]
    assert row["ks_pvalue"] < 1e-3 and row["c2st_pvalue"] < 1e-3
    assert row["mmd_pvalue"] < ALPHA  # the smallest p-value of 200 permutations is 1/201
    assert row["lpd_per_obs"] < -1.8  # vs -1.42 (= log N(0 | 0, 1) - 1/2) for data from the model


def test_prior_predictive_of_a_model():
    # marginally over the prior, y_i ~ N(0, 1 + PRIOR_SD^2)
    marginal = math.sqrt(1 + PRIOR_SD**2)
    heldout = np.random.default_rng(3).normal(0.0, marginal, 150)
    row = evaluate(normal_normal, {"y": heldout, "n": 150}, num_samples=4000).iloc[0]
    assert all(row[p] > ALPHA for p in PVALUES)
    # log mean_s N(y_i | mu_s, 1) over prior draws tends to the marginal density; 4000 draws: ~0.02 nats per point
    assert row["lpd"] == pytest.approx(norm(0.0, marginal).logpdf(heldout).sum(), abs=1.5)
    narrow = evaluate(normal_normal, {"y": heldout / 3, "n": 150}).iloc[0]
    assert narrow["ks_pvalue"] < 1e-3 and narrow["mmd_pvalue"] < ALPHA


def test_a_plain_pyro_program_evaluates_with_only_its_observations():
    # the held-out y alone identifies the observed argument (its tensor is the site's obs, as in bg.fit)
    rng = np.random.default_rng(6)
    heldout = rng.normal(0.0, math.sqrt(2.0), 20)  # marginally over the prior, y_i ~ N(0, 1 + 1)
    prior = evaluate(normal_program, {"y": heldout}, num_samples=4000).iloc[0]
    assert prior["site"] == "y" and prior["num_obs"] == 20 and prior["ks_pvalue"] > ALPHA
    assert prior["lpd"] == pytest.approx(norm(0.0, math.sqrt(2.0)).logpdf(heldout).sum(), abs=0.5)
    fit = bg.fit(normal_program, {"y": rng.normal(1.0, 1.0, 20)}, engine="laplace", num_draws=2000)
    posterior = evaluate(fit, {"y": rng.normal(1.0, 1.0, 20)}).iloc[0]
    assert posterior["site"] == "y" and posterior["num_obs"] == 20 and posterior["ks_pvalue"] > ALPHA
    with pytest.raises(ValueError, match="real_data holds no observed site's data"):
        evaluate(normal_program, {})


def test_discrete_data_get_a_chi_square_test():
    rng = np.random.default_rng(4)
    fit = bg.fit(poisson_rate, {"y": rng.poisson(4.0, 300)}, engine="laplace")
    good = evaluate(fit, {"y": rng.poisson(4.0, 300), "n": 300}).iloc[0]
    bad = evaluate(fit, {"y": rng.poisson(5.0, 300), "n": 300}).iloc[0]
    assert good["chi2_pvalue"] > ALPHA and bad["chi2_pvalue"] < 1e-3


def test_one_row_per_feature_of_a_multivariate_site():
    rng = np.random.default_rng(5)
    fit = bg.fit(two_features, {"y": rng.normal([0.5, -0.5], 1.0, size=(200, 2))}, engine="laplace")
    table = evaluate(fit, {"y": rng.normal([0.5, -0.5], 1.0, size=(100, 2)), "n": 100}, num_samples=500)
    assert list(table["feature"]) == [0, 1] and (table["num_obs"] == 100).all()
    assert table["mmd_pvalue"].nunique() == 1 and table["lpd"].nunique() == 1  # joint tests: one per site
    assert (table["ks_pvalue"] > ALPHA).all()


def test_bad_input_is_named(normal_fit):
    fit, _ = normal_fit
    with pytest.raises(ValueError, match="num_samples"):
        evaluate(fit, {"y": np.zeros(5), "n": 5}, num_samples=1)
    # n defaults to 20, but the program takes its size from y when given: simulated alike
    assert evaluate(fit, {"y": np.zeros(5)})["num_obs"].iloc[0] == 5
    with pytest.raises(TypeError, match="data key 'z'"):
        evaluate(fit, {"z": np.zeros(5)})
    detached = bg.Fit(**{**fit.__dict__, "problem": None})
    with pytest.raises(ValueError, match="loaded from a file"):
        evaluate(detached, {"y": np.zeros(5), "n": 5})


def test_non_finite_simulations_are_named_for_the_site_not_blamed_on_the_data():
    with pytest.warns(UserWarning, match="boundary of its support at tau"):
        fit = bg.fit("eight_schools", engine="map")  # tau runs to 0 on the unconstrained scale: inf draws
    with pytest.raises(ValueError, match=r"simulations of site 'y' hold \d+ non-finite values of \d+.*bg.check"):
        evaluate(fit, bg.get_model("eight_schools").load_data())  # "y has 252 non-finite values: drop or impute"
