"""Files written whole or not at all: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "save_figure"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Have ``write`` write a temporary file beside ``path``, then rename it to ``path``.

    A rename within one folder is atomic, so a crash or Ctrl-C at any moment leaves either
    the previous file or the complete new one at ``path``, never a half-written one; the
    temporary file is removed if writing fails.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_figure(figure: Any, path: str | os.PathLike[str]) -> None:
    """Save a matplotlib figure to ``path`` (its format from the suffix, PNG without one), atomically."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda temporary: figure.savefig(temporary, format=fmt, dpi=100, bbox_inches="tight"))
