"""The one check for arguments that count something (draws, steps, folds, lags).

A count is an integer, numpy's and 0-d integer arrays and tensors included (``np.int64(100)`` from
an array's length is as good as ``100``), and never a bool (``True`` is an int to Python, but not
a count a user means). Every public function checks its counts here, so that they all accept the
same values and say so in the same words.
"""

from __future__ import annotations

import numbers

__all__ = ["check_count"]


def check_count(name: str, value: object, minimum: int = 1, none_means: str | None = None) -> int | None:
    """``value`` as an int of at least ``minimum``, or a ``ValueError`` naming ``name``.

    Parameters
    ----------
    name : str
        The argument's name, as the caller wrote it.
    value : object
        What the caller passed.
    minimum : int
        The least value allowed: 0 for "non-negative", 1 for "positive".
    none_means : str, optional
        Where None is allowed, what it means (such as ``"all draws"``); it is returned as None
        and the message says so. Without it, None is refused like any other non-integer.
    """
    if value is None and none_means is not None:
        return None
    if getattr(value, "ndim", None) == 0 and "int" in str(getattr(value, "dtype", "")):
        value = value.item()  # a 0-d integer array or tensor, as a fit's constant_data holds a size
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        wanted = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum,
                                                                          f"an integer of at least {minimum}")
        if none_means is not None:
            wanted += f" or None ({none_means})"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)
