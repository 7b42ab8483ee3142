"""Maximum likelihood: the optimum of the likelihood alone, with observed-information errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayesgen.engine import EngineResult, Problem
from bayesgen.inference._optimize import run_mode
from bayesgen.inference._minibatches import minibatches_for
from bayesgen.inference._params import optimise_params, refuse_step_settings
from bayesgen.inference._steps import checkpointing_of

__all__ = ["MLE"]


@dataclass(frozen=True, kw_only=True)
class MLE:
    """Maximum likelihood estimation by L-BFGS (strong Wolfe) on the unconstrained space.

    Prior terms of the continuous latent sites are left out; enumerated discrete sites
    are still summed out, so the objective is the marginal likelihood. Standard errors
    come from the observed information (inverse negative Hessian), mapped to each
    site's support by the delta method; ``fit.posterior`` holds ``num_draws`` draws from
    the asymptotic normal, ``fit.point`` the estimate.

    Parameters
    ----------
    num_steps : int
        Maximum L-BFGS iterations (Adam steps for programs with parameters).
    num_draws : int
        Draws from the asymptotic normal distribution.
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
    checkpoint : str or None
        For programs with network weights: a file to which the run's state (parameters, Adam's
        state, the random state) is saved every ``checkpoint_every`` steps and at the end,
        each time atomically.
    checkpoint_every : int
        Steps between checkpoints.
    resume : str or None
        For programs with network weights: a checkpoint of a run with the same settings and
        seed to continue from; the fit is then bit for bit the one the run would have made had
        it not stopped.
    """

    name: ClassVar[str] = "mle"
    #: Whether the prior terms of the latent sites count (``map``) or are left out.
    counts_prior: ClassVar[bool] = False
    #: ``bg.fit(..., distributed=True)`` shares out its minibatches among processes.
    shares_minibatches: ClassVar[bool] = True
    num_steps: int = 1000
    num_draws: int = 1000
    lr: float = 0.01
    lr_decay: float = 1.0
    tol: float = 1e-3
    checkpoint: str | None = None
    checkpoint_every: int = 500
    resume: str | None = None

    def run(self, problem: Problem, *, seed: int, progress: bool) -> EngineResult:
        """Maximise the likelihood of ``problem`` (times the prior, for ``map``)."""
        if problem.has_params:
            return optimise_params(problem, prior=self.counts_prior, num_steps=self.num_steps, lr=self.lr,
                                   lr_decay=self.lr_decay, tol=self.tol, progress=progress, engine=self.name,
                                   checkpointing=checkpointing_of(self, seed, problem),
                                   minibatches=minibatches_for(problem, seed))
        refuse_step_settings(self.name, problem, checkpoints=self.checkpoint is not None or self.resume is not None)
        return run_mode(problem, seed=seed, num_steps=self.num_steps, num_draws=self.num_draws,
                        jacobian=False, prior=self.counts_prior, kind="point", engine=self.name)
