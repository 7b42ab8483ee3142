"""Stochastic variational inference: Gaussian families on the log density, or any Pyro guide."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro.poutine as poutine
import torch
from pyro.infer.autoguide import AutoGuide, AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoNormal

from bayesgen.diagnostics import pareto_khat
from bayesgen.engine import SVI_FAMILIES, EngineResult, Problem
from bayesgen.inference._gaussian_vi import elbo_converged, fit_gaussian, sd_against_laplace
from bayesgen.inference._pyro_vi import fit_pyro_guide
from bayesgen.inference._minibatches import minibatches_for
from bayesgen.inference._steps import checkpointing_of
from bayesgen.inference._threads import cpu_threads, threads_for
from bayesgen.logdensity import LogDensity

__all__ = ["SVI"]


@dataclass(frozen=True, kw_only=True)
class SVI:
    """Stochastic variational inference.

    With ``guide="normal"`` (mean-field), ``"mvn"`` (full-rank) or ``"lowrank"``, q is a
    Gaussian over the flat unconstrained vector of ``bg.LogDensity``; all particles of a
    step cost one batched density call. A program with ``pyro.param``/``pyro.module``
    parameters (network weights) fits the family as Pyro's ``AutoNormal``,
    ``AutoMultivariateNormal`` or ``AutoLowRankMultivariateNormal`` instead, so that its
    parameters are trained with q. Any other guide — a Pyro ``AutoGuide`` class (e.g.
    ``AutoIAFNormal``) or a guide callable — runs through ``pyro.infer.SVI``, with
    ``TraceEnum_ELBO`` when the program has enumerable discrete latents.

    Parameters
    ----------
    guide : str, AutoGuide class, callable or None
        The variational family ("normal", "mvn" or "lowrank" Gaussians, or a Pyro guide); None
        takes the guide the model's ``ModelSpec`` ships, else "normal".
    num_steps : int
        Optimiser steps.
    num_particles : int
        Monte Carlo particles per ELBO estimate.
    lr : float
        Adam's initial learning rate.
    lr_decay : float
        Factor by which the learning rate has decayed at the last step (exponential schedule).
    rank : int
        Rank of the ``"lowrank"`` family.
    init_scale : float
        Initial standard deviation of the Gaussian families where they start at random, not
        at the Laplace approximation (programs with parameters, many latents, or no mode).
    num_draws : int
        Posterior draws taken from the fitted guide.
    tol : float
        Relative tolerance of the loss in the convergence test of ``info["converged"]``.
    checkpoint : str or None
        A file to which the run's state (parameters, optimiser, random state) is saved every
        ``checkpoint_every`` steps and at the end, each time atomically.
    checkpoint_every : int
        Steps between checkpoints.
    resume : str or None
        A checkpoint of a run with the same settings and seed to continue from: the fit is then
        bit for bit the one the run would have made had it not stopped.

    Notes
    -----
    On the log density (programs without parameters), the Gaussian families start at the
    Laplace approximation (the posterior's mode and the inverse Hessian there) where it is cheap
    and exists, so that the steps only learn how q differs from it; else at random. Their q is
    the average of the last ``num_steps // 20`` steps' iterates. ``info["converged"]`` needs the
    loss to have stopped changing (within ``tol``, or its noise) and, for these families, the
    ELBO's gradient to put the means within 0.2 sd of its optimum; their ``info["sd_vs_laplace"]``
    lists the coordinates whose sd under q is off by more than a factor 2 from the Laplace sd at
    q's mean, which ``bg.check`` reports. The AutoGuide twins of programs with parameters start
    where Pyro's AutoGuides do and have neither check. Ctrl-C ends the steps early and returns a
    fit of the work so far, marked ``info["interrupted"]``.
    """

    name: ClassVar[str] = "svi"
    #: ``bg.fit(..., distributed=True)`` shares out its minibatches among processes.
    shares_minibatches: ClassVar[bool] = True
    guide: Any = None
    num_steps: int = 3000
    num_particles: int = 8
    lr: float = 0.02
    lr_decay: float = 0.1
    rank: int = 5
    init_scale: float = 0.1
    num_draws: int = 1000
    tol: float = 1e-3
    checkpoint: str | None = None
    checkpoint_every: int = 500
    resume: str | None = None

    def run(self, problem: Problem, *, seed: int, progress: bool) -> EngineResult:
        """Fit the variational approximation and draw from it."""
        with cpu_threads(threads_for(problem, self.num_particles)):
            return self._run(problem, seed=seed, progress=progress)

    def _autoguide_twin(self, family: str, problem: Problem) -> AutoGuide:
        """Pyro's AutoGuide of the same Gaussian family (and rank and initial scale), on the program
        with its enumerated sites hidden (they are summed out, as for any AutoGuide class)."""
        model = poutine.block(problem.spec.model, hide=problem.density.enumerated)
        if family == "normal":
            return AutoNormal(model, init_scale=self.init_scale)
        if family == "mvn":
            return AutoMultivariateNormal(model, init_scale=self.init_scale)
        return AutoLowRankMultivariateNormal(model, rank=self.rank, init_scale=self.init_scale)

    def _run(self, problem: Problem, *, seed: int, progress: bool) -> EngineResult:
        started = time.perf_counter()
        density = problem.density
        if not (density.latent_names or density.discrete_latents):  # nothing to approximate but sums
            if problem.has_params:
                raise ValueError("engine 'svi' approximates the posterior of sampled latent sites, and this program "
                                 "has none: its unknowns are parameters (network weights); fit them with "
                                 "engine='mle', or engine='map' to count their priors")
            raise ValueError("engine 'svi': the program has no continuous latent sites or parameters to fit")
        generator = torch.Generator(device=problem.device).manual_seed(seed)
        checkpointing = checkpointing_of(self, seed, problem)
        info: dict[str, Any] = {}
        guide = self.guide if self.guide is not None else problem.spec.guide or "normal"
        if isinstance(guide, str):
            if guide not in SVI_FAMILIES:
                raise ValueError(f"unknown guide '{guide}'; use one of {', '.join(SVI_FAMILIES)}, "
                                 "an AutoGuide class or a guide callable")
            density.require_continuous(f"svi' with guide '{guide}")
            if guide != "normal" or not problem.has_params:  # only AutoNormal keeps a parameter per item
                _require_global_latents(density, guide)
            info["family"] = guide
            if problem.has_params:
                # q over the latents alone would leave the program's networks at their initial weights:
                # Pyro's twin of the family trains them with q, through pyro.infer.SVI
                guide = self._autoguide_twin(guide, problem)
        if isinstance(guide, str):
            q, steps, settling = fit_gaussian(
                density, family=guide, rank=self.rank, num_steps=self.num_steps, num_particles=self.num_particles,
                lr=self.lr, lr_decay=self.lr_decay, init_scale=self.init_scale, generator=generator,
                progress=progress, checkpointing=checkpointing, minibatches=minibatches_for(problem, seed),
                ranks=problem.ranks)
            with torch.no_grad():
                u = q.sample(self.num_draws, generator)
                draws = {k: v[None] for k, v in density.constrain(u).items() if k in density.latent_names}
            if not density.subsampled:  # a minibatch density is a new random one at every call: no check
                with torch.no_grad():
                    log_weights = density.log_density_in_chunks(u) - q.distribution().log_prob(u)
                info["pareto_k"] = pareto_khat(log_weights.cpu().numpy())
                info["sd_vs_laplace"], curvature = sd_against_laplace(density, q)
                if curvature:
                    info["curvature_message"] = curvature
        else:
            draws, steps = fit_pyro_guide(problem, guide, num_steps=self.num_steps,
                                          num_particles=self.num_particles, lr=self.lr,
                                          lr_decay=self.lr_decay, num_draws=self.num_draws,
                                          progress=progress, checkpointing=checkpointing,
                                          minibatches=minibatches_for(problem, seed))
            settling = None
        losses = steps.losses
        window = max(10, self.num_steps // 20)
        info["converged"] = elbo_converged(losses, window, self.tol)
        info["message"] = f"loss at the last step {losses[-1]:.4g}" if losses else "no steps run"
        if losses and not info["converged"]:  # say which test failed: the gradient's may have passed
            info["message"] += (f"; the mean loss of the last {window} steps is not yet within {self.tol:g} "
                                f"(relative) or three standard errors of the {window} before's"
                                if len(losses) >= 2 * window else f"; fewer than {2 * window} steps to judge by")
        if settling is not None:
            info["converged"] = info["converged"] and settling.settled
            info["message"] += (f"; the ELBO's gradient over the last {window} steps puts the means up to "
                                f"{settling.distance:.2g} sd from its optimum")
        if steps.interrupted:
            info["converged"] = False
            info.update(steps.info(self.num_steps))
        return EngineResult(kind="approximation", draws=draws,
                            sample_stats={"loss": torch.tensor(losses)[None]},
                            timing={"optimize": time.perf_counter() - started}, info=info)


def _require_global_latents(density: LogDensity, guide: str) -> None:
    """Raise where a latent site lives in a plate that subsamples: a Gaussian over the
    unconstrained space would give its few values a different minibatch's items at every step."""
    for name, plate in density.minibatched_latents.items():
        raise ValueError(f"guide '{guide}' needs every latent site at its full size, but site '{name}' "
                         f"lives in plate '{plate}', which draws a minibatch at each run; use a Pyro "
                         "AutoGuide such as AutoNormal (one parameter per item) or remove subsample_size")
