"""Every zoo model: its spec is complete, its program traces, its observed sites exist, it simulates,
NUTS runs on it (where those apply)."""

import numpy as np
import pytest

import bayesgen as bg
from bayesgen.fitting import prepare

MODELS = sorted(bg.list_models())
SIMULATED = [name for name in MODELS if bg.get_model(name).simulate is not None]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_names_registered_engines_data_and_references(name):
    spec = bg.get_model(name)
    assert spec.engines and set(spec.engines) <= set(bg.list_engines())
    assert spec.load_data is not None and spec.observed
    assert any(str(year) in spec.card for year in range(1950, 2030))  # the card cites its sources


@pytest.mark.parametrize("name", SIMULATED)
def test_simulated_data_trace_with_the_declared_observed_sites(name):
    spec = bg.get_model(name)
    data, truth = spec.simulate(seed=0)
    problem = prepare(spec, data)
    for site, argument in spec.observed.items():
        assert problem.prototype.nodes[site]["is_observed"] and argument in data
    assert truth


@pytest.mark.parametrize("name", [name for name in SIMULATED if "laplace" in bg.get_model(name).engines])
def test_prior_predictive_shapes_match_the_data(name):
    spec = bg.get_model(name)
    data, _ = spec.simulate(seed=1)
    fit = bg.fit(spec, data, engine="laplace", num_draws=20)
    replicated = fit.predict()
    for site in spec.observed:
        assert replicated[site].shape[2:] == np.shape(data[spec.observed[site]])


@pytest.mark.parametrize("name", [name for name in SIMULATED if "nuts" in bg.get_model(name).engines])
def test_nuts_smoke_fit(name):
    spec = bg.get_model(name)
    data, _ = spec.simulate(seed=2)
    fit = bg.fit(spec, data, engine="nuts", num_chains=2, num_warmup=30, num_samples=20)
    assert all(np.isfinite(v).all() for v in fit.posterior.values())
    assert fit.num_chains == 2 and fit.num_draws == 20
