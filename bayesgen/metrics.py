"""Statistics for comparing distributions and samples: information measures, hypothesis tests, ranking metrics.

Entropy, KL divergence and mutual information (closed forms, or k-nearest-neighbour estimates from samples);
two-sample and goodness-of-fit tests (t, Kolmogorov-Smirnov, chi-square, MMD, classifier) for comparing
posteriors and model samples with data; recall@k and NDCG@k of a recommender's ranked lists.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from bayesgen._counts import check_count
from bayesgen._seeding import check_seed
from bayesgen._lazy import LazyModule

__all__ = ["HypothesisResult", "c2st", "chi_square_test", "entropy", "kl_divergence", "ks_test", "mmd_test",
           "mutual_information", "ranking_metrics", "t_test"]

stats: Any = LazyModule("scipy.stats")
spatial: Any = LazyModule("scipy.spatial")
special: Any = LazyModule("scipy.special")


def _finite(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` if every value is finite; else a ``ValueError`` naming ``name``: a NaN would make a
    test's statistic NaN, and a permutation test counts NaN >= NaN as never exceeded, p-value tiny."""
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s), the first at index {first}: drop or "
                         "impute them before testing")
    return array


def _points(samples: np.ndarray | torch.Tensor, name: str = "x", least: int = 1) -> np.ndarray:
    """Samples as a finite float array of rows (points), with at least ``least`` of them."""
    array = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=float)
    if array.ndim and array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): it needs at least {least} points (rows) of at "
                         "least one feature")
    array = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
    if len(array) < least:
        raise ValueError(f"{name} needs at least {least} points (rows), got {len(array)}")
    return _finite(array, name)


def _neighbours(k: Any) -> int:
    """The k of a k-nearest-neighbour estimator: a positive integer."""
    return check_count("k", k)


def _ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _positive_distances(distances: np.ndarray, what: str) -> np.ndarray:
    """``distances`` if all are positive; else a ``ValueError``: a k-NN estimate takes their
    logarithm, and repeated points (discrete data, a sampler's rejected moves, a sample
    compared with itself) would make it infinite without saying why."""
    zero = int(np.sum(distances <= 0))
    if zero:
        raise ValueError(f"{what} is 0 for {zero} of {len(distances)} points: the k-nearest-neighbour "
                         "estimators need continuous samples without repeated points (drop repeats, "
                         "e.g. np.unique(x, axis=0), or compare samples drawn separately); a discrete "
                         "distribution's probabilities are not samples: pass torch.distributions."
                         "Categorical(probs=...) for its closed form")
    return distances


def _same_features(x: np.ndarray, y: np.ndarray, names: str = "x and y") -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{names} must have the same number of features (columns), "
                         f"got {x.shape[1]} and {y.shape[1]}")


def _log_unit_ball(dim: int) -> float:
    """Log volume of the Euclidean unit ball in ``dim`` dimensions."""
    return dim / 2 * math.log(math.pi) - float(special.gammaln(dim / 2 + 1))


def entropy(p: torch.distributions.Distribution | np.ndarray, *, k: int = 3) -> float:
    """Differential entropy in nats.

    Closed form for a torch distribution (summed over its batch); from samples (rows are
    points) the Kozachenko-Leonenko k-nearest-neighbour estimate
    ``psi(n) - psi(k) + log V_d + d/n sum log r_k(i)`` (Kozachenko & Leonenko 1987;
    Kraskov et al. 2004, eq. 20).

    Parameters
    ----------
    p : torch.distributions.Distribution, or array or Tensor of shape ``(n, d)`` or ``(n,)``
        A distribution (closed form), or samples: rows are points, a 1-d array is ``n`` points of
        one feature. Samples must be finite and continuous, without repeated points (a zero
        neighbour distance raises ``ValueError``), and number at least ``k + 1``.
    k : int, default 3
        Which neighbour's distance ``r_k(i)`` the estimate uses: the k-th nearest other point to
        each point ``i``. A positive integer; ignored for a distribution.

    Returns
    -------
    float
        The entropy in nats (for a distribution, summed over its batch shape).

    Examples
    --------
    >>> import torch
    >>> round(entropy(torch.distributions.Normal(0.0, 1.0)), 4)  # 0.5 log(2 pi e)
    1.4189
    """
    if isinstance(p, torch.distributions.Distribution):
        try:
            return float(p.entropy().sum())
        except NotImplementedError:  # torch raises it with an empty message (a mixture, a transformed one)
            raise NotImplementedError(f"torch has no closed-form entropy of {type(p).__name__}: pass samples "
                                      "from it for the k-nearest-neighbour estimate, e.g. "
                                      "entropy(p.sample((5000,)).numpy())") from None
    k = _neighbours(k)
    x = _points(p, "p", least=k + 1)
    n, dim = x.shape
    radius = _positive_distances(spatial.cKDTree(x).query(x, k=k + 1)[0][:, k],
                                 f"the distance to the {_ordinal(k)} neighbour")
    return float(special.digamma(n) - special.digamma(k) + _log_unit_ball(dim) + dim * np.mean(np.log(radius)))


def kl_divergence(p: torch.distributions.Distribution | np.ndarray,
                  q: torch.distributions.Distribution | np.ndarray, *, k: int = 1) -> float:
    """KL(p || q) in nats.

    Closed form when both are torch distributions with a registered KL (summed over the
    batch); from samples of each, the k-nearest-neighbour estimator of Wang, Kulkarni &
    Verdu (2009), "Divergence estimation for multidimensional densities via k-nearest-
    neighbor distances", IEEE Trans. Inf. Theory 55(5):
    ``d mean(log(nu_k(i) / rho_k(i))) + log(m / (n - 1))``.

    Parameters
    ----------
    p, q : torch.distributions.Distribution, or arrays or Tensors of shape ``(n, d)`` and ``(m, d)``
        Both distributions (closed form) or both samples (rows are points, a 1-d array is points
        of one feature; the same number of features); one of each raises ``TypeError``. Samples
        must be finite and continuous, without repeated points; ``p`` needs at least ``k + 1``
        points, ``q`` at least ``k``.
    k : int, default 1
        Which neighbour the estimator uses: ``rho_k(i)`` is the distance from the i-th point of
        ``p`` to its k-th nearest other point of ``p``, ``nu_k(i)`` to its k-th nearest point of
        ``q``. A positive integer; ignored for distributions.

    Returns
    -------
    float
        KL(p || q) in nats (for distributions, summed over the batch). The estimate from samples
        may come out negative.
    """
    if isinstance(p, torch.distributions.Distribution) and isinstance(q, torch.distributions.Distribution):
        return float(torch.distributions.kl_divergence(p, q).sum())
    if isinstance(p, torch.distributions.Distribution) or isinstance(q, torch.distributions.Distribution):
        raise TypeError("pass two torch distributions (closed form) or two sample arrays (estimator)")
    k = _neighbours(k)
    x, y = _points(p, "p", least=k + 1), _points(q, "q", least=k)
    _same_features(x, y, "p and q")
    n, dim = x.shape
    rho = _positive_distances(spatial.cKDTree(x).query(x, k=k + 1)[0][:, k],
                              f"the distance from a point of p to its {_ordinal(k)} neighbour in p")
    nu = spatial.cKDTree(y).query(x, k=k)[0]
    nu = _positive_distances(nu[:, k - 1] if nu.ndim == 2 else nu,
                             f"the distance from a point of p to its {_ordinal(k)} neighbour in q")
    return float(dim * np.mean(np.log(nu / rho)) + math.log(len(y) / (n - 1)))


def mutual_information(x: torch.distributions.MultivariateNormal | np.ndarray,
                       y: np.ndarray | None = None, *, split: int | None = None, k: int = 3) -> float:
    """Mutual information I(X; Y) in nats.

    Closed form for a joint ``MultivariateNormal`` whose first ``split`` coordinates are X
    and the rest Y: ``0.5 log(det S_xx det S_yy / det S)`` (summed over a batch of them).
    From paired samples ``x``, ``y`` (rows are draws), the KSG estimator (Kraskov,
    Stoegbauer & Grassberger 2004, "Estimating mutual information", Phys. Rev. E 69,
    algorithm 1, max-norm), with every coordinate first scaled to unit standard deviation:
    the mutual information does not depend on units, and without the scaling the
    max-norm would let the coordinate of largest spread decide every neighbour (a
    correlation of 0.5, 0.144 nats, came out as 0.043 with y in thousandths).

    Parameters
    ----------
    x : torch.distributions.MultivariateNormal, or array or Tensor of shape ``(n, d_x)`` or ``(n,)``
        The joint Gaussian of (X, Y), or draws of X (rows are draws, a 1-d array one feature).
        Samples must be finite and continuous, without repeated joint points, at least ``k + 1``.
    y : array or Tensor of shape ``(n, d_y)`` or ``(n,)``, optional
        Draws of Y paired row by row with ``x``; needed with samples, ignored with a Gaussian.
    split : int, optional
        With a Gaussian, how many leading coordinates are X (from 1 to its dimension - 1; the
        rest are Y); needed there (None raises ``ValueError``), ignored with samples.
    k : int, default 3
        The KSG estimator's neighbour: the max-norm distance from each joint point (x, y) to
        its k-th nearest other one sets the radius within which neighbours in x alone and in y
        alone are counted. A positive integer; ignored for a Gaussian.

    Returns
    -------
    float
        I(X; Y) in nats (for a Gaussian, summed over its batch). The estimate from samples may
        come out slightly negative for independent X and Y.
    """
    if isinstance(x, torch.distributions.MultivariateNormal):
        dim = x.event_shape[0]
        if isinstance(split, bool) or not isinstance(split, (int, np.integer)) or not 1 <= split < dim:
            raise ValueError(f"split must be an integer from 1 to {dim - 1}: how many leading coordinates of the "
                             f"{dim}-dimensional Gaussian form X (the rest are Y); got {split!r}")
        cov = x.covariance_matrix
        logdet = torch.linalg.slogdet
        return float(0.5 * (logdet(cov[..., :split, :split])[1] + logdet(cov[..., split:, split:])[1]
                            - logdet(cov)[1]).sum())
    if y is None:
        raise ValueError("pass paired samples x and y, or a MultivariateNormal and split")
    k = _neighbours(k)
    a, b = _points(x, "x", least=k + 1), _points(y, "y", least=k + 1)
    if len(a) != len(b):
        raise ValueError(f"x and y must be paired draws, got {len(a)} and {len(b)} rows")
    a, b = (points / np.where(points.std(0) > 0, points.std(0), 1.0) for points in (a, b))
    joint = np.concatenate([a, b], axis=1)
    eps = _positive_distances(spatial.cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, k],
                              f"the max-norm distance to the {_ordinal(k)} neighbour of (x, y)")
    # neighbours strictly closer than eps: the largest radius below it, whatever the data's scale
    inside = np.nextafter(eps, 0.0)
    count_a = spatial.cKDTree(a).query_ball_point(a, inside, p=np.inf, return_length=True) - 1
    count_b = spatial.cKDTree(b).query_ball_point(b, inside, p=np.inf, return_length=True) - 1
    n = len(a)
    return float(special.digamma(k) + special.digamma(n)
                 - np.mean(special.digamma(count_a + 1) + special.digamma(count_b + 1)))


def _mmd2(kernel: np.ndarray, n: int) -> float:
    """Unbiased squared MMD from the joint kernel matrix of ``x`` (first ``n`` rows) and ``y``."""
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    m = kernel.shape[0] - n
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def mmd_test(x: np.ndarray, y: np.ndarray, *, num_permutations: int = 200, seed: int = 0
             ) -> "HypothesisResult":
    """Kernel two-sample test: squared MMD with a Gaussian kernel and its permutation p-value.

    The bandwidth is the median distance between all pooled points (Gretton et al. 2012,
    "A kernel two-sample test", JMLR 13). Rows are points; 1-d inputs are treated as
    one feature.

    Parameters
    ----------
    x, y : arrays or Tensors of shape ``(n, d)`` and ``(m, d)``, or ``(n,)`` and ``(m,)``
        The two samples: finite, at least two points each, the same number of features.
    num_permutations : int, default 200
        Random relabellings of the pooled points that make the null distribution: the p-value
        is ``(1 + exceeding) / (1 + num_permutations)``, so it is never below
        ``1 / (1 + num_permutations)``. The cost is quadratic in ``n + m`` per permutation.
    seed : int, default 0
        Seeds the permutations.

    Returns
    -------
    HypothesisResult
        ``statistic``: the unbiased squared MMD (may be slightly negative when the samples
        agree); ``pvalue``: the one-sided permutation p-value (large statistics are evidence of a
        difference). It unpacks as ``statistic, pvalue``, like the other tests' results.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> _, p = mmd_test(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)))
    >>> p > 0.05
    True
    >>> _, p = mmd_test(rng.normal(size=(200, 2)), rng.normal(1.0, 1.0, size=(200, 2)))
    >>> p < 0.01
    True
    """
    x, y = _points(x, "x", least=2), _points(y, "y", least=2)  # an unbiased MMD needs pairs within each
    _same_features(x, y)
    num_permutations = check_count("num_permutations", num_permutations)
    pooled = np.concatenate([x, y])
    dist2 = spatial.distance.cdist(pooled, pooled, "sqeuclidean")
    bandwidth2 = np.median(dist2[np.triu_indices_from(dist2, k=1)]) or 1.0
    kernel = np.exp(-dist2 / bandwidth2)
    n = len(x)
    observed = _mmd2(kernel, n)
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(num_permutations):
        order = rng.permutation(len(pooled))
        exceed += _mmd2(kernel[np.ix_(order, order)], n) >= observed
    return HypothesisResult(float(observed), (exceed + 1) / (num_permutations + 1))


class HypothesisResult(NamedTuple):
    """The outcome of a hypothesis test: its statistic and p-value (unpacks like a tuple).

    Attributes
    ----------
    statistic : float
        The test's statistic; each test says which (a t, a KS distance, a chi-square, an accuracy).
    pvalue : float
        The probability, under the null hypothesis, of a statistic at least as extreme as the one
        observed (two-sided or one-sided as the test says).
    """

    statistic: float
    pvalue: float


def _result(scipy_result: Any) -> HypothesisResult:
    return HypothesisResult(float(scipy_result.statistic), float(scipy_result.pvalue))


def _sample(name: str, values: Any) -> np.ndarray:
    """A sample of one quantity: a finite 1-d float array (an ``(n, 1)`` column too) of two or more values."""
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float)
    if array.ndim > 1 and array.size != len(array):
        raise ValueError(f"{name} must be a sample of one quantity (1-d), got shape {array.shape}: pooling its "
                         "columns would test a mixture of them; test each column, or use mmd_test or c2st for "
                         "points of several features")
    array = array.reshape(-1)
    if len(array) < 2:
        raise ValueError(f"{name} needs at least two values, got {len(array)}")
    return _finite(array, name)


def t_test(x: np.ndarray, y: np.ndarray | None = None, *, popmean: float = 0.0,
           paired: bool = False) -> HypothesisResult:
    """Student t-test of means (``scipy.stats``), two-sided.

    With ``y=None``, the one-sample test of ``mean(x) == popmean``; with ``y``, Welch's
    two-sample test of equal means (no equal-variance assumption), or with ``paired=True``
    the paired test of ``mean(x - y) == 0``.

    Parameters
    ----------
    x : array or Tensor of shape ``(n,)`` or ``(n, 1)``
        A sample of one quantity: at least two finite values.
    y : array or Tensor of shape ``(m,)`` or ``(m, 1)``, optional
        A second sample (as ``x``); without it the test is the one-sample test.
    popmean : float, default 0.0
        The mean under the null hypothesis of the one-sample test; ignored with ``y``.
    paired : bool, default False
        With ``y``, pair the values (``x`` and ``y`` of equal length) and test their differences;
        without ``y`` it raises ``ValueError``.

    Returns
    -------
    HypothesisResult
        ``statistic`` is the t statistic (positive where ``x``'s mean exceeds ``popmean``, or
        ``y``'s), ``pvalue`` is two-sided.

    Examples
    --------
    >>> round(t_test([1.0, 2.0, 3.0], popmean=2.0).pvalue, 3)
    1.0
    >>> t_test([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.5], paired=True).statistic < 0
    True
    """
    a = _sample("x", x)
    if y is None:
        if paired:
            raise ValueError("paired=True needs a second sample y")
        return _result(stats.ttest_1samp(a, popmean))
    b = _sample("y", y)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
        return _result(stats.ttest_rel(a, b))
    return _result(stats.ttest_ind(a, b, equal_var=False))


def ks_test(x: np.ndarray, reference: np.ndarray | Callable[[np.ndarray], np.ndarray] | Any
            ) -> HypothesisResult:
    """Kolmogorov-Smirnov test (``scipy.stats``), two-sided.

    ``reference`` is a second sample (two-sample test), a distribution with a ``cdf``
    method (a frozen ``scipy.stats`` or a torch distribution), the name of a ``scipy.stats``
    distribution at its standard parameters (``"norm"``), or a CDF callable (one-sample test).
    For discrete data the test is conservative: its p-values are too large; where ties
    defeat scipy's exact two-sample null distribution its asymptotic one is used.

    Parameters
    ----------
    x : array or Tensor of shape ``(n,)`` or ``(n, 1)``
        A sample of one quantity: at least two finite values.
    reference : array, distribution, str or callable
        A second sample (as ``x``), an object with a ``cdf`` method, a ``scipy.stats``
        distribution's name, or a function mapping an array of values to their CDF.

    Returns
    -------
    HypothesisResult
        ``statistic`` is the largest distance between the empirical CDF of ``x`` and the
        reference's (empirical) CDF, ``pvalue`` is two-sided.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.stats import norm
    >>> x = np.random.default_rng(0).normal(size=500)
    >>> ks_test(x, norm()).pvalue > 0.05
    True
    >>> ks_test(x, x + 0.5).pvalue < 0.01
    True
    """
    a = _sample("x", x)
    if isinstance(reference, str):
        if not hasattr(stats, reference) or not hasattr(getattr(stats, reference), "cdf"):
            raise ValueError(f"reference {reference!r} is not a scipy.stats distribution")
        return _result(stats.kstest(a, reference))
    if isinstance(reference, torch.distributions.Distribution):
        def cdf(values: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                try:
                    return reference.cdf(torch.as_tensor(values)).cpu().numpy()
                except NotImplementedError:  # torch's, with an empty message (Beta, a mixture)
                    raise NotImplementedError(f"torch has no cdf of {type(reference).__name__}: pass a frozen "
                                              "scipy.stats distribution, or samples from it for the two-sample "
                                              "test") from None

        return _result(stats.kstest(a, cdf))
    if hasattr(reference, "cdf"):
        return _result(stats.kstest(a, reference.cdf))
    if callable(reference):
        return _result(stats.kstest(a, reference))
    with warnings.catch_warnings():
        # many ties (binary pixels) defeat scipy's exact null distribution; it then uses the
        # asymptotic one, which is what we want, and says so in a warning for every call
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
        return _result(stats.ks_2samp(a, _sample("reference", reference)))


def _pooled_starts(expected: np.ndarray, min_expected: float) -> np.ndarray:
    """Where each pooled category starts when adjacent categories are merged, left to right, until
    each expects at least ``min_expected`` observations (a remainder short of it joins the last)."""
    ends, total = [], 0.0
    for index, value in enumerate(expected):
        total += value
        if total >= min_expected:
            ends.append(index + 1)
            total = 0.0
    return np.array([0, *ends[:-1]])


def chi_square_test(observed: np.ndarray, *, probs: np.ndarray | None = None,
                    model_samples: np.ndarray | None = None, min_expected: float = 5.0) -> HypothesisResult:
    """Pearson chi-square test of categorical data against a model: known probabilities, or samples.

    With ``probs``, ``observed`` holds the count of each category (same order) and the test is
    of goodness of fit to those probabilities; data in a category of probability zero
    contradict the model outright (statistic inf, p-value 0). With ``model_samples``,
    ``observed`` holds raw samples (category labels or integer counts), the categories are
    the sorted distinct values of both, and the test is of homogeneity: whether the two
    samples come from one distribution (the 2 x K contingency table, as
    ``scipy.stats.chi2_contingency``). That counts the sampling noise of both sides, so the
    model side may be as small as the data (a point fit that simulates one data set);
    against a much larger model sample it becomes the goodness-of-fit test.

    The chi-square approximation needs expected counts of about five or more, so sparse
    categories are pooled: adjacent categories, in the order given (for ordered counts that
    merges the tails), are merged left to right until each pooled category expects at least
    ``min_expected`` observations (in each sample), and a remainder joins the last one. The
    statistic has (number of pooled categories - 1) degrees of freedom. With fewer than two
    pooled categories there is nothing to test and both the statistic and the p-value are NaN.

    Parameters
    ----------
    observed : array, shape ``(K,)`` with ``probs``, or ``(n,)`` with ``model_samples``
        With ``probs``, the whole, non-negative count of each category; with ``model_samples``,
        the data's raw samples (finite where they are floats).
    probs : array, shape ``(K,)``, optional
        The model's probability of each category, non-negative and summing to 1.
    model_samples : array, shape ``(m,)``, optional
        Samples from the model, in the same categories as ``observed``. Give exactly one of
        ``probs`` and ``model_samples`` (otherwise ``ValueError``).
    min_expected : float, default 5.0
        The least expected count of a pooled category (in each sample).

    Returns
    -------
    HypothesisResult
        The Pearson chi-square statistic and its p-value (large statistics are evidence against
        the model); ``(inf, 0.0)`` for data in a category of probability zero, NaNs for fewer than
        two pooled categories.

    Examples
    --------
    >>> import numpy as np
    >>> chi_square_test([50, 30, 20], probs=[0.5, 0.3, 0.2]).statistic
    0.0
    >>> rng = np.random.default_rng(0)
    >>> chi_square_test(rng.poisson(3.0, 200), model_samples=rng.poisson(3.0, 2000)).pvalue > 0.05
    True
    >>> chi_square_test(rng.poisson(4.0, 200), model_samples=rng.poisson(3.0, 2000)).pvalue < 0.01
    True
    """
    if (probs is None) == (model_samples is None):
        raise ValueError("give exactly one of probs (with category counts) or model_samples (with samples)")
    if probs is not None:
        counts = np.asarray(observed, dtype=float).reshape(-1)
        p = np.asarray(probs, dtype=float).reshape(-1)
        if counts.shape != p.shape:
            raise ValueError(f"observed has {len(counts)} categories but probs has {len(p)}")
        if not np.all(counts >= 0) or np.any(counts != np.round(counts)):
            raise ValueError(f"observed must hold whole, non-negative category counts, got {counts[:10]}"
                             f"{' ...' if len(counts) > 10 else ''}")
        if np.any(p < 0) or not math.isclose(p.sum(), 1.0, rel_tol=1e-6):
            raise ValueError(f"probs must be non-negative and sum to 1, got sum {p.sum():.6g}")
        if np.any(counts[p == 0] > 0):
            return HypothesisResult(math.inf, 0.0)
        starts = _pooled_starts(counts.sum() * p, min_expected)
        if len(starts) < 2:
            return HypothesisResult(math.nan, math.nan)
        return _result(stats.chisquare(np.add.reduceat(counts, starts), counts.sum() * np.add.reduceat(p, starts)))
    data, model = np.asarray(observed).reshape(-1), np.asarray(model_samples).reshape(-1)
    if len(data) == 0 or len(model) == 0:
        raise ValueError(f"observed and model_samples must both hold samples, got {len(data)} and {len(model)}")
    for name, values in (("observed", data), ("model_samples", model)):
        if np.issubdtype(values.dtype, np.floating):
            _finite(values, name)  # a NaN would be a category of its own
    categories = np.union1d(data, model)
    table = np.stack([np.bincount(np.searchsorted(categories, side), minlength=len(categories))
                      for side in (data, model)]).astype(float)
    # a cell's expected count is its row's total times its column's share: pool by the smaller row
    starts = _pooled_starts(table.sum(0) * table.sum(1).min() / table.sum(), min_expected)
    if len(starts) < 2:
        return HypothesisResult(math.nan, math.nan)
    result = stats.chi2_contingency(np.add.reduceat(table, starts, axis=1), correction=False)
    return HypothesisResult(float(result.statistic), float(result.pvalue))


def _sklearn_parts() -> Any:
    try:
        from sklearn import base, model_selection, neighbors, pipeline, preprocessing
    except ImportError as exc:
        raise ImportError("c2st trains a scikit-learn classifier, and scikit-learn is not installed: "
                          "pip install scikit-learn") from exc
    return base, model_selection, neighbors, pipeline, preprocessing


def c2st(x: np.ndarray, y: np.ndarray, *, seed: int = 0, classifier: Any = None) -> HypothesisResult:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017, "Revisiting classifier two-sample tests", ICLR).

    A classifier learns to tell the rows of ``x`` from the rows of ``y`` on one half of them
    (stratified, seeded) and labels the other half; its accuracy there is the statistic. If
    both samples come from one distribution no classifier beats chance, and given its
    predictions the held-out labels are a random arrangement of the two classes, so the
    one-sided p-value is exact: the hypergeometric probability of at least as many correct
    labels. Cross-validated predictions would use every point, but they share training
    points and are not independent; a binomial null on them rejected a true null twice as
    often as its level (10% at 5%).

    The larger sample is subsampled (seeded) to the size ``n`` of the smaller, so that
    chance is exactly 0.5. The default classifier is k-nearest neighbours on
    standardised features with ``k`` an odd number close to the square root of the
    training-set size, one of the paper's two classifiers: it needs no training, so it is
    fast, deterministic and has no convergence to fail, and it is consistent against any
    difference in distribution (a small neural network with early stopping missed a
    tenfold scale difference at n = 100). Any scikit-learn classifier can be given
    instead (it is cloned, and standardisation put before it), e.g. an
    ``MLPClassifier`` for higher-dimensional data.

    Parameters
    ----------
    x, y : arrays or Tensors of shape ``(n, d)`` and ``(m, d)``, or ``(n,)`` and ``(m,)``
        Rows are points, at least two in each, finite, the same number of features. Needs
        scikit-learn.
    seed : int, default 0
        Seeds the subsampling and the split.
    classifier : scikit-learn classifier, optional
        The classifier to train (cloned, after standardisation); by default k-nearest neighbours
        as above.

    Returns
    -------
    HypothesisResult
        ``statistic`` is the held-out accuracy (0.5 at chance), ``pvalue`` one-sided.
    """
    base, model_selection, neighbors, pipeline, preprocessing = _sklearn_parts()
    a, b = _points(x, "x"), _points(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {a.shape[1]} and {b.shape[1]}")
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    if n < 2:
        raise ValueError(f"c2st needs at least 2 points in each sample (one to train on, one to test), got {n}")
    a, b = (s[rng.choice(len(s), n, replace=False)] if len(s) > n else s for s in (a, b))
    features, labels = np.concatenate([a, b]), np.repeat([0, 1], n)
    train, test = model_selection.train_test_split(np.arange(2 * n), test_size=0.5, stratify=labels,
                                                   random_state=seed)
    if classifier is None:
        model = neighbors.KNeighborsClassifier(n_neighbors=min(2 * int(math.sqrt(len(train)) / 2) + 1, len(train)))
    else:
        model = base.clone(classifier)
    estimator = pipeline.make_pipeline(preprocessing.StandardScaler(), model).fit(features[train], labels[train])
    predicted, truth = estimator.predict(features[test]) == 1, labels[test] == 1
    both = int((predicted & truth).sum())  # given the predictions, hypergeometric under the null
    correct = int((predicted == truth).sum())  # = 2 both + len(test) - predicted ones - true ones: rises with both
    pvalue = stats.hypergeom.sf(both - 1, len(test), int(truth.sum()), int(predicted.sum()))
    return HypothesisResult(correct / len(test), float(pvalue))


def ranking_metrics(scores: np.ndarray, relevant: np.ndarray, *, k: int = 10) -> dict[str, float]:
    """Recall@k and NDCG@k of each user's top-k items by ``scores``, averaged over users.

    The average is over the users with at least one relevant item. Recall@k is the share of a
    user's relevant items that are among the top k; NDCG@k is the discounted gain
    ``sum_{r <= k} rel_r / log2(r + 1)`` of the top k over the best possible (binary relevance,
    Jarvelin and Kekalainen 2002). Items a user must not be recommended (those
    rated in the training data) take a score of ``-inf``; ties are broken by item order.

    Parameters
    ----------
    scores : array, shape ``(users, items)``
        Higher is recommended first. No NaN; ``-inf`` for items not to recommend.
    relevant : bool array, shape ``(users, items)``
        The held-out items each user liked. At least one user must have one; users without any
        are left out of the averages.
    k : int, default 10
        Length of each user's list: an integer from 1 to the number of items (``scores.shape[1]``),
        else ``ValueError``.

    Returns
    -------
    dict
        ``recall`` and ``ndcg`` (floats in [0, 1], averaged over the users scored) and ``users``
        (int, how many users were scored: those with at least one relevant item).
    """
    scores, relevant = np.asarray(scores, dtype=float), np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise ValueError(f"scores and relevant must be (users, items) arrays of one shape, got {scores.shape} "
                         f"and {relevant.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be an integer in [1, {scores.shape[1]}], got {k!r}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    users = relevant.any(1)
    if not users.any():
        raise ValueError("no user has a relevant item: nothing to rank against")
    scores, relevant = scores[users], relevant[users]
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(relevant, top, axis=1)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(relevant.sum(1), k) - 1]
    return {"recall": float((hits.sum(1) / relevant.sum(1)).mean()),
            "ndcg": float(((hits * discount).sum(1) / ideal).mean()), "users": int(users.sum())}
