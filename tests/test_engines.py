"""Known-answer tests: every engine on the same unchanged programs, against exact posteriors."""

import warnings

import numpy as np
import pytest

import bayesgen as bg
from programs import (
    beta_bernoulli, beta_bernoulli_posterior, linear_regression, normal_normal, normal_normal_posterior,
    regression_data,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

RNG = np.random.default_rng(1)
Y_NORMAL = RNG.normal(1.5, 1.0, size=20)
Y_BERNOULLI = (RNG.random(30) < 0.3).astype(float)

CONJUGATE = [
    ("normal_normal", normal_normal, {"y": Y_NORMAL}, "mu", normal_normal_posterior(Y_NORMAL)),
    ("beta_bernoulli", beta_bernoulli, {"y": Y_BERNOULLI}, "p", beta_bernoulli_posterior(Y_BERNOULLI)),
]


def _mcse(draws: np.ndarray) -> tuple[float, float]:
    return float(az.mcse(draws, method="mean")), float(az.mcse(draws, method="sd"))


def test_a_thousand_chains_in_lockstep_match_the_conjugate_posterior_within_4_mcse():
    """1024 chains advance through one batched density call per leapfrog step, each with its
    own tree, step size and mass matrix: the GPU's many-chain run, here on the CPU."""
    fit = bg.fit(normal_normal, {"y": Y_NORMAL}, engine="nuts", num_warmup=200, num_samples=100,
                 num_chains=1024, seed=4, progress=False)
    draws = fit.posterior["mu"]
    assert draws.shape == (1024, 100)
    mean, sd = normal_normal_posterior(Y_NORMAL)
    mcse_mean, mcse_sd = _mcse(draws)
    assert abs(draws.mean() - mean) < 4 * mcse_mean
    assert abs(draws.std() - sd) < 4 * mcse_sd
    assert fit.sample_stats["diverging"].sum() == 0
    assert np.unique(fit.sample_stats["step_size"][:, 0]).size > 1000  # adapted per chain


@pytest.mark.parametrize("engine", ["nuts", "hmc"])
@pytest.mark.parametrize("name,model,data,site,exact", CONJUGATE, ids=[c[0] for c in CONJUGATE])
def test_mcmc_matches_conjugate_posterior_within_4_mcse(engine, name, model, data, site, exact):
    fit = bg.fit(model, data, engine=engine, num_warmup=500, num_samples=1000, num_chains=4, seed=3)
    draws = fit.posterior[site]
    mcse_mean, mcse_sd = _mcse(draws)
    assert abs(draws.mean() - exact[0]) < 4 * mcse_mean
    assert abs(draws.std() - exact[1]) < 4 * mcse_sd
    assert fit.sample_stats["diverging"].sum() == 0


@pytest.mark.parametrize("name,model,data,site,exact", CONJUGATE, ids=[c[0] for c in CONJUGATE])
def test_svi_mvn_matches_conjugate_posterior(name, model, data, site, exact):
    fit = bg.fit(model, data, engine="svi", guide="mvn", num_steps=2000, num_draws=4000, seed=0)
    draws = fit.posterior[site]
    assert abs(draws.mean() - exact[0]) < 0.1 * exact[1]
    assert abs(draws.std() / exact[1] - 1) < 0.10
    assert fit.info["converged"]


def test_laplace_is_exact_on_the_normal_normal_model():
    fit = bg.fit(normal_normal, {"y": Y_NORMAL}, engine="laplace")
    mean, sd = normal_normal_posterior(Y_NORMAL)
    assert fit.point["mu"] == pytest.approx(mean, abs=1e-6)
    assert fit.stderr["mu"] == pytest.approx(sd, abs=1e-6)
    assert fit.kind == "approximation" and fit.posterior["mu"].shape == (1, 1000)


def test_mle_equals_least_squares_with_textbook_standard_errors():
    X, y = regression_data()
    fit = bg.fit(linear_regression, {"X": X, "y": y}, engine="mle")
    design = np.c_[np.ones(len(y)), X]
    coef, rss = np.linalg.lstsq(design, y, rcond=None)[:2]
    sigma2 = float(rss[0]) / len(y)  # the MLE of the noise variance
    stderr = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))
    np.testing.assert_allclose(fit.point["alpha"], coef[0], rtol=1e-6)
    np.testing.assert_allclose(fit.point["beta"], coef[1:], rtol=1e-6)
    np.testing.assert_allclose(fit.point["sigma"], np.sqrt(sigma2), rtol=1e-6)
    np.testing.assert_allclose(fit.stderr["alpha"], stderr[0], rtol=1e-5)
    np.testing.assert_allclose(fit.stderr["beta"], stderr[1:], rtol=1e-5)
    # the observed information of sigma at the MLE gives se = sigma / sqrt(2n)
    np.testing.assert_allclose(fit.stderr["sigma"], np.sqrt(sigma2 / (2 * len(y))), rtol=1e-5)
    assert fit.kind == "point" and fit.info["converged"]


def test_map_differs_from_mle_by_the_prior():
    data = {"y": Y_NORMAL}
    mle = bg.fit(normal_normal, data, engine="mle")
    map_ = bg.fit(normal_normal, data, engine="map")
    assert mle.point["mu"] == pytest.approx(Y_NORMAL.mean(), abs=1e-7)
    assert map_.point["mu"] == pytest.approx(normal_normal_posterior(Y_NORMAL)[0], abs=1e-7)


#: Shorter runs for the contract tests, applied to whichever engine has the option: samplers'
#: draws, optimisers' steps (a sampler's num_steps is its leapfrog steps, and is left alone).
SAMPLER_QUICK = {"num_warmup": 200, "num_samples": 200, "num_chains": 2}
OPTIMISER_QUICK = {"num_steps": 1500, "lr": 0.05}


def _quick(engine: str) -> dict:
    from bayesgen.registry import engine_options

    names = {option for option, _, _ in engine_options(engine)}
    quick = SAMPLER_QUICK if "num_samples" in names else OPTIMISER_QUICK
    return {key: value for key, value in quick.items() if key in names}


@pytest.mark.parametrize("engine", bg.list_engines())
def test_every_engine_fits_the_same_program_or_refuses_it_by_name(engine):
    """The contract of every registered engine, found by the registry (a new engine module is
    tested without editing this file): see :func:`_assert_engine_contract`."""
    _assert_engine_contract(engine)


TOY_ENGINE = '''
from dataclasses import dataclass
from typing import ClassVar

from bayesgen.inference.laplace import Laplace


@dataclass(frozen=True)
class Toy(Laplace):
    """A toy engine for the registry test: the Laplace approximation under another name."""

    name: ClassVar[str] = "toy"
'''


def test_a_new_engine_module_is_registered_and_held_to_the_contract(tmp_path, monkeypatch):
    """One new module in bayesgen.inference's path, and nothing else edited: the registry lists it,
    bg.fit runs it by name, and it passes the contract every engine passes."""
    import sys

    import bayesgen.inference

    (tmp_path / "toy.py").write_text(TOY_ENGINE)
    monkeypatch.setattr(bayesgen.inference, "__path__", [*bayesgen.inference.__path__, str(tmp_path)])
    try:
        assert "toy" in bg.list_engines()
        _assert_engine_contract("toy")
        assert bg.fit(normal_normal, {"y": Y_NORMAL}, engine="toy").engine == "toy"
    finally:  # the module leaves with its folder
        sys.modules.pop("bayesgen.inference.toy", None)
        vars(bayesgen.inference).pop("toy", None)


TOY_KERNEL = '''
"""A toy sampler kernel for the registry test: random-walk Metropolis, scaled by the metric."""

from dataclasses import dataclass

import torch

from bayesgen.inference._integrator import PhaseState, Transition


@dataclass(frozen=True)
class RandomWalkKernel:
    def transition_for(self, logp_and_grad, streams, num_transitions, fuse, jit_compile):
        def transition(state, step_size, metric):
            z = state.z
            noise = streams.normal(z.shape[1])
            proposal = z + step_size[:, None] * metric.inverse_mass_matrix.sqrt() * noise
            logp, grad = logp_and_grad(proposal)
            log_ratio = torch.nan_to_num(logp - state.logp, nan=-torch.inf)
            uniform = streams.uniform(1)[:, 0]
            accept = torch.log(uniform) < log_ratio
            new = PhaseState(torch.where(accept[:, None], proposal, z), torch.where(accept, logp, state.logp),
                             torch.where(accept[:, None], grad, state.grad))
            ones = torch.ones(z.shape[:1], dtype=torch.int64, device=z.device)
            return Transition(new, torch.zeros_like(accept), -new.logp, 0 * ones, ones,
                              log_ratio.clamp(max=0.0).exp())

        return transition
'''

TOY_SAMPLER_ENGINE = '''
from dataclasses import dataclass
from typing import ClassVar

from bayesgen.inference._mcmc import run_mcmc
from bayesgen.inference._toy_kernel import RandomWalkKernel


@dataclass(frozen=True)
class RandomWalk:
    """A toy sampler engine for the registry test: random-walk Metropolis through bayesgen's driver."""

    name: ClassVar[str] = "random_walk"
    num_warmup: int = 1000
    num_samples: int = 1000
    num_chains: int = 4

    def run(self, problem, *, seed, progress):
        return run_mcmc(problem, seed=seed, progress=progress, kernel=RandomWalkKernel(), num_warmup=self.num_warmup,
                        num_samples=self.num_samples, num_chains=self.num_chains, target_accept=0.3,
                        dense_mass=False, jit_compile=False, engine=self.name)
'''


def test_a_new_sampler_kernel_and_its_engine_are_two_modules_and_nothing_else(tmp_path, monkeypatch):
    """A kernel module (random-walk Metropolis) and an engine module that hands it to bayesgen's
    driver: the engine is registered and passes the contract, warmup adaptation included."""
    import sys

    import bayesgen.inference

    (tmp_path / "_toy_kernel.py").write_text(TOY_KERNEL)
    (tmp_path / "random_walk.py").write_text(TOY_SAMPLER_ENGINE)
    monkeypatch.setattr(bayesgen.inference, "__path__", [*bayesgen.inference.__path__, str(tmp_path)])
    try:
        assert "random_walk" in bg.list_engines() and "_toy_kernel" not in bg.list_engines()
        _assert_engine_contract("random_walk", num_warmup=1000, num_samples=1000)
    finally:  # the modules leave with their folder
        for name in ("random_walk", "_toy_kernel"):
            sys.modules.pop(f"bayesgen.inference.{name}", None)
            vars(bayesgen.inference).pop(name, None)


def _assert_engine_contract(engine: str, **options: int) -> None:
    """On a Bayesian regression the engine returns the latent and deterministic sites with their
    shapes, the pointwise log-likelihood, the ArviZ groups, and the same fit for the same seed; an
    engine for programs of another kind (``gan`` trains networks) refuses with a ValueError that
    names it."""
    X, y = regression_data()
    data = {"X": X, "y": y}
    options = {**_quick(engine), **options}
    try:
        fit = bg.fit(linear_regression, data, engine=engine, seed=3, **options)
    except ValueError as refusal:
        assert f"engine '{engine}'" in str(refusal)
        return
    assert set(fit.posterior) == {"alpha", "beta", "sigma", "sigma2"}
    assert fit.posterior["beta"].shape[2:] == (3,)
    assert fit.log_likelihood["y"].shape[2:] == (len(y),)
    np.testing.assert_allclose(fit.posterior["sigma2"], fit.posterior["sigma"] ** 2)
    assert abs(fit.posterior["beta"].mean((0, 1))[1] + 2.0) < 0.3
    assert {"posterior", "log_likelihood", "observed_data"} <= set(fit.to_arviz().groups())
    again = bg.fit(linear_regression, data, engine=engine, seed=3, **options)
    np.testing.assert_array_equal(again.posterior["beta"], fit.posterior["beta"])


@pytest.mark.parametrize("guide,options", [("normal", {}), ("lowrank", {"rank": 2})])
def test_svi_gaussian_families_fit_the_regression(guide, options):
    X, y = regression_data()
    fit = bg.fit(linear_regression, {"X": X, "y": y}, engine="svi", guide=guide, num_steps=1500, lr=0.05,
                 **options)
    assert abs(fit.posterior["beta"].mean((0, 1))[1] + 2.0) < 0.3


def test_svi_runs_pyro_autoguides():
    from pyro.infer.autoguide import AutoNormal

    X, y = regression_data()
    fit = bg.fit(linear_regression, {"X": X, "y": y}, engine="svi", guide=AutoNormal, num_steps=1500,
                 lr=0.05)
    assert fit.posterior["beta"].shape == (1, 1000, 3)
    assert abs(fit.posterior["beta"].mean((0, 1))[1] + 2.0) < 0.3
    assert fit.sample_stats["loss"].shape == (1, 1500)


def test_an_autodelta_instance_gives_its_trained_point_not_its_start():
    """The draws of an AutoDelta are views of its parameters, which the fit resets afterwards; they
    held the guide's starting values, with nothing said, until they were copied."""
    from pyro.infer.autoguide import AutoDelta

    X, y = regression_data()
    fit = bg.fit(linear_regression, {"X": X, "y": y}, engine="svi", guide=AutoDelta(linear_regression),
                 num_steps=1500, lr=0.05)
    np.testing.assert_allclose(fit.posterior["beta"][0, 0], fit.params["AutoDelta.beta"], rtol=1e-12)
    assert abs(fit.posterior["beta"][0, 0, 1] + 2.0) < 0.3


def test_enumerated_mixture_with_nuts_and_traceenum_svi():
    from pyro.infer.autoguide import AutoNormal

    from programs import gaussian_mixture

    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(-2.0, 1.0, 100), rng.normal(3.0, 1.0, 100)])
    nuts = bg.fit(gaussian_mixture, {"y": y}, engine="nuts", num_warmup=200, num_samples=200, num_chains=2)
    svi = bg.fit(gaussian_mixture, {"y": y}, engine="svi", guide=AutoNormal, num_steps=1500, lr=0.05)
    for fit in (nuts, svi):
        locs = np.sort(fit.posterior["locs"], axis=-1).mean((0, 1))  # sorting undoes label switching
        np.testing.assert_allclose(locs, [-2.0, 3.0], atol=0.35)
        assert abs(fit.posterior["weights"].mean((0, 1))[0] - 0.5) < 0.1
    # the assignments are summed out per observation: log p(y_n | theta), one term per point
    assert nuts.log_likelihood["y"].shape == (2, 200, 200)
