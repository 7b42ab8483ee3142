"""Each example runs end to end in its --smoke mode, in a subprocess, as a user would run it."""

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parent.parent / "examples").glob("*.py")
                  if not p.name.startswith("_"))  # _smoke.py: what the examples share


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
    """The --smoke runs of the selected examples, started together on a pool of one process per
    core, each on one thread: a run spends much of its time importing, on one core, so two at a
    time on two cores take about half as long as one after another (with two threads each, runs
    side by side contend and slow down several-fold)."""
    selected = [item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_example_runs_in_smoke_mode"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(script: Path, folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True,
                              timeout=600, cwd=folder, env=environment)

    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        yield {script: pool.submit(run, script, tmp_path_factory.mktemp(script.stem)) for script in selected}
        pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_in_smoke_mode(script, smoke_runs: dict[Path, Future]):
    result = smoke_runs[script].result()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_cli_lists_models_and_reports_errors_plainly():
    listing = subprocess.run([sys.executable, "-m", "bayesgen", "list"], capture_output=True, text=True)
    assert listing.returncode == 0 and "eight_schools" in listing.stdout and "nuts" in listing.stdout
    lines = listing.stdout.splitlines()
    vae = next(i for i, line in enumerate(lines) if line.split()[:1] == ["vae"])
    assert lines[vae + 1].split() == ["engines:", "svi"]  # the model's spec says which engines apply
    bad = subprocess.run([sys.executable, "-m", "bayesgen", "fit", "eight_school"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "Did you mean 'eight_schools'" in bad.stderr
    assert "Traceback" not in bad.stderr
