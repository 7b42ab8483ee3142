"""Information-theoretic estimators against closed forms for Gaussians (n = 5,000, within 0.05 nats)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from bayesgen.metrics import (HypothesisResult, c2st, chi_square_test, entropy, kl_divergence, ks_test, mmd_test,
                              mutual_information, t_test)

N = 5000
COV_P = np.array([[1.0, 0.6], [0.6, 2.0]])
COV_Q = np.array([[1.5, -0.3], [-0.3, 1.0]])
MEAN_Q = np.array([0.5, -0.5])
ALPHA = 0.01


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


def test_ksg_mutual_information_does_not_depend_on_the_units():
    xy = np.random.default_rng(2).multivariate_normal([0.0, 0.0], [[1.0, 0.8], [0.8, 1.0]], size=N)
    at_one = mutual_information(xy[:, 0], xy[:, 1])
    for scale in (1e-13, 1e-9, 1e9):  # an absolute 1e-12 off the radius gave inf at 1e-13, 0.588 at 1e-9
        assert mutual_information(scale * xy[:, 0], scale * xy[:, 1]) == pytest.approx(at_one, rel=1e-12)


def test_ksg_mutual_information_does_not_depend_on_each_coordinates_units():
    """The max-norm let the coordinate of largest spread decide every neighbour: 0.043 nats for a
    true 0.144 with y in thousandths, until each coordinate was scaled to unit sd."""
    rng = np.random.default_rng(0)
    xy = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], size=2000)
    exact = -0.5 * math.log(1 - 0.5**2)
    for scale in (1.0, 1e3, 1e4):
        assert abs(mutual_information(xy[:, 0], scale * xy[:, 1]) - exact) < 0.03
    noise = rng.normal(size=2000)
    assert abs(mutual_information(np.c_[1000 * xy[:, 0], noise], xy[:, 1])
               - mutual_information(np.c_[xy[:, 0], noise], xy[:, 1])) < 1e-9


def test_gaussian_mutual_information_needs_a_split_inside_and_sums_a_batch():
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    one = mutual_information(torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov), split=1)
    assert one == pytest.approx(-0.5 * math.log(1 - 0.81), rel=1e-12)
    batch = torch.distributions.MultivariateNormal(torch.zeros(3, 2, dtype=torch.float64), cov.expand(3, 2, 2))
    assert mutual_information(batch, split=1) == pytest.approx(3 * one, rel=1e-12)
    for bad in (0, 2, 5, None, 1.0):
        with pytest.raises(ValueError, match="split must be an integer from 1 to 1"):
            mutual_information(torch.distributions.MultivariateNormal(torch.zeros(2), cov.float()), split=bad)


def test_tests_refuse_nan_empty_and_multi_column_samples_by_name():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 2)), rng.normal(size=(100, 2))
    x[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"x has 1 non-finite value\(s\), the first at index \(3, 0\)"):
        mmd_test(x, y)  # it returned p = 0.005: NaN >= NaN is never true in the permutation count
    with pytest.raises(ValueError, match="x has 1 non-finite"):
        ks_test(x[:, 0], y[:, 0])
    with pytest.raises(ValueError, match="y has 1 non-finite"):
        t_test(y[:, 0], x[:, 0])
    with pytest.raises(ValueError, match="observed has 20 non-finite"):  # NaN was a category of its own
        chi_square_test(np.array([1.0, 2, 3, np.nan] * 20), model_samples=np.array([1.0, 2, 3] * 30))
    with pytest.raises(ValueError, match="whole, non-negative category counts"):
        chi_square_test([10.5, 20], probs=[0.5, 0.5])
    for estimator in (entropy, lambda a: kl_divergence(a, a), lambda a: mutual_information(a, a)):
        with pytest.raises(ValueError, match="is empty"):
            estimator(np.empty((0, 2)))
    with pytest.raises(ValueError, match=r"x must be a sample of one quantity \(1-d\), got shape \(100, 2\)"):
        ks_test(y, rng.normal(size=(100, 3)))  # it pooled the columns: p = 0.91
    assert ks_test(y[:, :1], y[:, 1]).pvalue == ks_test(y[:, 0], y[:, 1]).pvalue  # an (n, 1) column is 1-d


def test_ks_takes_a_torch_distribution_and_entropy_says_when_torch_has_no_closed_form():
    from scipy.stats import norm

    x = np.random.default_rng(1).normal(size=300)
    assert ks_test(x, torch.distributions.Normal(0.0, 1.0)).pvalue == pytest.approx(ks_test(x, norm()).pvalue,
                                                                                      rel=1e-6)
    mixture = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(2)),
                                                    torch.distributions.Normal(torch.tensor([-1.0, 1.0]), 1.0))
    with pytest.raises(NotImplementedError, match="no closed-form entropy of MixtureSameFamily: pass samples"):
        entropy(mixture)


def test_knn_estimators_refuse_repeated_points_and_too_few_of_them():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(200, 2))
    repeated = "need continuous samples without repeated points"
    with pytest.raises(ValueError, match=f"1st neighbour is 0 for 2 of 201 points: the k-nearest-neighbour .*{repeated}"):
        entropy(np.vstack([x, x[:1]]), k=1)  # one repeated draw made it -inf
    with pytest.raises(ValueError, match=f"its 1st neighbour in q is 0 for 200 of 200 points.*{repeated}"):
        kl_divergence(x, x)  # -inf before
    with pytest.raises(ValueError, match=f"3rd neighbour of \\(x, y\\) is 0.*{repeated}"):
        mutual_information(rng.integers(0, 3, 200), rng.integers(0, 3, 200))  # discrete data: inf before
    with pytest.raises(ValueError, match="p needs at least 4 points"):
        entropy(rng.normal(size=3))
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        entropy(x, k=0)
    with pytest.raises(ValueError, match="p and q must have the same number of features"):
        kl_divergence(x, y[:, :1])
    with pytest.raises(ValueError, match="x needs at least 2 points"):
        mmd_test(x[:1], y)  # a NaN statistic with p = 0.005 before
    with pytest.raises(ValueError, match="num_permutations must be a positive integer, got 0"):
        mmd_test(x, y, num_permutations=0)


def test_mixed_arguments_are_rejected():
    with pytest.raises(TypeError, match="two torch distributions"):
        kl_divergence(mvn([0.0, 0.0], COV_P), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="paired"):
        mutual_information(np.zeros((10, 1)), np.zeros((9, 1)))


# ---- hypothesis-test helpers: closed forms and known cases ----

def test_t_tests_match_their_textbook_statistics():
    from scipy.stats import t as student

    x, y = np.array([1.0, 2.0, 4.0, 7.0]), np.array([2.0, 2.5, 3.0, 3.5, 9.0])
    one = t_test(x, popmean=1.0)
    expected = (x.mean() - 1.0) / (x.std(ddof=1) / 2.0)
    assert one.statistic == pytest.approx(expected)
    assert one.pvalue == pytest.approx(2 * student.sf(abs(expected), df=3))
    vx, vy = x.var(ddof=1) / 4, y.var(ddof=1) / 5  # Welch: unpooled variances, Satterthwaite df
    welch_df = (vx + vy) ** 2 / (vx**2 / 3 + vy**2 / 4)
    welch = t_test(x, y)
    assert welch.statistic == pytest.approx((x.mean() - y.mean()) / math.sqrt(vx + vy))
    assert welch.pvalue == pytest.approx(2 * student.sf(abs(welch.statistic), df=welch_df))
    paired = t_test(x, y[:4], paired=True)
    assert paired.statistic == pytest.approx(t_test(x - y[:4]).statistic)
    with pytest.raises(ValueError, match="equal length"):
        t_test(x, y, paired=True)


def test_chi_square_matches_the_closed_form_and_pools_sparse_categories():
    result = chi_square_test([50, 30, 20], probs=[0.4, 0.4, 0.2])
    assert result.statistic == pytest.approx(10**2 / 40 + 10**2 / 40)
    assert result.pvalue == pytest.approx(math.exp(-5.0 / 2))  # chi-square with 2 df: sf(x) = exp(-x/2)
    # expected counts 1, 2, 47, 50: the first three pool into one category (expected 50, observed 50)
    assert chi_square_test([3, 0, 47, 50], probs=[0.01, 0.02, 0.47, 0.5]) == (0.0, 1.0)
    # a short remainder (expected 4) joins the last category: 40 vs 50, 60 vs 50 -> (100 + 100) / 50
    assert chi_square_test([40, 50, 10], probs=[0.5, 0.46, 0.04]).statistic == pytest.approx(4.0)
    assert all(math.isnan(v) for v in chi_square_test([2, 2], probs=[0.5, 0.5]))  # nothing left to test
    with pytest.raises(ValueError, match="exactly one"):
        chi_square_test([1, 2])
    with pytest.raises(ValueError, match="sum to 1"):
        chi_square_test([1, 2], probs=[0.5, 0.6])
    with pytest.raises(ValueError, match="non-negative category counts"):
        chi_square_test([-5, 15], probs=[0.5, 0.5])
    # data where the model puts no probability: rejected outright, not pooled away
    assert chi_square_test([5, 5, 40], probs=[0.0, 0.2, 0.8]) == (math.inf, 0.0)
    assert chi_square_test([0, 10, 40], probs=[0.0, 0.2, 0.8]) == (0.0, 1.0)


def test_chi_square_against_model_samples_finds_a_changed_rate():
    rng = np.random.default_rng(4)
    model = rng.poisson(3.0, 50_000)
    assert chi_square_test(rng.poisson(3.0, 300), model_samples=model).pvalue > ALPHA
    assert chi_square_test(rng.poisson(3.6, 300), model_samples=model).pvalue < 1e-3


@pytest.mark.parametrize("draw", [lambda rng, n: rng.binomial(1, 0.3, n), lambda rng, n: rng.poisson(3.0, n)],
                         ids=["bernoulli", "poisson"])
def test_chi_square_against_as_many_model_samples_as_data_holds_its_level(draw):
    # a point fit simulates one data set as large as the held-out one: the test must count the
    # noise of both samples (a goodness-of-fit test to the model's frequencies rejected 16% and 39%)
    rng = np.random.default_rng(6)
    rejected = [chi_square_test(draw(rng, 100), model_samples=draw(rng, 100)).pvalue < 0.05 for _ in range(1000)]
    assert abs(np.mean(rejected) - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 1000)
    table = np.array([[30, 70], [24, 76]])  # the same counts as a contingency table, by scipy
    expected = chi2_contingency(table, correction=False)
    assert chi_square_test([0] * 30 + [1] * 70, model_samples=[0] * 24 + [1] * 76) == \
        pytest.approx((expected.statistic, expected.pvalue))


def test_ks_one_and_two_sample():
    from scipy.stats import norm, uniform

    # two points against U(0, 1): the ECDF misses the CDF by 0.25 at both jumps
    assert ks_test([0.25, 0.75], uniform()).statistic == pytest.approx(0.25)
    assert ks_test([0.25, 0.75], uniform().cdf).statistic == pytest.approx(0.25)
    assert ks_test([0.25, 0.75], "uniform").statistic == pytest.approx(0.25)  # a name, as scipy takes
    with pytest.raises(ValueError, match="'normal' is not a scipy.stats distribution"):
        ks_test([0.25, 0.75], "normal")
    rng = np.random.default_rng(5)
    x = rng.normal(size=400)
    assert ks_test(x, norm()).pvalue > ALPHA and ks_test(x, rng.normal(size=400)).pvalue > ALPHA
    assert ks_test(x, rng.normal(0.5, 1.0, size=400)).pvalue < 1e-3


def test_c2st_is_at_chance_for_equal_gaussians_and_detects_a_one_sd_shift():
    rng = np.random.default_rng(6)
    same = c2st(rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2)))
    # under the null the accuracy of 1000 held-out predictions has sd 0.016: 0.05 is 3.2 sd
    assert same.pvalue > ALPHA and abs(same.statistic - 0.5) < 0.05
    shifted = c2st(rng.normal(size=1000), rng.normal(1.0, 1.0, size=1000))
    # the Bayes classifier of N(0, 1) against N(1, 1) is right with probability Phi(0.5) = 0.69
    assert shifted.pvalue < 1e-3 and 0.62 < shifted.statistic < 0.72
    narrow = c2st(rng.normal(size=(300, 2)), rng.normal(0.0, 0.5, size=(300, 2)))  # a scale change, not a shift
    assert narrow.pvalue < 1e-3


def test_c2st_balances_unequal_samples_and_takes_any_classifier():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    result = c2st(rng.normal(size=200), rng.normal(size=2000), classifier=LogisticRegression())
    assert result.pvalue > ALPHA and abs(result.statistic - 0.5) < 0.1
    with pytest.raises(ValueError, match="at least 2 points in each sample"):
        c2st(np.zeros(1), np.zeros(10))


def test_c2st_rejects_a_true_null_at_its_level_or_less():
    """With cross-validated predictions under a binomial null it rejected 10% of true nulls at the 5%
    level (400 repetitions); the held-out half's hypergeometric null is exact (conservative by its
    discreteness). 200 repetitions: a rate above 0.05 + 3 sd (0.096) would fail."""
    rng = np.random.default_rng(11)
    pvalues = np.array([c2st(rng.normal(size=(100, 1)), rng.normal(size=(100, 1)), seed=i).pvalue
                        for i in range(200)])
    assert (pvalues < 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


def test_c2st_without_scikit_learn_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` raise ImportError
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        c2st(np.zeros(10), np.ones(10))


def test_every_two_sample_test_returns_a_hypothesis_result():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 2)), rng.normal(size=(60, 2))
    result = mmd_test(x, y, num_permutations=20)
    assert isinstance(result, HypothesisResult) and result.pvalue == result[1] and 0 < result.pvalue <= 1
