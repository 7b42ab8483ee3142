"""Seeded work that leaves the caller's random generators as they were.

Pyro programs draw from torch's global generator, so a function that takes ``seed=`` seeds it
(``pyro.set_rng_seed``, which also seeds numpy's and Python's). Left at that, ``fit.generate(5,
seed=1)`` would reset a user's ``np.random`` and ``random`` streams as a side effect; the
functions that seed run under :func:`rng_restored`, which puts every global generator back on
the way out (on an error or Ctrl-C too), as NumPyro's explicit keys and PyMC's ``random_seed``
leave them.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from bayesgen._counts import check_count

__all__ = ["check_seed", "rng_restored"]


@contextlib.contextmanager
def rng_restored() -> Iterator[None]:
    """Save torch's (CPU, and the GPUs' where CUDA is in use), numpy's and Python's global
    generator states, and restore them when the block ends. Usable as a decorator."""
    cpu = torch.get_rng_state()
    gpus = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if gpus is not None:
            torch.cuda.set_rng_state_all(gpus)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def check_seed(seed: object) -> int:
    """``seed`` as an int, or a ``ValueError`` naming it: a non-negative integer (numpy's
    included) below 2**32, as torch, numpy's global generator and Python's ``random`` all accept."""
    seed = check_count("seed", seed, minimum=0)
    if seed >= 2**32:
        raise ValueError(f"seed must be below 2**32 (numpy's global generator takes 32 bits), got {seed}")
    return seed
