"""The engine protocol: what every inference engine takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Protocol

import torch
from pyro.poutine.trace_struct import Trace

from bayesgen.distributed import Ranks
from bayesgen.dtypes import computing_in
from bayesgen.logdensity import LogDensity
from bayesgen.spec import ModelSpec

#: The engine options that say where a step-wise engine's checkpoints go and which one it resumes:
#: a resumed run, or another process of a distributed fit, may set them otherwise.
CHECKPOINT_OPTIONS = ("checkpoint", "checkpoint_every", "resume")

#: The Gaussian families engine ``svi`` fits by name (its ``guide`` option), which a fit file's
#: settings keep as they are; any other guide is a class or a callable of the user's.
SVI_FAMILIES = ("normal", "mvn", "lowrank")

__all__ = ["CHECKPOINT_OPTIONS", "SVI_FAMILIES", "Engine", "EngineResult", "Problem"]


@dataclass
class Problem:
    """A validated model and data set, ready for an engine.

    Attributes
    ----------
    spec : ModelSpec
    data : dict
        Program keyword arguments, tensors already on ``device``.
    prototype : Trace
        One trace of the program with the data, taken during validation.
    device : torch.device
    dtype : torch.dtype
        The floating dtype the program computes in (:mod:`bayesgen.dtypes`): the data's
        floating arrays have it, and engines run with it as torch's default dtype.
    ranks : Ranks
        The processes that share the fit (:mod:`bayesgen.distributed`); one by default.
    """

    spec: ModelSpec
    data: dict[str, Any]
    prototype: Trace
    device: torch.device
    dtype: torch.dtype = torch.float64
    ranks: Ranks = Ranks()

    @cached_property
    def density(self) -> LogDensity:
        """The program's batched log density (built on first use, in the problem's dtype)."""
        with computing_in(self.dtype):
            return LogDensity(self.spec.model, self.data)

    @property
    def has_params(self) -> bool:
        """Whether the program declares ``pyro.param`` / ``pyro.module`` parameters."""
        return any(site["type"] == "param" for site in self.prototype.nodes.values())


@dataclass
class EngineResult:
    """What an engine hands back; ``bg.fit`` turns it into a ``Fit``.

    Attributes
    ----------
    kind : str
        ``"samples"``, ``"approximation"`` or ``"point"``.
    draws : dict
        Latent site -> constrained draws, tensor ``(chain, draw, *shape)``.
    sample_stats : dict
        ArviZ stat name -> tensor ``(chain, draw)`` (or ``(1, step)`` for ``loss`` and other
        ``*_loss``: :func:`~bayesgen.convert.is_per_step`).
    point, stderr : dict or None
        Optimum and standard errors per site (point engines).
    timing : dict
        Wall seconds per phase.
    info : dict
        JSON-able facts for ``bg.check`` (e.g. ``converged``).
    """

    kind: str
    draws: dict[str, torch.Tensor]
    sample_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    point: dict[str, torch.Tensor] | None = None
    stderr: dict[str, torch.Tensor] | None = None
    timing: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """An inference engine: a frozen dataclass of settings with one method that runs it."""

    name: ClassVar[str]

    def run(self, problem: Problem, *, seed: int, progress: bool) -> EngineResult:
        """Run inference on ``problem``; all randomness comes from ``seed``."""
        ...
