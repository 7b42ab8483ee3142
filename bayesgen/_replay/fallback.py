"""Saying that a fast path is not available: once where a user sees it, then quietly."""

from __future__ import annotations

import logging

import torch

__all__ = ["FELL_BACK", "fell_back"]

_log = logging.getLogger(__name__)

#: The fast paths that have fallen back in this process (see :func:`fell_back`).
FELL_BACK: set[str] = set()


def fell_back(path: str, reason: str) -> None:
    """Log that a fast path (TorchScript, Inductor's compilation, the buffer-reusing wrapper) is
    not available: at warning level the first time in a process, then at debug level.

    These fail for reasons of the installed torch (a private Inductor interface that changed, a
    missing compiler), not of the program: the fit still runs, several times slower, so the
    first one is said where a user sees it instead of being swallowed.
    """
    level = logging.DEBUG if path in FELL_BACK else logging.WARNING
    FELL_BACK.add(path)
    _log.log(level, "bayesgen's fast path '%s' failed on this program (%s), so it samples and optimises "
             "with slower code that gives the same results; this comes from torch %s meeting the program's "
             "graph, not from your data: report it with the program if that torch is one setup.cfg lists",
             path, reason, torch.__version__)
