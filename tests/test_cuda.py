"""The GPU path: the same programs and engines with device="cuda" (run on a machine with CUDA).

Without CUDA these tests are skipped; `benchmarks/gpu_check.sh` runs them on a GPU machine.
"""

import numpy as np
import pytest
import torch

import bayesgen as bg
from programs import linear_regression, normal_normal, normal_normal_posterior, regression_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

X, Y = regression_data()


@pytest.mark.parametrize("engine,options", [
    ("nuts", {"num_warmup": 300, "num_samples": 300}),
    ("svi", {"guide": "mvn", "num_steps": 1500, "lr": 0.05}),
    ("laplace", {}), ("mle", {}),
])
def test_engines_on_cuda_agree_with_cpu(engine, options):
    gpu = bg.fit(linear_regression, {"X": X, "y": Y}, engine=engine, device="cuda", **options)
    cpu = bg.fit(linear_regression, {"X": X, "y": Y}, engine=engine, device="cpu", **options)
    assert gpu.problem.device.type == "cuda"
    assert isinstance(gpu.posterior["beta"], np.ndarray)
    sd = cpu.posterior["beta"].std((0, 1))
    np.testing.assert_allclose(gpu.posterior["beta"].mean((0, 1)), cpu.posterior["beta"].mean((0, 1)),
                               atol=0.2 * sd.max())


def test_data_already_on_the_gpu_selects_it():
    y = torch.as_tensor(Y, device="cuda")
    fit = bg.fit(normal_normal, {"y": y}, engine="laplace")
    assert fit.problem.device.type == "cuda"
    assert fit.point["mu"] == pytest.approx(normal_normal_posterior(Y)[0], abs=1e-6)


def test_a_thousand_chains_on_one_gpu():
    fit = bg.fit(normal_normal, {"y": Y}, engine="nuts", device="cuda", num_chains=1000,
                 num_warmup=200, num_samples=100)
    mean, sd = normal_normal_posterior(Y)
    draws = fit.posterior["mu"]
    assert draws.shape == (1000, 100)
    assert abs(draws.mean() - mean) < 0.02 * sd * 10 and abs(draws.std() / sd - 1) < 0.05
