"""No lost work: Ctrl-C hands back a partial fit, checkpoints resume bit for bit, saves are atomic."""

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

import bayesgen as bg
import bayesgen.inference._gaussian_vi as gaussian_vi
from programs import line
from bayesgen._files import atomic_write

DATA = {"x": np.linspace(-1, 1, 30), "y": np.sin(np.linspace(-1, 1, 30)) + 0.1}




def _stop_at(monkeypatch, owner, name, step):
    """Make ``owner.name`` (a step function) raise KeyboardInterrupt on its ``step``-th call, as
    Ctrl-C at that step would."""
    original = getattr(owner, name)
    calls = {"count": 0}

    def stopping(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == step:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, stopping)


def _same_fit(first, second):
    assert first.posterior.keys() == second.posterior.keys()
    for name in first.posterior:
        assert np.array_equal(first.posterior[name], second.posterior[name]), name
    assert np.array_equal(first.sample_stats["loss"], second.sample_stats["loss"])


@pytest.mark.parametrize("guide", ["mvn", AutoNormal], ids=["mvn", "AutoNormal"])
def test_resuming_from_a_checkpoint_gives_the_uninterrupted_fit(tmp_path, monkeypatch, guide):
    options = {"guide": guide, "num_steps": 200, "num_draws": 50, "seed": 3, "progress": False}
    whole = bg.fit(line, DATA, engine="svi", **options)
    path = str(tmp_path / "svi.pt")
    owner, name = (gaussian_vi._GaussianRun, "step") if guide == "mvn" else (pyro.infer.SVI, "step")
    with monkeypatch.context() as patch:
        _stop_at(patch, owner, name, 131)
        with pytest.warns(RuntimeWarning, match="interrupted"):
            stopped = bg.fit(line, DATA, engine="svi", checkpoint=path, checkpoint_every=50, **options)
    assert stopped.info["interrupted"] and stopped.sample_stats["loss"].shape == (1, 130)
    assert any("interrupted" in finding for finding in bg.check(stopped))
    resumed = bg.fit(line, DATA, engine="svi", resume=path, **options)  # from step 100
    _same_fit(whole, resumed)
    assert "interrupted" not in resumed.info


class Curve(torch.nn.Module):
    """y ~ N(net(x), 0.1): a small network, its weights ``pyro.module`` parameters."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def forward(self, x, y=None):
        pyro.module("curve", self)
        with pyro.plate("data", x.shape[0], subsample_size=10) as index:
            mean = self.net(x[index, None]).squeeze(-1)
            pyro.sample("y", dist.Normal(mean, 0.1), obs=None if y is None else y[index])


def test_a_network_trained_by_mle_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The deep-model optimisers (MLE/MAP by Adam, minibatches drawn at random) checkpoint too."""
    options = {"num_steps": 120, "lr": 0.05, "seed": 1, "progress": False}
    torch.manual_seed(0)
    whole = bg.fit(Curve(), DATA, engine="mle", **options)
    path = str(tmp_path / "mle.pt")
    with monkeypatch.context() as patch:
        _stop_at(patch, pyro.infer.SVI, "step", 71)
        torch.manual_seed(0)
        with pytest.warns(RuntimeWarning, match="interrupted"):
            bg.fit(Curve(), DATA, engine="mle", checkpoint=path, checkpoint_every=35, **options)
    torch.manual_seed(0)
    resumed = bg.fit(Curve(), DATA, engine="mle", resume=path, **options)
    assert whole.params.keys() == resumed.params.keys() and len(whole.params) == 4
    for name in whole.params:
        assert np.array_equal(whole.params[name], resumed.params[name]), name
    assert np.array_equal(whole.sample_stats["loss"], resumed.sample_stats["loss"])
    with pytest.raises(ValueError, match="network weights"):
        bg.fit(line, DATA, engine="mle", checkpoint=path)


def test_a_gan_resumes_bit_for_bit(tmp_path, monkeypatch):
    from bayesgen.datasets import binary_digits
    from bayesgen.inference.gan import _Game

    data = {"images": binary_digits()[0][:100]}
    options = {"engine": "gan", "num_steps": 30, "batch_size": 16, "seed": 2, "progress": False}
    whole = bg.fit("gan", data, **options)
    path = str(tmp_path / "gan.pt")
    with monkeypatch.context() as patch:
        _stop_at(patch, _Game, "step", 21)
        with pytest.warns(RuntimeWarning, match="interrupted"):
            stopped = bg.fit("gan", data, checkpoint=path, checkpoint_every=10, **options)
    assert stopped.sample_stats["discriminator_loss"].shape == (1, 20)
    resumed = bg.fit("gan", data, resume=path, **options)
    for name in whole.params:
        assert np.array_equal(whole.params[name], resumed.params[name]), name
    for stat in ("loss", "discriminator_loss"):
        assert np.array_equal(whole.sample_stats[stat], resumed.sample_stats[stat]), stat


def test_a_guide_function_is_named_in_the_fingerprint_not_by_its_address():
    from bayesgen.registry import describe_option

    assert describe_option(line) == "programs.line" and describe_option(AutoNormal).endswith("AutoNormal")
    assert describe_option(0.05) == "0.05"

    class Guide:
        def encode(self):
            pass

    # an instance, a bound method and a partial without the memory address that differs between processes
    assert " at 0x" not in describe_option(Guide()) and describe_option(Guide().encode).endswith("Guide.encode")
    assert describe_option(functools.partial(line, 1.0)) == "partial(programs.line, 1.0)"


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    path = str(tmp_path / "svi.pt")
    bg.fit(line, DATA, engine="svi", guide="mvn", num_steps=20, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="other settings.*lr"):
        bg.fit(line, DATA, engine="svi", guide="mvn", num_steps=20, lr=0.1, resume=path, progress=False)
    with pytest.raises(FileNotFoundError, match="resume"):
        bg.fit(line, DATA, engine="svi", guide="mvn", resume=str(tmp_path / "none.pt"), progress=False)


def _line_with_noise_scale(x, y=None):
    """programs.line with one more latent site: its noise scale."""
    slope = pyro.sample("slope", dist.Normal(0.0, 1.0))
    scale = pyro.sample("scale", dist.HalfNormal(1.0))
    with pyro.plate("obs", x.shape[0]):
        pyro.sample("y", dist.Normal(slope * x, scale), obs=y)


def test_a_checkpoint_of_other_data_or_another_program_is_refused(tmp_path):
    path = str(tmp_path / "svi.pt")
    bg.fit(line, DATA, engine="svi", guide="mvn", num_steps=20, checkpoint=path, progress=False)
    shifted = {**DATA, "y": DATA["y"] + 1.0}
    with pytest.raises(ValueError, match=r"other settings \(the data differ\)"):
        bg.fit(line, shifted, engine="svi", guide="mvn", num_steps=20, resume=path, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(the program sites differ\)"):
        bg.fit(_line_with_noise_scale, DATA, engine="svi", guide="mvn", num_steps=20, resume=path, progress=False)
    with pytest.raises(ValueError, match=r"is not a bayesgen checkpoint \(torch.load could not read it: \w+\)$"):
        bg.fit(line, DATA, engine="svi", guide="mvn", num_steps=20, resume=__file__, progress=False)


_KILLED_RUN = """
import sys
import time
import torch
import bayesgen as bg
import bayesgen.inference._gaussian_vi as gaussian_vi
from programs import line
from test_checkpoints import DATA

torch.set_default_dtype(torch.float64)  # as tests/conftest.py sets it for the test that resumes
torch.set_num_threads(1)

step = gaussian_vi._GaussianRun.step


def slow_step(self):
    time.sleep(0.01)  # slow enough for the test to kill it between checkpoints
    return step(self)


gaussian_vi._GaussianRun.step = slow_step
bg.fit(line, DATA, engine="svi", guide="mvn", num_steps=400, num_draws=50, seed=3,
       checkpoint=sys.argv[1], checkpoint_every=40, progress=False)
"""


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL, no chance to clean up: the checkpoint on disk is whole, and resuming from it
    gives bit for bit the fit of the run that was never killed."""
    path = tmp_path / "svi.pt"
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (path.exists() and len(torch.load(path, weights_only=True)["losses"]) >= 120):
            assert process.poll() is None and time.monotonic() < deadline, "the run ended or never checkpointed"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = len(torch.load(path, weights_only=True)["losses"])
    assert 120 <= done < 400 and done % 40 == 0
    options = {"guide": "mvn", "num_steps": 400, "num_draws": 50, "seed": 3, "progress": False}
    _same_fit(bg.fit(line, DATA, engine="svi", **options),
              bg.fit(line, DATA, engine="svi", resume=str(path), **options))


def test_ctrl_c_during_svi_returns_the_steps_done():
    """A real SIGINT from a timer thread, as a user's Ctrl-C, during a long run."""
    timer = threading.Timer(3.0, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(RuntimeWarning, match="interrupted"):
            fit = bg.fit(line, DATA, engine="svi", guide="normal", num_steps=10_000_000, progress=False)
    finally:
        timer.cancel()
    steps = fit.sample_stats["loss"].shape[1]
    assert 0 < steps < 10_000_000 and fit.info["interrupted"] and not fit.info["converged"]
    assert fit.info["interrupted_note"] == f"stopped after {steps} of 10000000 steps"
    assert fit.posterior["a"].shape == (1, 1000) and np.isfinite(fit.posterior["a"]).all()
    assert any("interrupted" in finding for finding in bg.check(fit))


def test_an_interrupted_save_leaves_the_previous_file(tmp_path, monkeypatch):
    fit = bg.fit(line, DATA, engine="laplace")
    path = tmp_path / "fit.nc"
    fit.save(str(path))
    before = path.read_bytes()

    def fail(source, target):
        raise KeyboardInterrupt  # between writing the new file and renaming it over the old one

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        fit.save(str(path))
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["fit.nc"]
    assert bg.load(str(path)).posterior.keys() == fit.posterior.keys()


def test_atomic_write_removes_its_temporary_file_when_writing_fails(tmp_path):
    def broken(temporary):
        Path(temporary).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "file.txt", broken)
    assert os.listdir(tmp_path) == []


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "new.txt", lambda temporary: Path(temporary).write_text("x"))
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
        (tmp_path / "shared.txt").write_text("old")
        (tmp_path / "shared.txt").chmod(0o664)
        atomic_write(tmp_path / "shared.txt", lambda temporary: Path(temporary).write_text("new"))
        assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o664  # a replaced file keeps its mode
    finally:
        os.umask(umask)


def test_writing_onto_a_folder_is_refused_naming_it_not_a_temporary_file(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"cannot write '.*': it is a folder; name a file in it, such as "
                                                r"'.*fit.nc'"):
        atomic_write(tmp_path, lambda temporary: Path(temporary).write_text("x"))
    assert os.listdir(tmp_path) == []
