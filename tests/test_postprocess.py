"""deterministic_sites, pointwise_log_likelihood and simulate_sites: the deterministic sites,
pointwise log-likelihood and predictions of a fit, in runs of the program whose memory the data size bounds."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.special import expit

import bayesgen as bg
from bayesgen import logdensity, postprocess
from bayesgen.logdensity import CHUNK
from bayesgen.postprocess import (RECORD_CHUNK, RECORD_MIN_ELEMENTS, deterministic_sites, pointwise_log_likelihood,
                                  simulate_sites)

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
    density = bg.LogDensity(model, data)
    with torch.no_grad():
        loglik = pointwise_log_likelihood(density, draws)
        (graph, contract), = graphs  # recorded once, at one chunk of draws
        deterministic = deterministic_sites(density, draws)
    assert loglik["y"].shape == (2, 3 * RECORD_CHUNK + 17, len(data["y"]))
    np.testing.assert_allclose(loglik["y"].numpy(), _expected(data, draws), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(deterministic["odds"].numpy(), np.exp(draws["alpha"].numpy()), rtol=1e-12)
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
        loglik = pointwise_log_likelihood(bg.LogDensity(logistic, data), draws)
    assert not graphs
    np.testing.assert_allclose(loglik["y"].numpy(), _expected(data, draws), rtol=1e-10, atol=1e-12)


def test_chunk_size_shrinks_with_the_largest_data_tensor_including_new_data(monkeypatch):
    monkeypatch.setattr(logdensity, "CHUNK_ELEMENTS", 10_000)
    density = bg.LogDensity(logistic, _data(n=50))  # X has 500 elements
    assert density.chunk_size() == 20
    assert density.chunk_size({"X": torch.zeros(400, 10)}) == 2
    assert density.chunk_size({"X": torch.zeros(4000, 10)}) == 1  # never fewer than one draw
    monkeypatch.setattr(logdensity, "CHUNK_ELEMENTS", 10**9)
    assert density.chunk_size() == CHUNK


@pytest.mark.parametrize("large", [False, True])  # evaluated eagerly / through a recording
def test_chunks_are_written_into_the_result_as_they_come_not_all_held(monkeypatch, large):
    import weakref

    if not large:
        monkeypatch.setattr(logdensity, "CHUNK_ELEMENTS", 10_000)  # 20 draws a run of the program
    data = _data(n=RECORD_MIN_ELEMENTS // (10 * RECORD_CHUNK) + 1 if large else 50)
    alive, gather = [], postprocess._gather

    def spy(chunks, lead):
        def watched():
            for chunk in chunks:
                held = sum(ref() is not None for ref in alive)
                # at most the chunk just written and, through a recording, the two it was checked at
                assert held <= 3, f"{held} earlier chunks still held"
                alive.extend(weakref.ref(value) for value in chunk.values())
                yield chunk

        return gather(watched(), lead)

    monkeypatch.setattr(postprocess, "_gather", spy)
    draws = _draws()
    with torch.no_grad():
        loglik = pointwise_log_likelihood(bg.LogDensity(logistic, data), draws)
    assert len(alive) >= 7  # many chunks
    np.testing.assert_allclose(loglik["y"].numpy(), _expected(data, draws), rtol=1e-10, atol=1e-12)


class _DrawCounter(pyro.poutine.messenger.Messenger):
    """Notes how many draws of beta each run of a program holds."""

    def __init__(self, batches: list[int]) -> None:
        super().__init__()
        self.batches = batches

    def _postprocess_message(self, msg: dict) -> None:
        if msg["name"] == "beta":
            self.batches.append(msg["value"].shape[0] if msg["value"].dim() > 1 else 1)


def _counting(model, batches: list[int]):
    def counted(X, y=None):
        with _DrawCounter(batches):
            model(X, y)

    return counted


@pytest.mark.parametrize("model", [logistic, reads_values])
def test_no_run_holds_more_draws_than_the_data_size_allows(model, monkeypatch):
    """A regression written to broadcast over draws materialises draws x n x d: a run of 1000
    draws of a 20000 x 50 regression took 9.3 GB. Log-likelihood (recorded or eager),
    predictions and constrained draws run in chunks that the data's size bounds."""
    data, draws = _data(n=50), _draws()
    with torch.no_grad():
        expected = pointwise_log_likelihood(bg.LogDensity(model, data), draws)
    monkeypatch.setattr(logdensity, "CHUNK_ELEMENTS", 40 * data["X"].numel())
    batches: list[int] = []
    density = bg.LogDensity(_counting(model, batches), data)
    batches.clear()
    with torch.no_grad():
        loglik = pointwise_log_likelihood(density, draws)
        np.testing.assert_allclose(loglik["y"].numpy(), expected["y"].numpy(), rtol=1e-12)
        assert batches and max(batches) == 40
        batches.clear()
        predicted = simulate_sites(density, draws, {"X": data["X"][:5], "y": None}, ["y"])
        assert predicted["y"].shape == (2, 3 * RECORD_CHUNK + 17, 5)
        assert max(batches) == 40
        batches.clear()
        predicted = simulate_sites(density, draws, {"X": torch.cat([data["X"]] * 4), "y": None}, ["y"])
        assert predicted["y"].shape == (2, 3 * RECORD_CHUNK + 17, 200)
        assert max(batches) == 10  # the new data are four times larger
        batches.clear()
        density.constrain(torch.zeros(100, density.dim, dtype=DTYPE))
        assert max(batches) == 40


@pytest.mark.parametrize("engine,options", [("laplace", {}), ("svi", {"guide": "normal", "num_steps": 50})])
def test_approximations_weigh_their_draws_in_chunks_that_the_data_size_bounds(engine, options, monkeypatch):
    data = _data(n=50)
    monkeypatch.setattr(logdensity, "CHUNK_ELEMENTS", 40 * data["X"].numel())
    batches: list[int] = []
    fit = bg.fit(_counting(logistic, batches), data, engine=engine, seed=0, progress=False, **options)
    assert fit.posterior["beta"].shape == (1, 1000, 10)
    assert max(batches) == 40  # the importance weights (Pareto k) of 1000 draws, and their values
    assert np.isfinite(fit.info["pareto_k"])


def test_terms_a_program_masks_out_have_no_log_likelihood():
    """poutine.mask leaves terms out of the density: their pointwise log-likelihood is 0, as Pyro
    scores them (it was their full log density, which az.loo then counted)."""
    from pyro import poutine

    kept = torch.arange(30) < 20

    def partly_masked(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("n", 30), poutine.mask(mask=kept):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = np.random.default_rng(0).normal(2.0, 1.0, 30)
    fit = bg.fit(partly_masked, {"y": y}, engine="laplace", num_draws=50)
    loglik = fit.log_likelihood["y"]
    assert loglik.shape == (1, 50, 30) and np.all(loglik[..., 20:] == 0)
    mu = fit.posterior["mu"][..., None]
    np.testing.assert_allclose(loglik[..., :20], -0.5 * np.log(2 * np.pi) - 0.5 * (y[:20] - mu) ** 2, atol=1e-10)


def test_a_deterministic_that_reduces_over_a_plate_holds_each_draws_own_value():
    # a.sum() under the batch plate summed the draws of a chunk too: every draw held one value, in silence
    def total_of_effects(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("obs", 25):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(mu + a, 1.0), obs=y)
        pyro.deterministic("total", a.sum())

    fit = bg.fit(total_of_effects, {"y": np.random.default_rng(0).normal(size=25)}, engine="nuts", num_warmup=50,
                 num_samples=20, num_chains=2)
    np.testing.assert_allclose(fit.posterior["total"], fit.posterior["a"].sum(-1), rtol=1e-10)
