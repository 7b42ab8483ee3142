"""Restructuring the sampler keeps its draws: the same seed gives the draws that the sampler
gave when its chains got their own random streams (inference/_streams.py), saved in
tests/data/sampler_draws_streams.npz by the script beside it. (The draws saved before, from commit
c288190, held through every restructuring until the streams changed what each chain draws.)

Compared to 1e-9 relative rather than bitwise, so that another CPU's rounding of the same
operations (a different BLAS kernel for the 3x3 products) cannot fail it; a changed algorithm,
random stream or adaptation moves the draws by far more.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from bayesgen.inference._kernels import HMCKernel, NUTSKernel
from bayesgen.inference._sampler import run_hmc
from bayesgen.inference._streams import ChainStreams

SAVED = Path(__file__).resolve().parent.parent / "data" / "sampler_draws_streams.npz"
COV = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 2.0]], dtype=torch.float64)
PRECISION = torch.linalg.inv(COV)


def logp_and_grad(x):
    grad = -(x @ PRECISION)
    return 0.5 * (x * grad).sum(-1), grad


@pytest.mark.parametrize("label, kernel, dense", [("nuts", NUTSKernel(), False), ("nuts_dense", NUTSKernel(), True),
                                                  ("hmc", HMCKernel(7), False)])
def test_draws_match_those_saved(label, kernel, dense):
    saved = np.load(SAVED)
    init = torch.randn((3, 3), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    result = run_hmc(logp_and_grad, init, num_warmup=60, num_samples=8, kernel=kernel, dense_mass=dense,
                     streams=ChainStreams(12, range(3), dtype=torch.float64, device="cpu"))
    np.testing.assert_allclose(result.draws.numpy(), saved[label], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.step_size.numpy(), saved[label + "_step_size"], rtol=1e-9)
