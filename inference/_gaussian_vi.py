"""Gaussian variational families on a LogDensity: reparameterised particles, one batched call per step."""

from __future__ import annotations

import math

import torch
import torch.distributions as td
from tqdm.auto import tqdm

from bayesgen.logdensity import LogDensity

__all__ = ["GaussianFamily", "elbo_converged", "fit_gaussian"]


class GaussianFamily(torch.nn.Module):
    """q(u) = N(loc, Sigma) over the unconstrained vector, with diagonal, full or low-rank Sigma.

    Parameters
    ----------
    dim : int
        Dimension of the unconstrained space.
    family : str
        ``"normal"`` (mean-field), ``"mvn"`` (full covariance) or ``"lowrank"``.
    rank : int
        Rank of the low-rank factor (``"lowrank"`` only).
    init_scale : float
        Initial standard deviation of every coordinate.
    """

    def __init__(self, dim: int, family: str, rank: int, init_scale: float,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        if family not in ("normal", "mvn", "lowrank"):
            raise ValueError(f"unknown Gaussian family '{family}'; use 'normal', 'mvn' or 'lowrank'")
        self.family = family
        kw = {"dtype": dtype, "device": device}
        raw_scale = math.log(math.expm1(init_scale))
        self.loc = torch.nn.Parameter(torch.zeros(dim, **kw))
        self.raw_diag = torch.nn.Parameter(torch.full((dim,), raw_scale, **kw))
        if family == "mvn":
            self.off_diag = torch.nn.Parameter(torch.zeros(dim, dim, **kw))
            # a constant mask, since torch.tril is surprisingly slow on small CPU matrices
            self.register_buffer("lower", torch.ones(dim, dim, **kw).tril(diagonal=-1))
        if family == "lowrank":
            self.factor = torch.nn.Parameter(torch.zeros(dim, rank, **kw))

    def distribution(self) -> td.Distribution:
        """The current q as a torch distribution."""
        diag = torch.nn.functional.softplus(self.raw_diag) + 1e-8
        if self.family == "normal":
            return td.Independent(td.Normal(self.loc, diag, validate_args=False), 1, validate_args=False)
        if self.family == "mvn":
            tril = self.off_diag * self.lower + torch.diag(diag)
            return td.MultivariateNormal(self.loc, scale_tril=tril, validate_args=False)
        return td.LowRankMultivariateNormal(self.loc, self.factor, diag**2, validate_args=False)

    def sample(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """Reparameterised draws ``(num, dim)`` whose noise comes from ``generator``."""
        q = self.distribution()
        kw = {"generator": generator, "dtype": self.loc.dtype, "device": self.loc.device}
        dim = self.loc.shape[0]
        if self.family == "normal":
            return self.loc + torch.randn(num, dim, **kw) * q.base_dist.scale
        if self.family == "mvn":
            return self.loc + torch.randn(num, dim, **kw) @ q.scale_tril.T
        rank = self.factor.shape[1]
        return (self.loc + torch.randn(num, rank, **kw) @ self.factor.T
                + torch.randn(num, dim, **kw) * q.cov_diag.sqrt())


def elbo_converged(losses: list[float], window: int, tol: float) -> bool:
    """Whether the mean loss of the last window moved less than ``tol`` (relative) or than
    twice its standard error, compared with the window before."""
    if len(losses) < 2 * window:
        return False
    last = torch.tensor(losses[-window:])
    prev = torch.tensor(losses[-2 * window:-window])
    change = float((last.mean() - prev.mean()).abs())
    noise = float(((last.var() + prev.var()) / window).sqrt())
    return change < max(tol * float(last.mean().abs()), 2 * noise)


def fit_gaussian(density: LogDensity, *, family: str, rank: int, num_steps: int, num_particles: int,
                 lr: float, lr_decay: float, init_scale: float, generator: torch.Generator,
                 progress: bool) -> tuple[GaussianFamily, list[float]]:
    """Maximise the ELBO E_q[log p(u)] + H[q] with Adam and an exponentially decaying learning rate.

    The expectation is over ``num_particles`` reparameterised draws evaluated in ONE
    batched call of the density; the entropy is exact.
    """
    dtype = torch.get_default_dtype()
    q = GaussianFamily(density.dim, family, rank, init_scale, dtype, density.device)
    with torch.no_grad():
        q.loc.copy_(torch.rand(density.dim, generator=generator, dtype=dtype, device=density.device) * 4 - 2)
        if family == "lowrank":
            q.factor.copy_(torch.randn(q.factor.shape, generator=generator, dtype=dtype,
                                       device=density.device) * init_scale / 10)
    optimizer = torch.optim.Adam(q.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay ** (1 / max(num_steps, 1)))
    losses: list[float] = []
    for _ in tqdm(range(num_steps), disable=not progress, desc="svi"):
        optimizer.zero_grad()
        u = q.sample(num_particles, generator)
        loss = -(density.log_density(u).mean() + q.distribution().entropy())
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return q, losses
