"""bg.sbc: the machinery (shapes, ranks, determinism, plot, CLI), and calibration verdicts on a conjugate model."""

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesgen as bg
from bayesgen.engine import EngineResult, Problem
from bayesgen.sbc import LOG_LIKELIHOOD, SBCResult, _holm, sbc
from bayesgen.validate import observed_by_name
from programs import PRIOR_SD, linear_regression, network_regression, normal_normal

ALPHA = 0.01
NORMAL = bg.ModelSpec(name="normal_normal", model=normal_normal, observed={"y": "y"})
SIZE = {"n": 20}


def normal_program(y=None):
    """The plain Pyro program of issue 20: its observed argument is named like its site and defaults to None."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", 20):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def renamed_data(data=None):
    """Observes site 'y' through an argument named otherwise: nothing says which argument is data."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", 5):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=data)


def named_like_a_latent(mu=None, data=None):
    """'mu' is named like a site and defaults to None but only moves the prior: it is no data."""
    loc = pyro.sample("mu", dist.Normal(0.0 if mu is None else float(mu.mean()), 1.0))
    with pyro.plate("obs", 5):
        pyro.sample("y", dist.Normal(loc, 1.0), obs=data)


@dataclass(frozen=True)
class ExactPosterior:
    """The conjugate posterior of normal_normal, N(sum y / (1/PRIOR_SD^2 + n), 1 / (1/PRIOR_SD^2 + n)),
    with its sd multiplied by ``sd_factor`` (0.5: a deliberately over-confident engine)."""

    name: ClassVar[str] = "exact"
    sd_factor: float = 1.0
    num_draws: int = 1000

    def run(self, problem: Problem, *, seed: int, progress: bool) -> EngineResult:
        y = problem.data["y"]
        precision = 1 / PRIOR_SD**2 + y.shape[0]
        mean, sd = y.sum() / precision, self.sd_factor / math.sqrt(precision)
        noise = torch.randn(1, self.num_draws, generator=torch.Generator().manual_seed(seed))
        return EngineResult(kind="approximation", draws={"mu": mean + sd * noise})


def test_ranks_tests_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    result = sbc(NORMAL, SIZE, engine=ExactPosterior(), num_simulations=20, num_draws=49, num_workers=2,
                 progress=False)
    assert isinstance(result, SBCResult) and list(result.ranks) == ["mu", LOG_LIKELIHOOD]
    for ranks in result.ranks.values():
        assert ranks.shape == (20,) and ranks.dtype.kind == "i" and ranks.min() >= 0 and ranks.max() <= 49
    assert list(result.tests.index) == ["mu", LOG_LIKELIHOOD]
    assert list(result.tests.columns) == ["chi2", "pvalue", "pvalue_holm", "rejected"]
    assert result.seeds.shape == (20, 2) and np.isnan(result.min_ess).all()  # independent draws: no ESS
    assert repr(result).startswith("SBCResult(20 simulations x 49 draws, 2 quantities, alpha=0.01: ")  # not ranks
    path = tmp_path / "sbc.png"
    axes = result.plot(str(path))
    assert path.stat().st_size > 10_000 and axes.size == 2
    assert axes[0, 0].get_title().startswith("mu (p_holm=")
    matplotlib.pyplot.close("all")


def _band_half_width(ax) -> float:
    """The largest |y| of the shaded band (the fill_between polygons) of an ECDF-difference panel."""
    return max(float(np.abs(path.vertices[:, 1]).max()) for coll in ax.collections for path in coll.get_paths())


def test_plot_band_level_follows_alpha_and_is_written_on_the_figure():
    import matplotlib

    matplotlib.use("Agg")
    result = sbc(NORMAL, SIZE, engine=ExactPosterior(), num_simulations=40, num_draws=49, num_workers=1,
                 progress=False)
    assert result.band_prob == pytest.approx(1 - ALPHA / 2)  # Bonferroni over the 2 panels
    strict = result.plot()
    caption = strict[0, 0].figure.get_suptitle()
    assert "99.5% simultaneous band per panel (family-wise at least 99%)" in caption and "<= 0.01" in caption
    loose = dataclasses.replace(result, alpha=0.2)
    assert loose.band_prob == pytest.approx(0.9)
    wide = loose.plot()
    assert "90% simultaneous band per panel (family-wise at least 80%)" in wide[0, 0].figure.get_suptitle()
    # the drawn band is the stated one: a 99.5% band is wider than a 90% one, and an explicit ci_prob wins
    assert _band_half_width(strict[0, 0]) > _band_half_width(wide[0, 0]) * 1.15
    narrow = result.plot(ci_prob=0.5)
    assert "shaded: 50% simultaneous band per panel\n" in narrow[0, 0].figure.get_suptitle()  # no family bound
    assert _band_half_width(narrow[0, 0]) < _band_half_width(wide[0, 0])
    with pytest.raises(ValueError, match="ci_prob"):
        result.plot(ci_prob=1.0)
    matplotlib.pyplot.close("all")


def test_same_seed_same_ranks_whatever_the_number_of_workers():
    runs = [sbc(NORMAL, SIZE, engine=ExactPosterior(), num_simulations=8, num_draws=19, seed=seed,
                num_workers=workers, progress=False) for seed, workers in ((3, 1), (3, 2), (4, 1))]
    assert all(np.array_equal(runs[0].ranks[k], runs[1].ranks[k]) for k in runs[0].ranks)
    assert not np.array_equal(runs[0].ranks["mu"], runs[2].ranks["mu"])


def test_exact_posterior_is_calibrated_and_halving_its_sd_is_rejected():
    exact = sbc(NORMAL, SIZE, engine=ExactPosterior(), num_simulations=200, num_workers=1, progress=False)
    assert exact.rejected == []
    halved = sbc(NORMAL, SIZE, engine=ExactPosterior(sd_factor=0.5), num_simulations=200, num_workers=1,
                 progress=False)
    assert halved.rejected == ["mu", LOG_LIKELIHOOD]


def test_a_bare_program_finds_its_observed_argument_from_data():
    result = sbc(normal_normal, {"y": np.zeros(20)}, engine=ExactPosterior(), num_simulations=4, num_draws=9,
                 num_workers=1, progress=False)
    assert list(result.ranks) == ["mu", LOG_LIKELIHOOD]
    # with only its size given, y is found by name (default None, observed once set) and the same ranks come out
    by_name = sbc(normal_normal, SIZE, engine=ExactPosterior(), num_simulations=4, num_draws=9, num_workers=1,
                  progress=False)
    assert all(np.array_equal(by_name.ranks[k], result.ranks[k]) for k in result.ranks)


def test_a_plain_pyro_program_is_calibrated_under_laplace_without_data():
    # issue 20: the observed argument is found by Pyro's convention (named like its site, default None);
    # Laplace is exact for this conjugate normal model, so its ranks are uniform and nothing is rejected
    result = bg.sbc(normal_program, engine="laplace", num_simulations=40, num_workers=1, progress=False)
    assert list(result.ranks) == ["mu", LOG_LIKELIHOOD] and result.num_draws == 99
    for ranks in result.ranks.values():
        assert ranks.shape == (40,) and ranks.dtype.kind == "i" and 0 <= ranks.min() and ranks.max() <= 99
        assert np.mean(ranks < 50) == pytest.approx(0.5, abs=0.25)  # spread over the range, not piled up
    assert result.rejected == [], result.tests


def test_observed_arguments_are_found_by_name_and_confirmed():
    assert observed_by_name(normal_program, {}) == {"y": "y"}
    assert observed_by_name(normal_normal, {"n": 5}) == {"y": "y"}
    assert observed_by_name(normal_normal, {"y": np.zeros(3)}) == {"y": "y"}  # given data are set aside
    assert observed_by_name(linear_regression, {"X": np.zeros((6, 3))}) == {"y": "y"}
    assert observed_by_name(linear_regression, {}) == {}  # X is required: the program cannot run
    assert observed_by_name(renamed_data, {}) == {}  # no argument named like a site
    assert observed_by_name(named_like_a_latent, {}) == {}  # named like site 'mu', but never its obs
    pyro.set_rng_seed(7)
    observed_by_name(normal_program, {})
    after = torch.rand(3)
    pyro.set_rng_seed(7)
    assert torch.equal(after, torch.rand(3))  # the global random state is left alone


def test_holm_adjusts_p_values_step_down():
    # sorted: 0.002 * 5, 0.01 * 4, 0.03 * 3, max(0.04 * 2, 0.09), 0.5 * 1 (statsmodels'
    # multipletests(method="holm") gives the same)
    pvalues = np.array([0.01, 0.04, 0.03, 0.5, 0.002])
    np.testing.assert_allclose(_holm(pvalues), [0.04, 0.09, 0.09, 0.5, 0.01])
    np.testing.assert_allclose(_holm(np.array([0.3, 0.6])), [0.6, 0.6])  # monotone, capped at 1
    np.testing.assert_allclose(_holm(np.array([0.7, 0.9])), [1.0, 1.0])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="which program arguments carry observed data: no program argument"):
        sbc(renamed_data, engine=ExactPosterior(), num_simulations=4)
    with pytest.raises(ValueError, match=r"observed data: the program needs argument\(s\) X"):
        sbc(linear_regression, engine=ExactPosterior(), num_simulations=4)
    with pytest.raises(TypeError, match="only accepted with an engine name"):
        sbc(NORMAL, SIZE, engine=ExactPosterior(), options={"num_draws": 10})
    with pytest.raises(TypeError, match="has no option 'num_sample'"):
        sbc(NORMAL, SIZE, engine="nuts", options={"num_sample": 10})
    with pytest.raises(ValueError, match="num_draws"):
        sbc(NORMAL, SIZE, engine=ExactPosterior(num_draws=10), num_simulations=2, num_draws=99, num_workers=1)
    with pytest.raises(ValueError, match="alpha"):
        sbc(NORMAL, SIZE, engine=ExactPosterior(), alpha=1.5)


def test_cli_prints_the_uniformity_table_and_writes_the_plot(tmp_path, capsys):
    from bayesgen.cli import main

    out = tmp_path / "sbc.png"
    code = main(["sbc", "linear_regression", "--engine", "laplace", "--option", "num_steps=200",
                 "--num-simulations", "5", "--num-draws", "9", "--num-workers", "1", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "pvalue_holm" in printed and "beta[2]" in printed and LOG_LIKELIHOOD in printed
    # five simulations test nothing, and the verdict says so rather than "no quantity rejects"
    assert "too few simulations to test" in printed and "no quantity rejects" not in printed
    assert out.stat().st_size > 10_000
    import matplotlib.pyplot

    matplotlib.pyplot.close("all")


# ---- Done-when: a conjugate model is calibrated under NUTS and full-rank SVI (200 simulations each) ----

@pytest.mark.slow
def test_nuts_is_calibrated_on_the_normal_normal_model():
    # 4 chains x 100 draws: the bulk ESS of this one-parameter posterior is 130-200, above num_draws = 99
    options = {"num_warmup": 200, "num_samples": 100, "num_chains": 4}
    result = sbc(NORMAL, SIZE, engine="nuts", options=options, num_simulations=200, progress=False)
    assert result.rejected == [], result.tests
    assert np.median(result.min_ess) >= 99


@pytest.mark.slow
def test_full_rank_svi_is_calibrated_on_the_normal_normal_model():
    # The posterior is Gaussian, so the mvn family contains it. A fast start (lr 0.2) reaches means up to
    # ~5 prior-free units away and the decay to lr 4e-4 removes SGD noise: on 25 simulated data sets the fitted
    # mean was within 0.06 posterior sd of the exact one and the sd within 3%. (500 steps at lr 0.05 left
    # far-out means unconverged, by up to several posterior sd.)
    options = {"guide": "mvn", "num_steps": 400, "lr": 0.2, "lr_decay": 0.002, "num_particles": 16,
               "num_draws": 200}
    result = sbc(NORMAL, SIZE, engine="svi", options=options, num_simulations=200, progress=False)
    assert result.rejected == [], result.tests


def test_a_program_with_networks_is_refused_with_the_reason():
    x = np.linspace(-1, 1, 10)
    # it failed with "the engine returned 1 posterior draws, fewer than num_draws": advice that did not help
    with pytest.raises(ValueError, match=r"parameters fitted as points \(net: pyro.module or pyro.param\), "
                                         "which have no prior"):
        sbc(network_regression, {"x": x, "y": np.sin(x)}, engine="map", num_simulations=2, progress=False)  # before any worker
    assert "net$$$weight" not in pyro.get_param_store()
