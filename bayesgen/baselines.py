"""Reference models for binary images: the held-out likelihoods a deep generative model must beat.

Three classical density models of binary images ``(N, H, W)``, each fitted in seconds and each
giving an exact log-likelihood per image, in nats:

- :class:`IndependentBernoulli`: one probability per pixel; ignores how pixels go together.
- :class:`BernoulliMixture`: a mixture of products of Bernoullis, fitted by EM (Bishop 2006,
  section 9.3.3).
- :class:`FullyVisibleSBN`: the fully visible sigmoid belief network (Frey 1998; Neal 1992), one
  logistic regression per pixel on the pixels before it in raster order, the simplest
  autoregressive image model and the one PixelCNN must beat.

Each has ``fit(images)``, ``log_likelihood(images)`` (one value per image) and
``sample(num_samples, seed=...)``.
"""

from __future__ import annotations


import numpy as np
import torch

__all__ = ["BernoulliMixture", "FullyVisibleSBN", "IndependentBernoulli"]


def _flat(images: np.ndarray, name: str = "images") -> np.ndarray:
    array = np.asarray(images, dtype=np.float64)
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W), got {array.shape}")
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold only zeros and ones (binary images)")
    return array.reshape(len(array), -1)


class IndependentBernoulli:
    """One Bernoulli probability per pixel, the posterior mean under a uniform prior (add-one)."""

    def fit(self, images: np.ndarray) -> "IndependentBernoulli":
        """Estimate each pixel's probability from training images ``(N, H, W)``."""
        flat = _flat(images)
        self.shape = np.asarray(images).shape[1:]
        self.probs = (flat.sum(0) + 1.0) / (len(flat) + 2.0)
        return self

    def log_likelihood(self, images: np.ndarray) -> np.ndarray:
        """Log-likelihood of each image, nats, ``(N,)``."""
        flat = _flat(images)
        return flat @ np.log(self.probs) + (1 - flat) @ np.log1p(-self.probs)

    def sample(self, num_samples: int, *, seed: int = 0) -> np.ndarray:
        """Independent images ``(num_samples, H, W)``."""
        rng = np.random.default_rng(seed)
        return (rng.random((num_samples, self.probs.size)) < self.probs).astype(float).reshape(
            (num_samples, *self.shape))


class BernoulliMixture:
    """A mixture of ``num_components`` products of Bernoullis, fitted by EM.

    The M-step adds one pseudo-count of each value to every pixel of every component (a
    Beta(2, 2) prior, so EM finds a MAP estimate), which keeps every probability inside (0, 1):
    maximum likelihood sets pixels a component never saw on to probability zero and gives a
    held-out image with one such pixel a log-likelihood of minus infinity.

    Parameters
    ----------
    num_components : int
    num_iter : int
        EM iterations (each a full pass over the data).
    seed : int
        Seeds the initial responsibilities.
    """

    def __init__(self, num_components: int = 10, *, num_iter: int = 200, seed: int = 0) -> None:
        self.num_components = num_components
        self.num_iter = num_iter
        self.seed = seed

    def _log_joint(self, flat: np.ndarray) -> np.ndarray:
        """``log pi_k + log p(x_n | k)``, ``(N, K)``."""
        return np.log(self.weights) + flat @ np.log(self.probs).T + (1 - flat) @ np.log1p(-self.probs).T

    def fit(self, images: np.ndarray) -> "BernoulliMixture":
        """Run EM from random responsibilities on training images ``(N, H, W)``."""
        flat = _flat(images)
        self.shape = np.asarray(images).shape[1:]
        rng = np.random.default_rng(self.seed)
        resp = rng.dirichlet(np.ones(self.num_components), size=len(flat))
        for _ in range(self.num_iter):
            counts = resp.sum(0)
            self.weights = (counts + 1.0) / (len(flat) + self.num_components)
            self.probs = (resp.T @ flat + 1.0) / (counts[:, None] + 2.0)
            log_joint = self._log_joint(flat)
            resp = np.exp(log_joint - log_joint.max(1, keepdims=True))
            resp /= resp.sum(1, keepdims=True)
        return self

    def log_likelihood(self, images: np.ndarray) -> np.ndarray:
        """Log-likelihood of each image, nats, ``(N,)``."""
        log_joint = self._log_joint(_flat(images))
        top = log_joint.max(1)
        return top + np.log(np.exp(log_joint - top[:, None]).sum(1))

    def sample(self, num_samples: int, *, seed: int = 0) -> np.ndarray:
        """Images ``(num_samples, H, W)``: a component, then its pixels."""
        rng = np.random.default_rng(seed)
        components = rng.choice(self.num_components, size=num_samples, p=self.weights)
        pixels = rng.random((num_samples, self.probs.shape[1])) < self.probs[components]
        return pixels.astype(float).reshape((num_samples, *self.shape))


class FullyVisibleSBN:
    """``p(x) = prod_i Bernoulli(x_i | sigmoid(b_i + sum_{j<i} W_ij x_j))`` in raster order.

    The weights are one strictly lower-triangular matrix, fitted by L-BFGS on the mean
    negative log-likelihood plus ``l2 / 2 * |W|^2`` (a little shrinkage: a pixel that is
    constant in training would otherwise get infinite weights).

    Parameters
    ----------
    l2 : float
        Weight of the squared-norm penalty on ``W``, per training image.
    num_steps : int
        Maximum L-BFGS iterations.
    """

    def __init__(self, *, l2: float = 1e-3, num_steps: int = 500) -> None:
        self.l2 = l2
        self.num_steps = num_steps

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.weight * self._mask).T + self.bias

    def fit(self, images: np.ndarray) -> "FullyVisibleSBN":
        """Fit all the logistic regressions at once on training images ``(N, H, W)``."""
        x = torch.as_tensor(_flat(images))
        self.shape = np.asarray(images).shape[1:]
        dim = x.shape[1]
        self._mask = torch.ones(dim, dim, dtype=x.dtype).tril(-1)
        self.weight = torch.zeros(dim, dim, dtype=x.dtype, requires_grad=True)
        mean = x.mean(0).clamp(0.5 / len(x), 1 - 0.5 / len(x))
        self.bias = torch.log(mean / (1 - mean)).requires_grad_(True)
        optimizer = torch.optim.LBFGS([self.weight, self.bias], max_iter=self.num_steps,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-9)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            nll = torch.nn.functional.binary_cross_entropy_with_logits(self._logits(x), x, reduction="sum")
            loss = nll / len(x) + self.l2 / 2 * (self.weight * self._mask).pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        self.weight = self.weight.detach()
        self.bias = self.bias.detach()
        return self

    def log_likelihood(self, images: np.ndarray) -> np.ndarray:
        """Log-likelihood of each image, nats, ``(N,)``."""
        x = torch.as_tensor(_flat(images))
        with torch.no_grad():
            terms = -torch.nn.functional.binary_cross_entropy_with_logits(self._logits(x), x, reduction="none")
        return terms.sum(1).numpy()

    def sample(self, num_samples: int, *, seed: int = 0) -> np.ndarray:
        """Images ``(num_samples, H, W)``, one pixel at a time in raster order."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.zeros(num_samples, self.bias.numel(), dtype=self.bias.dtype)
        for i in range(x.shape[1]):
            probs = torch.sigmoid(self._logits(x)[:, i])
            x[:, i] = (torch.rand(num_samples, generator=generator, dtype=x.dtype) < probs).to(x.dtype)
        return x.numpy().reshape((num_samples, *self.shape))
