"""Quickstart: one Pyro program, every engine, summaries side by side.

Fits bayesgen's bundled Bayesian linear regression to scikit-learn's diabetes data
(442 patients, 10 standardised covariates) with NUTS, static HMC, SVI (mean-field and
full-rank Gaussians), the Laplace approximation, MAP and maximum likelihood, then
prints each engine's posterior mean and sd of every coefficient next to the others,
plus the diagnostics verdict of ``bg.check``.

Run ``python examples/quickstart.py`` (``--smoke`` for a seconds-long check).

References: Efron, Hastie, Johnstone & Tibshirani (2004), "Least angle regression",
Annals of Statistics 32(2) — the diabetes data.
"""

from __future__ import annotations

import argparse

import pandas as pd

import bayesgen as bg


def engines(smoke: bool) -> dict[str, object]:
    """The engines to compare, sized for a full run or a smoke test.

    The diabetes covariates are strongly correlated (s1, s2 and s4 measure related blood
    serums), so the samplers adapt a dense mass matrix: with a diagonal one NUTS needs
    about five times more leapfrog steps per draw.
    """
    draws = 100 if smoke else 500
    steps = 300 if smoke else 2000
    return {
        "nuts": bg.inference.NUTS(num_warmup=draws, num_samples=draws, dense_mass=True),
        "hmc": bg.inference.HMC(num_warmup=draws, num_samples=draws, dense_mass=True, num_steps=8),
        "svi-normal": bg.inference.SVI(guide="normal", num_steps=steps, lr=0.05),
        "svi-mvn": bg.inference.SVI(guide="mvn", num_steps=steps, lr=0.05),
        "laplace": bg.inference.Laplace(),
        "map": bg.inference.MAP(),
        "mle": bg.inference.MLE(),
    }


def main(smoke: bool = False) -> pd.DataFrame:
    """Fit every engine and return the side-by-side table of means and sds."""
    columns = {}
    for label, engine in engines(smoke).items():
        fit = bg.fit("linear_regression", engine=engine, seed=0, progress=False)
        table = fit.summary()
        columns[(label, "mean")] = table["mean"]
        columns[(label, "sd")] = table["sd"]
        verdict = bg.check(fit)
        print(f"{label:>11}: {fit.timing['total']:6.2f} s  " + ("ok" if not verdict else "; ".join(verdict)))
    side_by_side = pd.DataFrame(columns)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(side_by_side)
    return side_by_side


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    main(parser.parse_args().smoke)
