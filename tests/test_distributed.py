"""Fits shared among processes with torch.distributed (issue 25): two local processes launched by
torchrun, talking over gloo on 127.0.0.1 at a free port."""

import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pyro.infer.autoguide import AutoNormal

import bayesgen as bg

pytestmark = pytest.mark.slow

_PROGRAMS = textwrap.dedent("""
    import numpy as np, pyro, pyro.distributions as dist, torch

    def logistic(X, y=None, batch=64):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        with pyro.plate("data", X.shape[0], subsample_size=batch) as index:
            pyro.sample("y", dist.Bernoulli(logits=(X[index] * w).sum(-1)), obs=None if y is None else y[index])

    def logistic_weights(X, y=None, batch=64):
        w = pyro.param("w", torch.zeros(X.shape[1]))
        with pyro.plate("data", X.shape[0], subsample_size=batch) as index:
            pyro.sample("y", dist.Bernoulli(logits=X[index] @ w), obs=None if y is None else y[index])

    def normal(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("obs", 20):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    def simulated(n=2000, d=3):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(n, d))
        y = (rng.random(n) < 1 / (1 + np.exp(-X @ np.linspace(-1, 1, d)))).astype(float)
        return X, y
""")

_FIT = _PROGRAMS + textwrap.dedent("""
    import sys
    import bayesgen as bg
    from bayesgen.distributed import init_process_group
    from pyro.infer.autoguide import AutoNormal

    ranks = init_process_group()
    X, y = simulated()
    runs = {"autonormal": (logistic, dict(engine="svi", guide=AutoNormal)),
            "normal": (logistic, dict(engine="svi", guide="normal")),
            "mle": (logistic_weights, dict(engine="mle"))}
    out = {}
    for label, (program, options) in runs.items():
        fit = bg.fit(program, {"X": X, "y": y, "batch": 64}, num_steps=150, seed=5, progress=False,
                     distributed=True, **options)
        out[label + "_loss"] = fit.sample_stats["loss"]
        out[label + "_w"] = fit.posterior["w"] if "w" in fit.posterior else fit.params["w"]
    gathered = ranks.gather(out)
    if ranks.is_root:
        for label in out:  # every process ends with the same fit
            np.testing.assert_array_equal(gathered[1][label], out[label])
        np.savez(sys.argv[1], **out)
    print("end", ranks.rank, flush=True)
""")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(script: str | None, tmp_path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Two processes of ``script`` (written to a file), or of ``args`` alone (``-m module ...``)."""
    target = []
    if script is not None:
        (tmp_path / "script.py").write_text(script)
        target = [str(tmp_path / "script.py")]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", *target, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True, cwd=tmp_path) as launched:
        try:
            stdout, stderr = launched.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launched.pid, signal.SIGKILL)  # torchrun and its workers: nothing left running
            raise
    return subprocess.CompletedProcess(command, launched.returncode, stdout, stderr)


def test_two_processes_fit_as_one_process_with_their_joint_minibatch(tmp_path):
    """Two processes taking 64 items each per step reach the parameters (and losses) of one
    process taking the same 128 items per step: data-parallel SVI with an AutoGuide and with a
    Gaussian family, and MLE of a program's weights, all within float tolerance."""
    result = _torchrun(_FIT, tmp_path, str(tmp_path / "out.npz"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    distributed = np.load(tmp_path / "out.npz")
    namespace: dict = {}
    exec(_PROGRAMS, namespace)
    X, y = namespace["simulated"]()
    runs = {"autonormal": (namespace["logistic"], dict(engine="svi", guide=AutoNormal)),
            "normal": (namespace["logistic"], dict(engine="svi", guide="normal")),
            "mle": (namespace["logistic_weights"], dict(engine="mle"))}
    for label, (program, options) in runs.items():
        fit = bg.fit(program, {"X": X, "y": y, "batch": 128}, num_steps=150, seed=5, progress=False, **options)
        w = fit.posterior["w"] if "w" in fit.posterior else fit.params["w"]
        np.testing.assert_allclose(distributed[label + "_loss"], fit.sample_stats["loss"], rtol=1e-9, err_msg=label)
        np.testing.assert_allclose(distributed[label + "_w"], w, rtol=1e-7, atol=1e-9, err_msg=label)


def test_two_processes_share_the_simulations_of_sbc(tmp_path):
    """Distributed SBC: each process runs every other simulation, and both end with the ranks one
    process gives with the same seed."""
    script = _PROGRAMS + textwrap.dedent("""
        import sys
        import bayesgen as bg
        from bayesgen.distributed import init_process_group

        ranks = init_process_group()
        torch.set_default_dtype(torch.float64)  # as the tests' own process (tests/conftest.py)
        result = bg.sbc(normal, engine="laplace", num_simulations=9, seed=4, progress=False, distributed=True)
        gathered = ranks.gather(result.ranks)
        if ranks.is_root:
            assert all(np.array_equal(gathered[1][k], result.ranks[k]) for k in result.ranks)
            np.savez(sys.argv[1], **result.ranks)
    """)
    result = _torchrun(script, tmp_path, str(tmp_path / "ranks.npz"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    distributed = np.load(tmp_path / "ranks.npz")
    namespace: dict = {}
    exec(_PROGRAMS, namespace)
    single = bg.sbc(namespace["normal"], engine="laplace", num_simulations=9, seed=4, num_workers=1, progress=False)
    assert sorted(distributed.files) == sorted(single.ranks)
    for name in single.ranks:
        np.testing.assert_array_equal(distributed[name], single.ranks[name])


def test_the_command_line_trains_a_vae_in_two_processes_and_rank_0_writes_it(tmp_path):
    """The issue's command: torchrun ... -m bayesgen fit MODEL --engine svi --distributed --out."""
    result = _torchrun(None, tmp_path, "-m", "bayesgen", "fit", "vae", "--engine", "svi", "--distributed",
                       "--arg", "batch_size=64", "--option", "num_steps=30", "--option", "num_particles=1",
                       "--quiet", "--out", "vae.nc")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("saved to vae.nc") == 1  # rank 0 only
    fit = bg.load(str(tmp_path / "vae.nc"))
    assert fit.info["processes"].startswith("2 ") and fit.params and fit.sample_stats["loss"].shape == (1, 30)


def test_two_processes_share_the_chains_and_give_the_draws_of_one_process(tmp_path):
    """The issue's command for NUTS: each process runs two of the four chains (every chain its own
    random stream), and the fit rank 0 writes holds, bitwise, the draws, step sizes and tree
    depths of the four chains run in one process with the same seed."""
    options = {"num_chains": 4, "num_warmup": 150, "num_samples": 100}
    result = _torchrun(None, tmp_path, "-m", "bayesgen", "fit", "eight_schools", "--engine", "nuts", "--distributed",
                       "--seed", "3", *[f"--option={key}={value}" for key, value in options.items()],
                       "--quiet", "--out", "nuts.nc")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("saved to nuts.nc") == 1
    distributed = bg.load(str(tmp_path / "nuts.nc"))
    single = bg.fit("eight_schools", engine="nuts", seed=3, progress=False, **options)
    assert distributed.info["processes"] == "2 (torch.distributed), each with its share of the chains"
    for name in single.posterior:
        np.testing.assert_array_equal(distributed.posterior[name], single.posterior[name], err_msg=name)
    for name in ("tree_depth", "n_steps", "step_size", "diverging"):
        np.testing.assert_array_equal(distributed.sample_stats[name], single.sample_stats[name], err_msg=name)


def test_static_hmc_shares_its_chains_too(tmp_path):
    script = _PROGRAMS + textwrap.dedent("""
        import sys
        import bayesgen as bg
        from bayesgen.distributed import init_process_group

        ranks = init_process_group()
        torch.set_default_dtype(torch.float64)  # as the tests' own process (tests/conftest.py)
        y = np.linspace(-1.0, 2.0, 20)
        fit = bg.fit(normal, {"y": y}, engine="hmc", num_chains=3, num_warmup=100, num_samples=50, seed=2,
                     progress=False, distributed=True)
        if ranks.is_root:
            np.save(sys.argv[1], fit.posterior["mu"])
    """)
    result = _torchrun(script, tmp_path, str(tmp_path / "mu.npy"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    namespace: dict = {}
    exec(_PROGRAMS, namespace)
    single = bg.fit(namespace["normal"], {"y": np.linspace(-1.0, 2.0, 20)}, engine="hmc", num_chains=3,
                    num_warmup=100, num_samples=50, seed=2, progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "mu.npy"), single.posterior["mu"])


def test_a_failing_process_ends_the_run_with_its_error(tmp_path):
    """Rank 1 raises inside the program while rank 0 waits for it in an all-reduce: torchrun ends
    the run with rank 1's error rather than leaving rank 0 to hang."""
    script = _PROGRAMS + textwrap.dedent("""
        import bayesgen as bg
        from bayesgen.distributed import init_process_group

        ranks = init_process_group()
        X, y = simulated()
        runs = [0]

        def fragile(X, y=None, batch=64):
            runs[0] += 1
            if ranks.rank == 1 and runs[0] > 40:  # in the middle of the steps
                raise RuntimeError("rank 1 broke on purpose")
            logistic(X, y, batch)

        bg.fit(fragile, {"X": X, "y": y}, engine="svi", guide="normal", num_steps=50, progress=False,
               distributed=True)
    """)
    result = _torchrun(script, tmp_path, timeout=120)
    assert result.returncode != 0
    assert "rank 1 broke on purpose" in result.stderr


def test_processes_given_other_data_or_seeds_are_refused_not_merged(tmp_path):
    """Rank 1 with other data: NUTS merged its chains with rank 0's and svi averaged their gradients,
    without a word."""
    script = _PROGRAMS + textwrap.dedent("""
        import sys
        import bayesgen as bg
        from bayesgen.distributed import init_process_group

        ranks = init_process_group()
        y = np.linspace(-1.0, 1.0, 20) + (100.0 if ranks.rank == 1 and sys.argv[1] == "data" else 0.0)
        seed = ranks.rank if sys.argv[1] == "seed" else 0
        bg.fit(normal, {"y": y}, engine="nuts", num_chains=2, num_warmup=20, num_samples=20, seed=seed,
               progress=False, distributed=True)
    """)
    for differ in ("data", "seed"):
        result = _torchrun(script, tmp_path, differ, timeout=120)
        assert result.returncode != 0, result.stderr
        assert f"were given different {differ}: start every process with the same" in result.stderr


def test_a_command_line_error_in_one_process_ends_the_run(tmp_path):
    """bayesgen's command line reports an error and returns 2 instead of raising: the process then
    waited for the others at exit while they waited for it in a collective, for ever."""
    script = textwrap.dedent("""
        import os, sys
        from bayesgen.cli import main

        extra = ["--option", "bogus=1"] if os.environ["RANK"] == "1" else []
        sys.exit(main(["fit", "eight_schools", "--engine", "nuts", "--distributed", "--quiet",
                       "--option", "num_chains=2", "--option", "num_warmup=20", "--option", "num_samples=20",
                       *extra]))
    """)
    result = _torchrun(script, tmp_path, timeout=120)
    assert result.returncode != 0 and "engine 'nuts' has no option 'bogus'" in result.stderr


def test_distributed_needs_a_process_group_and_an_engine_that_shares():
    X = np.zeros((100, 2))
    with pytest.raises(ValueError, match="initialised torch.distributed process group.*torchrun"):
        bg.fit(lambda X, y=None: None, {"X": X}, engine="svi", num_steps=2, distributed=True)
    with pytest.raises(ValueError, match="initialised torch.distributed process group.*torchrun"):
        bg.fit(lambda X, y=None: None, {"X": X}, engine="nuts", distributed=True)
    with pytest.raises(ValueError, match="engine 'laplace' cannot share a fit among processes"):
        bg.fit(lambda X, y=None: None, {"X": X}, engine="laplace", distributed=True)
