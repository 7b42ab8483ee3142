"""Gaussian mixture: enumerated likelihood, recovered assignments, parameter recovery, NUTS vs TraceEnum SVI."""

import warnings

import numpy as np
import pytest
from pyro.infer.autoguide import AutoMultivariateNormal
from recovery import assert_recovers
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, multivariate_t

import bayesgen as bg

SPEC = bg.get_model("gmm")


def _with_correlation(fit, truth):
    """Judge the one free entry of each 2x2 correlation matrix, not its fixed 1s."""
    truth = dict(truth)
    if "corr" in truth:
        fit.posterior["rho"] = fit.posterior["corr"][..., 1, 0]
        truth["rho"] = truth.pop("corr")[:, 1, 0]
    return truth


def test_pointwise_log_likelihood_is_the_mixture_density():
    data, _ = SPEC.simulate(seed=0, num_obs=60)
    fit = bg.fit(SPEC, data, engine="laplace", num_draws=5)
    w, locs = fit.posterior["weights"][0], fit.posterior["locs"][0]
    cov = np.einsum("ski,skij,skj->skij", fit.posterior["scales"][0], fit.posterior["corr"][0],
                    fit.posterior["scales"][0])
    factor = fit.posterior["corr_cholesky"][0]  # corr is the correlation matrix of its Cholesky factor
    np.testing.assert_allclose(fit.posterior["corr"][0], factor @ np.swapaxes(factor, -1, -2), atol=1e-12)
    by_hand = np.stack([logsumexp([np.log(w[s, k]) + multivariate_normal(locs[s, k], cov[s, k]).logpdf(data["y"])
                                   for k in range(2)], axis=0) for s in range(5)])
    np.testing.assert_allclose(fit.log_likelihood["y"][0], by_hand, rtol=1e-10)
    one = bg.fit(SPEC, data, engine="laplace", num_draws=1)  # a batch of one draw: its plate packs away
    assert one.log_likelihood["y"].shape == (1, 1, 60)


def test_a_saved_mixture_loads_with_its_program(tmp_path):
    """Loading recomputes the first draw's log-likelihood, a batch of one draw, which failed."""
    data, _ = SPEC.simulate(seed=0, num_obs=50)
    fit = bg.fit(SPEC, data, engine="laplace", num_steps=50, num_draws=10)
    fit.save(str(tmp_path / "gmm.nc"))
    np.testing.assert_array_equal(bg.load(str(tmp_path / "gmm.nc")).log_likelihood["y"], fit.log_likelihood["y"])


@pytest.mark.parametrize("full_covariance", [True, False])
def test_robust_pointwise_log_likelihood_is_the_student_t_mixture_density(full_covariance):
    data, _ = SPEC.simulate(seed=0, num_obs=60, full_covariance=full_covariance, robust=True)
    fit = bg.fit(SPEC, data, engine="laplace", num_draws=4)
    post = fit.posterior
    w, locs, scales, df = post["weights"][0], post["locs"][0], post["scales"][0], post["df"][0]
    corr = post["corr"][0] if full_covariance else np.broadcast_to(np.eye(2), (4, 2, 2, 2))
    cov = np.einsum("ski,skij,skj->skij", scales, corr, scales)
    by_hand = np.stack([logsumexp([np.log(w[s, k]) + multivariate_t(locs[s, k], cov[s, k], df=df[s]).logpdf(data["y"])
                                   for k in range(2)], axis=0) for s in range(4)])
    np.testing.assert_allclose(fit.log_likelihood["y"][0], by_hand, rtol=1e-10)
    # batched over draws (df[..., None] put the draws on the wrong dim: one run per draw, 100x slower)
    assert fit.problem.density.vectorized


def test_robust_mixture_scores_a_planted_outlier_highest_without_widening_around_it():
    """One far point among 80 from one Gaussian: the Student-t fit gives it the top anomaly score
    and keeps the component's scales near the inliers' (the Gaussian fit's stretch to cover it)."""
    rng = np.random.default_rng(5)
    y = np.vstack([rng.normal(0.0, 1.0, (80, 2)), [[9.0, -9.0]]])
    data = {"y": y, "num_components": 1}
    options = {"engine": "nuts", "num_chains": 2, "num_warmup": 200, "num_samples": 200, "seed": 0, "progress": False}
    robust = bg.fit(SPEC, {**data, "robust": True}, **options)
    gaussian = bg.fit(SPEC, data, **options)
    scores = bg.anomaly_scores(robust, {**data, "robust": True})
    assert scores.argmax() == 80 and scores[80] > np.sort(scores)[-2] + 3.0
    robust_scale = float(robust.posterior["scales"].mean())
    assert abs(robust_scale - y[:80].std()) < 0.2 < float(gaussian.posterior["scales"].mean()) - robust_scale


def test_map_assignments_recover_the_simulated_clusters():
    data, truth = SPEC.simulate(seed=1, num_obs=150, full_covariance=False)
    rng = np.random.default_rng(1)
    fit = bg.fit(SPEC, data, engine="map", num_draws=20)
    z = bg.infer_discrete(fit, temperature=0)["z"]
    # the true assignments: the component whose density is highest under the true parameters
    dens = np.stack([np.log(truth["weights"][k]) - ((data["y"] - truth["locs"][k]) ** 2 / (2 * truth["scales"][k] ** 2)
                                                    + np.log(truth["scales"][k])).sum(-1) for k in range(2)])
    assert z.shape == (1, 20, 150) and (z == z[:, :1]).all()  # a point fit is decoded at its estimate
    assert (z[0, 0] == dens.argmax(0)).mean() > 0.97
    responsibilities = bg.discrete_marginals(fit)["z"]
    assert responsibilities.shape == (150, 2)
    np.testing.assert_allclose(responsibilities.sum(-1), 1.0)
    # at temperature 1, samples of z given the estimate: their frequencies are the responsibilities
    samples = bg.infer_discrete(fit, temperature=1, num_samples=400, seed=3)["z"]
    assert samples.shape == (1, 400, 150)
    p = responsibilities[:, 1]
    assert np.all(np.abs(samples[0].mean(0) - p) <= 5 * np.sqrt(p * (1 - p) / 400) + 1e-12)
    assert rng is not None


def test_replicated_data_have_the_shape_of_the_data():
    data, _ = SPEC.simulate(seed=2, num_obs=40)
    fit = bg.fit(SPEC, data, engine="laplace", num_draws=10)
    assert fit.predict()["y"].shape == (1, 10, 40, 2)
    assert fit.predict(num_obs=7, num_components=2)["y"].shape == (1, 10, 7, 2)


def test_infer_discrete_errors_name_the_problem():
    fit = bg.fit("eight_schools", engine="laplace", num_draws=5)
    with pytest.raises(ValueError, match="no enumerable discrete"):
        bg.infer_discrete(fit)
    gmm = bg.fit(SPEC, SPEC.simulate(seed=0, num_obs=30)[0], engine="laplace", num_draws=5)
    with pytest.raises(ValueError, match="temperature"):
        bg.infer_discrete(gmm, temperature=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("engine, options", [
    ("nuts", {"num_chains": 2, "num_warmup": 400, "num_samples": 400}),
    ("svi", {"guide": "mvn", "num_steps": 3000, "lr": 0.05}),
    ("map", {}),
    ("laplace", {}),
])
def test_parameters_are_recovered(engine, options):
    data, truth = SPEC.simulate(seed=3, num_obs=200)
    fit = bg.fit(SPEC, data, engine=engine, seed=0, progress=False, **options)
    assert_recovers(fit, _with_correlation(fit, truth))


@pytest.mark.slow
def test_robust_mixture_recovers_its_parameters_and_degrees_of_freedom():
    data, truth = SPEC.simulate(seed=3, num_obs=400, robust=True)
    fit = bg.fit(SPEC, data, engine="nuts", num_chains=2, num_warmup=400, num_samples=400, seed=0, progress=False)
    assert_recovers(fit, _with_correlation(fit, truth))


@pytest.mark.slow
def test_nuts_with_enumeration_and_traceenum_svi_agree_within_monte_carlo_error():
    data, _ = SPEC.simulate(seed=4, num_obs=200)
    nuts = bg.fit(SPEC, data, engine="nuts", num_chains=2, num_warmup=500, num_samples=1000, progress=False)
    svi = bg.fit(SPEC, data, engine="svi", guide=AutoMultivariateNormal, num_steps=4000, lr=0.02,
                 num_draws=2000, progress=False)
    table = bg.compare({"nuts": nuts, "svi": svi}, reference="nuts")
    shift = table.loc[table["engine"] == "svi"].dropna(subset=["mean_diff_sd"]).set_index("parameter")
    # Monte Carlo standard error of the shift, in reference sds: NUTS's mean over its bulk ESS, SVI's
    # over its independent draws; allowed: 0.1 sd of approximation bias plus 4 such errors (the
    # shifts themselves move by up to 0.05 sd between machines whose floating point differs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # R-hat of the Cholesky factors' constant entries
        summary = nuts.summary()
    summary.index = summary.index.str.replace(", ", ",")  # ArviZ's labels "scales[0, 1]", compare's "scales[0,1]"
    ess = summary.loc[shift.index, "ess_bulk"].to_numpy()
    mcse = np.sqrt(1 / ess + shift["sd_ratio"].to_numpy() ** 2 / 2000)
    excess = shift["mean_diff_sd"].abs().to_numpy() - (0.1 + 4 * mcse)
    assert (excess < 0).all(), f"largest excess {shift.index[excess.argmax()]}: {excess.max():.3f} sd"
