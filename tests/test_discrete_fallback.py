"""discrete_marginals and infer_discrete on programs that do not broadcast over a plate of draws.

Pyro's Gaussian mixture tutorial (https://pyro.ai/examples/gmm.html), unchanged, indexes the
component means with the enumerated assignment, ``locs[assignment]``: under an outer plate over
posterior draws that index lands on the draws' dimension, so both functions run the program once
per draw (with a warning). The tests check that path against Bayes' rule by hand, against the
true components of well-separated data, and against the batched path of the same model written
with ``Vindex``.
"""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate
from pyro.ops.indexing import Vindex
from scipy.special import softmax
from scipy.stats import norm

import bayesgen as bg

K = 2
FALLBACK = r"discrete_marginals|infer_discrete"


@config_enumerate
def gmm_tutorial(data):
    """The tutorial's model, as written there."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


@config_enumerate
def gmm_vindex(data):
    """The same model written to broadcast over a plate of draws: ``Vindex`` indexing, and ``locs``
    one draw with an event dimension of the components rather than a plate of them (``Vindex`` on
    a plate's dim does not broadcast: indexing consumes the components' dim, and the draws' dim
    shifts onto the data plate's)."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., assignment], scale), obs=data)


@config_enumerate
def gmm_gather(data):
    """Indexing by ``gather``, which cannot take the enumerated assignment even for one draw."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs.gather(0, assignment), scale), obs=data)


@pytest.fixture(scope="module")
def simulated():
    """60 points from two components at -5 and +5 with unit scale, and their true components."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 60)
    data = np.where(truth == 0, -5.0, 5.0) + rng.normal(size=60)
    fit = bg.fit(gmm_tutorial, {"data": torch.tensor(data)}, engine="nuts", num_chains=2, num_warmup=100,
                 num_samples=100, seed=0, progress=False)
    return fit, data, truth


def _by_hand(fit, data):
    """Bayes' rule at each posterior draw, averaged over the draws: ``(N, K)``."""
    w = fit.posterior["weights"].reshape(-1, K)
    locs = fit.posterior["locs"].reshape(-1, K)
    scale = fit.posterior["scale"].reshape(-1)
    log_joint = np.log(w)[:, None, :] + norm.logpdf(data[None, :, None], locs[:, None, :], scale[:, None, None])
    return softmax(log_joint, axis=-1).mean(0)


def _located(fit, z):
    """Whether each assigned component's mean is positive, per draw: a label-free reading of ``z``
    (a chain may label the components either way)."""
    locs = fit.posterior["locs"]
    return np.take_along_axis(locs, z.reshape(locs.shape[:2] + (-1,)), axis=-1) > 0


def test_tutorial_program_is_fitted_but_does_not_broadcast_over_draws(simulated):
    fit, _, _ = simulated
    assert not fit.problem.density.vectorized


def test_marginals_per_draw_equal_bayes_rule_by_hand(simulated):
    fit, data, _ = simulated
    with pytest.warns(RuntimeWarning, match=r"site 'obs'.*one program run per draw.*Vindex"):
        marginals = bg.discrete_marginals(fit)["assignment"]
    assert marginals.shape == (60, K)
    np.testing.assert_allclose(marginals, _by_hand(fit, data), rtol=0, atol=1e-10)


def test_marginals_of_a_subset_of_draws(simulated):
    fit, data, _ = simulated
    with pytest.warns(RuntimeWarning, match=FALLBACK):
        marginals = bg.discrete_marginals(fit, num_samples=7)["assignment"]
    index = np.linspace(0, fit.num_draws - 1, 7).round().astype(int)
    thinned = type("Thinned", (), {"posterior": {k: v[:, index] for k, v in fit.posterior.items()}})
    np.testing.assert_allclose(marginals, _by_hand(thinned, data), rtol=0, atol=1e-10)


@pytest.mark.parametrize("temperature", [0, 1])
def test_assignments_per_draw_match_the_true_components(simulated, temperature):
    fit, _, truth = simulated
    with pytest.warns(RuntimeWarning, match=FALLBACK):
        z = bg.infer_discrete(fit, temperature=temperature, seed=1)["assignment"]
    assert z.shape == (2, 100, 60)
    assert np.issubdtype(z.dtype, np.integer)
    positive = _located(fit, z)
    assert (positive == (truth == 1)).all()


def test_map_assignments_are_the_argmax_of_bayes_rule(simulated):
    fit, data, _ = simulated
    with pytest.warns(RuntimeWarning, match=FALLBACK):
        z = bg.infer_discrete(fit, temperature=0, num_samples=5)["assignment"]
    index = np.linspace(0, fit.num_draws - 1, 5).round().astype(int)
    for chain in range(2):
        for j, i in enumerate(index):
            post = {k: v[chain:chain + 1, i:i + 1] for k, v in fit.posterior.items()}
            by_hand = _by_hand(type("One", (), {"posterior": post}), data)
            np.testing.assert_array_equal(z[chain, j], by_hand.argmax(-1))


def test_vindex_twin_runs_batched_and_agrees_with_the_fallback(simulated):
    fit, data, _ = simulated
    with pytest.warns(RuntimeWarning, match=FALLBACK):
        fallback = bg.discrete_marginals(fit)["assignment"]
    with pytest.warns(RuntimeWarning, match=FALLBACK):
        fallback_map = bg.infer_discrete(fit, temperature=0)["assignment"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the batched path: no fallback warning
        batched = bg.discrete_marginals(fit, model=gmm_vindex)["assignment"]
        batched_map = bg.infer_discrete(fit, model=gmm_vindex, temperature=0)["assignment"]
    np.testing.assert_allclose(batched, fallback, rtol=0, atol=1e-10)
    np.testing.assert_allclose(batched, _by_hand(fit, data), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(batched_map, fallback_map)


def test_a_batch_of_one_draw_on_either_path(simulated):
    """One chain, one draw: under the plate of draws a plate of size 1, which packing drops."""
    _, data, _ = simulated
    with pytest.warns(UserWarning, match=r"boundary of its support at weights"):  # one component left empty here
        fit = bg.fit(gmm_vindex, {"data": torch.tensor(data)}, engine="map", num_draws=3, seed=0)
    batched = bg.discrete_marginals(fit, num_samples=1)["assignment"]
    with pytest.warns(RuntimeWarning, match=FALLBACK):
        fallback = bg.discrete_marginals(fit, model=gmm_tutorial, num_samples=1)["assignment"]
    one = {k: v[:, :1] for k, v in fit.posterior.items()}
    np.testing.assert_allclose(batched, _by_hand(type("One", (), {"posterior": one}), data), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fallback, batched, rtol=0, atol=1e-10)
    decoded = bg.infer_discrete(fit, temperature=0, num_samples=1)["assignment"]
    assert decoded.shape == (1, 1, 60) and decoded.dtype == np.int64


def test_only_the_vindex_twin_broadcasts_over_draws(simulated):
    _, data, _ = simulated
    assert bg.LogDensity(gmm_vindex, {"data": torch.tensor(data)}).vectorized
    assert not bg.LogDensity(gmm_tutorial, {"data": torch.tensor(data)}).vectorized


def test_a_program_that_fails_for_one_draw_names_the_site_and_vindex(simulated):
    fit, _, _ = simulated
    with pytest.raises(ValueError, match=r"site 'obs'.*Vindex"):
        bg.infer_discrete(fit, model=gmm_gather, temperature=0)
    with pytest.raises(ValueError, match=r"site 'obs'.*Vindex"):
        bg.discrete_marginals(fit, model=gmm_gather)


def test_marginals_of_a_markov_chain_are_forward_backward_by_hand():
    """The marginals' one backward pass over a ``pyro.markov`` chain (the batched path) is the
    forward-backward algorithm: checked against it in numpy at each draw of a Laplace fit."""
    from bayesgen.models import hmm

    data, _ = hmm.simulate(seed=3, duration=40, separation=2.0)
    fit = bg.fit("hmm", data, engine="laplace", num_draws=4, seed=0)
    marginals = bg.discrete_marginals(fit, model=hmm.states_model)
    got = np.stack([marginals[f"state_{t}"] for t in range(40)])
    y = np.asarray(data["y"], dtype=float)
    trans = fit.posterior["trans"].reshape(-1, 2, 2)
    locs, scales = fit.posterior["locs"].reshape(-1, 2), fit.posterior["scales"].reshape(-1, 2)
    expected = np.zeros((40, 2))
    for s in range(len(trans)):
        init = hmm.stationary(torch.as_tensor(trans[s])).numpy()
        like = norm.pdf(y[:, None], locs[s], scales[s])
        alpha, beta = np.zeros((40, 2)), np.ones((40, 2))
        alpha[0] = init * like[0] / (init * like[0]).sum()
        for t in range(1, 40):
            alpha[t] = (alpha[t - 1] @ trans[s]) * like[t]
            alpha[t] /= alpha[t].sum()
        for t in range(38, -1, -1):
            beta[t] = trans[s] @ (like[t + 1] * beta[t + 1])
            beta[t] /= beta[t].sum()
        expected += alpha * beta / (alpha * beta).sum(-1, keepdims=True) / len(trans)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
