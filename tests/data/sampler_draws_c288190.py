"""Draws of the pre-restructuring sampler (commit c288190's run_hmc, with its algorithm= argument), saved for tests/inference/test_saved_draws.py: python tests/data/sampler_draws_c288190.py OUT.npz in a checkout of c288190."""
import sys
import numpy as np
import torch
from bayesgen.inference._sampler import run_hmc

torch.set_default_dtype(torch.float64)
cov = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 2.0]])
precision = torch.linalg.inv(cov)

def logp_and_grad(x):
    grad = -(x @ precision)
    return 0.5 * (x * grad).sum(-1), grad

out = {}
for label, options in {"nuts": dict(algorithm="nuts"), "nuts_dense": dict(algorithm="nuts", dense_mass=True),
                       "hmc": dict(algorithm="hmc", num_steps=7)}.items():
    init = torch.randn((3, 3), generator=torch.Generator().manual_seed(11))
    result = run_hmc(logp_and_grad, init, num_warmup=60, num_samples=8, generator=torch.Generator().manual_seed(12),
                     **options)
    out[label] = result.draws.numpy()
    out[label + "_step_size"] = result.step_size.numpy()
np.savez(sys.argv[1], **out)
