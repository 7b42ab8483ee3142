"""The map from unbounded values to a support, with one support re-expressed for compilers.

torch's ``CorrCholeskyTransform`` (``LKJCholesky`` sites) addresses the lower triangle of its
matrices with a boolean mask. To a compiler a boolean mask is an output whose shape depends on the
values (``aten.nonzero``), and Inductor gave up on every recorded NUTS step of a program with such
a site (the Gaussian mixture's correlations), which then sampled on slower code. The same
triangle addressed by integer indices (``torch.tril_indices``, in the same row order) has static
shapes, and gives the same numbers.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import CorrCholeskyTransform, IndependentTransform, Transform
from torch.nn.functional import pad, softplus

__all__ = ["bijection"]


def bijection(support: constraints.Constraint) -> Transform:
    """``biject_to(support)``, with the correlation-Cholesky support's transform by index (also
    inside an ``independent`` support, as ``Independent``/``to_event`` makes it)."""
    if support is constraints.corr_cholesky:
        return CorrCholeskyByIndex()
    if isinstance(support, constraints.independent) and _holds_corr_cholesky(support):
        return IndependentTransform(bijection(support.base_constraint), support.reinterpreted_batch_ndims)
    return biject_to(support)


def _holds_corr_cholesky(support: constraints.Constraint) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.corr_cholesky


def _lower(matrix: torch.Tensor, diag: int) -> torch.Tensor:
    """The entries of ``matrix`` on and below diagonal ``diag`` (``-1``: strictly below), in row order."""
    n = matrix.shape[-1]
    rows, cols = torch.tril_indices(n, n, offset=diag, device=matrix.device)
    return matrix[..., rows, cols]


class CorrCholeskyByIndex(CorrCholeskyTransform):
    """torch's ``CorrCholeskyTransform``, the lower triangle addressed by ``torch.tril_indices``."""

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps
        x = torch.tanh(x).clamp(min=-1 + eps, max=1 - eps)
        n = self.forward_shape(x.shape)[-1]
        rows, cols = torch.tril_indices(n, n, offset=-1, device=x.device)
        r = x.new_zeros(x.shape[:-1] + (n, n))
        r[..., rows, cols] = x
        # stick-breaking on the squared values, signs kept: y = r * sqrt(cumprod(1 - r**2)) shifted
        z1m_cumprod_sqrt = (1 - r**2).sqrt().cumprod(-1)
        r = r + torch.eye(n, dtype=r.dtype, device=r.device)
        return r * pad(z1m_cumprod_sqrt[..., :-1], [1, 0], value=1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        y_cumsum = 1 - torch.cumsum(y * y, dim=-1)
        y_cumsum_shifted = pad(y_cumsum[..., :-1], [1, 0], value=1)
        t = _lower(y, -1) / _lower(y_cumsum_shifted, -1).sqrt()
        return (t.log1p() - t.neg().log1p()) / 2

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, intermediates: object = None) -> torch.Tensor:
        y1m_cumsum = 1 - (y * y).cumsum(dim=-1)
        stick_breaking_logdet = 0.5 * _lower(y1m_cumsum, -2).log().sum(-1)
        tanh_logdet = -2 * (x + softplus(-2 * x) - math.log(2.0)).sum(dim=-1)
        return stick_breaking_logdet + tanh_logdet
