"""Logistic regression: breast cancer diagnosis from 30 nuclear features, three engines.

Fits bayesgen's logistic regression (Normal(0, 1) priors on the coefficients of
standardised covariates) to the Wisconsin diagnostic breast cancer data that scikit-learn
bundles (569 tumours, y = 1 for benign) with NUTS (dense mass matrix: the features are
strongly correlated), the Laplace approximation and full-rank Gaussian SVI. Prints how far
each approximation's means and sds are from NUTS's (``bg.compare``), the in-sample accuracy
of the posterior predictive, and writes a forest plot of the coefficients under the three
engines to ``logistic_regression_forest.png``. The classes are almost separable, so the
likelihood alone has no finite maximum: the prior does real work here and ``mle`` is not
used.

Run ``python examples/logistic_regression.py`` (``--smoke`` for a seconds-long check).

References: Street, Wolberg & Mangasarian (1993), "Nuclear feature extraction for breast
tumor diagnosis", SPIE 1905; Gelman, Jakulin, Pittau & Su (2008), "A weakly informative
default prior distribution for logistic and other regression models", Ann. Appl. Stat. 2(4).
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402
import arviz as az  # noqa: E402  (after bayesgen, which silences ArviZ's import-time notice)


def main(smoke: bool = False, out: str = "logistic_regression_forest.png") -> pd.DataFrame:
    """Fit the three engines, print the comparison, save the forest plot; returns bg.compare's table."""
    torch.set_num_threads(1)  # the tensors are small: OpenMP hand-offs would cost more than they save
    draws, steps, chains, depth = (40, 150, 2, 5) if smoke else (400, 2000, 4, 10)
    engines = {
        "nuts": bg.inference.NUTS(num_warmup=draws, num_samples=draws, num_chains=chains, dense_mass=True,
                                  max_tree_depth=depth),
        "laplace": bg.inference.Laplace(),
        "svi-mvn": bg.inference.SVI(guide="mvn", num_steps=steps, lr=0.05),
    }
    data = bg.get_model("logistic_regression").load_data()
    print(f"data: Wisconsin breast cancer data, {len(data['y'])} tumours, {data['X'].shape[1]} features")
    fits = {label: bg.fit("logistic_regression", data, engine=engine, seed=0, progress=False)
            for label, engine in engines.items()}
    for label, fit in fits.items():
        accuracy = ((fit.predict(num_samples=100)["y"].mean((0, 1)) > 0.5) == data["y"]).mean()
        print(f"{label:>8}: {fit.timing['total']:6.1f} s, in-sample accuracy {accuracy:.3f}; "
              + _smoke.verdict(fit, smoke))
    table = bg.compare(fits, reference="nuts")
    worst = table.assign(abs_mean_diff_sd=table["mean_diff_sd"].abs()).groupby("engine").agg(
        max_abs_mean_diff_sd=("abs_mean_diff_sd", "max"), min_sd_ratio=("sd_ratio", "min"),
        max_sd_ratio=("sd_ratio", "max"), mmd_pvalue=("mmd_pvalue", "first"))
    with pd.option_context("display.width", 200):
        print("against NUTS, over all 31 parameters:")
        print(worst.round(3).to_string())
    from sklearn.datasets import load_breast_cancer

    names = list(load_breast_cancer().feature_names)  # load_data keeps the features in this order
    axes = az.plot_forest([fit.to_arviz().assign_coords(feature=names, groups="posterior") for fit in fits.values()],
                          model_names=list(fits), var_names=["beta"], combined=True, hdi_prob=0.9, figsize=(7, 12))
    axes[0].set_title(_smoke.title("Wisconsin breast cancer data: coefficients (90% intervals)", smoke))
    axes[0].set_xlabel("coefficient of the standardised feature (log odds of benign per sd)")
    axes[0].figure.savefig(out, dpi=90, bbox_inches="tight")
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    parser.add_argument("--out", default="logistic_regression_forest.png", help="where to write the forest plot")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(args.smoke, args.out)
