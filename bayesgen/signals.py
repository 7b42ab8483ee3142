"""Mu-law companding: the 8-bit (``mu = 255``) quantisation of audio-like signals that WaveNet models.

A signal in ``[-1, 1]`` is compressed by the mu-law curve (ITU-T G.711; van den Oord et al. 2016)

    ``F(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu)``,

which spends more levels near zero, where speech spends most of its time, and the compressed
value is quantised uniformly into ``mu + 1`` integer codes ``0..mu``. A model of the codes is a
categorical over ``mu + 1`` classes, so its held-out log-likelihood is in bits (or nats) per
sample and comparable across models that see the same codes.

- :func:`mu_law_encode`: signal to codes.
- :func:`mu_law_decode`: codes to the signal value at the centre of each code's level.
- :func:`mu_law_bin_edges`: each code's interval in the signal domain, for models that put a
  continuous density on the signal and need each code's probability mass.

Each accepts numpy arrays or torch tensors and returns numpy arrays.

>>> import numpy as np
>>> mu_law_encode(np.array([-1.0, 0.0, 1.0]))
array([  0, 128, 255])
>>> mu_law_decode(mu_law_encode(np.array([-1.0, 1.0])))
array([-1.,  1.])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mu_law_bin_edges", "mu_law_decode", "mu_law_encode"]


def _as_numpy(values: Any) -> np.ndarray:
    """A numpy view of an array, list or torch tensor (detached and moved to the CPU)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _check_mu(mu: int) -> int:
    if isinstance(mu, bool) or not isinstance(mu, (int, np.integer)) or mu < 1:
        raise ValueError(f"mu must be a positive integer (255 for 8-bit codes), got {mu!r}")
    return int(mu)


def _compress(x: np.ndarray, mu: int) -> np.ndarray:
    """``F(x)``: the mu-law curve, ``[-1, 1]`` onto ``[-1, 1]``."""
    return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def _expand(y: np.ndarray, mu: int) -> np.ndarray:
    """``F^{-1}(y)``: the inverse of the mu-law curve (exactly -1 and 1 at the ends)."""
    return np.sign(y) * (np.power(1.0 + mu, np.abs(y)) - 1.0) / mu


def mu_law_encode(signal: Any, mu: int = 255) -> np.ndarray:
    """Integer codes ``0..mu`` of a signal in ``[-1, 1]``, as int64 of the signal's shape.

    The compressed value ``F(x)`` in ``[-1, 1]`` is mapped onto ``[0, mu]`` and rounded to the
    nearest integer, halves rounding up, so that code ``k`` is exactly the interval
    ``[edges[k], edges[k + 1])`` of :func:`mu_law_bin_edges`.

    Parameters
    ----------
    signal : array_like or torch.Tensor
        Finite values in ``[-1, 1]``; anything else has no code and raises ``ValueError``
        (scale a signal first, e.g. with :func:`bayesgen.datasets.scale_to_unit`).
    mu : int
        Number of levels minus one (255 gives 256 codes, 8 bits).
    """
    mu = _check_mu(mu)
    x = _as_numpy(signal).astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("the signal holds NaN or infinite values; mu-law codes need finite values in [-1, 1]")
    if x.size and (x.min() < -1.0 or x.max() > 1.0):
        raise ValueError(f"the signal must lie in [-1, 1] for mu-law coding, got values in "
                         f"[{x.min():.6g}, {x.max():.6g}]")
    level = (_compress(x, mu) + 1.0) / 2.0 * mu
    return np.clip(np.floor(level + 0.5), 0, mu).astype(np.int64)


def mu_law_decode(codes: Any, mu: int = 255) -> np.ndarray:
    """The signal value, float64 in ``[-1, 1]``, at the centre of each code's level.

    Centre means the middle of the code's step on the compressed scale, ``F^{-1}(2k / mu - 1)``;
    :func:`mu_law_encode` gives every such value back its own code.

    Parameters
    ----------
    codes : array_like or torch.Tensor
        Whole numbers in ``0..mu``.
    mu : int
        As given to :func:`mu_law_encode`.
    """
    mu = _check_mu(mu)
    k = _as_numpy(codes)
    if k.dtype == np.bool_ or not (np.issubdtype(k.dtype, np.integer) or np.issubdtype(k.dtype, np.floating)):
        raise ValueError(f"codes must be integers in 0..{mu}, got dtype {k.dtype}")
    if k.size and (not np.isfinite(k).all() or (k != np.round(k)).any() or k.min() < 0 or k.max() > mu):
        raise ValueError(f"codes must be whole numbers in 0..{mu}")
    return _expand(2.0 * k.astype(np.float64) / mu - 1.0, mu)


def mu_law_bin_edges(mu: int = 255) -> np.ndarray:
    """The ``mu + 2`` edges, in the signal domain, of the intervals that the codes stand for.

    Code ``k`` is the interval ``[edges[k], edges[k + 1])``: ``edges[0] = -inf`` and
    ``edges[mu + 1] = +inf`` (so the outer codes also take the tails of a density that spills
    beyond ``[-1, 1]``), and between them the points halfway between consecutive decoded levels
    on the compressed scale, ``F^{-1}((2k - 1) / mu - 1)`` for ``k = 1..mu``, which are where
    :func:`mu_law_encode` switches from one code to the next. (Halfway on the signal scale
    would not agree with the encoder: ``F^{-1}`` is curved, so those points sit off the
    switching points.) The edges are strictly increasing and symmetric about zero.
    """
    mu = _check_mu(mu)
    inner = _expand((2.0 * np.arange(1, mu + 1) - 1.0) / mu - 1.0, mu)
    return np.concatenate([[-np.inf], inner, [np.inf]])
