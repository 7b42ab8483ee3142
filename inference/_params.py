"""MLE/MAP of programs with ``pyro.param`` / ``pyro.module`` parameters: Adam through Pyro's SVI."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDelta
from pyro.poutine.messenger import Messenger

from bayesgen.engine import EngineResult, Problem
from bayesgen.inference._gaussian_vi import elbo_converged
from bayesgen.inference._pyro_vi import PyroState
from bayesgen.inference._minibatches import Minibatches
from bayesgen.inference._steps import Checkpointing, pyro_svi_step, run_steps
from bayesgen.program import on_device

__all__ = ["optimise_params", "refuse_step_settings"]


class _Unscored(Messenger):
    """Drop the log-prob of the named sample sites (their priors, for maximum likelihood)."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names

    def _pyro_sample(self, msg: Any) -> None:
        if msg["name"] in self.names:
            msg["mask"] = False


def _no_guide(*args: Any, **kwargs: Any) -> None:
    """The guide of a program whose only unknowns are parameters."""


def optimise_params(problem: Problem, *, prior: bool, num_steps: int, lr: float, lr_decay: float, tol: float,
                    progress: bool, engine: str, checkpointing: Checkpointing | None = None,
                    minibatches: Minibatches | None = None) -> EngineResult:
    """Maximise the likelihood (or likelihood times prior) over parameters and latent sites.

    Parameters declared with ``pyro.param``/``pyro.module`` (network weights) and the
    continuous latent sites (as point masses, ``AutoDelta``) are fitted together with Adam
    (the learning rate decayed exponentially to ``lr * lr_decay``), one SVI step per iteration, so a program that subsamples with
    ``pyro.plate(..., subsample_size=...)`` pays for a minibatch per step. Enumerable
    discrete sites are summed out with ``TraceEnum_ELBO``. Standard errors are not
    computed for network weights. ``checkpointing`` and ``minibatches``: see
    :func:`~bayesgen.inference._steps.run_steps`.
    """
    started = time.perf_counter()
    density = problem.density
    latent = set(density.latent_names)
    model: Callable[..., Any] = problem.spec.model
    if not prior and not density.observed:
        raise ValueError(f"engine '{engine}' maximises the likelihood, but the program has no "
                         "observed sites with the given data")
    density.require_continuous(engine)
    if not prior:
        model = _Unscored(latent)(model)
    hidden = poutine.block(model, hide=density.enumerated)
    guide = AutoDelta(hidden) if latent else _no_guide
    if density.enumerated:
        model = config_enumerate(model, "parallel")
        elbo = TraceEnum_ELBO(max_plate_nesting=density.max_plate_nesting)
    else:
        elbo = Trace_ELBO()
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay ** (1 / max(num_steps, 1)), "clip_norm": math.inf})
    svi = SVI(model, guide, optim, elbo)
    with on_device(problem.device):
        state = PyroState(optim, lambda: svi.evaluate_loss(**problem.data))
        steps = run_steps(pyro_svi_step(svi, problem.data, problem.ranks), num_steps, progress=progress, desc=engine,
                          checkpointing=checkpointing, state=state, minibatches=minibatches)
        losses = steps.losses
        with torch.no_grad():
            latents = guide.median(**problem.data) if latent else {}
    params = {name: site["value"] for name, site in problem.prototype.nodes.items() if site["type"] == "param"}
    point = {**{name: pyro.param(name).detach() for name in params}, **latents}
    return EngineResult(
        kind="point", draws={name: value[None, None] for name, value in latents.items()},
        sample_stats={"loss": torch.tensor(losses)[None]}, point=point,
        timing={"optimize": time.perf_counter() - started},
        info={"converged": not steps.interrupted and elbo_converged(losses, max(10, num_steps // 20), tol),
              "message": f"loss at the last step {losses[-1]:.4g}" if losses else "no steps run",
              **steps.info(num_steps)},
    )


def refuse_step_settings(engine: str, problem: Problem, *, checkpoints: bool) -> None:
    """Raise where settings of the step-wise training of network weights (checkpoints, a
    distributed fit) meet a program that ``engine`` optimises by L-BFGS on all its data at once."""
    if problem.ranks.world_size > 1:
        raise ValueError(f"engine '{engine}': distributed=True shares the minibatches of programs with network "
                         "weights, trained by Adam step by step; this program is optimised by L-BFGS on all of "
                         "its data in one go")
    if checkpoints:
        raise ValueError(f"engine '{engine}': checkpoint and resume are for programs with network weights "
                         "(trained by Adam, step by step); this program is optimised by L-BFGS in one go")
