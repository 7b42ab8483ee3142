"""Zoo GLMs (linear, logistic, Poisson regression): varying intercepts, data types, parameter recovery."""

import numpy as np
import pytest

import bayesgen as bg
from bayesgen.fitting import prepare
from recovery import assert_recovers

GLMS = ["linear_regression", "logistic_regression", "poisson_regression"]


@pytest.mark.parametrize("name", GLMS)
def test_varying_intercepts_are_one_site_per_group_with_arviz_dims(name):
    spec = bg.get_model(name)
    data, truth = spec.simulate(seed=0, num_obs=60, num_groups=6)
    fit = bg.fit(spec, data, engine="laplace", num_draws=50)
    post = fit.posterior
    assert post["alpha_tilde"].shape == post["alpha_group"].shape == (1, 50, 6)
    np.testing.assert_allclose(post["alpha_group"], post["alpha"][..., None] + post["tau"][..., None]
                               * post["alpha_tilde"], rtol=1e-10)
    assert fit.to_arviz().posterior["alpha_group"].dims == ("chain", "draw", "group")
    assert set(fit.problem.density.latent_names) <= set(truth)
    assert truth["alpha_group"].shape == (6,) and fit.predict()["y"].shape == (1, 50, 60)


@pytest.mark.parametrize("name", GLMS)
def test_pooled_form_keeps_the_plain_signature_and_has_truth_for_every_latent(name):
    spec = bg.get_model(name)
    data, truth = spec.simulate(seed=0, num_obs=40)
    assert set(data) == {"X", "y"}
    problem = prepare(spec, data)
    assert set(problem.density.latent_names) == set(truth) and "tau" not in truth


def _grouped(**change):
    data, _ = bg.get_model("logistic_regression").simulate(seed=0, num_obs=12, num_groups=4)
    return {**data, **change}


@pytest.mark.parametrize("data, message", [
    (_grouped(group=np.arange(12) % 5), r"group indices must lie in \[0, num_groups\) = \[0, 4\), got values from 0 to 4"),
    (_grouped(group=np.arange(12) % 4 - 1), "got values from -1 to 2"),
    (_grouped(group=(np.arange(12) % 4).astype(float)), "group must hold integer group indices"),
    (_grouped(group=np.arange(11) % 4), r"group must have shape \(12,\)"),
    (_grouped(num_groups=None), "num_groups must be a positive int when group is given"),
    (_grouped(group=None), "num_groups is given but group is None"),
])
def test_bad_group_indices_are_clear_errors(data, message):
    with pytest.raises(ValueError, match=message):
        prepare("logistic_regression", data)


@pytest.mark.parametrize("name, dtypes", [
    ("logistic_regression", (np.int64, np.bool_, np.float64)),
    ("poisson_regression", (np.int64, np.int32, np.float64)),
])
def test_integer_and_boolean_responses_fit_as_their_float_values(name, dtypes):
    data, _ = bg.get_model(name).simulate(seed=3, num_obs=80)
    points = [bg.fit(name, {**data, "y": data["y"].astype(dtype)}, engine="map").point["beta"] for dtype in dtypes]
    for point in points[1:]:
        np.testing.assert_allclose(point, points[0], rtol=1e-8)


@pytest.mark.parametrize("seed", [2, 3, 5])
def test_map_backs_off_where_a_line_search_trial_overflows_the_poisson_rate(seed):
    # with these seeds an L-BFGS trial step once overflowed exp(eta) and every later iterate was NaN
    data, _ = bg.get_model("poisson_regression").simulate(seed, num_obs=236, num_features=5, num_groups=59)
    fit = bg.fit("poisson_regression", data, engine="map", seed=seed)
    assert fit.info["converged"], fit.info["message"]
    assert all(np.isfinite(value).all() for value in fit.point.values())
    assert not bg.check(fit)


# --------------------------------------------------------------------------- parameter recovery
# One simulated data set per case, fitted by every engine that applies (mle only where the
# likelihood alone identifies the parameters: not for group effects, which need their prior).
# A fit passes when >= 90% of the scalar latent parameters are covered (central 95% interval,
# or 3 standard errors for map/mle). With 11-21 parameters a calibrated fit misses two or more
# with probability 0.1-0.25 on a given data set, so the seed is fixed (seed 0, not tuned).
#
# In the hierarchical form, map and laplace sit at the joint mode, where the group effects
# e_g = tau * alpha_tilde_g are fitted but their split between tau and alpha_tilde is set by
# the priors alone: minimising sum_g e_g^2 / (2 tau^2) + tau^2 / 2 gives tau^4 = sum_g e_g^2
# (about 2.2 where tau = 1.2 with 15 groups), whatever the true tau. So for them only the
# population-level alpha, beta and sigma are checked; tau needs nuts or svi (or a marginal
# mode, which these engines do not compute). Full-rank SVI is judged against NUTS on the same
# data rather than against the truth: at its optimum (it starts at the Laplace approximation)
# the Gaussian's sd of tau is about half NUTS's (Poisson case: 0.068 against 0.126, a known
# trait of KL(q || p) on a scale), so its intervals are too short to cover the truth at the
# nominal rate, while its means agree with NUTS's (alpha 0.463 against 0.458, tau 0.552
# against 0.580; the truth, 0.742 and 0.702, lies at the edge of NUTS's own 95% intervals).
# Before the Laplace start these tests passed with an SVI that had not converged (tau 0.85 +-
# 0.25, its gradient 5 sd from the optimum). SVI's convergence flag is asserted too.
NUTS = {"num_chains": 2, "num_warmup": 500, "num_samples": 500}
SVI = {"guide": "mvn", "num_steps": 3000, "lr": 0.05}
POPULATION = ("alpha", "beta", "sigma")
POOLED = {"nuts": (NUTS, None), "svi": (SVI, None), "map": ({}, None), "mle": ({}, None), "laplace": ({}, None)}
SVI_GROUPED = {**SVI, "num_particles": 16}
GROUPED = {"nuts": (NUTS, None), "svi": (SVI_GROUPED, None), "map": ({}, POPULATION),
           "laplace": ({}, POPULATION)}
CASES = [
    ("logistic_regression", {"num_obs": 500, "num_features": 10}, POOLED),
    ("poisson_regression", {"num_obs": 300, "num_features": 10}, POOLED),
    ("linear_regression", {"num_obs": 300, "num_features": 3, "num_groups": 15}, GROUPED),
    ("logistic_regression", {"num_obs": 600, "num_features": 3, "num_groups": 15}, GROUPED),
    ("poisson_regression", {"num_obs": 300, "num_features": 3, "num_groups": 15}, GROUPED),
]
RECOVERY = [pytest.param(name, options, engine, settings, sites,
                         id=f"{name}-{'grouped' if 'num_groups' in options else 'pooled'}-{engine}")
            for name, options, engines in CASES for engine, (settings, sites) in engines.items()]


@pytest.mark.slow
@pytest.mark.parametrize("name, options, engine, settings, sites", RECOVERY)
def test_engines_recover_simulated_parameters(name, options, engine, settings, sites):
    data, truth = bg.get_model(name).simulate(seed=0, **options)
    fit = bg.fit(name, data, engine=engine, seed=0, **settings)
    assert not any("not converge" in finding for finding in bg.check(fit)), bg.check(fit)
    checked = [site for site in fit.problem.density.latent_names if sites is None or site in sites]
    if engine == "svi" and "num_groups" in options:
        reference = bg.fit(name, data, engine="nuts", seed=0, **NUTS)
        for site in checked:
            draws, nuts = fit.posterior[site][0], fit_draws(reference, site)
            shift = np.abs(draws.mean(0) - nuts.mean(0)) / nuts.std(0)
            assert (shift < 0.5).all(), (site, shift)
        return
    assert_recovers(fit, {site: truth[site] for site in checked})


def fit_draws(fit: bg.Fit, site: str) -> np.ndarray:
    """A site's draws with the chains pooled, ``(chains * draws, *shape)``."""
    draws = fit.posterior[site]
    return draws.reshape((-1,) + draws.shape[2:])
