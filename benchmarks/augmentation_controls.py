"""Why generated digits do not help: controls for examples/augmentation.py's protocol.

The augmentation example trains a fixed classifier (logistic regression, C = 1) on n real 8x8
digits per class, with and without 10 generated images per real one from generators fitted to
those same n x 10 images, and finds no gain. This script asks whether any generator fitted to
those images could have given one, with cheap stand-ins for what a fitted generative model can
add (no bayesgen fit: scikit-learn and numpy only, about a minute):

- the classifier's own regularisation: C = 0.3 and 3 instead of 1 (if the gain of extra data is
  a change of effective regularisation, this shows its size);
- LDA with Ledoit-Wolf shrinkage: the classifier that a class-conditional Gaussian with a shared
  covariance (the example's ``gaussian`` generator, in all 64 pixels) implies;
- 10 exact copies of each real image (more data that carry no new information);
- samples from that shrunk shared-covariance Gaussian, clipped to [0, 1];
- within-class mixup (convex combinations of two real images of one digit);
- pixel flips (each pixel flipped with probability 0.05) of the real images;
- one-pixel shifts of the real images (the 8 neighbours; a translation-aware generator's bias).

Each row is the mean test accuracy over the example's 10 seeds, and the one-sided Wilcoxon
signed-rank p-value of "above real only". Run ``python benchmarks/augmentation_controls.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon
from sklearn.covariance import ledoit_wolf
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import augmentation  # noqa: E402 -- the example's data split and classifier

FACTOR = 10


def _shift(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Images moved by ``(dx, dy)`` pixels, the uncovered border left blank."""
    square = images.reshape(-1, 8, 8)
    moved = np.zeros_like(square)
    rows, cols = slice(max(dy, 0), 8 + min(dy, 0)), slice(max(dx, 0), 8 + min(dx, 0))
    moved[:, rows, cols] = square[:, slice(max(-dy, 0), 8 + min(-dy, 0)), slice(max(-dx, 0), 8 + min(-dx, 0))]
    return moved.reshape(len(images), 64)


def _gaussian(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    means = np.stack([images[labels == digit].mean(0) for digit in range(10)])
    covariance, _ = ledoit_wolf(images - means[labels])
    factor = np.linalg.cholesky(covariance + 1e-9 * np.eye(64))
    made_labels = np.repeat(labels, FACTOR)
    made = means[made_labels] + rng.standard_normal((len(made_labels), 64)) @ factor.T
    return np.clip(made, 0.0, 1.0), made_labels


def _mixup(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    partners = np.array([rng.choice(np.flatnonzero(labels == labels[i]), FACTOR) for i in range(len(labels))])
    weights = rng.uniform(size=(len(labels), FACTOR, 1))
    made = weights * images[:, None] + (1 - weights) * images[partners]
    return made.reshape(-1, 64), np.repeat(labels, FACTOR)


def _flips(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    made = np.repeat(images, FACTOR, axis=0)
    return np.where(rng.random(made.shape) < 0.05, 1.0 - made, made), np.repeat(labels, FACTOR)


def _shifts(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    moves = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]
    return np.concatenate([_shift(images, *move) for move in moves]), np.tile(labels, len(moves))


def _copies(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(images, FACTOR, axis=0), np.repeat(labels, FACTOR)


GENERATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "real + 10 copies": _copies, "real + shared-covariance Gaussian": _gaussian, "real + within-class mixup": _mixup,
    "real + 5% pixel flips": _flips, "real + one-pixel shifts (x8)": _shifts,
}


def main() -> pd.DataFrame:
    pool, pool_labels, test, test_labels = augmentation.digits()
    rows = []
    for n in (5, 10, 20):
        for seed in range(10):
            rng = np.random.default_rng(seed)  # the example's draw of the n images per digit
            chosen = np.concatenate([rng.choice(np.flatnonzero(pool_labels == digit), n, replace=False)
                                     for digit in range(10)])
            images, labels = pool[chosen], pool_labels[chosen]
            row = {"n": n, "seed": seed, "real only": augmentation.accuracy(images, labels, test, test_labels)}
            for c in (0.3, 3.0):
                row[f"real only, C = {c:g}"] = float(LogisticRegression(C=c, max_iter=3000).fit(images, labels)
                                                     .score(test, test_labels))
            row["LDA, shrunk"] = float(LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
                                       .fit(images, labels).score(test, test_labels))
            for name, generate in GENERATORS.items():
                made, made_labels = generate(images, labels, np.random.default_rng(100 + seed))
                row[name] = augmentation.accuracy(np.concatenate([images, made]), np.r_[labels, made_labels],
                                                  test, test_labels)
            rows.append(row)
    table = pd.DataFrame(rows)
    methods = [column for column in table if column not in ("n", "seed", "real only")]
    summary = []
    for n, group in table.groupby("n"):
        for method in ["real only"] + methods:
            gain = group[method] - group["real only"]
            p = wilcoxon(gain, alternative="greater", zero_method="zsplit").pvalue if method != "real only" else np.nan
            summary.append({"n": n, "training data": method, "accuracy": group[method].mean(),
                            "gain": gain.mean(), "p (above real only)": p})
    frame = pd.DataFrame(summary).set_index(["n", "training data"])
    with pd.option_context("display.width", 140, "display.max_rows", 100):
        print(frame.round(3).to_string())
    return table


if __name__ == "__main__":
    main()
