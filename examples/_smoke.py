"""What the example scripts share in their ``--smoke`` mode: a banner, quiet diagnostics, honest titles.

A smoke run is a seconds-long check that a script works end to end, with far too few draws
and optimiser steps for valid inference. This module keeps such a run from looking like a
result:

- ``quiet`` prints a banner saying so and silences the warnings expected at that size;
- ``verdict`` leaves out the ``bg.check`` findings expected at that size
  (``bayesgen.diagnostics.short_run_findings``: R-hat, ESS, divergences, tree depth and E-BFMI
  of MCMC; an unfinished optimiser and the Pareto k-hat of an undertrained SVI) and says how
  many it left out;
- ``title`` and ``suptitle`` add a line to a plot's title saying that it is a smoke run.

Without ``--smoke`` nothing is silenced or left out. In a smoke run too, anything else (errors,
non-finite draws, an indefinite Hessian, a diverged loss, every other warning) is shown.

It is not an example itself (its name starts with an underscore, so ``tests/test_examples.py``
leaves it out). The scripts import it as ``_smoke``: Python puts the script's own folder on
``sys.path``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

import bayesgen as bg
from bayesgen.diagnostics import short_run_findings

__all__ = ["BANNER", "quiet", "suptitle", "title", "verdict"]

BANNER = ("smoke run: a quick check that everything works, with too few draws for valid inference.\n"
          "The numbers below are not results, and the convergence warnings expected at this size are hidden.")

# (message regex, category, module regex) of the warnings that too few draws bring about
EXPECTED_WARNINGS = [
    # ArviZ's density estimate of a chain too short to move off one value
    ("Your data appears to have a single value", UserWarning, ""),
    # ArviZ's check of the draws' shape, when a smoke run has more chains than draws
    (r"More chains \(\d+\) than draws", UserWarning, ""),
    # Pareto-smoothed importance sampling on a few heavy-tailed weights
    ("Estimated shape parameter of Pareto distribution", UserWarning, ""),
    # numpy's divisions by zero or NaN inside ArviZ's R-hat, ESS and MCSE of chains that barely move
    ("", RuntimeWarning, r"arviz(\.|$)"),
]


@contextlib.contextmanager
def quiet(smoke: bool) -> Iterator[None]:
    """In a smoke run print the banner and, inside the block, silence the warnings expected at that size."""
    with warnings.catch_warnings():
        if smoke:
            print(BANNER, flush=True)
            for message, category, module in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


def verdict(fit: bg.Fit, smoke: bool, max_chars: int | None = None) -> str:
    """``bg.check``'s findings as one line; in a smoke run without those expected of too few draws.

    ``max_chars`` cuts each finding to that length (long lists of parameter names).
    """
    findings = bg.check(fit)
    expected = short_run_findings(fit, findings) if smoke else []
    shown = [f[:max_chars] for f in findings if f not in expected]
    if expected:
        shown.append(f"{len(expected)} finding{'s' if len(expected) > 1 else ''} expected in a smoke run, not shown")
    return "; ".join(shown) or "no findings"


def title(text: str, smoke: bool) -> str:
    """A plot title, with a second line in a smoke run saying that the plot shows no valid result."""
    return f"{text}\nsmoke run: too few draws for valid inference" if smoke else text


def suptitle(axes: Any, text: str, smoke: bool) -> Any:
    """Title the whole figure of ``axes`` (e.g. ``bg.plot_compare``'s panels) and return the figure.

    The title takes the panel titles' font size, and the panels make room for it.
    """
    first = np.ravel(axes)[0]
    figure = first.figure
    figure.suptitle(title(text, smoke), fontsize=first.title.get_fontsize())
    figure.set_layout_engine("constrained")  # unlike tight_layout, it keeps the panel titles clear of this one
    return figure
