"""Running a Pyro program once and reading its sites, with errors that name the site."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pyro
import pyro.poutine as poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.trace_struct import Trace

__all__ = ["BATCH_PLATE", "LastSite", "ProgramError", "is_deterministic", "is_latent", "is_subsample", "run_program"]

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
