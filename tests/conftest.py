"""Every test runs in float64 on the CPU, seeded, with an empty Pyro param store (the slow targets of
networks ask for ``single_precision``)."""

import pyro
import pytest
import torch

# set at import, before test modules build their constant tensors
torch.set_default_dtype(torch.float64)
# the test programs are tiny: one thread avoids OpenMP hand-off costs that dominate them on 2 cores
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


@pytest.fixture
def single_precision():
    """Networks and data in float32, as one would train them: twice as fast as float64."""
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(torch.float64)
