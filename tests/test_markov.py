"""A user's HMM written as Pyro's ``examples/hmm.py`` writes ``model_1``: ``pyro.markov``, enumerated states.

The program indexes its parameters with the enumerated state (``probs_x[x]``), which cannot
broadcast over an outer batch plate, so bayesgen maps it over the points with ``torch.func.vmap``
and contracts the enumerated states of all points at once (``LogDensity._mapped_contraction``).
Known answers: the forward algorithm in numpy, and Pyro's ``TraceEnum_ELBO``.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from scipy import stats
from scipy.special import logsumexp
from torch.distributions import biject_to

import bayesgen as bg

def _load_benchmark():
    """The benchmark's program and simulator, so that the program tested is the one timed."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "markov_hmm.py"
    spec = importlib.util.spec_from_file_location("markov_hmm_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchmark = _load_benchmark()
hmm = benchmark.model


def forward_log_likelihood(probs_x, probs_y, sequences, lengths):
    """``log p(y | probs_x, probs_y)`` by the forward algorithm over each sequence's own steps."""
    total = 0.0
    for sequence, length in zip(sequences, lengths):
        def emission(t, sequence=sequence):
            return (sequence[t] * np.log(probs_y) + (1 - sequence[t]) * np.log1p(-probs_y)).sum(-1)

        alpha = np.log(probs_x[0]) + emission(0)
        for t in range(1, length):
            alpha = logsumexp(alpha[:, None] + np.log(probs_x), axis=0) + emission(t)
        total += logsumexp(alpha)
    return total


@pytest.fixture(scope="module")
def density():
    data, _ = benchmark.simulate(0, num_sequences=5, max_length=6)
    return bg.LogDensity(hmm, data)  # no per-point fallback warning: warnings are errors here


def test_the_program_is_batched_by_vmap_not_looped(density):
    assert density.mapped and not density.vectorized
    assert len(density.enumerated) == 6 and density.latent_names == ["probs_x", "probs_y"]


def test_log_density_is_the_forward_algorithm(density):
    data = density.data
    u = torch.randn(4, density.dim, generator=torch.Generator().manual_seed(1))
    values = density.constrain(u)
    likelihood = density.log_density(u, jacobian=False, prior=False)
    joint = density.log_density(u, jacobian=False)
    assert (data["lengths"] < data["sequences"].shape[1]).any()  # padded steps, masked out
    for i in range(u.shape[0]):
        probs_x, probs_y = values["probs_x"][i].numpy(), values["probs_y"][i].numpy()
        expected = forward_log_likelihood(probs_x, probs_y, data["sequences"].numpy(), data["lengths"].tolist())
        assert float(likelihood[i]) == pytest.approx(expected, rel=1e-12)
        prior = sum(stats.dirichlet.logpdf(row, alpha) for row, alpha in zip(probs_x, [[1.0, 0.1], [0.1, 1.0]]))
        prior += stats.beta.logpdf(probs_y, 0.1, 0.9).sum()
        assert float(joint[i]) == pytest.approx(expected + prior, rel=1e-12)


def _pyro_log_joint(density, row):
    """Pyro's enumerated log joint at one unconstrained point, and its gradient: minus
    ``TraceEnum_ELBO``'s loss with a guide that puts a point mass at the constrained values."""
    row = row.clone().requires_grad_(True)
    values, log_jac = {}, 0.0
    for site in density.layout:
        transform = biject_to(density.prototype.nodes[site.name]["fn"].support)
        piece = row[site.offset:site.offset + site.size].reshape(site.unconstrained_shape)
        values[site.name] = transform(piece)
        log_jac = log_jac + transform.log_abs_det_jacobian(piece, values[site.name]).sum()

    def guide(**data):
        for name, value in values.items():
            pyro.sample(name, dist.Delta(value, event_dim=value.dim()))

    loss = TraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(hmm, guide, **density.data)
    log_joint = -loss + log_jac
    (grad,) = torch.autograd.grad(log_joint, row)
    return log_joint.detach(), grad


def test_recorded_value_and_gradient_match_the_program_and_pyro(density):
    u = torch.randn(3, density.dim, generator=torch.Generator().manual_seed(2))
    assert density._replayable(u)  # recorded, and the recording agreed with the program
    recording = density._replays[(True, True)].recordings[(tuple(u.shape), u.dtype, u.device)]
    value, grad = recording(u)
    eager_value, eager_grad = density._value_and_grad(u, jacobian=True, prior=True)
    assert torch.allclose(value, eager_value, rtol=1e-12)
    assert torch.allclose(grad, eager_grad, rtol=1e-10, atol=1e-10)
    for i, row in enumerate(u):
        expected_value, expected_grad = _pyro_log_joint(density, row)
        assert float(value[i]) == pytest.approx(float(expected_value), rel=1e-12)
        assert torch.allclose(grad[i], expected_grad, rtol=1e-9, atol=1e-9)


def test_nuts_recovers_the_emission_probabilities():
    data, truth = benchmark.simulate(4, num_sequences=60, max_length=6)
    fit = bg.fit(hmm, data, engine="nuts", num_chains=2, num_warmup=100, num_samples=100, seed=0, progress=False)
    posterior = {name: np.asarray(fit.posterior[name]) for name in ("probs_x", "probs_y")}
    assert all(np.isfinite(draws).all() for draws in posterior.values())
    truth = truth["probs_y"].numpy()
    probs_y = benchmark.align_labels(posterior, truth)["probs_y"]  # nothing orders the states
    for chain in probs_y:
        mean, sd = chain.mean(0), chain.std(0)
        assert (sd < 0.08).all() and (np.abs(mean - truth) < 4 * sd).all(), (mean, truth, sd)
