"""The command line on the user's own programs and data files, and how it ends: a closed pipe,
Ctrl-C, a path that cannot be written."""

import json
import subprocess
import sys

import numpy as np
import pytest

import bayesgen as bg
from bayesgen.cli import main

PROGRAM = '''
import pyro
import pyro.distributions as dist


def schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(sigma)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def logistic(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Bernoulli(logits=w * x), obs=y)
'''

SCHOOLS = {"y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]}


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(PROGRAM)
    (tmp_path / "schools.json").write_text(json.dumps(SCHOOLS))
    x = np.linspace(-2.0, 2.0, 40)
    (tmp_path / "points.csv").write_text("x,y\n" + "".join(f"{a},{int(a > 0.3)}\n" for a in x))
    np.savez(tmp_path / "schools.npz", **{key: np.array(value) for key, value in SCHOOLS.items()})
    return tmp_path


def test_a_program_in_a_file_fits_to_a_data_file_as_through_the_api(files):
    assert main(["fit", "mine.py:schools", "--data", "schools.json", "--engine", "laplace", "--quiet",
                 "--out", "json.nc"]) == 0
    assert main(["fit", "mine.py:schools", "--data", "schools.npz", "--engine", "laplace", "--quiet",
                 "--out", "npz.nc"]) == 0
    import importlib.util

    spec = importlib.util.spec_from_file_location("mine", files / "mine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = bg.fit(module.schools, {key: np.array(value) for key, value in SCHOOLS.items()}, engine="laplace")
    for name in ("json.nc", "npz.nc"):
        np.testing.assert_allclose(bg.load(name).posterior["tau"], expected.posterior["tau"], rtol=1e-9)
    assert main(["fit", "mine.py:logistic", "--data", "points.csv", "--engine", "map", "--quiet"]) == 0
    assert main(["sbc", "mine.py:schools", "--data", "schools.json", "--engine", "laplace", "--num-simulations",
                 "3", "--quiet"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["fit", "mine.py:schols", "--data", "schools.json"], "mine.py has no function 'schols'; its functions: "
                                                            "logistic, schools"),
    (["fit", "mine.py", "--data", "schools.json"], r"name the program in mine.py: mine.py:FUNCTION"),
    (["fit", "other.py:schools"], "no program file 'other.py'"),
    (["fit", "mine.py:schools", "--data", "schools.txt"], "no data file 'schools.txt'"),
    (["fit", "mine.py:schools", "--data", "mine.py"], r"--data reads .npz, .csv and .json files"),
    (["fit", "eight_schools", "--engine", "laplace", "--out", "."], r"cannot write '.': it is a folder; name a file "
                                                                    r"in it, such as './fit.nc'"),
    (["fit", "eight_schools", "--engine", "laplace", "--out", "/proc/fit.nc"], r"cannot write '/proc/fit.nc': the "
                                                                              r"folder '/proc' does not take new files"),
])
def test_bad_program_data_and_output_paths_are_one_line_each(files, capsys, argv, message):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("bayesgen: error: ") and len(error.strip().splitlines()) == 1
    assert __import__("re").search(message, error), error


def test_a_reader_that_stops_early_costs_neither_the_fit_nor_a_traceback(files):
    run = subprocess.run(f"{sys.executable} -m bayesgen fit eight_schools --engine laplace --out piped.nc | head -1",
                         shell=True, capture_output=True, text=True, timeout=300)
    assert (files / "piped.nc").is_file() and "Traceback" not in run.stderr, run.stderr


def test_ctrl_c_is_a_line_and_status_130_and_a_kept_partial_fit_is_not_a_success(files, monkeypatch, capsys):
    real = bg.fit

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def stopped(*args, **kwargs):  # what an engine hands back after Ctrl-C: the work done so far
        fit = real(*args, **kwargs)
        fit.info["interrupted"] = "Ctrl-C after 10 of 100 steps"
        return fit

    monkeypatch.setattr(bg, "fit", interrupted)
    assert main(["fit", "eight_schools", "--engine", "laplace"]) == 130
    assert capsys.readouterr().err == "bayesgen: interrupted; nothing was saved\n"
    monkeypatch.setattr(bg, "fit", stopped)
    assert main(["fit", "eight_schools", "--engine", "laplace", "--out", "partial.nc"]) == 130
    assert (files / "partial.nc").is_file()
    assert "interrupted: the fit holds the work done before Ctrl-C (saved to partial.nc)" in capsys.readouterr().err


def test_compare_refuses_one_file_twice_and_a_bad_seed_before_any_work(files, capsys):
    assert main(["fit", "eight_schools", "--engine", "laplace", "--quiet", "--out", "a.nc"]) == 0
    capsys.readouterr()
    assert main(["compare", "a.nc", "./a.nc"]) == 2
    assert "a file is named twice" in capsys.readouterr().err
    assert main(["compare", "a.nc", "b.nc", "--seed", "-3"]) == 2
    assert capsys.readouterr().err == "bayesgen: error: seed must be a non-negative integer, got -3\n"


def test_a_program_file_imports_the_modules_beside_it(files):
    (files / "priors.py").write_text("SCALE = 5.0\n")
    (files / "uses.py").write_text("import pyro\nimport pyro.distributions as dist\nfrom priors import SCALE\n\n\n"
                                   "def model(y=None):\n    mu = pyro.sample('mu', dist.Normal(0.0, SCALE))\n"
                                   "    with pyro.plate('data', 8):\n"
                                   "        pyro.sample('y', dist.Normal(mu, 1.0), obs=y)\n")
    assert main(["fit", "uses.py:model", "--arg", "y=[1.0, 2.0, 0.5, 3.0, 1.5, 2.5, 0.0, 1.0]", "--engine", "laplace",
                 "--quiet"]) == 0
