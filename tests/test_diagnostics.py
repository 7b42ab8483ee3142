"""bg.check: findings for the classic failure cases, silence for healthy fits."""

import numpy as np
from pyro.infer.autoguide import AutoNormal

import bayesgen as bg
from programs import normal_normal


def test_centred_eight_schools_divergences_are_reported():
    data = {**bg.get_model("eight_schools").load_data(), "centered": True}
    fit = bg.fit("eight_schools", data, engine="nuts", num_warmup=200, num_samples=200, max_tree_depth=6, seed=0)
    assert fit.sample_stats["diverging"].sum() > 0
    assert any("divergent transitions" in finding for finding in bg.check(fit))


def test_healthy_fit_has_no_findings():
    y = np.random.default_rng(0).normal(size=20)
    fit = bg.fit(normal_normal, {"y": y}, engine="nuts", num_warmup=300, num_samples=500)
    assert bg.check(fit) == []


def test_unconverged_optimiser_is_reported():
    # a Pyro AutoGuide starts at the prior's median, 0, far from this posterior's mean, 10 (the
    # Gaussian families would start at the Laplace approximation: for a normal posterior, the optimum)
    y = np.random.default_rng(0).normal(size=20) + 10
    fit = bg.fit(normal_normal, {"y": y}, engine="svi", guide=AutoNormal, num_steps=20)
    assert any("did not converge" in finding for finding in bg.check(fit))


def test_too_few_draws_are_reported_as_low_ess():
    y = np.random.default_rng(0).normal(size=20)
    fit = bg.fit(normal_normal, {"y": y}, engine="nuts", num_warmup=50, num_samples=30, num_chains=2)
    assert any("ESS below 400" in finding for finding in bg.check(fit))
