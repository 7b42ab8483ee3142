"""Batched warmup adaptation: dual averaging, Welford estimators, Stan's windows, step heuristic."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from bayesgen.inference._integrator import (
    LogDensityFn,
    Metric,
    PhaseState,
    energy_error,
    leapfrog,
    make_metric,
    start_point,
)
from bayesgen.inference._streams import ChainStreams


class DualAveragingState(NamedTuple):
    """Per-chain ``(C,)`` dual-averaging state for ``log(step_size)`` (Hoffman & Gelman 2014)."""

    log_step_size: torch.Tensor
    log_step_size_avg: torch.Tensor
    grad_avg: torch.Tensor
    count: int
    mu: torch.Tensor


class WelfordState(NamedTuple):
    """Per-chain running mean ``(C, D)`` and sum of squares ``(C, D)`` or ``(C, D, D)``."""

    count: int
    mean: torch.Tensor
    m2: torch.Tensor


def dual_averaging_init(step_size: torch.Tensor) -> DualAveragingState:
    """Start dual averaging at ``step_size`` ``(C,)`` with ``mu = log(10 * step_size)``."""
    zeros = torch.zeros_like(step_size)
    log_step = torch.log(step_size)
    return DualAveragingState(log_step, zeros, zeros, 0, log_step + math.log(10.0))


def dual_averaging_update(
    state: DualAveragingState,
    accept_prob: torch.Tensor,
    target_accept: float,
    t0: float = 10.0,
    kappa: float = 0.75,
    gamma: float = 0.05,
) -> DualAveragingState:
    """Update every chain's step size from its acceptance statistic (Stan's ``learn_stepsize``).

    Parameters
    ----------
    state : DualAveragingState
        Current state.
    accept_prob : torch.Tensor
        Per-chain acceptance statistic ``(C,)``; NaN counts as 0 and values are capped at 1.
    target_accept : float
        Target acceptance statistic.
    t0, kappa, gamma : float
        Dual-averaging constants (Stan's defaults).

    Returns
    -------
    DualAveragingState
        Updated state; ``exp(log_step_size)`` is the next step size.
    """
    count = state.count + 1
    eta = 1.0 / (count + t0)
    accept = torch.nan_to_num(accept_prob, nan=0.0).clamp(max=1.0)
    grad_avg = (1.0 - eta) * state.grad_avg + eta * (target_accept - accept)
    log_step = state.mu - grad_avg * (math.sqrt(count) / gamma)
    weight = count ** (-kappa)
    log_step_avg = (1.0 - weight) * state.log_step_size_avg + weight * log_step
    return DualAveragingState(log_step, log_step_avg, grad_avg, count, state.mu)


def welford_init(like: torch.Tensor, dense: bool) -> WelfordState:
    """Empty Welford estimator for positions shaped like ``like`` ``(C, D)``."""
    m2 = like.new_zeros(like.shape + like.shape[-1:]) if dense else torch.zeros_like(like)
    return WelfordState(0, torch.zeros_like(like), m2)


def welford_update(state: WelfordState, x: torch.Tensor) -> WelfordState:
    """Add one draw ``x`` ``(C, D)`` per chain to the running (co)variance estimate."""
    count = state.count + 1
    delta = x - state.mean
    mean = state.mean + delta / count
    scale = 1.0 - 1.0 / count
    if state.m2.dim() == 3:
        m2 = state.m2 + scale * delta.unsqueeze(-1) * delta.unsqueeze(-2)
    else:
        m2 = state.m2 + scale * delta * delta
    return WelfordState(count, mean, m2)


def regularized_inverse_mass(state: WelfordState) -> torch.Tensor:
    """Stan's regularised estimate ``n/(n+5) * cov + 1e-3 * 5/(n+5) * I`` (needs ``count >= 2``)."""
    n = float(state.count)
    cov = state.m2 / (n - 1.0)
    shrink = 1e-3 * 5.0 / (n + 5.0)
    if cov.dim() == 2:
        return (n / (n + 5.0)) * cov + shrink
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return (n / (n + 5.0)) * cov + shrink * eye


def adaptation_windows(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """Slow adaptation windows of Stan's windowed warmup, as inclusive ``(first, last)`` iterations.

    Windows double in size from ``base_window``; the last one is stretched to the terminal buffer.
    If the buffers do not fit, Stan's 15% / 75% / 10% split is used, and for ``num_warmup < 20``
    there are no windows (no metric adaptation), as in Stan.
    """
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - (init_buffer + term_buffer)
    last = num_warmup - term_buffer - 1
    size, end = base_window, init_buffer + base_window - 1
    windows = [(init_buffer, end)]
    while end != last:
        size *= 2
        next_end = end + size
        if next_end != last and next_end + 2 * size >= num_warmup - term_buffer:
            next_end = last
        windows.append((end + 1, next_end))
        end = next_end
    return windows


def find_reasonable_step_size(
    logp_and_grad: LogDensityFn,
    state: PhaseState,
    step_size: torch.Tensor,
    metric: Metric,
    streams: ChainStreams,
    max_iter: int = 100,
) -> torch.Tensor:
    """Hoffman & Gelman's heuristic, per chain: double or halve until ``exp(-dH)`` crosses 0.8.

    Parameters
    ----------
    logp_and_grad : LogDensityFn
        Batched log density and gradient.
    state : PhaseState
        Current positions of the chains.
    step_size : torch.Tensor
        Starting step sizes ``(C,)``.
    metric : Metric
        Metric of the chains.
    streams : ChainStreams
        Source of the momentum draws (fresh momenta every trial, as Stan and NumPyro do; a chain
        that has found its step size draws no more).
    max_iter : int
        Cap on the number of trials (each costs one density evaluation for all chains).

    Returns
    -------
    torch.Tensor
        The first step size ``(C,)`` at which the acceptance crossed ``0.8`` (NumPyro's convention).
    """
    log_target = math.log(0.8)
    step = step_size.clone()
    direction = torch.zeros_like(step)
    last = torch.zeros_like(step)
    done = torch.zeros_like(step, dtype=torch.bool)
    for _ in range(max_iter):
        trial = torch.where(done, step, step * torch.exp2(direction))
        point, energy0 = start_point(state, metric, streams, ~done)
        moved = leapfrog(logp_and_grad, point, trial.unsqueeze(-1), metric)
        _, delta = energy_error(moved, energy0)
        new_direction = torch.where(-delta > log_target, 1.0, -1.0).to(step.dtype)
        step = trial
        last = torch.where(done, last, direction)
        direction = torch.where(done, direction, new_direction)
        done = done | ((last != 0) & (direction != last))
        if bool(done.all()):
            break
    return step


class WindowedAdaptation:
    """Stan-style windowed adaptation of per-chain step sizes and mass matrices.

    Parameters
    ----------
    num_warmup : int
        Number of warmup iterations.
    step_size : torch.Tensor
        Initial step sizes ``(C,)``.
    metric : Metric
        Initial metric.
    target_accept : float
        Dual-averaging target.
    adapt_step_size, adapt_mass_matrix : bool
        Which quantities to adapt.
    """

    def __init__(
        self,
        num_warmup: int,
        step_size: torch.Tensor,
        metric: Metric,
        *,
        target_accept: float,
        adapt_step_size: bool,
        adapt_mass_matrix: bool,
    ) -> None:
        self.step_size = step_size
        self.metric = metric
        self.target_accept = target_accept
        self.adapt_step_size = adapt_step_size
        self.windows = adaptation_windows(num_warmup) if adapt_mass_matrix else []
        self._dense = metric.cholesky is not None
        self._dual = dual_averaging_init(step_size)
        self._welford: WelfordState | None = None

    def _window_end(self, iteration: int) -> int | None:
        """Last iteration of the slow window containing ``iteration``, or ``None``."""
        for first, last in self.windows:
            if first <= iteration <= last:
                return last
        return None

    def update(self, iteration: int, position: torch.Tensor, accept_prob: torch.Tensor) -> bool:
        """Learn from one warmup transition; return True when the mass matrix was just updated."""
        if self.adapt_step_size:
            self._dual = dual_averaging_update(self._dual, accept_prob, self.target_accept)
            self.step_size = torch.exp(self._dual.log_step_size)
        window_end = self._window_end(iteration)
        if window_end is None:
            return False
        if self._welford is None:
            self._welford = welford_init(position, self._dense)
        self._welford = welford_update(self._welford, position)
        if iteration != window_end:
            return False
        self._set_metric(self._welford)
        self._welford = None
        return True

    def _set_metric(self, welford: WelfordState) -> None:
        """Replace each chain's metric by its regularised estimate (kept if not finite / not PD)."""
        if welford.count < 2:
            return
        old = self.metric.inverse_mass_matrix
        new = regularized_inverse_mass(welford)
        valid = torch.isfinite(new).flatten(1).all(-1)
        if self._dense:
            new = torch.where(valid[:, None, None], new, old)
            valid = torch.linalg.cholesky_ex(new)[1] == 0
            new = torch.where(valid[:, None, None], new, old)
        else:
            new = torch.where(valid[:, None], new, old)
        self.metric = make_metric(new)

    def restart(self, step_size: torch.Tensor) -> None:
        """Restart dual averaging from ``step_size`` (after a metric update)."""
        self.step_size = step_size
        self._dual = dual_averaging_init(step_size)

    def final_step_size(self) -> torch.Tensor:
        """Step size to sample with: the dual-averaging iterate average when it was adapted."""
        if self.adapt_step_size and self._dual.count > 0:
            return torch.exp(self._dual.log_step_size_avg)
        return self.step_size
