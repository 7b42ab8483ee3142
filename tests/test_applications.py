"""bg.anomaly_scores: minus the log posterior predictive density of each observation."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import bayesgen as bg
from bayesgen.metrics import ranking_metrics
from programs import line, linear_regression, normal_normal, normal_normal_posterior


def test_scores_are_the_predictive_density_of_a_conjugate_normal_model():
    """mu ~ N(0, PRIOR_SD^2), y_i ~ N(mu, 1): the predictive density is N(mean, 1 + sd^2), which
    the scores approach as the draws grow, and equal exactly the log-mean-exp over the draws."""
    y = np.random.default_rng(0).normal(1.0, 1.0, size=40)
    fit = bg.fit(normal_normal, {"y": y}, engine="nuts", num_samples=1000, seed=0)
    new = np.array([-3.0, 0.0, 1.0, 2.5, 6.0])
    scores = bg.anomaly_scores(fit, {"y": new}, num_samples=4000)
    mu = fit.posterior["mu"].reshape(-1)
    by_hand = -(logsumexp(stats.norm.logpdf(new[None, :], mu[:, None], 1.0), axis=0) - np.log(len(mu)))
    np.testing.assert_allclose(scores, by_hand, rtol=1e-10)
    mean, sd = normal_normal_posterior(y)
    exact = -stats.norm.logpdf(new, mean, np.sqrt(1 + sd**2))
    # Monte Carlo error of a log-mean: the weights' coefficient of variation over sqrt(ESS)
    weights = stats.norm.pdf(new[None, :], mu[:, None], 1.0)
    ess = float(fit.summary().loc["mu", "ess_bulk"])
    standard_error = weights.std(0) / weights.mean(0) / np.sqrt(ess)
    assert (np.abs(scores - exact) < 4 * standard_error).all(), (scores - exact, standard_error)


def test_a_planted_outlier_scores_highest():
    rng = np.random.default_rng(1)
    x = np.linspace(-2, 2, 50)
    y = 0.5 + 1.5 * x + rng.normal(0.0, 0.3, size=50)
    y[17] += 3.0
    fit = bg.fit(line, {"x": x, "y": y}, engine="laplace", seed=0)
    scores = bg.anomaly_scores(fit, {"x": x, "y": y})
    assert scores.shape == (50,) and int(np.argmax(scores)) == 17


def test_bad_calls_get_clear_errors(tmp_path):
    y = np.random.default_rng(0).normal(size=20)
    fit = bg.fit(normal_normal, {"y": y}, engine="laplace")
    with pytest.raises(TypeError, match="bg.Fit"):
        bg.anomaly_scores({"y": y}, {"y": y})
    with pytest.raises(ValueError, match="num_samples"):
        bg.anomaly_scores(fit, {"y": y}, num_samples=0)
    path = str(tmp_path / "fit.nc")
    fit.save(path)
    with pytest.raises(ValueError, match="model="):
        bg.anomaly_scores(bg.load(path), {"y": y})


def test_deep_models_score_each_image_and_noise_scores_higher():
    """A VAE's codes are integrated out by importance sampling with its encoder: one score per
    image; random pixels are far less probable than held-out digits."""
    from bayesgen.datasets import binary_digits

    train, test = binary_digits()
    fit = bg.fit("vae", {"images": train[:300]}, engine="svi", num_steps=50, seed=0, progress=False)
    noise = (np.random.default_rng(0).random((5, 8, 8)) < 0.5).astype(float)
    scores = bg.anomaly_scores(fit, {"images": np.concatenate([test[:20], noise])})
    assert scores.shape == (25,) and np.isfinite(scores).all()
    assert scores[20:].min() > scores[:20].max()


def test_a_program_with_one_term_for_all_its_data_is_refused():
    with pytest.warns(UserWarning, match="boundary of its support"):  # a state kept for one wait, its scale ~0
        fit = bg.fit("hmm", engine="map")
    with pytest.raises(ValueError, match="site 'y' has one likelihood term for all its observations"):
        bg.anomaly_scores(fit, bg.get_model("hmm").load_data())


def test_augment_draws_the_posterior_predictive_or_the_plug_in_model():
    """Three observations leave mu uncertain (sd 0.55): the predictive's variance is 1 + sd^2,
    the plug-in model's 1, at the posterior mean."""
    y = np.array([0.3, 1.1, 0.8])
    fit = bg.fit(normal_normal, {"y": y}, engine="nuts", num_samples=2000, seed=0)
    mean, sd = normal_normal_posterior(y)
    predictive = bg.augment(fit, 20_000, seed=1)["y"]
    plug_in = bg.augment(fit, 20_000, seed=1, predictive=False)["y"]
    assert predictive.shape == plug_in.shape == (20_000,) and predictive.dtype == np.float64
    tolerance = 4 * np.sqrt(2 / 20_000) * (1 + sd**2)  # the sd of a sample variance, normal data
    assert abs(predictive.var() - (1 + sd**2)) < tolerance and abs(plug_in.var() - 1) < tolerance
    assert abs(plug_in.mean() - mean) < 4 / np.sqrt(20_000) + 0.02  # 0.02: the posterior mean's MC error
    np.testing.assert_array_equal(bg.augment(fit, 20_000, seed=1)["y"], predictive)
    assert not np.array_equal(bg.augment(fit, 20_000, seed=2)["y"], predictive)


def test_augment_generates_responses_for_new_covariates():
    rng = np.random.default_rng(2)
    x = np.linspace(-2, 2, 40)
    data = {"X": x[:, None], "y": 0.5 + 1.5 * x + rng.normal(0.0, 0.3, size=40)}
    fit = bg.fit(linear_regression, data, engine="laplace", seed=0)
    new = bg.augment(fit, 2000, X=np.full((2000, 1), 2.0), predictive=False)["y"]
    assert new.shape == (2000,) and abs(new.mean() - 3.5) < 0.15 and abs(new.std() - 0.3) < 0.05
    with pytest.raises(TypeError, match="'z' is not an argument"):
        bg.augment(fit, 10, z=np.zeros(3))
    with pytest.raises(ValueError, match="num_samples"):
        bg.augment(fit, 0)
    with pytest.raises(TypeError, match="bg.Fit"):
        bg.augment({"y": 1}, 10)


def test_augment_refuses_conditions_that_change_the_fitted_model():
    """They were taken in silence: robust=True drew the degrees of freedom from their prior (|y| up to
    229 against 5), num_components=3 kept the fit's 2 components."""
    data, _ = bg.get_model("gmm").simulate(0, num_obs=60)
    fit = bg.fit("gmm", data, engine="map", progress=False)
    with pytest.raises(ValueError, match=r"with the conditions \(robust=True\) the program samples site 'df', "
                                         r"which the fit holds no draws of"):
        bg.augment(fit, 3, robust=True)
    with pytest.raises(ValueError, match=r"\(num_components=3\) site 'weights' has shape \(3,\), but the fit's "
                                         r"draws have shape \(2,\)"):
        bg.augment(fit, 3, num_components=3)
    assert bg.augment(fit, 5, num_obs=5)["y"].shape == (5, 2)  # a size is data, not the model


def test_discrete_inference_on_a_site_of_one_category_says_there_is_nothing_to_infer():
    data, _ = bg.get_model("gmm").simulate(0, num_obs=40)
    fit = bg.fit("gmm", {**data, "num_components": 1}, engine="map", progress=False)
    for infer in (bg.discrete_marginals, bg.infer_discrete):
        with pytest.raises(ValueError, match="site 'z' takes one value only"):
            infer(fit)


def test_ranking_metrics_by_hand():
    scores = np.array([[0.9, 0.8, 0.1, 0.5],
                       [0.1, 0.2, 0.3, 0.4],
                       [1.0, 1.0, 1.0, 1.0]])
    relevant = np.array([[False, True, False, True],
                         [True, False, False, False],
                         [False, False, False, False]])  # no relevant item: left out
    result = ranking_metrics(scores, relevant, k=2)
    # user 0: top 2 = items 0, 1: one of two relevant, at rank 2; user 1: top 2 = items 3, 2: none
    assert result["users"] == 2
    assert result["recall"] == pytest.approx((0.5 + 0.0) / 2)
    ideal = 1 + 1 / np.log2(3)
    assert result["ndcg"] == pytest.approx((1 / np.log2(3) / ideal + 0.0) / 2)
    perfect = ranking_metrics(relevant[:2].astype(float), relevant[:2], k=2)
    assert perfect["recall"] == perfect["ndcg"] == 1.0
    with pytest.raises(ValueError, match="k must be"):
        ranking_metrics(scores, relevant, k=5)
    with pytest.raises(ValueError, match="one shape"):
        ranking_metrics(scores, relevant[:2])
