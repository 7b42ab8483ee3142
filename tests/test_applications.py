"""bg.anomaly_scores: minus the log posterior predictive density of each observation."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import bayesgen as bg
from programs import line, normal_normal, normal_normal_posterior


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
    fit = bg.fit("hmm", engine="map")
    with pytest.raises(ValueError, match="site 'y' has one likelihood term for all its observations"):
        bg.anomaly_scores(fit, bg.get_model("hmm").load_data())
