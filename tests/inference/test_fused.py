"""The recorded (fused) leapfrog step of NUTS and HMC against the eager one."""

from __future__ import annotations

import itertools
import logging
import warnings

import numpy as np
import pytest
import torch
from bayesgen.inference._kernels import HMCKernel, NUTSKernel
from bayesgen.inference._sampler import run_hmc
from bayesgen.inference._streams import ChainStreams
from programs import cpp_compiler, needs_compiler, normal_normal, normal_normal_posterior

import bayesgen as bg

DTYPE = torch.float64
MEAN = torch.tensor([1.0, -2.0, 3.0], dtype=DTYPE)
SD = torch.tensor([0.5, 2.0, 10.0], dtype=DTYPE)


def _gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = (x - MEAN) / SD
    return -0.5 * (r * r).sum(-1), -r / SD


def _reads_values(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same density, but it reads a tensor into Python: it cannot be recorded."""
    shift = float(x.abs().max()) * 0.0
    logp, grad = _gaussian(x)
    return logp + shift, grad


def _run(logp_and_grad, algorithm: str, fuse: bool, num_warmup: int = 500, num_samples: int = 30,
         dense: bool = False, jit_compile: bool | None = False):
    init = torch.randn((4, 3), generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    kernel = NUTSKernel() if algorithm == "nuts" else HMCKernel()
    return run_hmc(logp_and_grad, init, num_warmup=num_warmup, num_samples=num_samples, kernel=kernel,
                   streams=ChainStreams(3, range(4), dtype=DTYPE, device="cpu"), fuse=fuse, dense_mass=dense,
                   jit_compile=jit_compile)


@pytest.mark.parametrize("algorithm", ["nuts", "hmc"])
def test_an_unrecordable_density_runs_eagerly_with_identical_draws(algorithm):
    eager = _run(_reads_values, algorithm, fuse=False, num_warmup=30)
    fused = _run(_reads_values, algorithm, fuse=True, num_warmup=30)
    assert torch.equal(eager.draws, fused.draws)
    for key, value in eager.stats.items():
        assert torch.equal(value, fused.stats[key]), key


@needs_compiler
@pytest.mark.parametrize("algorithm", ["nuts", "hmc"])
def test_compiled_steps_reusing_their_buffers_give_the_chain_of_fresh_buffers(algorithm, monkeypatch):
    """A compiled step's outputs are overwritten by the call after next (bayesgen._replay's
    ``_reusing_buffers``): a sampler that kept any of them longer would change its draws."""
    from bayesgen._replay import inductor as _replay

    reused = []
    rewrite = _replay._reusing_buffers
    monkeypatch.setattr(_replay, "_reusing_buffers", lambda program: reused.append(rewrite(program)) or reused[-1])
    reusing = _run(_gaussian, algorithm, fuse=True, num_warmup=100, num_samples=100, jit_compile=True)
    assert reused and all(program is not None for program in reused)
    monkeypatch.setattr(_replay, "_reusing_buffers", lambda program: None)
    allocating = _run(_gaussian, algorithm, fuse=True, num_warmup=100, num_samples=100, jit_compile=True)
    assert torch.equal(reusing.draws, allocating.draws)
    for key, value in reusing.stats.items():
        assert torch.equal(value, allocating.stats[key]), key


@needs_compiler
def test_the_leaf_loop_binds_its_replay_once_and_again_after_compiling():
    """The loop over leaves, and the merge of each subtree into the trajectory, look their replays
    up once per argument layout, not at every subtree; compiling the recordings must make them
    call the compiled programs from then on."""
    from bayesgen.inference import _integrator

    kernel = _kernel("nuts", False, 10**5, 10**5)
    init = torch.randn((4, 3), generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    state = _integrator.initial_state(_gaussian, init)
    metric = _integrator.make_metric(torch.ones_like(init))
    step_size = torch.full((4,), 0.3, dtype=DTYPE)
    leaves, fused = kernel.leaves, kernel.leaves.fused[False]
    for _ in range(3):
        kernel(state, step_size, metric)
    (key, scripted), = fused.replays.items()  # one layout: the outputs come back laid out as the inputs
    assert list(leaves._bound.values()) == [(scripted, True)]
    (merge_key, merge_scripted), = leaves.merge.replays.items()
    assert list(leaves._merges.values()) == [merge_scripted]
    leaves.compile()
    kernel(state, step_size, metric)
    compiled, merge_compiled = fused.replays[key], leaves.merge.replays[merge_key]
    assert compiled is not scripted and list(leaves._bound.values()) == [(compiled, True)]
    assert merge_compiled is not merge_scripted and list(leaves._merges.values()) == [merge_compiled]


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

    return arviz


@pytest.mark.parametrize("algorithm,dense", [("nuts", False), ("nuts", True), ("hmc", False)])
def test_recorded_step_follows_the_eager_chain_and_the_posterior(algorithm, dense, caplog):
    eager = _run(_gaussian, algorithm, fuse=False, num_samples=20, dense=dense)
    with caplog.at_level(logging.DEBUG, logger="bayesgen._replay"):
        fused = _run(_gaussian, algorithm, fuse=True, num_samples=1000, dense=dense)
    assert "recorded" in caplog.text
    # the recording may round differently (1e-16 relative); the first draws still coincide
    assert torch.allclose(eager.draws, fused.draws[:, :20], rtol=0, atol=1e-8)
    az = _arviz()
    draws = fused.draws.numpy()
    for i in range(3):
        x = draws[:, :, i]
        assert abs(x.mean() - MEAN[i].item()) < 4 * az.mcse(x), i
        assert abs(x.std() - SD[i].item()) < 4 * az.mcse(x, method="sd"), i


@pytest.mark.parametrize("engine", ["nuts", "hmc"])
def test_engines_record_the_step_and_match_the_conjugate_posterior(engine, caplog):
    y = np.random.default_rng(4).normal(1.5, 1.0, size=20)
    with caplog.at_level(logging.DEBUG, logger="bayesgen._replay"):
        fit = bg.fit(normal_normal, {"y": y}, engine=engine, num_warmup=500, num_samples=1000, seed=5)
    assert "recorded" in caplog.text
    mean, sd = normal_normal_posterior(y)
    draws = fit.posterior["mu"]
    az = _arviz()
    assert abs(draws.mean() - mean) < 4 * float(az.mcse(draws))
    assert abs(draws.std() - sd) < 4 * float(az.mcse(draws, method="sd"))
    assert fit.sample_stats["diverging"].sum() == 0


@pytest.mark.slow
def test_jit_compile_compiles_the_step_and_matches_the_conjugate_posterior(caplog):
    y = np.random.default_rng(6).normal(-0.5, 1.0, size=15)
    with caplog.at_level(logging.DEBUG, logger="bayesgen._replay"):
        fit = bg.fit(normal_normal, {"y": y}, engine="nuts", num_warmup=300, num_samples=1000, seed=2,
                     jit_compile=True)
        again = bg.fit(normal_normal, {"y": y}, engine="nuts", num_warmup=300, num_samples=1000, seed=2,
                       jit_compile=True)
    # Inductor needs a C++ compiler on the CPU; without one the step falls back to TorchScript
    assert ("cannot compile" in caplog.text) is not cpp_compiler() and "recorded" in caplog.text
    np.testing.assert_array_equal(fit.posterior["mu"], again.posterior["mu"])
    mean, sd = normal_normal_posterior(y)
    draws = fit.posterior["mu"]
    az = _arviz()
    assert abs(draws.mean() - mean) < 4 * float(az.mcse(draws))
    assert abs(draws.std() - sd) < 4 * float(az.mcse(draws, method="sd"))


def test_small_problems_sample_on_one_thread_and_restore_the_count():
    from bayesgen.fitting import prepare
    from bayesgen.inference._threads import PARALLEL_MIN_ELEMENTS, cpu_threads, threads_for

    small = prepare(normal_normal, {"y": np.zeros(20)}, device="cpu")
    large = prepare(normal_normal, {"y": np.zeros(PARALLEL_MIN_ELEMENTS // 4)}, device="cpu")
    before = torch.get_num_threads()
    with cpu_threads(2):
        assert threads_for(small, 4) == 1 and threads_for(large, 4) == 2
        with cpu_threads(threads_for(small, 4)):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def _kernel(algorithm: str, jit_compile, num_warmup: int, num_samples: int, num_steps: int = 10):
    kernel = NUTSKernel() if algorithm == "nuts" else HMCKernel(num_steps)
    return kernel.transition_for(_gaussian, ChainStreams(0, range(4), dtype=DTYPE, device="cpu"),
                                 num_warmup + num_samples, True, jit_compile)


def test_by_default_nuts_compiles_runs_that_project_to_many_leapfrog_steps(monkeypatch):
    from bayesgen.inference import _integrator, _kernels, _nuts

    compiled = []
    monkeypatch.setattr(_nuts.FusedLeaves, "compile", lambda self: compiled.append(self))
    init = torch.randn((4, 3), generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    state = _integrator.initial_state(_gaussian, init)
    metric = _integrator.make_metric(torch.ones_like(init))
    step_size = torch.full((4,), 0.05, dtype=DTYPE)  # a small step: long trajectories
    kernels = {"long": _kernel("nuts", None, 10**5, 10**5), "short": _kernel("nuts", None, 10, 0),
               "never": _kernel("nuts", False, 10**5, 10**5)}
    steps, decided = [], None
    for transition in range(1, _kernels.PROJECT_AFTER + 1):
        for kernel in kernels.values():  # seeded alike: the kernels take the same steps
            info = kernel(state, step_size, metric)
        steps.append(int(info.n_steps.max()))
        decided = decided or (transition if compiled else None)
    # the short run's 9 remaining transitions of at most 1023 steps stay below the threshold
    assert 9 * 1023 < _kernels.COMPILE_MIN_STEPS
    assert compiled == [kernels["long"].leaves]
    # long trajectories: decided as soon as the transitions took PROJECT_AFTER_STEPS, not after 20
    enough = next(t for t, total in enumerate(itertools.accumulate(steps), 1) if total >= _kernels.PROJECT_AFTER_STEPS)
    assert decided == enough < _kernels.PROJECT_AFTER
    assert _kernel("nuts", True, 1, 1).leaves.fused[False].compile
    assert not kernels["never"].leaves.fused[False].compile


def test_by_default_hmc_compiles_runs_of_many_leapfrog_steps():
    from bayesgen.inference._kernels import COMPILE_MIN_STEPS

    def compiles(kernel) -> bool:
        return kernel.keywords["leapfrog_step"].fused[False].compile

    assert not compiles(_kernel("hmc", None, 100, 100, num_steps=10))
    assert compiles(_kernel("hmc", None, COMPILE_MIN_STEPS // 2, COMPILE_MIN_STEPS // 2, num_steps=1))
    assert compiles(_kernel("hmc", True, 1, 1)) and not compiles(_kernel("hmc", False, 10**6, 0))
