"""Ill-posed problems are said out loud: no finite optimum, singular information, numerical walls,
plates that disagree with the data, supports that torch cannot map (issue 23)."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesgen as bg
from programs import line


def logistic_regression(X, y=None):
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    alpha = pyro.sample("alpha", dist.Normal(0.0, 1.0))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


@pytest.fixture(scope="module")
def breast_cancer():
    """scikit-learn's breast cancer data, standardised: the classes are perfectly separable."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return {"X": (X - X.mean(0)) / X.std(0), "y": y.astype(float)}


def test_mle_on_separable_classes_warns_and_is_not_converged(breast_cancer):
    with pytest.warns(UserWarning, match=r"no finite maximum.*'beta'.*'alpha'.*engine='map'"):
        fit = bg.fit(logistic_regression, breast_cancer, engine="mle")
    assert fit.info["converged"] is False
    assert fit.info["runaway_sites"] == ["beta", "alpha"]
    assert "no finite maximum" in fit.info["message"] and "engine='map'" in fit.info["message"]
    assert bg.check(fit)  # the unconverged optimiser is a finding


def _separable_beside_a_mean(X, y, z):
    """Separable classes in one likelihood, a normal mean with a finite maximum in the other."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("classes", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(X * beta).sum(-1)), obs=y)
    with pyro.plate("values", z.shape[0]):
        pyro.sample("z", dist.Normal(mu, 1.0), obs=z)


def test_a_runaway_beside_a_site_with_a_maximum_is_found_and_only_it_named():
    """On the ray through all sites the mean's fall hid the coefficients' rise: no finding."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    data = {"X": X, "y": (X[:, 0] > 0).astype(float), "z": rng.normal(5.0, 1.0, 50)}
    with pytest.warns(UserWarning, match=r"no finite maximum: it keeps increasing as sites 'beta' run off"):
        fit = bg.fit(_separable_beside_a_mean, data, engine="mle")
    assert fit.info["runaway_sites"] == ["beta"]
    assert fit.point["mu"] == pytest.approx(data["z"].mean(), abs=1e-6)


def test_map_with_a_proper_prior_on_the_same_data_converges_silently(breast_cancer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = bg.fit(logistic_regression, breast_cancer, engine="map")
    assert fit.info["converged"] is True and "runaway_sites" not in fit.info
    assert fit.info["hessian_positive_definite"] is True
    assert np.abs(fit.point["beta"]).max() < 5


def test_a_boundary_mode_is_not_a_runaway():
    # eight schools' MAP has tau at 0, the edge of its support: a finite estimate, not a runaway,
    # but one whose standard error (3.39 at tau = 1e-5 before) means nothing
    with pytest.warns(UserWarning, match=r"boundary of its support at tau: the posterior density is largest at the "
                                         r"edge.*Gamma or log-normal prior of a scale"):
        fit = bg.fit("eight_schools", engine="map")
    assert "runaway_sites" not in fit.info and fit.info["boundary_entries"] == ["tau"]
    assert fit.point["tau"] < 1e-3 and np.isnan(fit.stderr["tau"])


def two_covariates(x1, x2, y=None):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b1 = pyro.sample("b1", dist.Normal(0.0, 10.0))
    b2 = pyro.sample("b2", dist.Normal(0.0, 10.0))
    s = pyro.sample("s", dist.HalfNormal(5.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(a + b1 * x1 + b2 * x2, s), obs=y)


def test_collinear_covariates_name_the_sites_of_the_flat_direction():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=50)
    y = 1.0 + 0.5 * x1 + rng.normal(size=50)
    with pytest.warns(UserWarning, match="engine 'mle': the information matrix .* is singular"):  # said at fit time
        fit = bg.fit(two_covariates, {"x1": x1, "x2": 2 * x1, "y": y}, engine="mle")
    assert fit.info["hessian_positive_definite"] is False
    message = fit.info["hessian_message"]
    assert "singular" in message and "flat" in message and "collinear" in message
    assert "b1" in message and "b2" in message and "Sites involved: 'b1', 'b2'." in message
    assert np.isnan(fit.stderr["b1"]) and np.isnan(fit.stderr["a"])


def rotating_factors(ratings=None):
    """``ratings ~ Normal(U V^T, 1)`` with isotropic priors: ``U R, V R`` fit equally well for any
    rotation ``R``, so every mode has a flat direction spread over all the factors."""
    users = pyro.sample("users", dist.Normal(0.0, 1.0).expand([6, 2]).to_event(2))
    items = pyro.sample("items", dist.Normal(0.0, 1.0).expand([5, 2]).to_event(2))
    pyro.sample("ratings", dist.Normal(users @ items.transpose(-1, -2), 0.3).to_event(2), obs=ratings)


def test_a_symmetry_under_map_is_named_and_the_remedy_is_not_map_again():
    rng = np.random.default_rng(1)
    ratings = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 5)) + 0.3 * rng.normal(size=(6, 5))
    with pytest.warns(UserWarning, match="engine 'map': the information matrix"):
        fit = bg.fit(rotating_factors, {"ratings": ratings}, engine="map")
    message = fit.info["hessian_message"]
    assert "flat" in message and "rotating the factors" in message and "more informative prior" in message
    assert "engine='map'" not in message
    assert "; ;" not in message and "Sites involved: 'users', 'items'." in message


def test_independent_covariates_keep_their_standard_errors():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 50))
    y = 1.0 + 0.5 * x1 + rng.normal(size=50)
    fit = bg.fit(two_covariates, {"x1": x1, "x2": x2, "y": y}, engine="mle")
    assert fit.info["hessian_positive_definite"] is True and "hessian_message" not in fit.info
    assert np.isfinite(fit.stderr["b2"])


def correlation(y=None):
    """A bivariate normal whose correlation ``rho`` is unconstrained: cholesky fails where |rho| >= 1."""
    rho = pyro.sample("rho", dist.Normal(0.0, 0.1))
    one = torch.ones_like(rho)
    cov = torch.stack([torch.stack([one, rho], -1), torch.stack([rho, one], -1)], -2)
    scale_tril = torch.linalg.cholesky(cov)
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), scale_tril=scale_tril.unsqueeze(-3)), obs=y)


@pytest.fixture(scope="module")
def correlated():
    return {"y": np.random.default_rng(0).multivariate_normal([0, 0], [[1, 0.97], [0.97, 1]], size=40)}


def test_a_region_where_cholesky_fails_is_a_wall_for_the_line_search(correlated):
    # seed 5 starts inside |rho| < 1; L-BFGS's steps then try points beyond 1
    fit = bg.fit(correlation, correlated, engine="mle", seed=5)
    assert fit.info["failed_evaluations"] > 0 and "treated as walls" in fit.info["message"]
    assert fit.info["converged"] is True
    sample_corr = np.corrcoef(correlated["y"].T)[0, 1]
    assert fit.point["rho"] == pytest.approx(sample_corr, abs=0.01)


def test_a_failing_starting_point_is_reraised_with_the_reason(correlated):
    # seed 1 starts at |rho| > 1
    with pytest.raises(ValueError, match=r"LinAlgError at or after site 'rho' at the optimiser's starting point"):
        bg.fit(correlation, correlated, engine="map", seed=1)


# ------------------------------------------------------------------ inputs



def test_covariate_shorter_than_the_plate_names_argument_plate_and_sizes():
    with pytest.raises(ValueError, match=r"data\['x'\] has 30 rows but plate 'data' has size 32 "
                                         r"\(set by data\['y'\]\)"):
        bg.fit(line, {"x": np.zeros(30), "y": np.zeros(32)}, engine="map")


def test_plate_size_from_an_integer_argument_is_named():
    def sized(x, n, y=None):
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("obs", n):
            pyro.sample("y", dist.Normal(b * x, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"data\['x'\] has 5 rows but plate 'obs' has size 4 \(set by data\['n'\]\)"):
        bg.LogDensity(sized, bg.validate.to_tensors({"x": np.zeros(5), "n": 4}, torch.device("cpu")))


def test_a_2d_covariate_inside_a_1d_plate_names_its_shape():
    with pytest.raises(ValueError, match=r"data\['x'\] has shape \(32, 2\), size 2 along dim -1, but plate "
                                         r"'data' has size 32"):
        bg.fit(line, {"x": np.zeros((32, 2)), "y": np.zeros(32)}, engine="map")


def test_a_0d_observation_in_a_plate_is_named():
    with pytest.raises(ValueError, match=r"len\(\) of a 0-d tensor.*data\['y'\] is 0-d"):
        bg.fit(line, {"x": np.zeros(3), "y": np.array(1.0)}, engine="map")


def test_mixture_same_family_latent_works():
    def mixture_prior(y=None):
        z = pyro.sample("z", dist.MixtureSameFamily(dist.Categorical(torch.ones(2)),
                                                    dist.Normal(torch.tensor([-2.0, 2.0]), 1.0)))
        g = pyro.sample("g", dist.MixtureSameFamily(dist.Categorical(torch.ones(2)),
                                                    dist.Gamma(torch.tensor([2.0, 5.0]), 1.0)))
        with pyro.plate("data", 5):
            pyro.sample("y", dist.Normal(z, g), obs=y)

    y = np.array([0.5, 1.0, 1.5, 2.0, 2.5])
    fit = bg.fit(mixture_prior, {"y": y}, engine="map")
    assert fit.info["converged"] and fit.point["g"] > 0
    density = bg.LogDensity(mixture_prior, {"y": torch.as_tensor(y)})
    assert [s.name for s in density.layout] == ["z", "g"]


def test_uniform_with_a_latent_bound_works():
    def bounded(y=None):
        x = pyro.sample("x", dist.HalfNormal(3.0))
        u = pyro.sample("u", dist.Uniform(0.0, x))
        with pyro.plate("data", 5):
            pyro.sample("y", dist.Normal(u, 1.0), obs=y)

    fit = bg.fit(bounded, {"y": np.full(5, 1.5)}, engine="nuts", num_warmup=100, num_samples=100,
                 num_chains=2, progress=False)
    assert (fit.posterior["u"] < fit.posterior["x"]).all() and (fit.posterior["u"] > 0).all()


@pytest.mark.filterwarnings("ignore:Singular sample detected")
def test_a_support_without_a_bijection_names_site_distribution_and_fix():
    def wishart(y=None):
        W = pyro.sample("W", dist.Wishart(df=torch.tensor(10.0), covariance_matrix=torch.eye(2)))
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), W), obs=y)

    with pytest.raises(ValueError, match=r"latent site 'W' has distribution Wishart with support "
                                         r"PositiveDefinite\(\).*LKJCholesky"):
        bg.fit(wishart, {"y": np.zeros(2)}, engine="map")


def test_the_flat_entries_that_obs_mask_makes_are_explained():
    mask = torch.arange(30) < 20

    def partly_missing(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("n", 30):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y, obs_mask=mask)

    y = torch.tensor(np.random.default_rng(0).normal(2.0, 1.0, 30))
    with pytest.warns(UserWarning, match="the information matrix"):
        fit = bg.fit(partly_missing, {"y": y}, engine="laplace", num_draws=10)
    assert "20 direction(s) flat" in fit.info["hessian_message"]
    assert "'y_unobserved' come from pyro.sample(..., obs_mask=...)" in fit.info["hessian_message"]


def bernoulli_rate(y):
    p = pyro.sample("p", dist.Beta(1.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Bernoulli(p), obs=y)


def category_shares(y):
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Categorical(probs), obs=y)


def test_an_estimate_on_the_boundary_of_its_support_is_named_and_has_no_standard_error():
    # a rate of 0 and a category never seen: the likelihood is largest at the edge, where the delta
    # method's standard error is 0 (the transform saturates) and the Hessian says nothing
    with pytest.warns(UserWarning, match=r"boundary of its support at p: the likelihood is largest at the edge"):
        rate = bg.fit(bernoulli_rate, {"y": np.zeros(20)}, engine="mle")
    assert rate.point["p"] < 1e-8 and np.isnan(rate.stderr["p"]) and rate.info["boundary_entries"] == ["p"]
    assert any("boundary of its support at p" in finding for finding in bg.check(rate))
    y = np.array([0] * 12 + [1] * 8)
    with pytest.warns(UserWarning, match=r"at probs\[2\]: the likelihood"):
        shares = bg.fit(category_shares, {"y": y}, engine="mle")
    np.testing.assert_allclose(shares.point["probs"], [0.6, 0.4, 0.0], atol=1e-6)
    assert np.isnan(shares.stderr["probs"][2]) and shares.info["boundary_entries"] == ["probs[2]"]
    assert np.isfinite(shares.stderr["probs"][:2]).all()
    with warnings.catch_warnings():  # a category seen once is inside: its binomial standard error
        warnings.simplefilter("error")
        inside = bg.fit(category_shares, {"y": np.r_[y, 2]}, engine="mle")
    np.testing.assert_allclose(inside.stderr["probs"][2], np.sqrt((1 / 21) * (20 / 21) / 21), rtol=1e-3)
    with pytest.warns(UserWarning, match=r"posterior density is largest.*concentration above 1"):
        bg.fit(bernoulli_rate, {"y": np.zeros(20)}, engine="map")  # a Beta(1, 1) prior keeps the edge


def test_boundary_detection_holds_in_float32_and_leaves_a_ridge_and_a_latent_bound_alone():
    with pytest.warns(UserWarning, match="boundary of its support at p"):  # p = 3.8e-7: above 1e-8
        rate = bg.fit(bernoulli_rate, {"y": np.zeros(20)}, engine="mle", dtype="float32")
    assert rate.settings["dtype"] == "float32" and np.isnan(rate.stderr["p"])

    def ridge(y=None):  # only a * b is identified: a ridge, far from the bound at 0
        a = pyro.sample("a", dist.HalfNormal(100.0))
        b = pyro.sample("b", dist.HalfNormal(100.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(0.0, a * b), obs=y)

    def below(y=None):  # theta's bound is another latent site, not the prior draw's value
        b = pyro.sample("b", dist.LogNormal(1.7, 0.3))
        theta = pyro.sample("theta", dist.Uniform(0.0, b))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inside = bg.fit(ridge, {"y": rng.normal(0.0, 3.6, 50)}, engine="map")
        assert np.isfinite(inside.stderr["a"]) and "boundary_entries" not in inside.info
        for seed in range(10):
            bounded = bg.fit(below, {"y": rng.normal(4.0, 1.0, 30)}, engine="map", seed=seed)
            assert "boundary_entries" not in bounded.info
