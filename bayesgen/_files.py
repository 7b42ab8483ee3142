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
    temporary file is removed if writing fails. The file gets the permissions a plain ``open``
    would give it (those of the file it replaces, else 0666 less the umask), not the private
    0600 of a temporary file.
    """
    path = os.fspath(path)
    _check_place(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as exc:
        raise _refused(path, folder, exc) from exc
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def check_writable(path: str | os.PathLike[str], example: str = "fit.nc") -> None:
    """Raise, naming ``path``, where a file cannot be written there: its folder is missing or is not
    a folder, does not take new files, or ``path`` itself is a folder (``example`` is the file name
    offered in it). Commands that write a result at the end check first, so that a long fit is
    not lost."""
    path = os.fspath(path)
    _check_place(path, example)
    folder = os.path.dirname(os.path.abspath(path))
    try:  # the folder may exist and still refuse new files (permissions, a read-only or virtual file system)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.close(handle)
        os.remove(probe)
    except OSError as exc:
        raise _refused(path, folder, exc) from exc


def _check_place(path: str, example: str = "fit.nc") -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: the folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a folder; name a file in it, such as "
                                f"{os.path.join(path, example)!r}")


def _refused(path: str, folder: str, exc: OSError) -> PermissionError:
    return PermissionError(f"cannot write {path!r}: the folder {folder!r} does not take new files "
                           f"({exc.strerror or exc})")


def _mode_for(path: str) -> int:
    """The permission bits a new file at ``path`` should have."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)  # the only portable way to read it is to set it
        os.umask(umask)
        return 0o666 & ~umask


def save_figure(figure: Any, path: str | os.PathLike[str]) -> None:
    """Save a matplotlib figure to ``path`` (its format from the suffix, PNG without one), atomically."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda temporary: figure.savefig(temporary, format=fmt, dpi=100, bbox_inches="tight"))
