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

And the reference models for sequences, which a text or audio model must beat:

- :class:`CharacterBigram`: each character given the one before, in nats per symbol.
- :class:`UnigramCoder` and :func:`histogram_entropy_bits`: each mu-law code on its own (order
  0), in bits per sample.
- :class:`QuantisedLinearAR`: a linear autoregression with Gaussian noise, scored on the mu-law
  codes, in bits per sample; the classical linear-predictive coder WaveNet must beat.
"""

from __future__ import annotations


from typing import Any, Sequence

import numpy as np
import torch
from scipy import special

from bayesgen._counts import check_count
from bayesgen.signals import mu_law_bin_edges, mu_law_decode, mu_law_encode

__all__ = ["BernoulliMixture", "CharacterBigram", "FullyVisibleSBN", "IndependentBernoulli", "QuantisedLinearAR",
           "UnigramCoder", "histogram_entropy_bits"]


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


# --- sequences ----------------------------------------------------------------------------------

def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, one per sequence, not a single string")
    texts = list(texts)
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("texts must be a list of strings")
    return texts


class CharacterBigram:
    """Each character given the one before it, with one end symbol: the order-1 Markov text model.

    A text ``c_1 .. c_L`` has probability ``p(c_1 | start) prod_t p(c_t | c_{t-1}) p(end | c_L)``:
    ``L + 1`` terms, the last the end symbol, so the model also says where texts stop and its
    per-symbol score compares with a sequence model that emits an end symbol. Each conditional
    is the posterior mean under a symmetric Dirichlet(``alpha``) prior over the alphabet's
    characters plus the end symbol, ``(count + alpha) / (total + alpha (V + 1))`` (Laplace's
    add-one rule at ``alpha = 1``), so that a pair never seen in training still has a
    probability.

    Parameters
    ----------
    alpha : float
        Pseudo-count per (context, next symbol) pair; positive.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be positive (a zero pseudo-count gives unseen pairs probability 0), got {alpha}")
        self.alpha = float(alpha)

    def _indices(self, text: str) -> list[int]:
        return [self._index[char] for char in text]

    def _check_alphabet(self, texts: list[str]) -> None:
        unknown = sorted(set("".join(texts)) - set(self._index))
        if unknown:
            raise ValueError(f"characters not in the alphabet: {''.join(unknown)!r}")

    def fit(self, texts: Sequence[str], alphabet: str) -> "CharacterBigram":
        """Count the transitions in training ``texts``, each a str over ``alphabet``.

        ``alphabet`` lists the ``V`` characters the model can emit (each once); a character
        outside it in ``texts`` raises ``ValueError`` naming it, since it would have no
        probability.
        """
        texts = _texts(texts)
        if not isinstance(alphabet, str) or not alphabet:
            raise ValueError("alphabet must be a non-empty string of the characters the model can emit")
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet lists some characters more than once: {alphabet!r}")
        self.alphabet = alphabet
        self._index = {char: i for i, char in enumerate(alphabet)}
        self._check_alphabet(texts)
        size = len(alphabet)
        # Rows: contexts (the characters, then start); columns: next symbols (the characters, then end).
        counts = np.zeros((size + 1, size + 1))
        for text in texts:
            symbols = self._indices(text)
            np.add.at(counts, ([size] + symbols, symbols + [size]), 1.0)
        self.log_probs = np.log(counts + self.alpha) - np.log(counts.sum(1, keepdims=True) + self.alpha * (size + 1))
        return self

    def nats_per_symbol(self, texts: Sequence[str]) -> float:
        """Mean negative log-likelihood of held-out ``texts`` per symbol (nats), end symbols included.

        The sum over texts of ``-log p(text)`` divided by the sum of ``len(text) + 1``.
        """
        if not hasattr(self, "log_probs"):
            raise ValueError("fit the model before scoring texts")
        texts = _texts(texts)
        if not texts:
            raise ValueError("texts is empty: there is nothing to score")
        self._check_alphabet(texts)
        size = len(self.alphabet)
        total, count = 0.0, 0
        for text in texts:
            symbols = self._indices(text)
            total -= self.log_probs[[size] + symbols, symbols + [size]].sum()
            count += len(symbols) + 1
        return total / count


def _codes(codes: Any, num_symbols: int) -> np.ndarray:
    array = np.asarray(codes)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"codes must be a non-empty one-dimensional array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"codes must be integers in 0..{num_symbols - 1}, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= num_symbols:
        raise ValueError(f"codes must lie in 0..{num_symbols - 1}, got values in [{array.min()}, {array.max()}]")
    return array


def _check_num_symbols(num_symbols: int) -> int:
    return check_count("num_symbols", num_symbols, minimum=2)


def histogram_entropy_bits(codes: Any, num_symbols: int) -> float:
    """The entropy, in bits, of the empirical histogram of ``codes`` (integers in ``0..num_symbols - 1``).

    The order-0 bound: no model of the codes one at a time scores better on these very codes
    than this (a model fitted elsewhere pays the cross-entropy, which is at least this much).
    """
    array = _codes(codes, _check_num_symbols(num_symbols))
    probs = np.bincount(array, minlength=num_symbols) / array.size
    probs = probs[probs > 0]
    return float(-(probs * np.log2(probs)).sum())


class UnigramCoder:
    """Each code on its own, by its smoothed training frequency: the order-0 model of a code sequence.

    ``p(k) = (count_k + alpha) / (N + alpha K)`` over ``K = num_symbols`` codes, so that a code
    never seen in training still costs a finite number of bits.

    Parameters
    ----------
    num_symbols : int
        ``K``; 256 for 8-bit mu-law codes.
    alpha : float
        Pseudo-count per code; positive.
    """

    def __init__(self, num_symbols: int, alpha: float = 1.0) -> None:
        self.num_symbols = _check_num_symbols(num_symbols)
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = float(alpha)

    def fit(self, codes: Any) -> "UnigramCoder":
        """Count the training codes."""
        counts = np.bincount(_codes(codes, self.num_symbols), minlength=self.num_symbols)
        self.probs = (counts + self.alpha) / (counts.sum() + self.alpha * self.num_symbols)
        return self

    def bits_per_symbol(self, codes: Any) -> float:
        """Cross-entropy of held-out ``codes`` under the fitted frequencies, bits per code."""
        if not hasattr(self, "probs"):
            raise ValueError("fit the model before scoring codes")
        return float(-np.log2(self.probs[_codes(codes, self.num_symbols)]).mean())


def _log_interval_mass(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``log(Phi(high) - Phi(low))`` for standardised ``low < high``, accurate in both tails.

    In the upper tail both ``Phi`` values are close to 1 and their difference cancels; the
    symmetry ``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)`` moves such an interval to the lower tail,
    where ``log_ndtr`` is accurate, and the difference is taken as ``log Phi(b) +
    log(1 - exp(log Phi(a) - log Phi(b)))``.
    """
    flip = low > 0
    low, high = np.where(flip, -high, low), np.where(flip, -low, high)
    log_high, log_low = special.log_ndtr(high), special.log_ndtr(low)
    with np.errstate(divide="ignore"):
        return log_high + np.log(-np.expm1(log_low - log_high))


class QuantisedLinearAR:
    """A linear autoregression with Gaussian noise, scored as a distribution over mu-law codes.

    ``x_t ~ Normal(b + sum_{j=1}^{order} w_j x_{t-j}, sd)``, fitted by least squares on the
    training signal as the codes see it (mu-law encoded, then decoded), with ``sd`` from the
    training residuals (divided by their degrees of freedom). A code's probability is the
    normal's mass over the code's interval of :func:`bayesgen.signals.mu_law_bin_edges`, so the
    model gives a proper distribution over the ``mu + 1`` codes and its bits per sample compare
    with any model of the codes (WaveNet's softmax included). Each probability is floored at
    ``1e-12`` (about 40 bits), so one sample the model thinks impossible cannot dominate the
    mean.

    Parameters
    ----------
    order : int
        Number of past samples the prediction uses.
    mu : int
        The mu-law parameter of the codes (255: 256 codes).
    """

    floor = 1e-12
    min_sd = 1e-9

    def __init__(self, order: int = 16, mu: int = 255) -> None:
        self.order = check_count("order", order)
        self.mu = mu
        self.edges = mu_law_bin_edges(mu)

    def _quantised(self, signal: Any, minimum: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The codes of ``signal`` and their decoded values, after checking its length."""
        array = np.asarray(signal, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"the signal must be one-dimensional, got shape {array.shape}")
        if len(array) < minimum:
            raise ValueError(f"{what} needs at least {minimum} samples with order={self.order}, got {len(array)}")
        codes = mu_law_encode(array, self.mu)
        return codes, mu_law_decode(codes, self.mu)

    def _design(self, values: np.ndarray) -> np.ndarray:
        """Rows ``[x_{t-1}, ..., x_{t-order}, 1]`` for ``t = order .. n-1``."""
        lags = np.lib.stride_tricks.sliding_window_view(values[:-1], self.order)[:, ::-1]
        return np.column_stack([lags, np.ones(len(lags))])

    def fit(self, signal: Any) -> "QuantisedLinearAR":
        """Least squares on a training signal in ``[-1, 1]`` (at least ``2 order + 2`` samples).

        Sets ``coef`` (the lag weights, most recent first), ``intercept`` and ``sd``, floored
        at ``1e-9`` so that a signal the model predicts exactly still has a proper density.
        """
        _, values = self._quantised(signal, 2 * self.order + 2, "fitting")
        design, target = self._design(values), values[self.order:]
        weights, *_ = np.linalg.lstsq(design, target, rcond=None)
        residuals = target - design @ weights
        self.coef, self.intercept = weights[:-1], float(weights[-1])
        self.sd = max(float(np.sqrt(residuals @ residuals / (len(target) - design.shape[1]))), self.min_sd)
        return self

    def log2_probs(self, signal: Any) -> np.ndarray:
        """``log2 p(code_t | past)`` for ``t = order .. n-1``, floored at ``log2(1e-12)``."""
        if not hasattr(self, "coef"):
            raise ValueError("fit the model before scoring a signal")
        codes, values = self._quantised(signal, self.order + 1, "scoring")
        mean = self._design(values) @ np.concatenate([self.coef, [self.intercept]])
        target = codes[self.order:]
        low = (self.edges[target] - mean) / self.sd
        high = (self.edges[target + 1] - mean) / self.sd
        return np.maximum(_log_interval_mass(low, high), np.log(self.floor)) / np.log(2.0)

    def bits_per_sample(self, signal: Any) -> float:
        """Mean ``-log2 p(code_t | past)`` over ``t >= order`` of a held-out signal in ``[-1, 1]``."""
        return float(-self.log2_probs(signal).mean())
