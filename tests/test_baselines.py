"""The binary-image baselines: normalised, sampling what they score, and ordered on the digits."""

import itertools

import numpy as np
import pytest
from scipy import stats

from bayesgen.baselines import BernoulliMixture, FullyVisibleSBN, IndependentBernoulli
from bayesgen.datasets import binary_digits

ALL_2X2 = np.array(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 2, 2)


def _train_2x2(seed=0):
    rng = np.random.default_rng(seed)
    first = rng.random(300) < 0.7
    pixels = np.stack([first, first ^ (rng.random(300) < 0.1), rng.random(300) < 0.3, rng.random(300) < 0.5], 1)
    return pixels.astype(float).reshape(300, 2, 2)


@pytest.mark.parametrize("baseline", [IndependentBernoulli(), BernoulliMixture(3, num_iter=50), FullyVisibleSBN()])
def test_normalised_and_samples_follow_the_likelihood(baseline):
    baseline.fit(_train_2x2())
    probs = np.exp(baseline.log_likelihood(ALL_2X2))
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-10)
    samples = baseline.sample(20000, seed=1)
    assert samples.shape == (20000, 2, 2) and set(np.unique(samples)) <= {0.0, 1.0}
    codes = (samples.reshape(-1, 4) @ (2 ** np.arange(3, -1, -1))).astype(int)
    counts = np.bincount(codes, minlength=16)
    assert stats.chisquare(counts, probs * len(codes)).pvalue > 1e-3


def test_fvsbn_learns_the_dependence_the_independent_model_misses():
    train = _train_2x2()
    gain = FullyVisibleSBN().fit(train).log_likelihood(train).mean() \
        - IndependentBernoulli().fit(train).log_likelihood(train).mean()
    assert gain > 0.3  # pixel 1 copies pixel 0 90% of the time: about 0.36 nats of mutual information


def test_digits_split_and_baselines_rank_as_expected():
    train, test = binary_digits()
    assert train.shape == (1347, 8, 8) and test.shape == (450, 8, 8)
    assert set(np.unique(train)) == {0.0, 1.0}
    nll = [-model.fit(train).log_likelihood(test).mean()
           for model in (IndependentBernoulli(), BernoulliMixture(10), FullyVisibleSBN())]
    assert nll[0] > nll[1] > nll[2]  # about 25.2, 19.7 and 17.9 nats per image


def test_non_binary_images_are_refused():
    with pytest.raises(ValueError, match="zeros and ones"):
        IndependentBernoulli().fit(np.full((3, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        IndependentBernoulli().fit(np.zeros((3, 4)))
