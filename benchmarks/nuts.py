"""NUTS speed: bayesgen's batched sampler against Pyro's NUTS and NumPyro's vectorised NUTS.

Four models, each with 4 chains and 1000 warmup + 1000 draws, on the same data in one run:
eight schools (non-centred), logistic regressions on scikit-learn's wine data (its first two
cultivars, 130 x 13) and breast-cancer data (569 x 30), standardised, N(0, 1) priors, and a
synthetic logistic regression (N=5000, D=20, fixed seed). For each sampler it reports wall seconds (from the call to the draws, JIT
compilation included), the minimum bulk ESS over all parameters, min-ESS per second, and
the ratios against the peers. bayesgen and NumPyro run ``--repeats`` times (seeds 0, 1, ...;
default 3) and their rows are medians, with the range of ESS/s: one run's min ESS moves by
+-15% with the seed, as much as the two samplers differ. A second table shows bayesgen's
ESS/s as the chains grow: by default on eight schools, whose cost is per-call overhead that
one batched call shares between the chains; ``--scaling-models`` adds the synthetic
regression, whose cost is arithmetic that grows with them.

bayesgen records each leapfrog step (density, gradient and tree bookkeeping) once as a graph of
tensor operations and replays it through TorchScript; by default it compiles that graph with
TorchInductor once the first 20 transitions project a long run. Recording and compilation are
included in its wall time (each bayesgen row starts with empty Inductor caches, on disk and in memory).
The "bayesgen replay" row passes ``jit_compile=False``: TorchScript replay only. Module imports
(torch's compiler stack, JAX, NumPyro) happen before the clocks start, for every sampler, and
so does Inductor's probe of the CPU's vector instructions, which a process makes once, before its
first vectorised kernel (1.2 s; 9 s on a machine's first run, whose result is kept on disk).
Inductor's precompiled C++ header is also built once per machine (about 6.5 s) and kept on disk:
on a fresh machine the first compiled row pays for it.
The "MCSE gap" column is the largest difference between bayesgen's (or NumPyro's) posterior mean
and Pyro's over every parameter, in combined Monte Carlo standard errors. The machine's load
average is printed with every row: on a shared machine the wall times move with it.

Usage::

    python benchmarks/nuts.py                        # everything, CPU
    python benchmarks/nuts.py --device cuda --peers numpyro --chains 4 64 1024
    python benchmarks/nuts.py --smoke                # seconds-long check of the script
    python benchmarks/nuts.py --models --scaling-models logistic_synthetic_5000x20 --chains 4 16 64

NumPyro is used when installed (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
import warnings
from typing import Any, Callable

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import bayesgen as bg

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

# JAX takes 75% of a GPU's memory when first imported; the bayesgen rows after NumPyro's need it
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def eight_schools_model(sigma, y=None):
    """Non-centred eight schools, as in bayesgen's zoo."""
    bg.get_model("eight_schools").model(sigma, y)


def logistic_model(X, y=None):
    """Logistic regression with N(0, 1) priors, written to broadcast over chains."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
    alpha = pyro.sample("alpha", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=alpha + (X * beta).sum(-1)), obs=y)


def breast_cancer() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = (data.data - data.data.mean(0)) / data.data.std(0)
    return {"X": X, "y": data.target.astype(float)}


def wine() -> dict[str, np.ndarray]:
    """scikit-learn's wine data, its first two cultivars (130 wines x 13 features), standardised."""
    from sklearn.datasets import load_wine

    data = load_wine()
    keep = data.target < 2
    X = data.data[keep]
    return {"X": (X - X.mean(0)) / X.std(0), "y": data.target[keep].astype(float)}


def synthetic_logistic(n: int = 5000, d: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    logits = 0.3 + X @ rng.normal(scale=0.5, size=d)
    return {"X": X, "y": (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(float)}


MODELS: dict[str, tuple[Callable[..., Any], Callable[[], dict[str, np.ndarray]]]] = {
    "eight_schools_noncentred": (eight_schools_model, lambda: bg.get_model("eight_schools").load_data()),
    "logistic_wine_130x13": (logistic_model, wine),
    "logistic_breast_cancer": (logistic_model, breast_cancer),
    "logistic_synthetic_5000x20": (logistic_model, synthetic_logistic),
}


def min_ess(posterior: dict[str, np.ndarray]) -> float:
    """Minimum bulk ESS over every scalar parameter of a ``(chain, draw, ...)`` dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ: "more chains than draws" in --smoke runs
        return float(min(np.min(az.ess(az.convert_to_dataset(posterior))[k].values) for k in posterior))


def max_mcse_gap(posterior: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Largest ``|mean - reference mean| / sqrt(mcse^2 + reference mcse^2)`` over every scalar parameter."""
    def means_and_mcse(draws: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        dataset = az.convert_to_dataset({k: draws[k] for k in sorted(reference)})
        mcse = az.mcse(dataset, method="mean")
        flat = [(np.asarray(draws[k]).mean((0, 1)).ravel(), mcse[k].values.ravel()) for k in sorted(reference)]
        return np.concatenate([m for m, _ in flat]), np.concatenate([e for _, e in flat])

    mean, mcse = means_and_mcse(posterior)
    ref_mean, ref_mcse = means_and_mcse(reference)
    return float(np.max(np.abs(mean - ref_mean) / np.sqrt(mcse**2 + ref_mcse**2)))


def run_bayesgen(model, data, chains, warmup, draws, device, jit_compile=None,
                 seed=0) -> tuple[float, dict[str, np.ndarray]]:
    from torch._inductor.utils import fresh_cache

    # a cold compile: Inductor's on-disk and in-memory caches start empty (a row that compiled the
    # same graph earlier in this process would otherwise skip the C++ compiler)
    with fresh_cache():
        start = time.perf_counter()
        fit = bg.fit(model, data, engine="nuts", num_chains=chains, num_warmup=warmup, num_samples=draws,
                     jit_compile=jit_compile, device=device, seed=seed, progress=False)
        wall = time.perf_counter() - start
    return wall, {k: v for k, v in fit.posterior.items() if k != "theta"}


def run_pyro(model, data, chains, warmup, draws) -> tuple[float, dict[str, np.ndarray]]:
    from pyro.infer import MCMC, NUTS

    tensors = {k: torch.as_tensor(v) for k, v in data.items()}
    start = time.perf_counter()
    kernel = NUTS(model, jit_compile=True, ignore_jit_warnings=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="num_chains=")  # Pyro runs chains one after another here
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, num_chains=chains, disable_progbar=True,
                    mp_context="spawn" if chains > 1 else None)
        mcmc.run(**tensors)
    wall = time.perf_counter() - start
    samples = mcmc.get_samples(group_by_chain=True)
    return wall, {k: v.numpy() for k, v in samples.items()}


def run_numpyro(name, data, chains, warmup, draws, seed=0) -> tuple[float, dict[str, np.ndarray]]:
    import jax
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import MCMC, NUTS

    jax.config.update("jax_enable_x64", True)

    def eight_schools(sigma, y=None):
        mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", ndist.HalfCauchy(5.0))
        with numpyro.plate("school", sigma.shape[-1]):
            theta_tilde = numpyro.sample("theta_tilde", ndist.Normal(0.0, 1.0))
            numpyro.sample("y", ndist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    def logistic(X, y=None):
        beta = numpyro.sample("beta", ndist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
        alpha = numpyro.sample("alpha", ndist.Normal(0.0, 1.0))
        with numpyro.plate("obs", X.shape[0]):
            numpyro.sample("y", ndist.Bernoulli(logits=alpha + X @ beta), obs=y)

    program = eight_schools if name.startswith("eight") else logistic
    # a cold compile, as in bayesgen's rows: JAX would reuse an earlier run's XLA executables
    jax.clear_caches()
    start = time.perf_counter()
    mcmc = MCMC(NUTS(program), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **data)
    samples = jax.device_get(mcmc.get_samples(group_by_chain=True))
    wall = time.perf_counter() - start
    return wall, {k: np.asarray(v) for k, v in samples.items()}


class Row:
    """One sampler's runs on one model: seeds 0, 1, ... with their wall times and min bulk ESS.

    Medians over the runs, because one run's min ESS moves by +-15% with the seed (and its wall
    time with the machine's load); the posterior kept for the MCSE gap is the first run's.
    """

    def __init__(self, runs: list[tuple[float, dict[str, np.ndarray]]]) -> None:
        self.walls = np.array([wall for wall, _ in runs])
        self.esses = np.array([min_ess(posterior) for _, posterior in runs])
        self.rates = self.esses / self.walls
        self.posterior = runs[0][1]

    @property
    def rate(self) -> float:
        return float(np.median(self.rates))

    def spread(self) -> str:
        """The lowest and highest ESS/s of the runs ("-" for one run)."""
        return f"{self.rates.min():.0f}-{self.rates.max():.0f}" if len(self.rates) > 1 else "-"


def import_compiler_stack(use_numpyro: bool) -> None:
    """Import what the samplers import lazily, so that no row's wall time includes imports."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch._inductor.compile_fx  # noqa: F401 - recording and compiling the step
        import torch.fx.experimental.proxy_tensor  # noqa: F401
        from torch._inductor.cpu_vec_isa import valid_vec_isa_list

        # Inductor probes the CPU's vector instruction sets by compiling test programs once per
        # process before it vectorises (9 s on a machine's first run, 1.2 s once its on-disk cache
        # holds them): the synthetic regression's row would pay it; the smaller models' scalar
        # kernels never probe (bayesgen._replay.compile_graph)
        valid_vec_isa_list()
        import pyro.infer  # noqa: F401
        if use_numpyro:
            import jax  # noqa: F401
            import numpyro.infer  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chains", type=int, nargs="*", default=[4, 16, 64, 256],
                        help="chain counts of the scaling table")
    parser.add_argument("--peers", nargs="*", default=["pyro", "numpyro"], choices=["pyro", "numpyro"],
                        help="peers to run beside bayesgen (numpyro only when installed)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--scaling-models", nargs="*", choices=list(MODELS), default=["eight_schools_noncentred"],
                        help="models of the scaling table (the synthetic regression at 256 chains takes about "
                             "half an hour on two CPU cores)")
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs (seeds 0, 1, ...) of bayesgen's and NumPyro's rows, reported as medians; "
                             "Pyro's and the replay's rows run once")
    parser.add_argument("--smoke", action="store_true", help="50 warmup + 50 draws, first model only")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    torch.set_default_dtype(torch.float64)
    warmup, draws = (50, 50) if args.smoke else (args.num_warmup, args.num_samples)
    seeds = range(1 if args.smoke else args.repeats)
    models = {name: MODELS[name] for name in (args.models[:1] if args.smoke else args.models)}
    use_pyro = "pyro" in args.peers
    use_numpyro = "numpyro" in args.peers and importlib.util.find_spec("numpyro") is not None
    import_compiler_stack(use_numpyro)
    print(f"{warmup} warmup + {draws} draws; machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, "
          f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
          + f"; bayesgen and NumPyro: medians of {len(seeds)} run(s), seeds 0-{len(seeds) - 1}")
    if models:
        print(f"{'model':<28} {'sampler':<16} {'wall s':>8} {'min ESS':>8} {'ESS/s':>8} {'ESS/s range':>12} "
              f"{'vs Pyro':>8} {'vs NumPyro':>10} {'MCSE gap':>9} {'load':>5}")
    for name, (model, load) in models.items():
        data = load()
        # the peers run first, so that bayesgen's rows come one after the other
        peers = {}
        if use_numpyro:
            peers["numpyro"] = Row([run_numpyro(name, data, 4, warmup, draws, seed) for seed in seeds])
        if use_pyro:
            peers["pyro"] = Row([run_pyro(model, data, 4, warmup, draws)])
        rows = {"bayesgen": Row([run_bayesgen(model, data, 4, warmup, draws, args.device, seed=seed)
                                 for seed in seeds]),
                "bayesgen replay": Row([run_bayesgen(model, data, 4, warmup, draws, args.device, jit_compile=False)])}
        rows.update(reversed(peers.items()))
        for sampler, row in rows.items():
            vs_pyro = f"{row.rate / rows['pyro'].rate:.2f}" if "pyro" in rows else "-"
            vs_numpyro = f"{row.rate / rows['numpyro'].rate:.2f}" if "numpyro" in rows else "-"
            # largest posterior-mean difference from Pyro's, in combined Monte Carlo standard errors
            gap = (f"{max_mcse_gap(row.posterior, rows['pyro'].posterior):.2f}"
                   if "pyro" in rows and sampler != "pyro" else "-")
            print(f"{name:<28} {sampler:<16} {np.median(row.walls):8.1f} {np.median(row.esses):8.0f} "
                  f"{row.rate:8.1f} {row.spread():>12} {vs_pyro:>8} {vs_numpyro:>10} {gap:>9} "
                  f"{os.getloadavg()[0]:5.1f}", flush=True)
    scaling = list(models) if args.smoke else args.scaling_models
    print(f"\nbayesgen scaling, {args.device}")
    print(f"{'model':<28} {'chains':>7} {'wall s':>8} {'min ESS':>9} {'ESS/s':>9} {'wall / wall(first)':>19} "
          f"{'load':>5}")
    for name in scaling:
        model, load = MODELS[name]
        data = load()
        base = None
        for chains in args.chains:
            wall, post = run_bayesgen(model, data, chains, warmup, draws, args.device)
            base, chains_ess = base or wall, min_ess(post)
            print(f"{name:<28} {chains:7d} {wall:8.1f} {chains_ess:9.0f} {chains_ess / wall:9.1f} "
                  f"{wall / base:19.2f} {os.getloadavg()[0]:5.1f}", flush=True)


if __name__ == "__main__":
    main()
