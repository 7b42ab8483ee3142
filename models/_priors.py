"""Priors shared by zoo models."""

from __future__ import annotations

import pyro.distributions as dist
from pyro.distributions.transforms import OrderedTransform

__all__ = ["ordered_locations"]


def ordered_locations(num: int, first_scale: float = 1.0, log_gap_scale: float = 1.0) -> dist.Distribution:
    """A proper prior on increasing locations ``l_1 < ... < l_num``: label switching ruled out.

    ``l_1 ~ Normal(0, first_scale)`` and each gap ``l_{k+1} - l_k ~ LogNormal(0, log_gap_scale)``
    (Pyro's ``OrderedTransform`` of independent normals). On standardised data the gaps'
    median of 1 and the unit first location are weakly informative. Its support is
    ``ordered_vector``, so samplers move in the unconstrained normals directly.

    Parameters
    ----------
    num : int
        The number of locations.
    first_scale : float
        Prior sd of the first (smallest) location.
    log_gap_scale : float
        Prior sd of the log of each gap between consecutive locations.

    Returns
    -------
    pyro.distributions.Distribution
        A distribution with event shape ``(num,)`` and an empty batch shape.
    """
    base = dist.Normal(0.0, first_scale).expand([num]).to_event(1)
    if log_gap_scale != first_scale:
        scales = base.base_dist.scale.new_full((num,), log_gap_scale)
        scales[0] = first_scale
        base = dist.Normal(0.0, scales).to_event(1)
    return dist.TransformedDistribution(base, [OrderedTransform()])
