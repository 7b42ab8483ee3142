"""Densities that raise at some points: those points become rejected proposals, not crashes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bayesgen._replay import Fused, layout_of, tracing
from bayesgen.inference._integrator import LogDensityFn
from bayesgen.inference._numerical import is_numerical_error

__all__ = ["GuardedDensity", "bind_where_defined", "describe_error", "failure_count"]


class GuardedDensity:
    """A batched log density whose numerical failures reject points instead of ending the run.

    Chains are evaluated as one batch, so one row where the density raises (a covariance matrix
    that is not positive definite, say) raises for the whole batch. On such an error
    (:func:`is_numerical_error`) the rows are evaluated one by one with ``rowwise``, eagerly
    (outside any recorded or compiled path), and a row that raises gets log density ``-inf``
    and gradient zero: the kernels read a non-finite log density as infinite energy, so that
    leapfrog step is a divergence and the chain's proposal is rejected while the other chains
    go on. NaN log densities need no guard: they already count as divergences.

    Programming errors are not swallowed: exceptions that are not numerical propagate, and
    when every row of a batch fails before any evaluation has succeeded (a bug that raises at
    every point), the original error is re-raised. Once some point has been evaluated (the
    chains' initial points always are), a batch whose rows all fail is a batch of bad points:
    with one chain, that is every failure.

    Calls made while a larger step is being recorded (:func:`bayesgen._replay.tracing`) go
    straight to ``fn``, so that the recording holds the density's operations and nothing else;
    a recording cannot catch errors, so the callers of recorded steps (:class:`FusedLeaves`,
    :class:`FusedHMCStep`) rerun a step that raises eagerly, through this guard.

    Parameters
    ----------
    fn : LogDensityFn
        The batched density ``x (C, D) -> (logp (C,), grad (C, D))``.
    rowwise : LogDensityFn, optional
        The eager density for one row ``(1, D)``; ``fn`` if None.

    Attributes
    ----------
    failures : int
        Rows that raised so far (each a rejected point).
    first_error : str or None
        ``"Type: message"`` (first line) of the first failure, for reports.
    succeeded : bool
        Whether some point has been evaluated without error.
    """

    def __init__(self, fn: LogDensityFn, rowwise: LogDensityFn | None = None) -> None:
        self.fn = fn
        self.rowwise = fn if rowwise is None else rowwise
        self.failures = 0
        self.first_error: str | None = None
        self.succeeded = False

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.evaluate(x)

    def evaluate(self, x: torch.Tensor, *, reraise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Log density and gradient at the rows of ``x``, ``-inf`` and zero where a row raises.

        With ``reraise=False`` a batch whose rows all fail is returned too (all ``-inf``), for
        callers that re-draw such points and report the failure themselves
        (:func:`bayesgen.inference._mcmc.initial_points`).
        """
        if tracing():
            return self.fn(x)
        try:
            logp, grad = self.fn(x)
        except Exception as exc:
            if not is_numerical_error(exc):
                raise
            return self._row_by_row(x, exc, reraise)
        self.succeeded = True
        return logp, grad

    def _row_by_row(self, x: torch.Tensor, error: Exception,
                    reraise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate the rows of ``x`` one at a time after the batch raised ``error``."""
        logps, grads, failed = [], [], []
        for row in x.detach():
            try:
                logp, grad = self.rowwise(row[None])
            except Exception as exc:
                if not is_numerical_error(exc):
                    raise
                failed.append(exc)
                logp, grad = row.new_full((1,), -torch.inf), torch.zeros_like(row)[None]
            logps.append(logp.detach().reshape(1))
            grads.append(grad.detach().reshape(1, -1))
        if len(failed) == x.shape[0] and reraise and not self.succeeded:
            raise error
        if len(failed) < x.shape[0]:
            self.succeeded = True
        if failed and self.first_error is None:
            self.first_error = describe_error(failed[0])
        self.failures += len(failed)
        return torch.cat(logps), torch.cat(grads)


def describe_error(exc: BaseException) -> str:
    """``"Type: first line of the message"``, for reports of failed evaluations."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def failure_count(logp_and_grad: LogDensityFn) -> int:
    """Rows that a :class:`GuardedDensity` has rejected so far (0 for other densities)."""
    return getattr(logp_and_grad, "failures", 0)


def bind_where_defined(fused: Fused, args: Sequence[torch.Tensor],
                        logp_and_grad: LogDensityFn) -> Callable[..., tuple[torch.Tensor, ...]]:
    """``fused.bind(args)``, but a recording that failed because the density raised at ``args``
    is forgotten, so that the next call with this layout records again.

    :meth:`Fused.bind` runs the step eagerly (the guard rejects the failing chains) and records
    it at the same point, where the density raises again: the recording fails and that layout
    would run eagerly, 10-20 times slower, for the rest of the run. A failed recording at a point
    where the guard counted no failure is a step that cannot be recorded, and stays eager.
    """
    failures = failure_count(logp_and_grad)
    step = fused.bind(args)
    if step is fused.fn and failure_count(logp_and_grad) > failures:
        fused.replays.pop(layout_of(args), None)
    return step
