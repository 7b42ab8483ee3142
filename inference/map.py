"""Maximum a posteriori: the posterior mode in the constrained space, with Laplace errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayesgen.engine import EngineResult, Problem
from bayesgen.inference._optimize import run_mode
from bayesgen.inference._params import optimise_params

__all__ = ["MAP"]


@dataclass(frozen=True)
class MAP:
    """MAP estimation by L-BFGS: maximises likelihood times prior, without Jacobian terms.

    Without the Jacobian the optimum is the mode of the posterior density over the
    parameters as written in the program (as Stan's ``optimize`` does). Standard errors
    and ``fit.posterior`` draws come from the inverse negative Hessian there.

    Parameters
    ----------
    num_steps : int
        Maximum L-BFGS iterations (Adam steps for programs with parameters).
    num_draws : int
        Draws from the normal approximation at the mode.
    lr : float
        Adam's learning rate, for programs with network weights. Programs that declare
        ``pyro.param``/``pyro.module`` parameters are fitted by Adam through Pyro's SVI, a
        minibatch per step when the program subsamples, with latent sites as point masses
        and no standard errors.
    lr_decay : float
        Factor by which Adam's learning rate has decayed at the last step (an exponential
        schedule), for programs with network weights; 1 keeps it constant.
    tol : float
        Relative tolerance of Adam's convergence test, for programs with network weights.
    """

    name: ClassVar[str] = "map"
    num_steps: int = 1000
    num_draws: int = 1000
    lr: float = 0.01
    lr_decay: float = 1.0
    tol: float = 1e-3

    def run(self, problem: Problem, *, seed: int, progress: bool) -> EngineResult:
        """Find the posterior mode of ``problem``."""
        if problem.has_params:
            return optimise_params(problem, prior=True, num_steps=self.num_steps, lr=self.lr,
                                   lr_decay=self.lr_decay, tol=self.tol, progress=progress, engine=self.name)
        return run_mode(problem, seed=seed, num_steps=self.num_steps, num_draws=self.num_draws,
                        jacobian=False, prior=True, kind="point", engine=self.name)
