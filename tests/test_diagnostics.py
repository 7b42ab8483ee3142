"""bg.check: findings for the classic failure cases, silence for healthy fits."""

import re

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal

import bayesgen as bg
from programs import normal_normal


def test_centred_eight_schools_divergences_are_reported():
    data = {**bg.get_model("eight_schools").load_data(), "centered": True}
    fit = bg.fit("eight_schools", data, engine="nuts", num_warmup=200, num_samples=200, max_tree_depth=6, seed=0)
    assert fit.sample_stats["diverging"].sum() > 0
    assert fit.info["centred_sites"] == ["theta"]
    assert any("divergent transitions" in finding and "non-centre 'theta'" in finding for finding in bg.check(fit))


def walled():
    """x ~ N(0, 1) with a steep quadratic wall past 1: divergences, but no hierarchy to non-centre."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.factor("wall", -1e4 * torch.relu(x - 1.0) ** 2)


def test_divergences_without_a_hierarchy_get_other_advice():
    fit = bg.fit(walled, {}, engine="nuts", num_warmup=200, num_samples=500, seed=0)
    assert fit.sample_stats["diverging"].sum() > 0 and fit.info["centred_sites"] == []
    finding = next(f for f in bg.check(fit) if "divergent transitions" in f)
    assert "no hierarchy to non-centre" in finding and "non-centre '" not in finding


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
    found = [finding for finding in bg.check(fit) if "ESS below 400" in finding]
    assert found and re.search(r"ESS below 400 \(or undefined\) for mu \(\d+\): draw more", found[0])


def _twelve_normals():
    pyro.sample("v", dist.Normal(0.0, 1.0).expand([12]).to_event(1))


def test_a_finding_names_at_most_ten_entries_the_worst_first_with_their_values():
    fit = bg.fit(_twelve_normals, {}, engine="nuts", num_warmup=50, num_samples=30, num_chains=2, progress=False)
    finding = next(f for f in bg.check(fit) if f.startswith("bulk ESS below"))
    values = [float(v) for v in re.findall(r"v\[\d+\] \((\d+)\)", finding)]
    assert len(values) == 10 and values == sorted(values) and finding.endswith("and 2 more: draw more samples "
                                                                                 "or run more chains")


def test_chains_that_label_a_mixtures_components_differently_are_called_label_switching():
    """Chains of a mixture that swap its components disagree, and longer chains do not mend that."""
    import dataclasses

    from programs import gaussian_mixture

    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(-3, 0.5, 30), rng.normal(3, 0.5, 30)])
    fit = bg.fit(gaussian_mixture, {"y": y}, engine="laplace", num_draws=200)
    labelled = np.array([[-3.0, 3.0], [-3.0, 3.0], [3.0, -3.0], [3.0, -3.0]])[:, None, :]  # 4 chains, 2 labellings
    draws = {name: np.repeat(value, 4, axis=0) for name, value in fit.posterior.items()}
    draws["locs"] = labelled + 0.1 * rng.normal(size=(4, 200, 2))
    switched = dataclasses.replace(fit, kind="samples", engine="nuts", posterior=draws, sample_stats={})
    finding = next(f for f in bg.check(switched) if f.startswith("R-hat"))
    assert "locs[0]" in finding and "label switching" in finding and "locs_first" in finding


def two_modes():
    """x from an equal mixture of N(-4, 1) and N(4, 1): NUTS chains stay in the mode they reach."""
    mixture = dist.MixtureSameFamily(dist.Categorical(torch.ones(2) / 2), dist.Normal(torch.tensor([-4.0, 4.0]), 1.0))
    pyro.sample("x", mixture)


def test_chains_stuck_in_different_modes_are_reported_by_r_hat():
    fit = bg.fit(two_modes, {}, engine="nuts", num_warmup=200, num_samples=200, num_chains=4, seed=0)
    means = fit.posterior["x"].mean(1)
    assert (means < -2).any() and (means > 2).any()  # chains in both modes, none crossing
    findings = [finding for finding in bg.check(fit) if finding.startswith("R-hat")]
    assert len(findings) == 1 and re.search(r"for x \((\d+\.\d{4})\): chains disagree; run longer chains$",
                                            findings[0])


def test_too_few_draws_for_pareto_k_give_none_not_an_error():
    y = np.random.default_rng(0).normal(size=20)
    fit = bg.fit(normal_normal, {"y": y}, engine="laplace", num_draws=1)
    assert fit.info["pareto_k"] is None and fit.posterior["mu"].shape == (1, 1)
    assert bg.check(fit) == []


def test_one_chain_has_no_r_hat_column_and_no_arviz_complaint(capfd):
    fit = bg.fit(normal_normal, {"y": np.zeros(5)}, engine="nuts", num_chains=1, num_warmup=100, num_samples=100,
                 progress=False)
    table = fit.summary()
    assert "r_hat" not in table and "ess_bulk" in table  # R-hat compares chains: NaN said nothing
    bg.check(fit)
    assert "Shape validation failed" not in capfd.readouterr().err


def test_a_point_fits_summary_leads_with_the_estimate_and_its_standard_error():
    fit = bg.fit("linear_regression", engine="mle")
    table = fit.summary()
    assert list(table.columns[:2]) == ["point", "stderr"]  # the normal approximation's draws' mean came first
    np.testing.assert_allclose(table.loc[[f"beta[{i}]" for i in range(10)], "point"], fit.point["beta"], rtol=1e-12)
    np.testing.assert_allclose(table.loc["sigma", "stderr"], fit.stderr["sigma"], rtol=1e-12)
