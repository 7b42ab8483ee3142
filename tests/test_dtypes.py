"""The dtype a fit computes in (bayesgen.dtypes): the data's, the networks', or the one asked for;
never lowered silently, recorded in the fit's settings, and kept by everything that runs the
program again (predictions, log-likelihoods, samples, held-out scores, a saved and loaded fit)."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import bayesgen as bg


def regression(x, y=None):
    slope = pyro.sample("slope", dist.Normal(0.0, 10.0))
    noise = pyro.sample("noise", dist.HalfNormal(1.0))
    with pyro.plate("rows", len(x)):
        pyro.sample("y", dist.Normal(slope * x, noise), obs=y)


def counts_model(counts=None):
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("days", 12):
        pyro.sample("counts", dist.Poisson(rate), obs=counts)


RNG = np.random.default_rng(0)
X = RNG.normal(size=40)
Y = 2.0 * X + RNG.normal(size=40)


@pytest.fixture
def float32_default():
    """torch's own default, as a user's session has it (the tests otherwise run in float64)."""
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(torch.float64)


@pytest.mark.parametrize("engine, options", [("map", {}), ("svi", {"num_steps": 200}),
                                             ("nuts", {"num_warmup": 100, "num_samples": 100, "num_chains": 2})])
def test_float64_arrays_fit_in_float64_under_a_float32_default(engine, options, float32_default):
    fit = bg.fit(regression, {"x": X, "y": Y}, engine=engine, progress=False, **options)
    assert fit.settings["dtype"] == "float64"
    assert fit.posterior["slope"].dtype == np.float64
    assert fit.log_likelihood["y"].dtype == np.float64
    assert fit.predict(num_samples=3)["y"].dtype == np.float64
    assert torch.get_default_dtype() == torch.float32, "the fit leaves torch's default as it found it"


def test_float32_tensors_fit_in_float32_and_lists_of_floats_in_float64():
    as_float32 = {"x": torch.tensor(X, dtype=torch.float32), "y": torch.tensor(Y, dtype=torch.float32)}
    assert bg.fit(regression, as_float32, engine="map").settings["dtype"] == "float32"
    assert bg.fit(regression, {"x": X.tolist(), "y": Y.tolist()}, engine="map").settings["dtype"] == "float64"
    mixed = {"x": X.astype(np.float32), "y": Y}  # the widest wins: nothing is lowered
    assert bg.fit(regression, mixed, engine="map").settings["dtype"] == "float64"


def test_dtype_option_overrides_the_data_and_is_checked():
    fit = bg.fit(regression, {"x": X, "y": Y}, engine="map", dtype="float32")
    assert fit.settings["dtype"] == "float32" and fit.posterior["slope"].dtype == np.float32
    assert abs(float(fit.posterior["slope"].mean()) - float(np.dot(X, Y) / np.dot(X, X))) < 0.05
    assert bg.fit(regression, {"x": X, "y": Y}, engine="map", dtype=torch.float64).settings["dtype"] == "float64"
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'.*int8"):
        bg.fit(regression, {"x": X, "y": Y}, engine="map", dtype="int8")


def test_integer_data_compute_in_torch_default_dtype(float32_default):
    counts = RNG.poisson(3.0, size=12)
    fit = bg.fit(counts_model, {"counts": counts}, engine="map")
    assert fit.settings["dtype"] == "float32"
    assert fit.observed_data["counts"].dtype == np.int64


def _network_program(net):
    def program(x, y=None):
        layer = pyro.module("layer", net)
        noise = pyro.sample("noise", dist.HalfNormal(1.0))
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("y", dist.Normal(layer(x[:, None]).squeeze(-1), noise), obs=y)
    return program


def test_a_program_with_networks_computes_in_their_dtype():
    net = nn.Linear(1, 1).float()
    program = _network_program(net)
    fit = bg.fit(program, {"x": X, "y": Y}, engine="map", num_steps=300)
    assert fit.settings["dtype"] == "float32"
    assert fit.params["layer$$$weight"].dtype == np.float32
    assert abs(float(fit.params["layer$$$weight"].ravel()[0]) - 2.0) < 0.3
    with pytest.raises(ValueError, match=r"dtype='float64' was asked.*'layer\$\$\$weight' \(float32\).*module.to"):
        bg.fit(program, {"x": X, "y": Y}, engine="map", dtype="float64")


def test_parameters_of_two_dtypes_are_refused_by_name():
    first, second = nn.Linear(1, 1).float(), nn.Linear(1, 1).double()

    def program(x, y=None):
        a, b = pyro.module("first", first), pyro.module("second", second)
        with pyro.plate("rows", x.shape[0]):
            mean = a(x[:, None].float()).double() + b(x[:, None])
            pyro.sample("y", dist.Normal(mean.squeeze(-1), 1.0), obs=y)

    with pytest.raises(ValueError, match=r"mix dtypes \['float32', 'float64'\].*'first\$\$\$weight'"):
        bg.fit(program, {"x": X, "y": Y}, engine="map")


def test_a_parameter_left_in_the_store_does_not_choose_the_dtype():
    def program(x, y=None):
        slope = pyro.param("slope", torch.tensor(0.0))
        with pyro.plate("rows", len(x)):
            pyro.sample("y", dist.Normal(slope * x, 1.0), obs=y)

    bg.fit(program, {"x": X.astype(np.float32), "y": Y.astype(np.float32)}, engine="mle")
    assert pyro.param("slope").dtype == torch.float32  # the last fit's, still in Pyro's store
    assert bg.fit(program, {"x": X, "y": Y}, engine="mle").settings["dtype"] == "float64"


def test_a_saved_fit_keeps_its_dtype(tmp_path):
    fit = bg.fit(regression, {"x": X, "y": Y}, engine="map", dtype="float32")
    fit.save(tmp_path / "fit.nc")
    loaded = bg.load(tmp_path / "fit.nc", model=regression)
    assert loaded.settings["dtype"] == "float32" and loaded.problem.dtype == torch.float32
    assert loaded.predict(num_samples=2)["y"].dtype == np.float32
