"""Information-theoretic estimators against closed forms for Gaussians (n = 5,000, within 0.05 nats)."""

import math

import numpy as np
import pytest
import torch

from bayesgen.metrics import entropy, kl_divergence, mutual_information

N = 5000
COV_P = np.array([[1.0, 0.6], [0.6, 2.0]])
COV_Q = np.array([[1.5, -0.3], [-0.3, 1.0]])
MEAN_Q = np.array([0.5, -0.5])


def mvn(mean, cov):
    return torch.distributions.MultivariateNormal(torch.as_tensor(mean, dtype=torch.float64),
                                                  torch.as_tensor(cov, dtype=torch.float64))


def test_closed_forms_match_textbook_gaussian_formulas():
    p, q = mvn([0.0, 0.0], COV_P), mvn(MEAN_Q, COV_Q)
    assert entropy(p) == pytest.approx(0.5 * math.log((2 * math.pi * math.e) ** 2 * np.linalg.det(COV_P)))
    inv_q = np.linalg.inv(COV_Q)
    expected = 0.5 * (np.trace(inv_q @ COV_P) + MEAN_Q @ inv_q @ MEAN_Q - 2
                      + math.log(np.linalg.det(COV_Q) / np.linalg.det(COV_P)))
    assert kl_divergence(p, q) == pytest.approx(expected)
    rho = 0.6 / math.sqrt(2.0)
    assert mutual_information(p, split=1) == pytest.approx(-0.5 * math.log(1 - rho**2))


def test_knn_entropy_of_a_2d_gaussian():
    x = np.random.default_rng(0).multivariate_normal([0.0, 0.0], COV_P, size=N)
    assert abs(entropy(x) - entropy(mvn([0.0, 0.0], COV_P))) < 0.05


def test_knn_kl_between_2d_gaussians():
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal([0.0, 0.0], COV_P, size=N)
    y = rng.multivariate_normal(MEAN_Q, COV_Q, size=N)
    assert abs(kl_divergence(x, y) - kl_divergence(mvn([0.0, 0.0], COV_P), mvn(MEAN_Q, COV_Q))) < 0.05


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_ksg_mutual_information_of_correlated_gaussians(rho):
    xy = np.random.default_rng(2).multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=N)
    assert abs(mutual_information(xy[:, 0], xy[:, 1]) - (-0.5 * math.log(1 - rho**2))) < 0.05


def test_mixed_arguments_are_rejected():
    with pytest.raises(TypeError, match="two torch distributions"):
        kl_divergence(mvn([0.0, 0.0], COV_P), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="paired"):
        mutual_information(np.zeros((10, 1)), np.zeros((9, 1)))
