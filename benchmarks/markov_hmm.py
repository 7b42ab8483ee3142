"""NUTS on a hidden Markov model written as Pyro's ``examples/hmm.py`` writes ``model_1``.

The program walks its sequences with ``pyro.markov``, marks each hidden state for parallel
enumeration and indexes its parameters with the state (``probs_x[x]``), as a Pyro user would:
nothing in it is written for bayesgen. bayesgen sums the states out by enumeration and samples
the continuous parameters with all chains in one batched, recorded density; Pyro's own NUTS
(``MCMC(NUTS(jit_compile=False, max_plate_nesting=2))``, the chains one after another in this
process, as in ``bnn_tutorial.py``) traces the program and contracts the enumerated states again
at every gradient. Both run 4 chains of 500 warmup + 500 draws, float64, on 12
simulated sequences of at most 25 steps (2 hidden states, 6 binary features); the script prints
each one's wall time, minimum bulk ESS over the parameters (each chain's, summed: see
:func:`min_ess`), ESS per second and their ratio.

Run ``python benchmarks/markov_hmm.py`` (``--quick``: 100 + 100 draws, to check the script).

Results and method: the section "An HMM written with pyro.markov" in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import MCMC, NUTS

import bayesgen as bg

#: Hidden states of the simulated data (each emits 6 binary features).
HIDDEN = 2


def model(sequences: torch.Tensor, lengths: torch.Tensor, hidden_dim: int = HIDDEN) -> None:
    """Pyro's ``model_1``: ``x_t ~ Categorical(probs_x[x_{t-1}])`` from ``x_0 = 0``, and each of
    the features ``y_t ~ Bernoulli(probs_y[x_t])``, over a plate of sequences padded to one length
    (steps past a sequence's length masked out)."""
    num_sequences, max_length, data_dim = sequences.shape
    probs_x = pyro.sample("probs_x", dist.Dirichlet(0.9 * torch.eye(hidden_dim) + 0.1).to_event(1))
    probs_y = pyro.sample("probs_y", dist.Beta(0.1, 0.9).expand([hidden_dim, data_dim]).to_event(2))
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    with pyro.plate("sequences", num_sequences, dim=-2):
        x = 0
        for t in pyro.markov(range(max_length)):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"})
                with tones_plate:
                    pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=sequences[:, t])


def simulate(seed: int = 0, num_sequences: int = 12, max_length: int = 25) -> tuple[dict[str, torch.Tensor],
                                                                                      dict[str, torch.Tensor]]:
    """Sequences drawn from :func:`model` at fixed parameters: ``(data, truth)``.

    Lengths are uniform on ``[max_length // 2, max_length]``, one sequence always at full
    length; steps past a sequence's length are zero.
    """
    generator = torch.Generator().manual_seed(seed)
    probs_x = torch.tensor([[0.85, 0.15], [0.2, 0.8]], dtype=torch.float64)
    probs_y = torch.tensor([[0.9, 0.1, 0.7, 0.2, 0.5, 0.05],
                            [0.1, 0.8, 0.3, 0.9, 0.5, 0.6]], dtype=torch.float64)
    lengths = torch.randint(max_length // 2, max_length + 1, (num_sequences,), generator=generator)
    lengths[0] = max_length
    sequences = torch.zeros(num_sequences, max_length, probs_y.shape[1], dtype=torch.float64)
    for i in range(num_sequences):
        x = 0
        for t in range(int(lengths[i])):
            x = int(torch.multinomial(probs_x[x], 1, generator=generator))
            sequences[i, t] = torch.bernoulli(probs_y[x], generator=generator)
    return {"sequences": sequences, "lengths": lengths}, {"probs_x": probs_x, "probs_y": probs_y}


def align_labels(posterior: dict[str, np.ndarray], reference: np.ndarray) -> dict[str, np.ndarray]:
    """The draws with each chain's hidden states renamed to match ``reference``, emission
    probabilities ``(states, features)``: the permutation that brings the chain's mean
    ``probs_y`` closest to it."""
    probs_x, probs_y = posterior["probs_x"].copy(), posterior["probs_y"].copy()
    for chain in range(probs_y.shape[0]):
        mean = probs_y[chain].mean(0)
        order = list(min(itertools.permutations(range(mean.shape[0])),
                         key=lambda p: np.abs(mean[list(p)] - reference).sum()))
        probs_y[chain] = probs_y[chain][:, order]
        probs_x[chain] = probs_x[chain][:, order][:, :, order]
    return {"probs_x": probs_x, "probs_y": probs_y}


def min_ess(posterior: dict[str, np.ndarray]) -> float:
    """The smallest, over every scalar of the draws ``(chain, draw, ...)``, of the bulk ESS of each
    chain summed over the chains.

    Nothing in the model orders its hidden states (the prior is symmetric; only ``x_0 = 0`` tells
    them apart, weakly), so each chain settles in one labelling of them, and the two labellings
    are two different modes (relabelled, their ``probs_x`` differ: ``x_0 = 0`` means the other
    state). No sampler moves between them, so ESS across chains, as ``benchmarks/nuts.py``
    measures it, would be a handful for every sampler; each chain's own ESS measures how well the
    sampler explores the mode it is in.
    """
    esses = []
    for chain in range(next(iter(posterior.values())).shape[0]):
        dataset = az.convert_to_dataset({k: np.asarray(v[chain:chain + 1]).reshape(1, v.shape[1], -1)
                                         for k, v in posterior.items()})
        esses.append(np.concatenate([az.ess(dataset)[k].values.ravel() for k in posterior]))
    return float(np.sum(esses, axis=0).min())


def run_bayesgen(data: dict[str, torch.Tensor], chains: int, warmup: int, draws: int) -> tuple[float, dict]:
    """bayesgen's NUTS: wall seconds (recording and compilation included) and the draws."""
    started = time.perf_counter()
    fit = bg.fit(model, data, engine="nuts", num_chains=chains, num_warmup=warmup, num_samples=draws,
                 seed=0, progress=False)
    seconds = time.perf_counter() - started
    return seconds, {k: np.asarray(fit.posterior[k]) for k in ("probs_x", "probs_y")}


def run_pyro(data: dict[str, torch.Tensor], chains: int, warmup: int, draws: int) -> tuple[float, dict]:
    """Pyro's NUTS, the chains one after another in this process: wall seconds and the draws."""
    pyro.set_rng_seed(0)
    started = time.perf_counter()
    runs = []
    for _ in range(chains):
        mcmc = MCMC(NUTS(model, jit_compile=False, max_plate_nesting=2), num_samples=draws, warmup_steps=warmup,
                    disable_progbar=True)
        mcmc.run(**data)
        runs.append({k: v.numpy() for k, v in mcmc.get_samples().items()})
    seconds = time.perf_counter() - started
    return seconds, {k: np.stack([run[k] for run in runs]) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 warmup + 100 draws per chain")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--no-pyro", action="store_true", help="time bayesgen only")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    warmup = draws = 100 if args.quick else 500
    data, truth = simulate()
    print(f"{args.chains} chains x ({warmup} + {draws}); {data['sequences'].shape[0]} sequences, lengths "
          f"{data['lengths'].tolist()}")
    rows = {"bayesgen": run_bayesgen(data, args.chains, warmup, draws)}
    if not args.no_pyro:
        rows["pyro"] = run_pyro(data, args.chains, warmup, draws)
    rates = {}
    print(f"truth: probs_y {truth['probs_y'].tolist()}")
    print(f"{'sampler':<9} {'wall s':>8} {'min ESS':>8} {'ESS/s':>8}  posterior mean probs_y (states aligned)")
    for name, (seconds, posterior) in rows.items():
        ess = min_ess(posterior)
        rates[name] = ess / seconds
        means = align_labels(posterior, truth["probs_y"].numpy())["probs_y"].mean((0, 1))
        print(f"{name:<9} {seconds:8.1f} {ess:8.0f} {rates[name]:8.2f}  {np.round(means, 2).tolist()}")
    if "pyro" in rates:
        print(f"bayesgen / pyro ESS/s: {rates['bayesgen'] / rates['pyro']:.1f}x")


if __name__ == "__main__":
    main()
