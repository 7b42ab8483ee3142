"""evaluate_draws: the deterministic sites and pointwise log-likelihood that every fit computes."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.special import expit

import bayesgen as bg
from bayesgen import postprocess
from bayesgen.postprocess import RECORD_CHUNK, RECORD_MIN_ELEMENTS, evaluate_draws

DTYPE = torch.float64


def logistic(X, y=None):
    """Written to broadcast over draws: ``(X * beta).sum(-1)`` is a draws x n x d product."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
    alpha = pyro.sample("alpha", dist.Normal(0.0, 1.0))
    pyro.deterministic("odds", torch.exp(alpha))
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=alpha + (X * beta).sum(-1)), obs=y)


def reads_values(X, y=None):
    """The same model, but it reads a draw into Python: it cannot be recorded."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
    alpha = pyro.sample("alpha", dist.Normal(0.0, 1.0))
    pyro.deterministic("odds", torch.exp(alpha) * (1.0 + 0.0 * float(alpha.abs().max())))
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=alpha + (X * beta).sum(-1)), obs=y)


def _data(n: int, d: int = 10) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    y = (rng.random(n) < expit(X @ rng.normal(size=d))).astype(float)
    return {"X": torch.as_tensor(X, dtype=DTYPE), "y": torch.as_tensor(y, dtype=DTYPE)}


def _draws(d: int = 10, chains: int = 2, num: int = 3 * RECORD_CHUNK + 17) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"beta": 0.3 * torch.randn((chains, num, d), generator=generator, dtype=DTYPE),
            "alpha": torch.randn((chains, num), generator=generator, dtype=DTYPE)}


def _expected(data: dict[str, torch.Tensor], draws: dict[str, torch.Tensor]) -> np.ndarray:
    logits = (draws["alpha"][..., None] + draws["beta"] @ data["X"].T).numpy()
    y = data["y"].numpy()
    return y * logits - np.logaddexp(0.0, logits)


def _recordings(monkeypatch) -> list:
    graphs = []
    record = postprocess.record

    def spy(fn, args, *, contract=False):
        graphs.append((record(fn, args, contract=contract), contract))
        return graphs[-1][0]

    monkeypatch.setattr(postprocess, "record", spy)
    return graphs


@pytest.mark.parametrize("model", [logistic, reads_values])
def test_large_data_is_evaluated_through_a_contracted_recording_where_the_program_records(model, monkeypatch):
    data = _data(n=RECORD_MIN_ELEMENTS // (10 * RECORD_CHUNK) + 1)
    graphs = _recordings(monkeypatch)
    draws = _draws()
    with torch.no_grad():
        deterministic, loglik = evaluate_draws(bg.LogDensity(model, data), draws)
    assert loglik["y"].shape == (2, 3 * RECORD_CHUNK + 17, len(data["y"]))
    np.testing.assert_allclose(loglik["y"].numpy(), _expected(data, draws), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(deterministic["odds"].numpy(), np.exp(draws["alpha"].numpy()), rtol=1e-12)
    (graph, contract), = graphs  # recorded once, at one chunk of draws
    assert contract
    if model is logistic:  # the broadcast product became a matrix product
        assert any("einsum" in str(node.target) for node in graph.graph.nodes)
    else:  # no recording: evaluated eagerly, with the same values
        assert graph is None


def test_small_data_is_evaluated_eagerly(monkeypatch):
    data = _data(n=50)
    graphs = _recordings(monkeypatch)
    draws = _draws()
    with torch.no_grad():
        _, loglik = evaluate_draws(bg.LogDensity(logistic, data), draws)
    assert not graphs
    np.testing.assert_allclose(loglik["y"].numpy(), _expected(data, draws), rtol=1e-10, atol=1e-12)
