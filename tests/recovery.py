"""Parameter recovery: does a fit cover the parameters that simulated its data?"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

import bayesgen as bg


def coverage(fit: bg.Fit, truth: Mapping[str, Any], *, level: float = 0.95, num_sd: float = 3.0) -> dict[str, bool]:
    """One entry per scalar parameter, ``"site[i,j]" -> covered``.

    Sampling and approximate posteriors cover a true value that lies inside their central
    ``level`` interval; point fits (MLE/MAP) cover it within ``num_sd`` standard errors
    (for deterministic sites, the sd of the fit's Gaussian draws).
    """
    found: dict[str, bool] = {}
    for site, value in truth.items():
        value = np.asarray(value, dtype=float)
        if fit.kind == "point":
            if site in fit.point:
                point, se = np.asarray(fit.point[site]), np.asarray(fit.stderr[site])
            else:  # a deterministic site: its delta-method spread shows in the Gaussian draws
                draws = np.asarray(fit.posterior[site]).reshape((-1,) + value.shape)
                point, se = draws.mean(0), draws.std(0)
            inside = np.abs(point - value) <= num_sd * se
        else:
            draws = np.asarray(fit.posterior[site]).reshape((-1,) + value.shape)
            tail = (1.0 - level) / 2.0
            low, high = np.quantile(draws, [tail, 1.0 - tail], axis=0)
            inside = (low <= value) & (value <= high)
        for index in np.ndindex(value.shape):
            found[f"{site}[{','.join(map(str, index))}]" if index else site] = bool(inside[index])
    return found


def assert_recovers(fit: bg.Fit, truth: Mapping[str, Any], *, at_least: float = 0.9) -> None:
    """Fail, listing the misses, unless ``at_least`` of the scalar parameters are covered."""
    found = coverage(fit, truth)
    missed = [name for name, ok in found.items() if not ok]
    share = 1.0 - len(missed) / len(found)
    assert share >= at_least, f"{fit.engine} covers {share:.0%} of {len(found)} parameters; missed {missed}"
