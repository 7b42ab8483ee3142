"""Each example runs end to end in its --smoke mode, in a subprocess, as a user would run it."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parent.parent / "examples").glob("*.py")
                  if not p.name.startswith("_"))  # _smoke.py: what the examples share


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_in_smoke_mode(script, tmp_path):
    result = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
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
