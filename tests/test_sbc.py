"""bg.sbc: the machinery (shapes, ranks, determinism, plot, CLI), and calibration verdicts on a conjugate model."""

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

import bayesgen as bg
from bayesgen.engine import EngineResult, Problem
from bayesgen.sbc import LOG_LIKELIHOOD, SBCResult, _holm, sbc
from programs import PRIOR_SD, normal_normal

ALPHA = 0.01
NORMAL = bg.ModelSpec(name="normal_normal", model=normal_normal, observed={"y": "y"})
SIZE = {"n": 20}


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
    path = tmp_path / "sbc.png"
    axes = result.plot(str(path))
    assert path.stat().st_size > 10_000 and axes.size == 2
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


def test_holm_adjusts_p_values_step_down():
    # sorted: 0.002 * 5, 0.01 * 4, 0.03 * 3, max(0.04 * 2, 0.09), 0.5 * 1 (statsmodels'
    # multipletests(method="holm") gives the same)
    pvalues = np.array([0.01, 0.04, 0.03, 0.5, 0.002])
    np.testing.assert_allclose(_holm(pvalues), [0.04, 0.09, 0.09, 0.5, 0.01])
    np.testing.assert_allclose(_holm(np.array([0.3, 0.6])), [0.6, 0.6])  # monotone, capped at 1
    np.testing.assert_allclose(_holm(np.array([0.7, 0.9])), [1.0, 1.0])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="which program arguments carry observed data"):
        sbc(normal_normal, engine=ExactPosterior(), num_simulations=4)
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
                 "--num-simulations", "5", "--num-draws", "9", "--workers", "1", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "pvalue_holm" in printed and "beta[2]" in printed and LOG_LIKELIHOOD in printed
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
