"""SVI through Pyro's own machinery, for guides that need the program itself."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, config_enumerate
from pyro.infer.autoguide import AutoGuide, AutoLaplaceApproximation

from bayesgen.engine import Problem
from bayesgen.inference._minibatches import Minibatches
from bayesgen.inference._steps import (Checkpointing, Steps, load_param_store, param_store, pyro_svi_step,
                                       run_steps)
from bayesgen.logdensity import per_draw
from bayesgen.generate import local_latents
from bayesgen.program import BATCH_PLATE, is_subsample, on_device

__all__ = ["PyroState", "fit_pyro_guide"]


def _make_guide(guide: Any, model: Callable[..., Any], hide: list[str]) -> Callable[..., Any]:
    """An AutoGuide class is built on the program (enumerated sites hidden); AutoGuides built already
    and callables are used as given."""
    if isinstance(guide, type) and issubclass(guide, AutoGuide):
        return guide(poutine.block(model, hide=hide))
    if callable(guide):  # an AutoGuide built already is a callable too
        return guide
    raise TypeError(f"guide must be 'normal', 'mvn', 'lowrank', an AutoGuide class or a guide "
                    f"callable, got {guide!r}")


class PyroState:
    """Pyro's parameter store, a ``PyroOptim``'s state and torch's random state: what the later
    steps of a run through ``pyro.infer.SVI`` depend on, for checkpoints.

    ``materialise`` runs the program and guide once, so that every parameter exists (with its
    constraint) before saved values are copied into it; the random numbers it draws are then
    replaced by the saved random state.
    """

    def __init__(self, optim: pyro.optim.PyroOptim, materialise: Callable[[], Any]) -> None:
        self.optim, self.materialise = optim, materialise

    def state_dict(self) -> dict[str, Any]:
        return {**param_store(), "optim": self.optim.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.materialise()
        load_param_store(state)
        self.optim.set_state(state["optim"])


def fit_pyro_guide(problem: Problem, guide: Any, *, num_steps: int, num_particles: int, lr: float,
                   lr_decay: float, num_draws: int, progress: bool, checkpointing: Checkpointing | None = None,
                   minibatches: Minibatches | None = None) -> tuple[dict[str, torch.Tensor], Steps]:
    """Run ``pyro.infer.SVI`` with ``guide`` and return ``(draws, steps)``.

    Programs with enumerable discrete latents use ``TraceEnum_ELBO`` (the sites are
    enumerated in the model and hidden from auto-guides); others use ``Trace_ELBO``
    with vectorised particles when the program can be batched. Draws of the latent
    sites come from the fitted guide, ``(1, num_draws, *shape)``.
    """
    density = problem.density
    guide_fn = _make_guide(guide, problem.spec.model, density.enumerated)
    with on_device(problem.device):
        scored = _score_function_sites(guide_fn, problem)
    # a guide that draws discrete values the model cannot sum out (a belief network's hidden
    # units) needs the score-function gradient, with the variance reduction of TraceGraph_ELBO
    hide = [] if scored else density.enumerated
    model = config_enumerate(problem.spec.model, "parallel") if hide else problem.spec.model
    nesting = density.max_plate_nesting
    if scored:
        elbo = TraceGraph_ELBO(num_particles=num_particles, max_plate_nesting=nesting)
    elif hide:
        elbo = TraceEnum_ELBO(num_particles=num_particles, max_plate_nesting=nesting,
                              vectorize_particles=density.vectorized)
    else:
        elbo = Trace_ELBO(num_particles=num_particles, max_plate_nesting=nesting,
                          vectorize_particles=density.vectorized)
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay ** (1 / max(num_steps, 1))})
    svi = SVI(model, guide_fn, optim, elbo)
    with on_device(problem.device):
        state = PyroState(optim, lambda: svi.evaluate_loss(**problem.data))
        steps = run_steps(pyro_svi_step(svi, problem.data, problem.ranks), num_steps, progress=progress, desc="svi",
                          checkpointing=checkpointing, state=state, minibatches=minibatches)
        if isinstance(guide_fn, AutoLaplaceApproximation):
            # its trained guide is a point (a MAP estimate); its draws come from the Gaussian with the
            # curvature there as precision, which Pyro builds on request
            guide_fn = guide_fn.laplace_approximation(**problem.data)
        with torch.no_grad():
            draws = _guide_draws(guide_fn, problem, num_draws, amortised=not isinstance(guide, (type, AutoGuide)))
    return draws, steps


def _score_function_sites(guide: Callable[..., Any], problem: Problem) -> list[str]:
    """The guide's latent sites drawn without a reparameterised sample (discrete ones)."""
    trace = poutine.trace(guide).get_trace(**problem.data)
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not is_subsample(site)
            and not getattr(site["fn"], "has_rsample", False)]


def _guide_draws(guide: Callable[..., Any], problem: Problem, num_draws: int, *,
                 amortised: bool) -> dict[str, torch.Tensor]:
    """Draws of the latent sites from a fitted guide, ``(1, num_draws, *shape)``: one run of the
    guide under an outer batch plate (or one run per draw when the program cannot be batched).

    A guide callable (``amortised``) leaves out the local latents, the sites in a plate with an
    observed site (see ``generate.local_latents``): it gives them as a function of each
    observation (a VAE's encoder), which its trained parameters in ``Fit.params`` hold, and
    their draws would be ``num_draws`` copies of the data's size (1.6 GB for a VAE of 4,000
    MNIST digits). Latent sites inside a plate that subsamples are left out too, with a warning
    for an AutoGuide: a run of the guide holds them for one random minibatch of the plate's
    items, which later runs of the program (deterministic sites, predictions) would pair with
    another. Those runs draw them afresh from the program given the other sites.
    """
    density = problem.density
    skipped = local_latents(problem.prototype, list(problem.spec.observed)) if amortised else set()
    local = {name: plate for name, plate in density.minibatched_latents.items() if name not in skipped}
    if local:
        warnings.warn(f"site(s) {', '.join(repr(name) for name in local)} are left out of the posterior "
                      f"draws: they live in plate '{next(iter(local.values()))}', which subsamples, so a draw "
                      "holds them for one random minibatch only; their variational parameters are in "
                      "Pyro's param store", UserWarning, stacklevel=2)
    sites = [s for s in density.layout if s.name not in local and s.name not in skipped]
    if density.vectorized:
        with pyro.plate(BATCH_PLATE, num_draws, dim=-density.max_plate_nesting - 1):
            trace = poutine.trace(guide).get_trace(**problem.data)
        # copies: an AutoDelta's "draw" is a view of its own parameter, which the caller resets afterwards
        return {s.name: per_draw(trace.nodes[s.name]["value"], num_draws, s.shape).detach().clone()[None]
                for s in sites}
    traces = [poutine.trace(guide).get_trace(**problem.data) for _ in range(num_draws)]
    return {s.name: torch.stack([t.nodes[s.name]["value"].reshape(s.shape) for t in traces])[None]
            for s in sites}
