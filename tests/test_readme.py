"""The README's command-line section works when pasted into an empty folder, command by command."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _command_line_section() -> list[str]:
    """The commands of the first ``bash`` block under the README's "The command line" heading."""
    text = README.read_text()
    section = text[text.index("## The command line"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the command-line section has no bash block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    return [command for command in commands if command]


def test_the_section_uses_only_the_bayesgen_command():
    commands = _command_line_section()
    assert len(commands) >= 6 and all(command.startswith("bayesgen ") for command in commands)


@pytest.mark.slow
def test_every_command_of_the_section_succeeds_in_an_empty_folder(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    for command in _command_line_section():
        args = [sys.executable, "-m", "bayesgen"] + shlex.split(command)[1:]
        run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{command}\n{run.stderr[-3000:]}"
        assert "Traceback" not in run.stderr, command
    written = {path.name for path in tmp_path.iterdir()}
    assert {"nuts.nc", "svi.nc", "overlay.png", "sbc.png"} <= written
