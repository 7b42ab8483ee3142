"""Draws of the sampler with per-chain random streams (inference/_streams.py, 2026-12-06), saved
for tests/inference/test_saved_draws.py: python tests/data/sampler_draws_streams.py OUT.npz."""
import sys

import numpy as np
import torch

from bayesgen.inference._kernels import HMCKernel, NUTSKernel
from bayesgen.inference._sampler import run_hmc
from bayesgen.inference._streams import ChainStreams

torch.set_default_dtype(torch.float64)
cov = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 2.0]])
precision = torch.linalg.inv(cov)


def logp_and_grad(x):  # as in the test: no BLAS kernel, whose rounding differs between CPUs
    grad = -(x[:, :1] * precision[0] + x[:, 1:2] * precision[1] + x[:, 2:] * precision[2])
    return 0.5 * (x[:, 0] * grad[:, 0] + x[:, 1] * grad[:, 1] + x[:, 2] * grad[:, 2]), grad


out = {}
for label, kernel, dense in [("nuts", NUTSKernel(), False), ("nuts_dense", NUTSKernel(), True),
                             ("hmc", HMCKernel(7), False)]:
    init = torch.randn((3, 3), generator=torch.Generator().manual_seed(11))
    result = run_hmc(logp_and_grad, init, num_warmup=60, num_samples=8, kernel=kernel, dense_mass=dense,
                     streams=ChainStreams(12, range(3), dtype=torch.float64, device="cpu"))
    out[label] = result.draws.numpy()
    out[label + "_step_size"] = result.step_size.numpy()
np.savez(sys.argv[1], **out)
