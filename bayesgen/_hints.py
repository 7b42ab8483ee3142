"""The "did you mean" hint of every error that names something unknown (a model, an engine, an
option, a data key)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``known`` to ``name`` (difflib's ratio of at
    least 0.6, ignoring case: ``NUTS`` finds ``nuts``), or ``""`` when none is close: ready to
    append to a message's first sentence."""
    by_lower = {candidate.lower(): candidate for candidate in known}
    close = [by_lower[match] for match in difflib.get_close_matches(str(name).lower(), list(by_lower), n=1)]
    return f" Did you mean '{close[0]}'?" if close else ""
