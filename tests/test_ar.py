"""The AR(p) zoo model: stationarity map, exact likelihood, forecasts, parameter recovery."""

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
import torch

import bayesgen as bg
from bayesgen.fitting import prepare
from bayesgen.models.ar import AutoRegressive, levinson, pacf_to_ar
from recovery import assert_recovers


def _autocovariance(phi: np.ndarray, sigma: float, num_lags: int) -> np.ndarray:
    """gamma_0..gamma_{num_lags-1} of a stationary AR(p), from the companion form's Lyapunov equation."""
    p = len(phi)
    companion = np.eye(p, k=-1)
    companion[0] = phi
    noise = np.zeros((p, p))
    noise[0, 0] = sigma**2
    gamma = list(scipy.linalg.solve_discrete_lyapunov(companion, noise)[0])
    while len(gamma) < num_lags:
        gamma.append(sum(phi[j] * gamma[-1 - j] for j in range(p)))
    return np.array(gamma[:num_lags])


def test_partial_autocorrelations_map_to_stationary_coefficients():
    rng = np.random.default_rng(0)
    for p in range(1, 8):
        pacf = rng.uniform(-0.999, 0.999, size=(200, p))
        phi = pacf_to_ar(torch.from_numpy(pacf)).numpy()
        for row in phi:  # roots of 1 - phi_1 z - ... - phi_p z^p lie outside the unit circle
            roots = np.polynomial.polynomial.polyroots(np.concatenate([[1.0], -row]))
            assert np.abs(roots).min() > 1.0
    # the last coefficient is the last partial autocorrelation; AR(1) is the identity
    np.testing.assert_allclose(phi[:, -1], pacf[:, -1])
    np.testing.assert_allclose(pacf_to_ar(torch.tensor([[0.3]])).numpy(), [[0.3]])


def test_prediction_error_sds_are_those_of_the_stationary_process():
    pacf, sigma = np.array([0.7, -0.4, 0.2]), 0.8
    _, sds = levinson(torch.tensor(pacf), torch.tensor(sigma))
    phi = pacf_to_ar(torch.tensor(pacf)).numpy()
    assert float(sds[0]) == pytest.approx(np.sqrt(_autocovariance(phi, sigma, 1)[0]), rel=1e-10)
    assert float(sds[-1]) == pytest.approx(sigma)


@pytest.mark.parametrize("num_history", [0, 1, 5])
def test_log_prob_is_the_exact_gaussian_likelihood(num_history):
    data, truth = bg.get_model("ar").simulate(seed=4, num_times=25, num_lags=3)
    y, mu = data["y"], truth["mu"]
    cov = scipy.linalg.toeplitz(_autocovariance(truth["phi"], truth["sigma"], len(y)))
    joint = scipy.stats.multivariate_normal(np.full(len(y), mu), cov).logpdf(y)
    past = scipy.stats.multivariate_normal(np.full(num_history, mu), cov[:num_history, :num_history]).logpdf(
        y[:num_history]) if num_history else 0.0
    process = AutoRegressive(torch.tensor(mu), torch.tensor(truth["pacf"]), torch.tensor(truth["sigma"]),
                             len(y) - num_history, history=torch.tensor(y[:num_history]))
    assert float(process.log_prob(torch.tensor(y[num_history:]))) == pytest.approx(joint - past, rel=1e-10)


def test_samples_have_the_stationary_autocovariance():
    pacf, sigma, mu = torch.tensor([0.6, -0.5]), torch.tensor(0.7), torch.tensor(1.5)
    draws = AutoRegressive(mu, pacf, sigma, 6).sample((20000,)).numpy()
    gamma = _autocovariance(pacf_to_ar(pacf).numpy(), 0.7, 6)
    # sd of a sample variance of n Gaussian draws is gamma_0 sqrt(2 / n); 5 of those is loose enough
    tol = 5 * gamma[0] * np.sqrt(2 / len(draws))
    np.testing.assert_allclose(np.cov(draws.T), scipy.linalg.toeplitz(gamma), atol=tol)
    np.testing.assert_allclose(draws.mean(0), 1.5, atol=5 * np.sqrt(gamma[0] / len(draws)))


@pytest.fixture(scope="module")
def laplace_fit():
    data, _ = bg.get_model("ar").simulate(seed=0, num_times=120, num_lags=2)
    return data, bg.fit("ar", data, engine="laplace", num_draws=400)


def test_forecasts_continue_the_series_with_the_right_shapes_and_moments(laplace_fit):
    data, fit = laplace_fit
    out = fit.predict(horizon=7, y=data["y"])
    assert out["forecast"].shape == (1, 400, 7) and out["y"].shape == (1, 400, 120)  # y: replicated series
    # the first step is Normal(mu + phi . (last values - mu), sigma) given each draw
    post = {k: v[0] for k, v in fit.posterior.items()}
    last = data["y"][::-1][:2]
    mean = post["mu"] + (post["phi"] * (last - post["mu"][:, None])).sum(-1)
    z = (out["forecast"][0, :, 0] - mean) / post["sigma"]
    assert abs(z.mean()) < 4 / np.sqrt(400) and abs(z.std() - 1) < 0.15
    assert fit.predict()["y"].shape == (1, 400, 120)
    longer = fit.predict(horizon=3, y=np.r_[data["y"], 0.5, 0.7])  # two more years: the fit's num_times ignored
    assert longer["forecast"].shape == (1, 400, 3) and longer["y"].shape == (1, 400, 122)


def test_forecast_without_a_series_and_bad_arguments_are_clear_errors(laplace_fit):
    _, fit = laplace_fit
    with pytest.raises(ValueError, match=r"fit.predict\(horizon=20, y=series\)"):
        fit.predict(horizon=3)
    y = np.zeros(10)
    for data, message in [({"y": y, "num_lags": 0}, "num_lags must be a positive int"),
                          ({"y": y, "horizon": -1}, "horizon must be a non-negative int"),
                          ({"y": np.zeros((2, 5))}, r"y must be one series"),
                          ({"y": np.zeros(3), "num_lags": 3}, "num_lags=3 needs a series longer than its lags, and y "
                                                              "has 3 values"),
                          ({}, "pass the series y, or num_times")]:
        with pytest.raises(ValueError, match=message):
            prepare("ar", data)


@pytest.mark.slow
@pytest.mark.parametrize("engine, settings", [
    ("nuts", {"num_chains": 2, "num_warmup": 500, "num_samples": 500, "dense_mass": True}),
    ("svi", {"guide": "mvn", "num_steps": 1500, "lr": 0.05}),
    ("map", {}), ("mle", {}), ("laplace", {}),
])
def test_engines_recover_a_simulated_ar8(engine, settings):
    # mu, sigma and 8 partial autocorrelations (plus the 8 coefficients phi for posterior draws):
    # 90% coverage allows one miss
    data, truth = bg.get_model("ar").simulate(seed=0, num_times=400, num_lags=8)
    fit = bg.fit("ar", {**data, "num_lags": 8}, engine=engine, seed=0, **settings)
    if engine != "svi":  # svi's convergence flag is a noisy heuristic
        assert not any("not converge" in finding for finding in bg.check(fit)), bg.check(fit)
    sites = fit.problem.density.latent_names + ([] if fit.kind == "point" else ["phi"])  # fit.point: latents only
    assert_recovers(fit, {site: truth[site] for site in sites})


def test_a_series_is_one_held_out_observation_scored_by_its_exact_likelihood(laplace_fit):
    # the time points of a series are not exchangeable: two-sample tests over them rejected a true
    # AR(1) model about half the time at the 5% level
    data, fit = laplace_fit
    future = bg.get_model("ar").simulate(seed=0, num_times=180, num_lags=2)[0]["y"][120:]
    with pytest.warns(UserWarning, match=r"site 'y' is one observation: its distribution scores its 60 values as one "
                                         r"event"):
        report = bg.evaluate(fit, {"y": future}, num_samples=400)
    assert (report["num_obs"] == 1).all() and report[["ks_pvalue", "mmd_pvalue", "c2st_pvalue"]].isna().all().all()
    post = {name: torch.as_tensor(fit.posterior[name][0]) for name in ("mu", "pacf", "sigma")}
    log_p = AutoRegressive(post["mu"], post["pacf"], post["sigma"], 60).log_prob(torch.as_tensor(future)).numpy()
    expected = scipy.special.logsumexp(log_p) - np.log(len(log_p))
    np.testing.assert_allclose(report["lpd"], expected, rtol=1e-9)
    np.testing.assert_allclose(report["lpd_per_obs"], expected, rtol=1e-9)  # one term: the series
