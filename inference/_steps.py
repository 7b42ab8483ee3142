"""The loop of the step-wise optimisers (SVI, networks' MLE/MAP, GAN): progress, Ctrl-C and checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.util import zero_grads
from tqdm.auto import tqdm

from bayesgen._counts import check_count
from bayesgen._files import atomic_write
from bayesgen.distributed import Ranks
from bayesgen.engine import CHECKPOINT_OPTIONS, Problem
from bayesgen.registry import describe_option
from bayesgen.validate import data_digest
from bayesgen.inference._minibatches import Minibatches

__all__ = ["Checkpointing", "Resumable", "Steps", "checkpointing_of", "load_param_store", "param_store", "pyro_svi_step",
           "run_steps"]

#: Written into every checkpoint, and required when resuming from one.
_FORMAT = "bayesgen-checkpoint-1"


class Resumable(Protocol):
    """Everything a run's later steps depend on: parameters, optimiser and random state."""

    def state_dict(self) -> dict[str, Any]:
        """The state as tensors, numbers, strings, lists and dicts (what ``torch.load(weights_only=True)`` reads)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""


@dataclass(frozen=True)
class Checkpointing:
    """Where a run saves its state, how often, and the file it resumes from.

    Attributes
    ----------
    path : str or None
        File written (atomically: a temporary file, then a rename) every ``every`` steps and
        after the last; None writes nothing.
    every : int
        Steps between checkpoints.
    resume : str or None
        A checkpoint to continue from: the run then takes the steps after the checkpoint's and
        ends as a run that was never stopped would, bit for bit (same seed and settings, which
        are checked).
    settings : dict
        The engine's settings, but the checkpoint's own: a checkpoint of other settings is
        refused.
    """

    path: str | None
    every: int
    resume: str | None
    settings: dict[str, Any]

    def __post_init__(self) -> None:
        check_count("checkpoint_every", self.every)
        if self.resume is not None and not os.path.isfile(self.resume):
            raise FileNotFoundError(f"resume: no checkpoint file at {self.resume!r}")


#: Fields that do not change the steps taken, so a checkpoint may be resumed with others.
_FREE = ("num_draws",)


def checkpointing_of(engine: Any, seed: int, problem: Problem) -> Checkpointing | None:
    """The checkpoints an engine's ``checkpoint``, ``checkpoint_every`` and ``resume`` fields
    ask for (None if neither a path nor a resume); its other fields, the seed, the program's
    sites and a digest of the data are the settings a resumed run must share."""
    path = engine.checkpoint if problem.ranks.is_root else None  # the processes hold one state: rank 0 writes it
    if path is None and engine.resume is None:
        return None
    settings = {f.name: getattr(engine, f.name) for f in dataclasses.fields(engine)
                if f.name not in CHECKPOINT_OPTIONS + _FREE}
    return Checkpointing(path=path, every=engine.checkpoint_every, resume=engine.resume,
                         settings={**settings, "seed": seed, _SITES: _sites(problem), _DATA: data_digest(problem.data)})


#: Settings keys of the program's sites and of its data, named in a refusal but not printed (long or opaque).
_SITES, _DATA = "program sites", "data"


def _sites(problem: Problem) -> str:
    """The program's sample and parameter sites as text: name, kind, distribution and shape. A
    program with other sites, or other plate sizes (a ``subsample_size``), gives other text."""
    parts = []
    for name, site in problem.prototype.nodes.items():
        if site["type"] == "sample":
            kind = "observed" if site["is_observed"] else "latent"
            parts.append(f"{name} {kind} {type(site['fn']).__name__}{tuple(site['value'].shape)}")
        elif site["type"] == "param":
            parts.append(f"{name} param {tuple(site['value'].shape)}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Steps:
    """What :func:`run_steps` did: each step's loss, and whether Ctrl-C stopped it early."""

    losses: list[float]
    interrupted: bool

    def info(self, num_steps: int) -> dict[str, Any]:
        """``Fit.info`` entries for an interrupted run (none for a complete one)."""
        if not self.interrupted:
            return {}
        return {"interrupted": True,
                "interrupted_note": f"stopped after {len(self.losses)} of {num_steps} steps"}


def param_store() -> dict[str, Any]:
    """What a checkpoint keeps of Pyro's parameter store and torch's random state: copies of the
    unconstrained parameter values by name, the CPU generator's state, and the GPUs' where CUDA
    is in use."""
    params = pyro.get_param_store().get_state()["params"]
    state = {"params": {name: value.detach().clone() for name, value in params.items()}, "rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def load_param_store(state: dict[str, Any]) -> None:
    """Restore :func:`param_store`'s values into the parameters that exist now, in place (a
    network reads the very tensors of the store), and the random state. The program must already
    have registered them, with the same names."""
    params = pyro.get_param_store().get_state()["params"]
    if set(params) != set(state["params"]):
        raise ValueError(f"resume: the checkpoint's parameters ({', '.join(sorted(state['params']))}) are not "
                         f"the program's ({', '.join(sorted(params))})")
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value)
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def _fingerprint(desc: str, num_steps: int, settings: dict[str, Any]) -> dict[str, str]:
    return {"engine": desc, "num_steps": str(num_steps), **{k: describe_option(v) for k, v in settings.items()}}


def _load(checkpointing: Checkpointing, desc: str, num_steps: int) -> dict[str, Any]:
    """The checkpoint to resume from, checked against this run's engine and settings."""
    path = checkpointing.resume
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as exc:
        # (torch's own message goes on to suggest weights_only=False, which would unpickle any code)
        raise ValueError(f"resume: {path!r} is not a bayesgen checkpoint (torch.load could not read it: "
                         f"{type(exc).__name__})") from exc
    if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
        raise ValueError(f"resume: {path!r} is not a bayesgen checkpoint")
    expected = _fingerprint(desc, num_steps, checkpointing.settings)
    differ = {key for key in expected.keys() | saved["fingerprint"].keys()
              if expected.get(key) != saved["fingerprint"].get(key)}
    if differ:
        detail = ", ".join(f"the {key} differ" if key in (_SITES, _DATA)
                           else f"{key}: {saved['fingerprint'].get(key, '(not recorded)')} there, "
                                f"{expected.get(key, '(not recorded)')} here"
                           for key in sorted(differ))
        raise ValueError(f"resume: checkpoint {path!r} was written by a run with other settings ({detail}); "
                         "resume with the settings it was written with")
    return saved


def _save(checkpointing: Checkpointing, desc: str, num_steps: int, state: Resumable, losses: list[float]) -> None:
    payload = {"format": _FORMAT, "fingerprint": _fingerprint(desc, num_steps, checkpointing.settings),
               "losses": torch.tensor(losses, dtype=torch.float64), "state": state.state_dict()}
    atomic_write(checkpointing.path, lambda temporary: torch.save(payload, temporary))


def run_steps(step: Callable[[], float], num_steps: int, *, progress: bool, desc: str,
              checkpointing: Checkpointing | None = None, state: Resumable | None = None,
              minibatches: Minibatches | None = None) -> Steps:
    """Call ``step`` until ``num_steps`` steps are done and return their losses.

    The progress bar shows the mean loss of the last 100 steps (one step's loss is a noisy
    minibatch estimate). Ctrl-C (KeyboardInterrupt) ends the loop and returns the steps done,
    marked interrupted, so that the caller can hand back a fit of the work so far. With
    ``checkpointing`` (which needs ``state``), the run resumes from a checkpoint's step and
    saves one every ``checkpointing.every`` steps and at the end. With ``minibatches``, the plates
    that subsample take step ``i``'s indices from it (see :mod:`~bayesgen.inference._minibatches`).
    """
    losses: list[float] = []
    if checkpointing is not None and checkpointing.resume is not None:
        saved = _load(checkpointing, desc, num_steps)
        state.load_state_dict(saved["state"])
        losses = saved["losses"].tolist()
    bar = tqdm(range(len(losses), num_steps), disable=not progress, desc=desc, initial=len(losses), total=num_steps)
    saving = checkpointing is not None and checkpointing.path is not None
    try:
        for i in bar:
            with minibatches.step(i) if minibatches is not None else contextlib.nullcontext():
                losses.append(float(step()))
            if progress and (i % 50 == 0 or i == num_steps - 1):
                recent = losses[-100:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4g}", refresh=False)
            if saving and ((i + 1) % checkpointing.every == 0 or i == num_steps - 1):
                _save(checkpointing, desc, num_steps, state, losses)
    except KeyboardInterrupt:
        bar.close()
        return Steps(losses, interrupted=True)
    return Steps(losses, interrupted=False)


def pyro_svi_step(svi: pyro.infer.SVI, data: dict[str, Any], ranks: Ranks) -> Callable[[], float]:
    """``svi.step(**data)`` as a function of no arguments; in a distributed fit, the step of
    ``pyro.infer.SVI`` with the gradients averaged over the processes between the backward pass
    and the optimiser, and the parameters of the first step set to rank 0's, so that they are
    the same in every process from then on."""
    if ranks.world_size == 1:
        return lambda: svi.step(**data)
    first = [True]

    def step() -> float:
        with poutine.trace(param_only=True) as capture:
            loss = svi.loss_and_grads(svi.model, svi.guide, **data)
        named = sorted(capture.trace.nodes.items(), key=lambda item: item[0])
        params = [site["value"].unconstrained() for _, site in named]
        loss = ranks.average_gradients(params, float(loss))
        svi.optim(params)
        zero_grads(params)
        if first[0]:
            ranks.broadcast(params)
            first[0] = False
        return loss

    return step
