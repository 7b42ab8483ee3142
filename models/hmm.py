"""Hidden Markov model with Gaussian or categorical emissions; states summed out by the forward algorithm."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from pyro.poutine.util import is_validation_enabled

from bayesgen._counts import check_count
from bayesgen.datasets import rdataset
from bayesgen.discrete import discrete_marginals, infer_discrete
from bayesgen.models._priors import ordered_locations
from bayesgen.result import Fit
from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "load_data", "model", "simulate", "state_marginals", "states_model", "stationary", "viterbi"]

EMISSIONS = ("gaussian", "categorical")


def stationary(trans: torch.Tensor) -> torch.Tensor:
    """The stationary distribution ``pi = pi @ trans`` of transition matrices ``(..., K, K)``.

    Solves ``(I - trans^T + 1 1^T) pi = 1``, which has the stationary distribution as its
    unique solution for an irreducible chain; differentiable and batched.

    Parameters
    ----------
    trans : Tensor, shape ``(..., K, K)``
        Row-stochastic transition matrices: ``trans[..., i, j]`` is the probability of moving from state i to j.

    Returns
    -------
    Tensor, shape ``(..., K)``
        The stationary probabilities of each chain, in ``trans``'s dtype.
    """
    k = trans.shape[-1]
    system = torch.eye(k, dtype=trans.dtype) - trans.transpose(-1, -2) + 1.0
    return torch.linalg.solve(system, torch.ones(trans.shape[:-1], dtype=trans.dtype))


def _check_arguments(y: torch.Tensor | None, num_states: int, emission: str, num_categories: int) -> None:
    """Refuse, by name, arguments that would fail deep inside Pyro or fit another model than meant."""
    check_count("num_states", num_states)
    if emission not in EMISSIONS:
        raise ValueError(f"emission must be one of {EMISSIONS}, got {emission!r}")
    if emission == "categorical":
        check_count("num_categories", num_categories)
    if y is None:
        return
    if y.dim() != 1 or y.shape[0] == 0:
        raise ValueError(f"y must be one non-empty sequence, shape (T,), got shape {tuple(y.shape)}")
    if emission == "categorical" and is_validation_enabled():  # checked once, as bg.fit checks the data
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_categories:
            raise ValueError(f"categorical y must hold codes in 0..num_categories-1 = 0..{num_categories - 1}, "
                             f"got codes from {low} to {high}; pass num_categories={high + 1} if the codes are "
                             "right")


def _parameters(num_states: int, emission: str, num_categories: int) -> tuple[torch.Tensor, ...]:
    """The latent sites both programs share (transition probabilities and emission parameters),
    with the initial distribution that follows from them."""
    k = num_states
    sticky = torch.ones(k, k) + 2.0 * torch.eye(k)
    trans = pyro.sample("trans", dist.Dirichlet(sticky).to_event(1))
    init = stationary(trans)
    if emission == "gaussian":
        locs = pyro.sample("locs", ordered_locations(k))
        scales = pyro.sample("scales", dist.HalfNormal(1.0).expand([k]).to_event(1))
        return init, trans, locs, scales
    probs = pyro.sample("emission_probs", dist.Dirichlet(torch.ones(num_categories)).expand([k]).to_event(1))
    return init, trans, probs


def model(y: torch.Tensor | None = None, num_states: int = 2, emission: str = "gaussian",
          num_categories: int = 3, duration: int = 100) -> None:
    """An HMM whose hidden states are summed out exactly by the forward algorithm (``DiscreteHMM``).

    ``s_1 ~ Categorical(init)``, ``s_t ~ Categorical(trans[s_{t-1}])`` and ``y_t ~
    Normal(locs[s_t], scales[s_t])`` (Gaussian) or ``Categorical(emission_probs[s_t])``.

    Parameters
    ----------
    y : Tensor, shape ``(T,)``, optional
        One observed sequence (standardised if Gaussian; integer codes if categorical);
        None simulates ``duration`` steps.
    num_states : int
        K, the number of hidden states.
    emission : {"gaussian", "categorical"}
        The emission distribution of each state.
    num_categories : int
        Categories of the categorical emissions.
    duration : int
        Length of a simulated sequence (ignored when ``y`` is given).

    Notes
    -----
    The chain starts in its stationary distribution (``init = stationary(trans)``): one
    sequence carries almost no information about a free initial distribution (Zucchini,
    MacDonald & Langrock 2016, sec. 2.3). Priors: each transition row ``~ Dirichlet`` with 3 on the
    diagonal and 1 off it (states persist a little), Gaussian ``locs`` increasing
    (``ordered_locations``: no label switching) with ``scales ~ HalfNormal(1)``, categorical
    rows ``~ Dirichlet(1)``. With categorical emissions nothing orders the states, so
    chains may settle on different labellings: compare fits after matching states.
    The states themselves are recovered by ``viterbi`` and ``state_marginals``, which
    decode with ``states_model``, this program's twin with explicit state sites.
    """
    _check_arguments(y, num_states, emission, num_categories)
    params = _parameters(num_states, emission, num_categories)
    init, trans = params[0], params[1]
    if emission == "gaussian":
        emissions = dist.Normal(params[2][..., None, :], params[3][..., None, :])
    else:
        emissions = dist.Categorical(probs=params[2][..., None, :, :])
    duration = y.shape[-1] if y is not None else duration
    # DiscreteHMM transitions before its first emission: a first "transition" whose every
    # row is init makes state_0 ~ init, as in states_model
    first = init.log()[..., None, None, :].expand(init.shape[:-1] + (1, num_states, num_states))
    later = trans.log()[..., None, :, :].expand(trans.shape[:-2] + (duration - 1, num_states, num_states))
    logits = torch.cat([first, later], dim=-3)
    hmm = dist.DiscreteHMM(torch.zeros_like(init), logits, emissions, duration=duration)
    pyro.sample("y", hmm, obs=y)


def states_model(y: torch.Tensor | None = None, num_states: int = 2, emission: str = "gaussian",
                 num_categories: int = 3, duration: int = 100) -> None:
    """The same HMM with the states as enumerable sites ``state_0 ... state_{T-1}`` (``pyro.markov``).

    Its log density equals ``model``'s, but it runs one site per time step, so it is far
    slower to fit; it exists to decode states with ``pyro.infer.infer_discrete`` (Viterbi
    at temperature 0, forward-filtering backward-sampling at temperature 1). The
    observations are the sites ``y_0 ... y_{T-1}``.

    Parameters
    ----------
    y : Tensor, shape ``(T,)``, optional
        One observed sequence, as for ``model``; None simulates ``duration`` steps.
    num_states : int
        K, the number of hidden states.
    emission : {"gaussian", "categorical"}
        The emission distribution of each state.
    num_categories : int
        Categories of the categorical emissions (unused for Gaussian ones).
    duration : int
        Length of a simulated sequence (ignored when ``y`` is given).
    """
    _check_arguments(y, num_states, emission, num_categories)
    params = _parameters(num_states, emission, num_categories)
    init, trans = params[0], params[1]
    duration = y.shape[-1] if y is not None else duration
    state = None
    for t in pyro.markov(range(duration)):
        probs = init if state is None else Vindex(trans)[..., state, :]
        state = pyro.sample(f"state_{t}", dist.Categorical(probs))
        obs = None if y is None else y[..., t]
        if emission == "gaussian":
            pyro.sample(f"y_{t}", dist.Normal(Vindex(params[2])[..., state], Vindex(params[3])[..., state]),
                        obs=obs)
        else:
            pyro.sample(f"y_{t}", dist.Categorical(Vindex(params[2])[..., state, :]), obs=obs)


def _stack_states(values: dict[str, np.ndarray]) -> np.ndarray:
    steps = sorted((name for name in values if name.startswith("state_")), key=lambda n: int(n[6:]))
    return np.stack([values[name] for name in steps], axis=-1)


def viterbi(fit: Fit, num_samples: int | None = None) -> np.ndarray:
    """The most probable state sequence at each posterior draw, ``(chain, draw, T)``.

    Viterbi decoding (``infer_discrete`` at temperature 0 on ``states_model``). For a
    single path, take the per-step mode over draws or decode a point fit (``mle``/``map``),
    which is decoded at its estimate: ``viterbi(fit)[0, 0]``.

    Parameters
    ----------
    fit : bg.Fit
        A fit of this model, with its data (the sequence ``y`` and the model's arguments).
    num_samples : int, optional
        Decode at this many draws of each chain, evenly spaced (see ``bg.infer_discrete``); None decodes at every draw.

    Returns
    -------
    ndarray of int, shape ``(chain, draw, T)``
        The state index, in ``0 .. K-1``, of each step at each decoded draw.
    """
    return _stack_states(infer_discrete(fit, model=states_model, temperature=0, num_samples=num_samples))


def state_marginals(fit: Fit, num_samples: int | None = None) -> np.ndarray:
    """Posterior probability of each hidden state at each step, ``(T, K)``.

    At each posterior draw of the parameters, the exact marginals by forward-backward; then
    their average over the draws (see ``bg.discrete_marginals``). A point fit (``mle``/``map``)
    gives the marginals at its estimate.

    Parameters
    ----------
    fit : bg.Fit
        A fit of this model, with its data (the sequence ``y`` and the model's arguments).
    num_samples : int, optional
        Average over this many draws of each chain, evenly spaced (see ``bg.discrete_marginals``); None uses
        every draw.

    Returns
    -------
    ndarray of float, shape ``(T, K)``
        Row ``t`` holds the probabilities of the K states at step t; each row sums to 1.
    """
    return _stack_states(discrete_marginals(fit, model=states_model, num_samples=num_samples)).swapaxes(-1, -2)


def load_data() -> dict[str, Any]:
    """Old Faithful's 272 waiting times between eruptions in time order (R's ``datasets::faithful``), standardised.

    Long waits follow long eruptions, so two states alternate.

    Returns
    -------
    dict
        The program's arguments: ``"y"``, float ndarray ``(272,)`` (mean 0, sd 1), and ``"num_states"``: 2.
    """
    waiting = rdataset("datasets", "faithful")["waiting"].to_numpy(dtype=float)
    return {"y": (waiting - waiting.mean()) / waiting.std(), "num_states": 2}


def simulate(seed: int, duration: int = 200, num_states: int = 2, emission: str = "gaussian",
             num_categories: int = 3, separation: float = 3.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """A sequence from known parameters; returns ``(data, truth)`` with the true ``states`` in truth.

    Each state persists with probability 0.8-0.95 per step; Gaussian state means are
    ``separation`` apart (increasing, scales 0.5-1); categorical emission rows favour a
    different category per state. The first state is drawn from the chain's stationary distribution.
    The parameters depend on ``seed`` alone, and a longer ``duration`` continues the same
    sequence: simulate ``T + H`` steps and hold out the last ``H``.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same data.
    duration : int
        T, the length of the sequence.
    num_states : int
        K, the number of hidden states.
    emission : {"gaussian", "categorical"}
        The emission distribution of each state.
    num_categories : int
        Categories of the categorical emissions (unused for Gaussian ones).
    separation : float
        Distance between consecutive Gaussian state means, in units of the observations (unused for categorical).

    Returns
    -------
    data : dict
        The program's arguments: ``"y"``, ndarray ``(T,)`` (float, or int codes in ``0 .. num_categories-1``),
        ``"num_states"``, ``"emission"`` and, for categorical emissions, ``"num_categories"``.
    truth : dict
        ``"trans"`` ``(K, K)``; ``"locs"`` and ``"scales"`` ``(K,)`` (Gaussian) or ``"emission_probs"``
        ``(K, num_categories)`` (categorical); and ``"states"``, int ndarray ``(T,)``.
    """
    rng = np.random.default_rng(seed)
    k = num_states
    stay = rng.uniform(0.8, 0.95, k)  # persistent states that are all visited
    trans = np.zeros((k, k))
    for j in range(k):
        trans[j, np.arange(k) != j] = (1.0 - stay[j]) * rng.dirichlet(np.ones(k - 1))
        trans[j, j] = stay[j]
    truth: dict[str, Any] = {"trans": trans}
    data: dict[str, Any] = {"num_states": k, "emission": emission}
    # the parameters first, then the path and the emissions each from a stream of its own, so that
    # a longer duration continues the same sequence of the same model
    if emission == "gaussian":
        locs = separation * (np.arange(k) - (k - 1) / 2.0) + rng.normal(0.0, 0.1, k)
        scales = rng.uniform(0.5, 1.0, k)
        truth |= {"locs": locs, "scales": scales}
    else:
        probs = np.stack([rng.dirichlet(np.ones(num_categories) + 6.0 * np.eye(num_categories)[j % num_categories])
                          for j in range(k)])
        data["num_categories"] = num_categories
        truth["emission_probs"] = probs
    path, noise = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    init = stationary(torch.as_tensor(trans)).numpy()
    states = np.empty(duration, dtype=int)
    states[0] = path.choice(k, p=init)
    for t in range(1, duration):
        states[t] = path.choice(k, p=trans[states[t - 1]])
    if emission == "gaussian":
        data["y"] = locs[states] + scales[states] * noise.standard_normal(duration)
    else:
        data["y"] = np.array([noise.choice(num_categories, p=probs[s]) for s in states])
    truth["states"] = states
    return data, truth


SPEC = ModelSpec(
    name="hmm",
    model=model,
    observed={"y": "y"},
    dims={"trans": ("state", "next_state"), "locs": ("state",), "scales": ("state",),
          "emission_probs": ("state", "category"), "y": ("time",)},
    description="Hidden Markov model, Gaussian or categorical emissions (Old Faithful waiting times)",
    card=(
        "A discrete-state hidden Markov model. The states are summed out exactly by the forward "
        "algorithm (Pyro's DiscreteHMM), so every density engine fits it at the cost of one "
        "vectorised recursion; viterbi() and state_marginals() recover the states afterwards "
        "with infer_discrete on the twin program states_model. Gaussian state means are "
        "ordered, which rules out label switching. Default data: Old Faithful's waiting times "
        "in eruption order (Azzalini & Bowman 1990), which alternate between short and long. "
        "Point estimates (mle, map) start at random, and the likelihood has saddles (both states "
        "at one mean), no maximum where a state's scale shrinks onto one observation, and local "
        "optima: bg.check flags the first two (a singular or indefinite Hessian, non-finite "
        "values) but cannot tell a local optimum, so fit several seeds and keep the lowest final "
        "loss (fit.sample_stats['loss']); Zucchini et al. (2016), ch. 3, discuss all three. "
        "See Rabiner (1989), Proc. IEEE 77(2), and Zucchini, MacDonald & Langrock (2016), "
        "Hidden Markov Models for Time Series, ch. 1-5."
    ),
    load_data=load_data,
    simulate=simulate,
)
