"""Restructuring the sampler keeps its draws: the same seed gives the draws that the sampler of
commit c288190 (before the kernels became objects and _hmc_kernel.py was split) gave, saved in
tests/data/sampler_draws_c288190.npz by the script beside it.

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

SAVED = Path(__file__).resolve().parent.parent / "data" / "sampler_draws_c288190.npz"
COV = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 2.0]], dtype=torch.float64)
PRECISION = torch.linalg.inv(COV)


def logp_and_grad(x):
    grad = -(x @ PRECISION)
    return 0.5 * (x * grad).sum(-1), grad


@pytest.mark.parametrize("label, kernel, dense", [("nuts", NUTSKernel(), False), ("nuts_dense", NUTSKernel(), True),
                                                  ("hmc", HMCKernel(7), False)])
def test_draws_match_those_saved_before_the_restructuring(label, kernel, dense):
    saved = np.load(SAVED)
    init = torch.randn((3, 3), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    result = run_hmc(logp_and_grad, init, num_warmup=60, num_samples=8, generator=torch.Generator().manual_seed(12),
                     kernel=kernel, dense_mass=dense)
    np.testing.assert_allclose(result.draws.numpy(), saved[label], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.step_size.numpy(), saved[label + "_step_size"], rtol=1e-9)
