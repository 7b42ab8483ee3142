"""Running a Pyro program once and reading its sites, with errors that name the site."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.trace_struct import Trace

__all__ = ["BATCH_PLATE", "LastSite", "ProgramError", "is_deterministic", "is_latent", "is_subsample", "on_device",
           "run_program"]

BATCH_PLATE = "_bayesgen_batch"


class ProgramError(ValueError):
    """The program raised while bayesgen ran it; the message names the site it was at."""


def is_deterministic(site: Mapping[str, Any]) -> bool:
    """Whether a trace site was made by ``pyro.deterministic``."""
    return bool(site["infer"].get("_deterministic"))


def is_latent(site: Mapping[str, Any]) -> bool:
    """Whether a trace site is a latent sample site (not observed, not deterministic, not a subsample)."""
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and not is_deterministic(site)
        and not is_subsample(site)
    )


def is_subsample(site: Mapping[str, Any]) -> bool:
    """Whether a trace site is the index site that ``pyro.plate`` records for subsampling."""
    return isinstance(site["fn"], _Subsample)


class LastSite(Messenger):
    """Remember the name of the last sample site the program reached."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None

    def _pyro_sample(self, msg: Any) -> None:
        self.name = msg["name"]


def on_device(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Make the tensors that a program creates (``torch.zeros(3)``, ``torch.tensor(1.0)``) land on
    ``device``, where its data are.

    Enter it around runs of a program only, not around the code that calls them: torch's device
    context is a Python function called before every torch operation in the block (a third of a
    sampler's time on a GPU when it enclosed the sampling loop). On the CPU it is a no-op.
    """
    return contextlib.nullcontext() if device.type == "cpu" else torch.device(device)


def run_program(model: Callable[..., Any], data: Mapping[str, Any]) -> Trace:
    """Trace the program once with Pyro's validation on.

    Raises
    ------
    ProgramError
        If the program raises; the message names the last site it reached.
    """
    last = LastSite()
    try:
        with pyro.validation_enabled(True), poutine.block():
            with last:
                return poutine.trace(model).get_trace(**data)
    except Exception as exc:
        where = f"at or after site '{last.name}'" if last.name else "before its first sample site"
        raise ProgramError(
            f"the program raised {type(exc).__name__} {where}: {exc}"
        ) from exc
