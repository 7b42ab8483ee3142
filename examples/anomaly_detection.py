"""Unsupervised anomaly detection with a fitted Gaussian model, against scikit-learn's detectors.

Protocol (Campos et al. 2016): each data set is made in 10 seeded versions, inliers from one
class plus a few outliers from the others, and every method scores all points without the
labels; the labels only grade the scores, by ROC-AUC and average precision.

- breast cancer (scikit-learn's WDBC): all 357 benign tumours + 10 malignant ones;
- wine: the 59 wines of the first cultivar + 10 of the other two;
- 8x8 digits: every image of one digit (the version's seed picks it) + 1% of the other digits'.

Features are standardised and reduced to their first principal components (fitted on each
version, without labels): 3 for the two tabular sets, 16 for the 64-pixel digits. bayesgen fits
the zoo's ``gmm`` (full covariances) by NUTS twice, with a Gaussian component and with a robust
Student-t one (``robust=True``: the few outliers fall in the heavy tails instead of widening
the inliers' covariance), and scores each point by ``bg.anomaly_scores``: minus its log
posterior predictive density. One component (``SETTINGS``): the inliers are one class. The
baselines are scikit-learn's IsolationForest, LocalOutlierFactor, the mean distance to the k
nearest neighbours, and a GaussianMixture by EM with the same number of components (so the
same Gaussian, fitted by maximum likelihood), on the same features.

The verdict depends on the reduction, for every method: at 5 components on breast cancer,
LocalOutlierFactor leads (benchmarks/README.md gives that run too).

Run ``python examples/anomaly_detection.py`` (``--smoke``: one version of one data set, a short
chain).

Reference: Campos, Zimek, Sander et al. (2016), "On the evaluation of unsupervised outlier
detection", Data Mining and Knowledge Discovery 30.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

import _smoke  # examples/_smoke.py: the banner and quiet diagnostics of --smoke runs
import bayesgen as bg

#: Principal components kept, and mixture components, per data set.
SETTINGS = {"breast_cancer": (3, 1), "wine": (3, 1), "digits": (16, 1)}


def versions(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One seeded version of a data set: ``(features, is_outlier)``."""
    from sklearn import datasets

    rng = np.random.default_rng(seed)
    if name == "breast_cancer":
        data = datasets.load_breast_cancer()
        inliers, others = data.data[data.target == 1], data.data[data.target == 0]  # 1: benign
        count = 10
    elif name == "wine":
        data = datasets.load_wine()
        inliers, others = data.data[data.target == 0], data.data[data.target != 0]
        count = 10
    else:
        data = datasets.load_digits()
        digit = seed % 10
        inliers, others = data.data[data.target == digit], data.data[data.target != digit]
        count = max(1, round(0.01 * len(others)))
    outliers = others[rng.choice(len(others), count, replace=False)]
    features = np.concatenate([inliers, outliers])
    return features, np.r_[np.zeros(len(inliers), bool), np.ones(count, bool)]


def reduce(features: np.ndarray, components: int) -> np.ndarray:
    """Standardised features projected on their first principal components, rescaled to unit sd."""
    from sklearn.decomposition import PCA

    sd = features.std(0)
    scaled = (features - features.mean(0)) / np.where(sd > 0, sd, 1.0)
    projected = PCA(components, random_state=0).fit_transform(scaled)
    return projected / projected.std(0)


def baseline_scores(x: np.ndarray, components: int, seed: int) -> dict[str, np.ndarray]:
    """Higher = more anomalous, for each scikit-learn detector."""
    from sklearn.ensemble import IsolationForest
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

    k = 10
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    lof = LocalOutlierFactor(n_neighbors=20).fit(x)
    return {
        "isolation forest": -IsolationForest(random_state=seed).fit(x).score_samples(x),
        "local outlier factor": -lof.negative_outlier_factor_,
        f"{k}-NN distance": distances[:, 1:].mean(1),
        "GMM (EM)": -GaussianMixture(components, covariance_type="full", random_state=seed).fit(x).score_samples(x),
    }


def bayesgen_scores(x: np.ndarray, components: int, seed: int, smoke: bool, robust: bool) -> np.ndarray:
    """``bg.anomaly_scores`` of the zoo's mixture, fitted by NUTS to the points it scores."""
    draws = 30 if smoke else 300
    data = {"y": x, "num_components": components, "robust": robust}
    fit = bg.fit("gmm", data, engine="nuts", num_chains=2, num_warmup=draws, num_samples=draws, seed=seed,
                 progress=False)
    return bg.anomaly_scores(fit, data)


def scores(name: str, seed: int, smoke: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every method's scores of one version of a data set, and which points are the outliers."""
    dims, components = SETTINGS[name]
    features, outlier = versions(name, seed)
    x = reduce(features, dims)
    return {f"bayesgen gmm (K={components})": bayesgen_scores(x, components, seed, smoke, robust=False),
            f"bayesgen robust gmm (K={components})": bayesgen_scores(x, components, seed, smoke, robust=True),
            **baseline_scores(x, components, seed)}, outlier


def main(smoke: bool = False) -> pd.DataFrame:
    """Score every version of every data set; print and return the table of ROC-AUC and AP."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    names = ["wine"] if smoke else list(SETTINGS)
    seeds = range(1) if smoke else range(10)
    rows = []
    for name in names:
        started = time.perf_counter()
        for seed in seeds:
            by_method, outlier = scores(name, seed, smoke)
            for method, score in by_method.items():
                rows.append({"data": name, "seed": seed, "method": method, "n": len(outlier),
                             "outliers": int(outlier.sum()), "roc_auc": roc_auc_score(outlier, score),
                             "average_precision": average_precision_score(outlier, score)})
        print(f"{name}: {len(seeds)} version(s) scored in {time.perf_counter() - started:.0f} s")
    table = pd.DataFrame(rows)
    summary = table.groupby(["data", "method"], sort=False).agg(
        n=("n", "mean"), outliers=("outliers", "mean"),
        auc_mean=("roc_auc", "mean"), auc_min=("roc_auc", "min"), auc_max=("roc_auc", "max"),
        ap_mean=("average_precision", "mean"), ap_min=("average_precision", "min"),
        ap_max=("average_precision", "max"))
    with pd.option_context("display.width", 140, "display.max_rows", 100):
        print(summary.round(3).to_string())
    best = summary["auc_mean"].groupby(level="data").idxmax()
    print("\nbest mean ROC-AUC: " + "; ".join(f"{data}: {method}" for data, (_, method) in best.items()))
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one version of one data set, short chains")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(smoke=args.smoke)
