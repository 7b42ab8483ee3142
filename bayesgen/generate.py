"""fit.generate: new samples of the observed sites from a fitted generative model."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace

from bayesgen.logdensity import _Uncondition
from bayesgen.program import is_latent, on_device, run_program

if TYPE_CHECKING:
    from bayesgen.result import Fit

__all__ = ["ModuleWeights", "generate", "local_latents", "using_params"]


def local_latents(trace: Trace, observed: list[str]) -> set[str]:
    """The latent sites that belong to single observations: those inside a plate that also holds an
    observed site (a VAE's codes, a mixture's assignments, eight schools' school effects).

    Generating new data draws them afresh from their prior, as new observations come with new
    values of them; every other latent site is global and is taken from the fit.
    """
    frames = {frame.name for name in observed for frame in trace.nodes[name]["cond_indep_stack"]}
    return {name for name, site in trace.nodes.items()
            if site["type"] == "sample" and is_latent(site) and name not in observed
            and any(frame.name in frames for frame in site["cond_indep_stack"])}


class ModuleWeights(Messenger):
    """Put the store's values into the ``torch.nn.Module`` parameters that ``pyro.module`` registers,
    and put the modules' own values back when the run ends.

    ``pyro.module(name, module)`` runs the module with its own weights, not the store's (unless
    asked to update them), so a program loaded with a fresh, untrained network would ignore the
    fit's weights. ``PyroModule`` and ``pyro.param`` read the store and need no help.
    """

    def __init__(self) -> None:
        super().__init__()
        self.originals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _pyro_post_param(self, msg: Any) -> None:
        own = msg["args"][1] if len(msg["args"]) > 1 else None
        if isinstance(own, torch.nn.Parameter) and own is not msg["value"]:
            with torch.no_grad():
                self.originals.setdefault(id(own), (own, own.detach().clone()))
                own.copy_(msg["value"])

    def __exit__(self, *args: Any) -> Any:
        with torch.no_grad():
            for own, value in self.originals.values():
                own.copy_(value)
        self.originals.clear()
        return super().__exit__(*args)


@contextlib.contextmanager
def using_params(params: Mapping[str, np.ndarray], device: torch.device) -> Iterator[None]:
    """Inside the block Pyro's parameter store holds the fit's parameters ``params`` (constrained
    values) and nothing else; afterwards it holds what it held before. Programs whose weights are
    ``PyroModule`` or ``pyro.param`` read them from the store; wrap a program that registers plain
    modules with ``pyro.module`` in :class:`ModuleWeights` too.
    """
    store = pyro.get_param_store()
    saved = store.get_state()
    store.clear()
    try:
        for name, value in params.items():
            store[name] = torch.as_tensor(value, dtype=_float_or_int(value), device=device)
        yield
    finally:
        store.set_state(saved)


def _float_or_int(value: np.ndarray) -> torch.dtype:
    return torch.get_default_dtype() if np.issubdtype(np.asarray(value).dtype, np.floating) else torch.int64


def generate(fit: "Fit", num_samples: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """New samples of every observed site, ``(num_samples, *event_shape)``: see :meth:`Fit.generate`."""
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    problem = fit._require_problem()
    observed = list(problem.spec.observed)
    local = local_latents(problem.prototype, observed)
    draws = {name: value for name, value in fit.posterior.items()
             if name in problem.density.latent_names and name not in local}
    per_run = min(_observations_per_run(problem.prototype.nodes[name]) for name in observed)
    runs = math.ceil(num_samples / per_run)
    rng = np.random.default_rng(seed)
    total = fit.num_chains * fit.num_draws if draws else 0
    picks = rng.choice(total, runs, replace=runs > total) if total else [None] * runs
    pyro.set_rng_seed(seed)
    program = ModuleWeights()(_Uncondition()(problem.spec.model))
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in observed}
    with using_params(fit.params, problem.device), torch.no_grad(), on_device(problem.device):
        for pick in picks:
            fixed = {name: torch.as_tensor(value.reshape((-1,) + value.shape[2:])[pick], device=problem.device,
                                           dtype=_float_or_int(value)) for name, value in draws.items()}
            trace = run_program(poutine.condition(program, data=fixed), problem.data)
            for name in observed:
                site = trace.nodes[name]
                event = tuple(site["fn"].event_shape)
                pieces[name].append(site["value"].reshape((-1,) + event).cpu().numpy())
    return {name: np.concatenate(chunks)[:num_samples] for name, chunks in pieces.items()}


def _observations_per_run(site: Mapping[str, Any]) -> int:
    """How many observations one run of the program draws at an observed site: its batch elements."""
    return max(1, math.prod(site["fn"].batch_shape))
