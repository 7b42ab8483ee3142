"""Old Faithful's waiting times as a two-state hidden Markov model: NUTS, SVI and Viterbi.

The hidden states are summed out by the forward algorithm, so NUTS and SVI (full-rank
Gaussian) fit the transition matrix and the state means and scales directly; the script
prints ``bg.compare`` of the two, decodes the most probable state path (Viterbi, per
posterior draw) and the posterior state marginals, and writes ``hmm_compare.png`` (ArviZ
overlay of the marginals) and ``hmm_states.png`` (the series with its decoded states).

Run ``python examples/hmm.py`` (``--smoke`` for a seconds-long check on a series simulated
from the model).
Needs the ``examples`` extra for the Old Faithful data (``pip install -e ".[examples]"``).

References: Rabiner (1989), Proc. IEEE 77(2); Zucchini, MacDonald & Langrock (2016), ch. 1-5.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402
from bayesgen.models import hmm  # noqa: E402


def main(smoke: bool = False) -> pd.DataFrame:
    """Fit, compare, decode, plot; returns the comparison table."""
    data = hmm.simulate(seed=0, duration=60)[0] if smoke else hmm.load_data()
    source = "Simulated data" if smoke else "Old Faithful waiting times"
    print(f"data: {source}, {len(data['y'])} {'steps' if smoke else 'eruptions'}")
    chains, draws, steps = (2, 20, 100) if smoke else (4, 500, 3000)
    fits = {
        "nuts": bg.fit("hmm", data, engine="nuts", num_chains=chains, num_warmup=draws, num_samples=draws, seed=0, progress=False),
        "svi-mvn": bg.fit("hmm", data, engine="svi", guide="mvn", num_steps=steps, seed=0, progress=False),
    }
    for label, fit in fits.items():
        print(f"{label:>8}: " + _smoke.verdict(fit, smoke))
    table = bg.compare(fits, reference="nuts")
    columns = ["engine", "parameter", "ref_mean", "mean_diff_sd", "sd_ratio", "ks_pvalue"]
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(table.loc[table["engine"] != "nuts", columns].round(3).to_string(index=False))
    axes = bg.plot_compare(fits, var_names=["trans", "locs", "scales"])
    title = f"{source}: two-state HMM, posterior of transition matrix, state means and scales"
    _smoke.suptitle(axes, title, smoke).savefig("hmm_compare.png", dpi=100, bbox_inches="tight")

    paths = hmm.viterbi(fits["nuts"], num_samples=25)
    decoded = (paths.reshape(-1, paths.shape[-1]).mean(0) > 0.5).astype(int)
    marginals = hmm.state_marginals(fits["nuts"], num_samples=200)
    print(f"Viterbi: {decoded.mean():.0%} of {'steps' if smoke else 'waits'} in the "
          f"{'high' if smoke else 'long-wait'} state; "
          f"uncertain (probability 0.1-0.9) at {int(((marginals[:, 1] > 0.1) & (marginals[:, 1] < 0.9)).sum())} "
          f"of {len(marginals)} steps")
    y = np.asarray(data["y"])
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot(y, color="0.6", lw=0.8)
    points = ax.scatter(np.arange(len(y)), y, c=marginals[:, 1], cmap="coolwarm", s=10, zorder=3, vmin=0, vmax=1)
    fig.colorbar(points, ax=ax, label=f"P({'high state' if smoke else 'long wait'})", pad=0.01)
    locs = fits["nuts"].posterior["locs"].mean((0, 1))
    ax.step(np.arange(len(y)), locs[decoded], where="mid", color="k", lw=1, label="Viterbi state mean")
    ax.set(xlabel="time step" if smoke else "eruption", ylabel="y" if smoke else "waiting time (standardised)",
           title=_smoke.title(f"{source}: decoded states (colour: P({'high state' if smoke else 'long wait'}))",
                              smoke))
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False, fontsize=8)  # above the axes, off the data
    fig.tight_layout()
    fig.savefig("hmm_states.png", dpi=100)
    print("wrote hmm_compare.png, hmm_states.png")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run on simulated data to check that everything works")
    smoke = parser.parse_args().smoke
    with _smoke.quiet(smoke):
        main(smoke)
