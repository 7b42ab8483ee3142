"""Restructuring the sampler keeps its draws: the same seed gives the draws that the sampler
gave when its chains got their own random streams (inference/_streams.py), saved in
tests/data/sampler_draws_streams.npz by the script beside it. (The draws saved before, from commit
c288190, held through every restructuring until the streams changed what each chain draws.)

Compared to 1e-9 relative rather than bitwise, so that another CPU's rounding cannot fail it; a
changed algorithm, random stream or adaptation moves the draws by far more. The density is
written without a matrix product: with one, HMC's draws saved on an Intel Xeon moved by 4e-2 on
an AMD EPYC (a BLAS kernel rounding otherwise, amplified by accept steps and step-size
adaptation), so the draws were saved again, by the same sampler, with this density.

Static HMC's draws still move between CPUs: by up to 4e-2 on an Intel Xeon (AVX-512) against the
AMD EPYC that saved them, the step-size adaptation amplifying last-bit differences of torch's
vectorised kernels (chain 0 agrees to 1e-11, chain 2 by 4e-2). Its draws are compared to 0.2
absolute: 7 leapfrog steps instead of 6, a target acceptance of 0.81 or one warmup step less move
them by 2.9 to 4.6 (median 0.7 to 1.3). NUTS's agree to 3e-13 on both and are held to 1e-9.
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
    # products and sums written out: a matrix product's BLAS kernel rounds differently on another
    # CPU (AVX2 against AVX-512), and HMC's accept steps and adaptation amplify that
    grad = -(x[:, :1] * PRECISION[0] + x[:, 1:2] * PRECISION[1] + x[:, 2:] * PRECISION[2])
    return 0.5 * (x[:, 0] * grad[:, 0] + x[:, 1] * grad[:, 1] + x[:, 2] * grad[:, 2]), grad


@pytest.mark.parametrize("label, kernel, dense", [("nuts", NUTSKernel(), False), ("nuts_dense", NUTSKernel(), True),
                                                  ("hmc", HMCKernel(7), False)])
def test_draws_match_those_saved(label, kernel, dense):
    saved = np.load(SAVED)
    init = torch.randn((3, 3), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    result = run_hmc(logp_and_grad, init, num_warmup=60, num_samples=8, kernel=kernel, dense_mass=dense,
                     streams=ChainStreams(12, range(3), dtype=torch.float64, device="cpu"))
    exact = label != "hmc"
    np.testing.assert_allclose(result.draws.numpy(), saved[label], rtol=1e-9 if exact else 0,
                               atol=1e-12 if exact else 0.2)
    np.testing.assert_allclose(result.step_size.numpy(), saved[label + "_step_size"], rtol=1e-9 if exact else 0.05)
