"""Data augmentation on 8x8 digits: does training on generated images help when real ones are few?

Protocol: scikit-learn's handwritten digits, binarised at 8 of 16, split once into a pool
(75%) and a fixed test set (25%), stratified by digit. For n = 5, 10 and 20 images per digit
and 10 seeds, the seed draws n pool images of each digit; a fixed classifier (scikit-learn's
logistic regression, C = 1) is trained on

- the n x 10 real images only;
- the real images plus 10 generated ones per real image, from each generative model below;
- the generated images only;

and scored by its accuracy on the test set. Each generator sees only the n x 10 real images:

- ``gaussian``: a class-conditional Gaussian in the space of the first 8 principal components of
  those images (one covariance shared by the digits, one mean per digit under a common prior),
  fitted by NUTS and written as a Pyro program here; ``bg.augment(fit, m, labels=...)`` draws
  from its posterior predictive for the digits asked for, mapped back to pixels and clipped
  to [0, 1]. One conditional model, fitted once.
- ``vae``: the zoo's VAE (2-dimensional codes) fitted by SVI to each digit's n images; ten
  fits, one per digit, each augmented with ``bg.augment(fit, m)``.

The table gives the mean test accuracy over the seeds and a one-sided Wilcoxon signed-rank
test (paired by seed) of "real + generated is more accurate than real only".

Run ``python examples/augmentation.py`` (``--smoke``: n = 5, one seed, short runs, so no paired
test).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

import _smoke  # examples/_smoke.py: the banner and quiet diagnostics of --smoke runs
import bayesgen as bg

#: Principal components of the Gaussian generator; generated images per real image.
COMPONENTS, FACTOR = 8, 10


def class_gaussians(labels: torch.Tensor, features: torch.Tensor | None = None, num_classes: int = 10) -> None:
    """``features_i ~ MVN(mean[labels_i], Sigma)``: one mean per class, one shared covariance.

    Means ``~ Normal(0, 2)`` per component, ``Sigma = diag(scale) Omega diag(scale)`` with
    ``scale ~ HalfNormal(2)`` and ``Omega ~ LKJ(2)``. ``labels`` sizes the data, so that a
    class's features are simulated by passing only its labels.
    """
    dim = COMPONENTS
    scale = pyro.sample("scale", dist.HalfNormal(2.0 * torch.ones(dim)).to_event(1))
    corr = pyro.sample("corr", dist.LKJCholesky(dim, 2.0))
    with pyro.plate("classes", num_classes):
        means = pyro.sample("means", dist.Normal(torch.zeros(dim), 2.0).to_event(1))
    with pyro.plate("images", len(labels)):
        pyro.sample("features", dist.MultivariateNormal(Vindex(means)[..., labels, :],
                                                        scale_tril=scale[..., None] * corr), obs=features)


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(pool images, pool labels, test images, test labels)``: binarised, images flat (N, 64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images >= 8).reshape(len(data.images), -1).astype(np.float64)
    pool, test, pool_labels, test_labels = train_test_split(images, data.target, test_size=0.25,
                                                            stratify=data.target, random_state=0)
    return pool, pool_labels, test, test_labels


def gaussian_images(images: np.ndarray, labels: np.ndarray, seed: int, smoke: bool) -> tuple[np.ndarray, np.ndarray]:
    """``FACTOR`` generated images per real one from the class-conditional Gaussian, and their labels."""
    from sklearn.decomposition import PCA

    pca = PCA(COMPONENTS, random_state=0).fit(images)
    features = pca.transform(images)
    sd = features.std()
    draws = 50 if smoke else 500
    fit = bg.fit(class_gaussians, {"labels": labels, "features": features / sd}, engine="nuts", num_chains=2,
                 num_warmup=draws, num_samples=draws, seed=seed, progress=False)
    wanted = np.repeat(labels, FACTOR)
    made = bg.augment(fit, len(wanted), seed=seed, labels=wanted)["features"]
    return np.clip(pca.inverse_transform(made * sd), 0.0, 1.0), wanted


def vae_images(images: np.ndarray, labels: np.ndarray, seed: int, smoke: bool) -> tuple[np.ndarray, np.ndarray]:
    """``FACTOR`` generated images per real one from a VAE per digit, and their labels."""
    made, made_labels = [], []
    for digit in np.unique(labels):
        own = images[labels == digit].reshape(-1, 8, 8).astype(np.float32)
        fit = bg.fit("vae", {"images": own, "latent_dim": 2, "hidden": 64}, engine="svi",
                     num_steps=50 if smoke else 1000, lr=0.01, seed=seed, progress=False)
        made.append(bg.augment(fit, FACTOR * len(own), seed=seed)["images"].reshape(-1, 64))
        made_labels.append(np.full(FACTOR * len(own), digit))
    return np.concatenate(made).astype(np.float64), np.concatenate(made_labels)


def accuracy(images: np.ndarray, labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray) -> float:
    """Test accuracy of the fixed classifier trained on ``images``."""
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(C=1.0, max_iter=2000).fit(images, labels)
    return float(classifier.score(test, test_labels))


def main(smoke: bool = False) -> pd.DataFrame:
    """Train and score for every n and seed; print and return the table."""
    from scipy.stats import wilcoxon

    pool, pool_labels, test, test_labels = digits()
    sizes, seeds = ([5], range(1)) if smoke else ([5, 10, 20], range(10))
    rows = []
    for n in sizes:
        started = time.perf_counter()
        for seed in seeds:
            rng = np.random.default_rng(seed)
            chosen = np.concatenate([rng.choice(np.flatnonzero(pool_labels == digit), n, replace=False)
                                     for digit in range(10)])
            images, labels = pool[chosen], pool_labels[chosen]
            row = {"n": n, "seed": seed, "real only": accuracy(images, labels, test, test_labels)}
            for name, generator in {"gaussian": gaussian_images, "vae": vae_images}.items():
                made, made_labels = generator(images, labels, seed, smoke)
                row[f"real + {name}"] = accuracy(np.concatenate([images, made]), np.r_[labels, made_labels],
                                                 test, test_labels)
                row[f"{name} only"] = accuracy(made, made_labels, test, test_labels)
            rows.append(row)
        print(f"n = {n}: {len(seeds)} seed(s) in {time.perf_counter() - started:.0f} s")
    table = pd.DataFrame(rows)
    summary = table.drop(columns="seed").groupby("n").mean()
    if len(seeds) > 1:
        for name in ("gaussian", "vae"):
            gain = table[f"real + {name}"] - table["real only"]
            summary[f"p (real + {name} > real)"] = [
                wilcoxon(gain[table["n"] == n], alternative="greater", zero_method="zsplit").pvalue for n in sizes]
    with pd.option_context("display.width", 160):
        print("mean test accuracy over the seeds (and the paired test's p-value)")
        print(summary.round(3).to_string())
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="n = 5, one seed, short runs")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(smoke=args.smoke)
