"""Maximum a posteriori: the posterior mode in the constrained space, with Laplace errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bayesgen.inference.mle import MLE

__all__ = ["MAP"]


@dataclass(frozen=True, kw_only=True)
class MAP(MLE):
    """MAP estimation by L-BFGS: maximises likelihood times prior, without Jacobian terms.

    The same optimiser and options as :class:`MLE`, with the prior terms counted.

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

    name: ClassVar[str] = "map"
    counts_prior: ClassVar[bool] = True
