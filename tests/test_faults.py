"""Reliability of the batched NUTS/HMC (issue 23): numerical failures of the density are rejected
proposals, non-finite chains are reported, and Ctrl-C keeps the draws made so far."""

from __future__ import annotations

import math
import signal
import threading
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesgen as bg
from bayesgen.inference import _sampler
from bayesgen.inference._guard import GuardedDensity
from bayesgen.inference._numerical import is_numerical_error
from bayesgen.inference._mcmc import _fault_info, guarded_density
from bayesgen.logdensity import LogDensity


# --------------------------------------------------------------------------------------------
# Pyro's examples/sparse_regression.py, unchanged but for the data size (and float64, which the
# test suite runs in): its kernel matrix loses positive definiteness where the sampler strays,
# and bayesgen's NUTS used to stop there with "linalg.cholesky: ... not positive-definite".
def dot(X, Z):
    return torch.mm(X, Z.t())


def kernel(X, Z, eta1, eta2, c):
    eta1sq, eta2sq = eta1.pow(2.0), eta2.pow(2.0)
    k1 = 0.5 * eta2sq * (1.0 + dot(X, Z)).pow(2.0)
    k2 = -0.5 * eta2sq * dot(X.pow(2.0), Z.pow(2.0))
    k3 = (eta1sq - eta2sq) * dot(X, Z)
    k4 = c**2 - 0.5 * eta2sq
    return k1 + k2 + k3 + k4


def sparse_regression(X, Y, hypers, jitter=1.0e-4):
    S, P, N = hypers["expected_sparsity"], X.size(1), X.size(0)

    sigma = pyro.sample("sigma", dist.HalfNormal(hypers["alpha3"]))
    phi = sigma * (S / math.sqrt(N)) / (P - S)
    eta1 = pyro.sample("eta1", dist.HalfCauchy(phi))

    msq = pyro.sample("msq", dist.InverseGamma(hypers["alpha1"], hypers["beta1"]))
    xisq = pyro.sample("xisq", dist.InverseGamma(hypers["alpha2"], hypers["beta2"]))

    eta2 = eta1.pow(2.0) * xisq.sqrt() / msq

    lam = pyro.sample("lambda", dist.HalfCauchy(torch.ones(P, device=X.device)).to_event(1))
    kappa = msq.sqrt() * lam / (msq + (eta1 * lam).pow(2.0)).sqrt()
    kX = kappa * X

    # compute the kernel for the given hyperparameters
    k = kernel(kX, kX, eta1, eta2, hypers["c"]) + (sigma**2 + jitter) * torch.eye(N, device=X.device)

    # observe the outputs Y
    pyro.sample("Y", dist.MultivariateNormal(torch.zeros(N, device=X.device), covariance_matrix=k), obs=Y)


def get_data(N=20, P=10, S=2, Q=2, sigma_obs=0.15):
    assert S < P and P > 3 and S > 2 and Q > 1 and Q <= S
    torch.manual_seed(1)

    X = torch.randn(N, P)

    singleton_weights = 2.0 * torch.rand(S) - 1.0
    Y_mean = torch.einsum("ni,i->n", X[:, 0:S], singleton_weights)

    quadratic_weights = []
    for dim1 in range(Q):
        for dim2 in range(Q):
            if dim1 >= dim2:
                continue
            quadratic_weights.append(2.0 * torch.rand(1) - 1.0)
            Y_mean += quadratic_weights[-1] * X[:, dim1] * X[:, dim2]

    # we standardize the outputs Y
    Y = Y_mean
    Y -= Y.mean()
    Y_std1 = Y.std()
    Y /= Y_std1
    Y += sigma_obs * torch.randn(N)
    Y -= Y.mean()
    Y_std2 = Y.std()
    Y /= Y_std2
    return X, Y


HYPERS = {"expected_sparsity": 1.0, "alpha1": 3.0, "beta1": 1.0, "alpha2": 3.0, "beta2": 1.0,
          "alpha3": 1.0, "c": 1.0}


@pytest.mark.slow  # 20 s each; test_linalg_error_is_a_divergence covers the guard in the default suite
@pytest.mark.parametrize("seed", [3, 2])
def test_sparse_regression_finishes(seed: int) -> None:
    """Seeds on which the unguarded sampler raised _LinAlgError from its step (10 x 5 data, 100
    warmup and 100 draws) now finish with finite draws."""
    X, Y = get_data(N=10, P=5, S=3, Q=2, sigma_obs=0.05)
    fit = bg.fit(sparse_regression, {"X": X, "Y": Y, "hypers": HYPERS}, engine="nuts", seed=seed,
                 num_warmup=100, num_samples=100, progress=False)
    assert fit.posterior["lambda"].shape == (4, 100, 5)
    assert all(np.isfinite(draws).all() for draws in fit.posterior.values())
    assert np.isfinite(fit.sample_stats["lp"]).all()
    assert not fit.info.get("interrupted")


# --------------------------------------------------------------------------------------------
# Small programs whose density raises in part of the space; their priors keep prior draws (which
# bg.fit takes to check the program) inside the valid part.
def correlation_model(y: torch.Tensor) -> None:
    """A correlation r whose 2 x 2 correlation matrix has no Cholesky factor for |r| >= 1."""
    r = pyro.sample("r", dist.Normal(0.0, 0.3))
    one = torch.ones_like(r)
    matrix = torch.stack([torch.stack([one, r], -1), torch.stack([r, one], -1)], -2)
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), scale_tril=torch.linalg.cholesky(matrix)), obs=y)


def scale_model(y: torch.Tensor) -> None:
    """A Normal whose scale 1 - s a validating distribution refuses for s >= 1 (ValueError)."""
    s = pyro.sample("s", dist.Normal(0.0, 0.3))
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.Normal(0.0, 1.0 - s, validate_args=True), obs=y)


def _correlated(n: int = 20, rho: float = 0.97) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, rho], [rho, 1.0]])
    return torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(cov).T


def test_linalg_error_is_a_divergence() -> None:
    """The posterior of r sits near 1, where the Cholesky factorisation fails: the run finishes,
    counts the failures as divergences and bg.check reports both."""
    # a seed whose chains meet the failures while drawing, not only in warmup (of seeds 0-5, 1-4 do)
    fit = bg.fit(correlation_model, {"y": _correlated()}, engine="nuts", seed=4, num_warmup=200,
                 num_samples=200, num_chains=2, progress=False)
    assert np.isfinite(fit.posterior["r"]).all() and (np.abs(fit.posterior["r"]) < 1).all()
    assert fit.sample_stats["diverging"].sum() > 0
    assert fit.info["density_failures"] > 0 and "cholesky" in fit.info["density_error"]
    findings = bg.check(fit)
    assert any("divergent transitions" in f for f in findings)
    assert any("log density raised" in f and "cholesky" in f for f in findings)


@pytest.mark.parametrize("engine", ["nuts", "hmc"])
def test_validation_error_is_a_rejection(engine: str) -> None:
    """A distribution's validate_args complaint (ValueError) rejects the point, in NUTS and HMC;
    the program reads its parameters into Python, so this runs the eager (unrecorded) path."""
    y = 0.05 * torch.randn(30, generator=torch.Generator().manual_seed(0))
    fit = bg.fit(scale_model, {"y": y}, engine=engine, seed=0, num_warmup=150, num_samples=100,
                 num_chains=2, progress=False)
    assert np.isfinite(fit.posterior["s"]).all() and (fit.posterior["s"] < 1).all()
    assert fit.info["density_failures"] > 0 and fit.info["density_error"].startswith("ValueError")
    assert any("log density raised" in f for f in bg.check(fit))


def test_no_starting_point_names_the_reason() -> None:
    """Initial points are re-drawn where the density raises; after 100 tries the error says why."""
    def narrow(y: torch.Tensor) -> None:
        r = pyro.sample("r", dist.Normal(0.0, 1e-5))
        one = torch.ones_like(r)
        matrix = torch.stack([torch.stack([one, 1e4 * r], -1), torch.stack([1e4 * r, one], -1)], -2)
        with pyro.plate("n", y.shape[0]):
            pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), scale_tril=torch.linalg.cholesky(matrix)),
                        obs=y)

    with pytest.raises(ValueError, match=r"no finite starting point.*100 tries.*raised _LinAlgError: "
                                         r"linalg.cholesky.*at every point tried"):
        bg.fit(narrow, {"y": _correlated(5, 0.0)}, engine="nuts", seed=0, num_warmup=10, num_samples=10,
               progress=False)


# --------------------------------------------------------------------------------------------
def _row_fails(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-x^2/2, but a linalg error (as a batched Cholesky raises) wherever some row has x > 1."""
    if bool((x[:, 0] > 1).any()):
        torch.linalg.cholesky(-torch.eye(2))
    return -0.5 * (x**2).sum(-1), -x


def test_guard_rejects_failing_rows_only() -> None:
    guard = GuardedDensity(_row_fails)
    logp, grad = guard(torch.tensor([[0.5], [2.0], [-1.0]]))
    assert torch.equal(logp, torch.tensor([-0.125, -math.inf, -0.5]))
    assert torch.equal(grad, torch.tensor([[-0.5], [0.0], [1.0]]))
    assert guard.failures == 1 and guard.first_error.startswith("_LinAlgError: linalg.cholesky")


def test_guard_reraises_programming_errors() -> None:
    # every row fails before any point was evaluated: a bug, re-raised as it was
    with pytest.raises(torch.linalg.LinAlgError):
        GuardedDensity(_row_fails)(torch.tensor([[2.0], [3.0]]))
    # once some point was evaluated, a batch of failing rows is a batch of bad points
    guard = GuardedDensity(_row_fails)
    guard(torch.tensor([[0.0]]))
    logp, _ = guard(torch.tensor([[2.0], [3.0]]))
    assert torch.isinf(logp).all() and guard.failures == 2

    def typo(x: torch.Tensor) -> Any:
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError):
        GuardedDensity(typo)(torch.zeros(2, 1))
    assert not is_numerical_error(NotImplementedError("no rule"))
    assert not is_numerical_error(KeyboardInterrupt())
    # bayesgen's own checks describe the program, not the point: a wrong shape is never rejected
    density = LogDensity(correlation_model, {"y": _correlated(5)})
    guard = guarded_density(density)
    guard(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="expected unconstrained points"):
        guard(torch.zeros(2, 3))


def normal_model(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    pyro.deterministic("twice", 2 * mu)
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_fault_findings_report_nonfinite_chains() -> None:
    """A chain with non-finite positions or log density is kept and reported, never dropped."""
    draws = torch.zeros(3, 4, 2)
    lp = torch.zeros(3, 4)
    draws[1, 2, 0] = math.nan
    lp[2, 3] = -math.inf
    assert _fault_info(0, None, draws, lp) == {"nonfinite_draws": [0, 1, 1]}
    y = torch.randn(10, generator=torch.Generator().manual_seed(0))
    fit = bg.fit(normal_model, {"y": y}, engine="nuts", seed=0, num_warmup=50, num_samples=20, num_chains=2,
                 progress=False)
    fit.posterior["mu"][1, 5] = np.nan
    fit.sample_stats["lp"][1, 7] = np.nan
    findings = bg.check(fit)
    assert any("chain(s) [1] produced non-finite positions or log densities (2 draw(s), the first at draw 5)"
               in f for f in findings)


# --------------------------------------------------------------------------------------------
def _interrupt_after(phase: str, transitions: int, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Have a second thread send SIGINT to the main thread once ``phase`` ("_warmup" or
    "_sample") of the sampler has completed ``transitions`` transitions (so the test does not
    depend on timing); returns the event set when it was sent."""
    reached, sent = threading.Event(), threading.Event()
    main = threading.main_thread().ident
    original = getattr(_sampler, phase)

    def counted(step: Any, *args: Any, **kwargs: Any) -> Any:
        calls = 0

        def counting(*step_args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == transitions + 1:
                reached.set()
            return step(*step_args)

        return original(counting, *args, **kwargs)

    def interrupt() -> None:
        if reached.wait(timeout=60):
            signal.pthread_kill(main, signal.SIGINT)
            sent.set()

    monkeypatch.setattr(_sampler, phase, counted)
    threading.Thread(target=interrupt, daemon=True).start()
    return sent


def test_interrupt_while_sampling_keeps_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    y = torch.randn(10, generator=torch.Generator().manual_seed(0))
    sent = _interrupt_after("_sample", 30, monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"interrupted \(KeyboardInterrupt\): kept the first \d+ of 20000"):
        fit = bg.fit(normal_model, {"y": y}, engine="nuts", seed=0, num_warmup=20, num_samples=20_000,
                     num_chains=2, progress=False)
    assert sent.is_set()
    kept = fit.info["num_draws"]
    assert fit.info["interrupted"] is True and 30 <= kept < 20_000
    assert fit.posterior["mu"].shape == (2, kept) and fit.posterior["twice"].shape == (2, kept)
    np.testing.assert_allclose(fit.posterior["twice"], 2 * fit.posterior["mu"])
    assert all(stat.shape == (2, kept) for stat in fit.sample_stats.values())
    assert fit.log_likelihood["y"].shape == (2, kept, 10)  # post-processing ran on the partial draws
    assert np.isfinite(fit.posterior["mu"]).all()
    assert any("interrupted" in f and f"first {kept} of 20000" in f for f in bg.check(fit))


def test_interrupt_during_warmup_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    """No draw exists yet: the KeyboardInterrupt goes on to the caller."""
    y = torch.randn(10, generator=torch.Generator().manual_seed(0))
    sent = _interrupt_after("_warmup", 5, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        bg.fit(normal_model, {"y": y}, engine="nuts", seed=0, num_warmup=20_000, num_samples=10,
               num_chains=2, progress=False)
    assert sent.is_set()
