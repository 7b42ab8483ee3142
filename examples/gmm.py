"""Old Faithful as a two-component Gaussian mixture, fitted with NUTS and with SVI.

The assignments of eruptions to components are summed out by enumeration, so NUTS samples
the marginal posterior of weights, locations, scales and correlations; SVI fits a
full-rank Gaussian guide with Pyro's TraceEnum_ELBO. The script prints ``bg.compare`` of
the two, recovers each eruption's cluster with ``bg.infer_discrete`` (MAP assignment) and
``bg.discrete_marginals`` (responsibilities), and writes ``gmm_compare.png`` (ArviZ
overlay of the marginals) and ``gmm_clusters.png`` (the data coloured by responsibility).

Run ``python examples/gmm.py`` (``--smoke`` for a seconds-long check on simulated data,
two clusters drawn from the model).
Needs the ``examples`` extra for the Old Faithful data (``pip install -e ".[examples]"``).

References: Azzalini & Bowman (1990), Appl. Statist. 39; Bishop (2006), ch. 9.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from pyro.infer.autoguide import AutoMultivariateNormal  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402


def main(smoke: bool = False) -> pd.DataFrame:
    """Fit, compare, decode, plot; returns the comparison table."""
    spec = bg.get_model("gmm")
    data = spec.simulate(seed=0, num_obs=60)[0] if smoke else spec.load_data()
    source, unit = ("Simulated data", "points") if smoke else ("Old Faithful", "eruptions")
    print(f"data: {source}, {len(data['y'])} {unit}" + ("" if smoke else " (duration, waiting time)"))
    chains, draws, steps = (2, 20, 100) if smoke else (4, 500, 2000)
    fits = {
        "nuts": bg.fit(spec, data, engine="nuts", num_chains=chains, num_warmup=draws, num_samples=draws, seed=0, progress=False),
        "svi-traceenum": bg.fit(spec, data, engine="svi", guide=AutoMultivariateNormal, num_steps=steps,
                                lr=0.05, seed=0, progress=False),
    }
    for label, fit in fits.items():
        print(f"{label:>14}: " + _smoke.verdict(fit, smoke))
    # the sites a reader interprets (locs_first and locs_rest make locs; corr_cholesky makes corr)
    table = bg.compare(fits, reference="nuts", var_names=["weights", "locs", "scales", "corr"])
    columns = ["engine", "parameter", "ref_mean", "mean_diff_sd", "sd_ratio", "ks_pvalue"]
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(table.loc[table["engine"] != "nuts", columns].round(3).to_string(index=False))
    axes = bg.plot_compare(fits, var_names=["weights", "locs", "scales"])
    title = f"{source}: two-component mixture, posterior of weights, locations and scales"
    _smoke.suptitle(axes, title, smoke).savefig("gmm_compare.png", dpi=100, bbox_inches="tight")

    nuts = fits["nuts"]
    assignment = bg.infer_discrete(nuts, temperature=0, num_samples=50)["z"]
    responsibility = bg.discrete_marginals(nuts, num_samples=200)["z"][:, 1]
    unsure = ((responsibility > 0.1) & (responsibility < 0.9)).sum()
    print(f"component 1 (weights[1]; components count from 0) holds {(assignment[0, -1] == 1).mean():.0%} of "
          f"{unit} at the last draw; "
          f"{unsure} {unit} have a responsibility between 0.1 and 0.9")
    fig, ax = plt.subplots(figsize=(5, 4))
    points = ax.scatter(data["y"][:, 0], data["y"][:, 1], c=responsibility, cmap="coolwarm", s=12)
    fig.colorbar(points, label="P(component 1 | data)")
    ax.set(xlabel="y[:, 0]" if smoke else "eruption duration (standardised)",
           ylabel="y[:, 1]" if smoke else "waiting time (standardised)",
           title=_smoke.title(f"{source}: posterior responsibilities", smoke))
    fig.tight_layout()
    fig.savefig("gmm_clusters.png", dpi=100)
    print("wrote gmm_compare.png, gmm_clusters.png")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run on simulated data to check that everything works")
    smoke = parser.parse_args().smoke
    with _smoke.quiet(smoke):
        main(smoke)
