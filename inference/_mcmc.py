"""Shared driver of the MCMC engines: initial points, the batched sampler, constrained draws."""

from __future__ import annotations

import time

import torch

from bayesgen.engine import EngineResult, Problem
from bayesgen.inference._sampler import run_hmc
from bayesgen.inference._threads import cpu_threads, threads_for
from bayesgen.logdensity import LogDensity

__all__ = ["initial_points", "run_mcmc"]

_INIT_TRIES = 100

def initial_points(density: LogDensity, num_chains: int, generator: torch.Generator,
                   radius: float = 2.0) -> torch.Tensor:
    """Uniform(-radius, radius) in the unconstrained space, redrawn where the density is not finite
    (as Stan does). Raises if some chain finds no finite starting point."""
    kw = {"generator": generator, "dtype": torch.get_default_dtype(), "device": density.device}
    init = (torch.rand(num_chains, density.dim, **kw) * 2 - 1) * radius
    for _ in range(_INIT_TRIES):
        logp, grad = density.value_and_grad(init)
        bad = ~(torch.isfinite(logp) & torch.isfinite(grad).all(-1))
        if not bad.any():
            return init
        fresh = (torch.rand(num_chains, density.dim, **kw) * 2 - 1) * radius
        init = torch.where(bad[:, None], fresh, init)
    raise ValueError(f"no finite starting point with a finite gradient after {_INIT_TRIES} tries "
                     f"for {int(bad.sum())} chain(s); check the priors and the data")


def run_mcmc(problem: Problem, *, seed: int, progress: bool, algorithm: str, num_warmup: int,
             num_samples: int, num_chains: int, target_accept: float, max_tree_depth: int,
             num_steps: int, dense_mass: bool, jit_compile: bool | None, engine: str) -> EngineResult:
    """Run ``num_chains`` chains of NUTS or static HMC through one batched density.

    The density replays a recording of the program (``LogDensity.value_and_grad``) and, when
    that recording was validated, the whole leapfrog step (density and tree bookkeeping) is
    recorded and replayed as one graph too (``run_hmc(fuse=True)``). Small problems sample on
    one CPU thread (:func:`bayesgen.inference._threads.threads_for`).
    """
    started = time.perf_counter()
    density = problem.density
    if problem.has_params:
        raise ValueError(f"engine '{engine}' samples sample sites only; this program declares "
                         "pyro.param/pyro.module parameters, so fit it with engine='svi'")
    density.require_continuous(engine)
    if density.dim == 0:
        raise ValueError(f"engine '{engine}': the program has no continuous latent sites to sample")
    density.require_exact(engine)
    generator = torch.Generator(device=problem.device).manual_seed(seed)
    with cpu_threads(threads_for(problem, num_chains)):
        init = initial_points(density, num_chains, generator)
        fuse = density._replayable(init)
        sampled = time.perf_counter()
        result = run_hmc(density.value_and_grad, init, num_warmup=num_warmup, num_samples=num_samples,
                         generator=generator, algorithm=algorithm, target_accept=target_accept,
                         max_tree_depth=max_tree_depth, num_steps=num_steps, dense_mass=dense_mass,
                         progress=progress, fuse=fuse, jit_compile=jit_compile)
    finished = time.perf_counter()
    flat = result.draws.reshape(num_chains * num_samples, density.dim)
    with torch.no_grad():
        values = density.constrain(flat)
    draws = {s.name: values[s.name].reshape((num_chains, num_samples) + s.shape) for s in density.layout}
    return EngineResult(
        kind="samples", draws=draws, sample_stats=dict(result.stats),
        timing={"setup": sampled - started, "sample": finished - sampled,
                "constrain": time.perf_counter() - finished},
        info={"warmup_divergences": result.warmup_divergences.tolist(),
              "step_size": result.step_size.tolist()},
    )
