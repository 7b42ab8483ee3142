"""Laplace approximation: a Gaussian at the mode of the unconstrained posterior."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayesgen.engine import EngineResult, Problem
from bayesgen.inference._optimize import run_mode

__all__ = ["Laplace"]


@dataclass(frozen=True, kw_only=True)
class Laplace:
    """Laplace approximation: MAP in the unconstrained space (Jacobian included), then
    Gaussian draws from the inverse negative Hessian, mapped back to each site's support.

    Including the Jacobian makes the approximation a proper density over the
    unconstrained parameters (as Stan's ``laplace`` method does), so its draws are
    comparable with MCMC draws. For models whose latents are all unbounded it is the
    same optimum as ``map``.

    Parameters
    ----------
    num_steps : int
        Maximum L-BFGS iterations.
    num_draws : int
        Draws from the approximation.
    """

    name: ClassVar[str] = "laplace"
    num_steps: int = 1000
    num_draws: int = 1000

    def run(self, problem: Problem, *, seed: int, progress: bool) -> EngineResult:
        """Fit the Laplace approximation of ``problem``'s posterior."""
        return run_mode(problem, seed=seed, num_steps=self.num_steps, num_draws=self.num_draws,
                        jacobian=True, prior=True, kind="approximation", engine=self.name)
