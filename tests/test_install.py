"""A regular (non-editable) install works outside the source tree: the wheel holds the whole package and
``bayesgen demo --smoke`` runs from it, printing what a newcomer needs and writing files that ArviZ opens."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and installed (without dependencies, which this environment has) into a folder."""
    build = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(build),
                    str(ROOT)], check=True, capture_output=True, text=True)
    wheel = next(build.glob("bayesgen-*.whl"))
    target = build / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    return wheel, target


def test_the_wheel_holds_the_core_the_zoo_the_engines_and_the_demo(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("bayesgen/__init__.py", "bayesgen/demo.py", "bayesgen/cli.py", "bayesgen/models/eight_schools.py",
                   "bayesgen/models/linear_regression.py", "bayesgen/inference/nuts.py", "bayesgen/_replay/runtime.py"):
        assert module in names
    assert not any(name.startswith(("models/", "inference/", "tests/", "examples/")) for name in names)


@pytest.mark.slow
def test_demo_smoke_runs_from_the_installed_wheel_outside_the_source_tree(installed, tmp_path):
    _, target = installed
    env = {**os.environ, "PYTHONPATH": str(target), "MPLBACKEND": "Agg"}
    where = subprocess.run([sys.executable, "-c", "import bayesgen.demo as d; print(d.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(target)  # the wheel's copy, not the source checkout
    run = subprocess.run([sys.executable, "-m", "bayesgen", "demo", "--smoke"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    lines = out.splitlines()
    assert lines[0].startswith("bayesgen demo: Bayesian linear regression") and "diabetes" in lines[1]
    assert "smoke run" in out and "too few draws" in out
    assert max(len(line) for line in lines) < 100
    for engine in ("nuts", "hmc", "svi-mf", "svi-mvn", "laplace", "map", "mle"):
        assert any(line.split()[:1] == [engine] for line in lines), engine  # verdict and table rows
    assert "no problems found" in out  # bg.check's verdict in words (the optimisers at least)
    assert "too narrow" in out  # mean-field's real flaw is shown; only a short run's findings are counted
    assert "next:" in out and "bayesgen summary bayesgen-demo/nuts.nc" in out
    assert "Traceback" not in run.stderr and "Warning" not in run.stderr
    folder = tmp_path / "bayesgen-demo"
    assert (folder / "compare.png").stat().st_size > 10_000
    import arviz as az

    import bayesgen as bg

    for engine in ("nuts", "svi-mvn", "mle"):
        idata = az.from_netcdf(folder / f"{engine}.nc")
        # a sampler's statistics are per draw; an optimiser's loss is per step, in a group of its own
        assert {"posterior", "sample_stats" if engine == "nuts" else "optimization", "observed_data"} <= set(
            idata.groups())
        assert idata.posterior["beta"].shape[-1] == 10
        assert bg.load(str(folder / f"{engine}.nc")).engine == engine.split("-")[0]
