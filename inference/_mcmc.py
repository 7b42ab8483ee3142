"""Shared driver of the MCMC engines: initial points, the batched sampler, constrained draws."""

from __future__ import annotations

import functools
import time
import warnings
from typing import Any, Callable

import pyro.distributions as dist
import torch
from pyro.infer.inspect import get_dependencies

from bayesgen.distributed import Ranks
from bayesgen.engine import EngineResult, Problem
from bayesgen.inference._guard import GuardedDensity
from bayesgen.inference._kernels import SamplerKernel
from bayesgen.inference._sampler import HMCResult, run_hmc
from bayesgen.inference._streams import ChainStreams
from bayesgen.inference._threads import cpu_threads, threads_for
from bayesgen.logdensity import LogDensity

__all__ = ["guarded_density", "initial_points", "run_mcmc"]

_INIT_TRIES = 100


def guarded_density(density: LogDensity) -> GuardedDensity:
    """The sampler's density: ``density.value_and_grad`` (replayed once recorded), with a guard
    that evaluates the chains one by one, eagerly (``LogDensity._value_and_grad``), when the
    batch raises a numerical error, and rejects the failing ones (:class:`GuardedDensity`)."""
    return GuardedDensity(density.value_and_grad,
                          rowwise=functools.partial(density._value_and_grad, jacobian=True, prior=True))


def initial_points(density: LogDensity, streams: ChainStreams, radius: float = 2.0, *,
                   guard: GuardedDensity | None = None) -> torch.Tensor:
    """Uniform(-radius, radius) in the unconstrained space, a point per chain of ``streams``,
    redrawn (from the chain's own stream) where the density is not finite or raises a numerical
    error (as Stan does), evaluated through ``guard`` (by default :func:`guarded_density`).

    Raises ``ValueError`` if some chain finds no finite starting point in :data:`_INIT_TRIES`
    tries, naming the chains and the reason (the density's error, or a non-finite value).
    """
    guard = guarded_density(density) if guard is None else guard
    init = (streams.uniform(density.dim) * 2 - 1) * radius
    for _ in range(_INIT_TRIES):
        failures = guard.failures
        logp, grad = guard.evaluate(init, reraise=False)
        bad = ~(torch.isfinite(logp) & torch.isfinite(grad).all(-1))
        if not bad.any():
            return init
        fresh = (streams.uniform(density.dim, bad) * 2 - 1) * radius
        init = torch.where(bad[:, None], fresh, init)
    chains = [streams.chains[i] for i in torch.nonzero(bad).flatten().tolist()]
    if guard.failures > failures:
        reason = f"the log density raised {guard.first_error}"
        if not guard.succeeded:
            reason += " at every point tried (a bug in the program, or priors whose draws it cannot handle)"
    else:
        reason = "the log density or its gradient was not finite"
    raise ValueError(f"no finite starting point with a finite gradient after {_INIT_TRIES} tries for "
                     f"chain(s) {chains}: {reason}; check the priors and the data")


#: Location-scale families whose sites a non-centred parameterisation rewrites as ``loc + scale * z``.
_LOC_SCALE = (dist.Normal, dist.StudentT, dist.Cauchy, dist.Laplace, dist.LogNormal)


def centred_sites(problem: Problem) -> list[str] | None:
    """The latent sites of a location-scale family whose prior takes its parameters from other
    latent sites (Pyro's ``get_dependencies``): the centred hierarchy that divergences usually
    come from, and what the advice to non-centre is about. An empty list says the program has
    none (it may be non-centred already); None that the program's dependencies could not be read.
    """
    latent = set(problem.density.latent_names)
    try:
        prior = get_dependencies(problem.spec.model, (), dict(problem.data))["prior_dependencies"]
    except Exception:  # noqa: BLE001 -- an inspection for advice only: any failure means "unknown"
        return None
    found = []
    for name in problem.density.latent_names:
        fn = problem.prototype.nodes[name]["fn"]
        while isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
            fn = fn.base_dist
        if isinstance(fn, _LOC_SCALE) and (set(prior.get(name, {})) - {name}) & latent:
            found.append(name)
    return found


def _fault_info(failures: int, first_error: str | None, draws: torch.Tensor, lp: torch.Tensor) -> dict[str, Any]:
    """Facts about failures for ``Fit.info`` (only those that occurred, so clean runs add nothing):
    how many points the density raised at (each a rejected, divergent proposal) and why, and
    which chains hold non-finite draws or log densities, with how many."""
    info: dict[str, Any] = {}
    if failures:
        info["density_failures"] = failures
        info["density_error"] = first_error
    nonfinite = (~torch.isfinite(draws).all(-1) | ~torch.isfinite(lp)).sum(-1)
    if bool(nonfinite.any()):
        info["nonfinite_draws"] = nonfinite.tolist()
    return info


def run_mcmc(problem: Problem, *, seed: int, progress: bool, kernel: SamplerKernel, num_warmup: int,
             num_samples: int, num_chains: int, target_accept: float, dense_mass: bool,
             jit_compile: bool | None, engine: str) -> EngineResult:
    """Run ``num_chains`` chains of ``kernel`` (NUTS, static HMC) through one batched density.

    The density replays a recording of the program (``LogDensity.value_and_grad``) and, when
    that recording was validated, the whole leapfrog step (density and tree bookkeeping) is
    recorded and replayed as one graph too (``run_hmc(fuse=True)``). Small problems sample on
    one CPU thread (:func:`bayesgen.inference._threads.threads_for`).
    """
    started = time.perf_counter()
    density = problem.density
    if problem.has_params:
        instead = ("engine='svi', which trains them with a variational posterior of its latent sites"
                   if density.latent_names or density.discrete_latents else
                   "engine='mle' (or 'map' to count their priors): its only unknowns are parameters")
        raise ValueError(f"engine '{engine}' samples sample sites only; this program declares "
                         f"pyro.param/pyro.module parameters (network weights), so fit it with {instead}")
    density.require_continuous(engine)
    if density.dim == 0:
        raise ValueError(f"engine '{engine}': the program has no continuous latent sites to sample")
    density.require_exact(engine)
    ranks = problem.ranks
    if num_chains < ranks.world_size:
        raise ValueError(f"engine '{engine}': {num_chains} chain(s) cannot be shared among {ranks.world_size} "
                         "processes; ask for at least one chain per process")
    streams = ChainStreams(seed, ranks.mine(num_chains), dtype=torch.get_default_dtype(), device=problem.device,
                           ranks=ranks)
    guard = guarded_density(density)
    with cpu_threads(threads_for(problem, streams.num_chains)):
        init = initial_points(density, streams, guard=guard)
        fuse = density._replayable(init)
        sampled = time.perf_counter()
        result = run_hmc(guard, init, num_warmup=num_warmup, num_samples=num_samples,
                         streams=streams, kernel=kernel, target_accept=target_accept, dense_mass=dense_mass,
                         progress=progress and ranks.is_root, fuse=fuse, jit_compile=jit_compile)
    failures, first_error = guard.failures, guard.first_error
    if ranks.world_size > 1:
        result, failures, first_error = _gather_chains(result, failures, first_error, ranks)
    finished = time.perf_counter()
    kept = result.draws.shape[1]  # num_samples, or fewer after a KeyboardInterrupt
    flat = result.draws.reshape(num_chains * kept, density.dim)
    with torch.no_grad():
        values = density.constrain(flat)
    draws = {s.name: values[s.name].reshape((num_chains, kept) + s.shape) for s in density.layout}
    info: dict[str, Any] = {"warmup_divergences": result.warmup_divergences.tolist(),
                            "step_size": result.step_size.tolist()}
    if result.interrupted:
        info.update(interrupted=True, num_draws=kept,
                    interrupted_note=f"kept the first {kept} of {num_samples} draws per chain (the "
                                     "transitions completed before the interrupt; warmup had finished)")
    info.update(_fault_info(failures, first_error, result.draws, result.stats["lp"]))
    if bool(result.stats["diverging"].any()):
        centred = centred_sites(problem)
        if centred is not None:
            info["centred_sites"] = centred
    if "nonfinite_draws" in info:
        warnings.warn(f"engine '{engine}': chain(s) {_chains(info['nonfinite_draws'])} produced non-finite "
                      "positions or log densities; they are kept in the fit and reported by bg.check",
                      RuntimeWarning, stacklevel=3)
    return EngineResult(
        kind="samples", draws=draws, sample_stats=dict(result.stats),
        timing={"setup": sampled - started, "sample": finished - sampled,
                "constrain": time.perf_counter() - finished},
        info=info,
    )


def _gather_chains(result: HMCResult, failures: int, first_error: str | None,
                   ranks: Ranks) -> tuple[HMCResult, int, str | None]:
    """Every process's chains, in the order of their global indices (rank ``r`` ran chains
    ``r, r + W, ...``), with the density failures of all; in every process. A run interrupted
    in some process keeps the draws every process completed."""
    device = result.draws.device
    mine = (result._replace(draws=result.draws.cpu(), stats={k: v.cpu() for k, v in result.stats.items()},
                            step_size=result.step_size.cpu(), inverse_mass_matrix=result.inverse_mass_matrix.cpu(),
                            warmup_divergences=result.warmup_divergences.cpu()), failures, first_error)
    shares = ranks.gather(mine)
    counts = [len(share.step_size) for share, _, _ in shares]
    starts = [sum(counts[:rank]) for rank in range(ranks.world_size)]
    order = torch.tensor([starts[i % ranks.world_size] + i // ranks.world_size for i in range(sum(counts))])
    kept = min(share.draws.shape[1] for share, _, _ in shares)

    def joined(pick: Callable[[HMCResult], torch.Tensor], draws: bool = False) -> torch.Tensor:
        parts = [pick(share)[:, :kept] if draws else pick(share) for share, _, _ in shares]
        return torch.cat(parts)[order].to(device)

    whole = HMCResult(
        draws=joined(lambda share: share.draws, draws=True),
        stats={name: joined(lambda share, name=name: share.stats[name], draws=True) for name in result.stats},
        step_size=joined(lambda share: share.step_size),
        inverse_mass_matrix=joined(lambda share: share.inverse_mass_matrix),
        warmup_divergences=joined(lambda share: share.warmup_divergences),
        interrupted=any(share.interrupted for share, _, _ in shares),
    )
    errors = [error for _, count, error in shares if count]
    return whole, sum(count for _, count, _ in shares), errors[0] if errors else None


def _chains(counts: list[int]) -> list[int]:
    """Indices of the chains with a non-zero count."""
    return [chain for chain, count in enumerate(counts) if count]
