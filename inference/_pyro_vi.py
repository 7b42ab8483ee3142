"""SVI through Pyro's own machinery, for guides that need the program itself."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoGuide
from tqdm.auto import tqdm

from bayesgen.engine import Problem
from bayesgen.logdensity import per_draw
from bayesgen.program import BATCH_PLATE, on_device

__all__ = ["fit_pyro_guide"]


def _make_guide(guide: Any, model: Callable[..., Any], hide: list[str]) -> Callable[..., Any]:
    """An AutoGuide class is built on the program (enumerated sites hidden); callables are used as given."""
    if isinstance(guide, type) and issubclass(guide, AutoGuide):
        return guide(poutine.block(model, hide=hide))
    if callable(guide):
        return guide
    raise TypeError(f"guide must be 'normal', 'mvn', 'lowrank', an AutoGuide class or a guide "
                    f"callable, got {guide!r}")


def fit_pyro_guide(problem: Problem, guide: Any, *, num_steps: int, num_particles: int, lr: float,
                   lr_decay: float, num_draws: int, progress: bool
                   ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Run ``pyro.infer.SVI`` with ``guide`` and return ``(draws, losses)``.

    Programs with enumerable discrete latents use ``TraceEnum_ELBO`` (the sites are
    enumerated in the model and hidden from auto-guides); others use ``Trace_ELBO``
    with vectorised particles when the program can be batched. Draws of the latent
    sites come from the fitted guide, ``(1, num_draws, *shape)``.
    """
    density = problem.density
    hide = density.enumerated
    model = config_enumerate(problem.spec.model, "parallel") if hide else problem.spec.model
    guide_fn = _make_guide(guide, problem.spec.model, hide)
    nesting = density.max_plate_nesting
    elbo = (TraceEnum_ELBO(num_particles=num_particles, max_plate_nesting=nesting,
                           vectorize_particles=density.vectorized) if hide
            else Trace_ELBO(num_particles=num_particles, max_plate_nesting=nesting,
                            vectorize_particles=density.vectorized))
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay ** (1 / max(num_steps, 1))})
    svi = SVI(model, guide_fn, optim, elbo)
    with on_device(problem.device):
        losses = [float(svi.step(**problem.data))
                  for _ in tqdm(range(num_steps), disable=not progress, desc="svi")]
        with torch.no_grad():
            draws = _guide_draws(guide_fn, problem, num_draws)
    return draws, losses


def _guide_draws(guide: Callable[..., Any], problem: Problem, num_draws: int) -> dict[str, torch.Tensor]:
    """Draws of the latent sites from a fitted guide, ``(1, num_draws, *shape)``: one run of the
    guide under an outer batch plate (or one run per draw when the program cannot be batched).

    Latent sites inside a plate that subsamples are left out, with a warning: a run of the guide
    holds them for one random minibatch of the plate's items, which later runs of the program
    (deterministic sites, predictions) would pair with another. Those runs draw them afresh from
    the program given the other sites.
    """
    density = problem.density
    local = density.minibatched_latents
    if local:
        warnings.warn(f"site(s) {', '.join(repr(name) for name in local)} are left out of the posterior "
                      f"draws: they live in plate '{next(iter(local.values()))}', which subsamples, so a draw "
                      "holds them for one random minibatch only; their variational parameters are in "
                      "Pyro's param store", UserWarning, stacklevel=2)
    sites = [s for s in density.layout if s.name not in local]
    if density.vectorized:
        with pyro.plate(BATCH_PLATE, num_draws, dim=-density.max_plate_nesting - 1):
            trace = poutine.trace(guide).get_trace(**problem.data)
        return {s.name: per_draw(trace.nodes[s.name]["value"], num_draws, s.shape)[None] for s in sites}
    traces = [poutine.trace(guide).get_trace(**problem.data) for _ in range(num_draws)]
    return {s.name: torch.stack([t.nodes[s.name]["value"].reshape(s.shape) for t in traces])[None]
            for s in sites}
