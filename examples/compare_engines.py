"""Compare engines on eight schools: which approximations can be trusted?

Fits the non-centred eight-schools model (Rubin 1981) with NUTS, the Laplace
approximation and SVI with mean-field and full-rank Gaussians, prints ``bg.compare``'s
table against NUTS (mean shift in NUTS-sd units, sd ratio, KS / Wasserstein / MMD tests),
the diagnostics of each fit, and writes the overlaid marginal densities of mu and tau to
``compare_engines.png``. The Laplace approximation at the joint mode misplaces tau badly,
and its Pareto k-hat says so.

Run ``python examples/compare_engines.py`` (``--smoke`` for a seconds-long check).

References: Rubin (1981), J. Educ. Stat. 6(4); Yao, Vehtari, Simpson & Gelman (2018),
"Yes, but did it work?: Evaluating variational inference", ICML.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402


def main(smoke: bool = False, out: str = "compare_engines.png") -> pd.DataFrame:
    """Fit, compare, plot; returns the comparison table."""
    draws, steps = (100, 300) if smoke else (1000, 3000)
    engines = {
        "nuts": bg.inference.NUTS(num_warmup=draws, num_samples=draws),
        "laplace": bg.inference.Laplace(),
        "svi-normal": bg.inference.SVI(guide="normal", num_steps=steps),
        "svi-mvn": bg.inference.SVI(guide="mvn", num_steps=steps),
    }
    print("data: Eight schools (Rubin 1981), the estimated effect of coaching and its standard error in 8 schools")
    fits = {label: bg.fit("eight_schools", engine=engine, seed=0, progress=False)
            for label, engine in engines.items()}
    for label, fit in fits.items():
        print(f"{label:>10}: " + _smoke.verdict(fit, smoke))
    table = bg.compare(fits, reference="nuts")
    columns = ["engine", "parameter", "mean_diff_sd", "sd_ratio", "ks_pvalue", "w1_pvalue", "mmd_pvalue"]
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(table.loc[table["parameter"].isin(["mu", "tau"]), columns].round(3).to_string(index=False))
    axes = bg.plot_compare(fits, var_names=["mu", "tau"])
    title = "Eight schools (Rubin 1981): posterior of the mean effect mu and the between-school sd tau"
    _smoke.suptitle(axes, title, smoke).savefig(out, dpi=100, bbox_inches="tight")
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    parser.add_argument("--out", default="compare_engines.png", help="where to write the overlay plot")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(args.smoke, args.out)
