"""The GPU path: the same programs and engines with device="cuda" (run on a machine with CUDA).

Without CUDA these tests are skipped; `benchmarks/gpu_check.sh` runs them on a GPU machine.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from scipy import stats

import bayesgen as bg
from programs import PRIOR_SD, linear_regression, normal_normal, normal_normal_posterior, regression_data

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


def normal_normal_made_here(y=None, n=20):
    """``normal_normal`` with tensors that the program makes itself (``torch.tensor``,
    ``torch.ones``): they have to land on the data's GPU for the program to run at all."""
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), torch.tensor(PRIOR_SD)))
    size = n if y is None else y.shape[0]
    with pyro.plate("obs", size):
        pyro.sample("y", dist.Normal(mu, torch.ones(size)), obs=y)


@pytest.mark.parametrize("engine,options", [
    ("nuts", {"num_warmup": 300, "num_samples": 300, "jit_compile": True}),  # recorded and compiled step
    ("nuts", {"num_warmup": 50, "num_samples": 50, "jit_compile": False}),
    ("svi", {"guide": AutoNormal, "num_steps": 1500, "lr": 0.05}),  # Pyro's own SVI loop
    ("laplace", {}),
])
def test_tensors_that_a_program_makes_land_on_the_gpu(engine, options):
    fit = bg.fit(normal_normal_made_here, {"y": Y}, engine=engine, device="cuda", **options)
    mean, sd = normal_normal_posterior(Y)
    draws = fit.posterior["mu"]
    assert np.isfinite(draws).all()
    if engine == "laplace":  # exact here: the posterior is normal
        assert fit.point["mu"] == pytest.approx(mean, abs=1e-6)
    else:
        assert abs(draws.mean() - mean) < {"nuts": 0.3, "svi": 0.1}[engine] * sd
    # the post-fit runs of the program, on the same device
    assert fit.log_likelihood["y"].shape == draws.shape + Y.shape
    expected = stats.norm.logpdf(Y, draws[..., None], 1.0)
    np.testing.assert_allclose(fit.log_likelihood["y"], expected, rtol=1e-8, atol=1e-8)
    assert fit.predict(num_samples=10)["y"].shape == (draws.shape[0], 10) + Y.shape


@pytest.mark.parametrize("name, engine, options", [
    ("vae", "svi", {"num_particles": 1, "lr": 3e-3}),
    ("sigmoid_belief_net", "svi", {"num_particles": 1, "lr": 1e-2}),
    ("pixelcnn", "mle", {"lr": 3e-3}),
    ("gan", "gan", {"batch_size": 64}),
])
def test_deep_image_models_train_generate_and_evaluate_on_cuda(name, engine, options):
    from bayesgen.datasets import binary_digits

    train, test = binary_digits()
    fit = bg.fit(name, {"images": train[:256]}, engine=engine, num_steps=50, device="cuda", progress=False,
                 **options)
    assert fit.problem.device.type == "cuda" and fit.params
    images = fit.generate(10, seed=0)["images"]
    assert images.shape == (10, 8, 8) and set(np.unique(images)) <= {0.0, 1.0}
    row = bg.evaluate(fit, {"images": test[:60]}, num_samples=20).iloc[0]
    assert np.isfinite(row["c2st_accuracy"]) and (np.isnan(row["lpd_per_obs"]) == (name == "gan"))


def _logistic(X, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with pyro.plate("data", X.shape[0], subsample_size=256) as index:
        pyro.sample("y", dist.Bernoulli(logits=(X[index] * w).sum(-1)), obs=None if y is None else y[index])


def test_memory_mapped_rows_fit_on_one_gpu(tmp_path):
    """Issue 25's single-GPU path: rows read from a memory-mapped file a minibatch at a time and
    moved to the GPU, with the minibatch indices there too; the weights are recovered."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 3))
    y = (rng.random(20_000) < 1 / (1 + np.exp(-X @ np.array([-1.0, 0.0, 1.0])))).astype(float)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    data = {"X": np.load(tmp_path / "X.npy", mmap_mode="r"), "y": np.load(tmp_path / "y.npy", mmap_mode="r")}
    fit = bg.fit(_logistic, data, engine="svi", guide=AutoNormal, num_steps=1500, device="cuda", progress=False)
    assert fit.problem.device.type == "cuda" and "memory-mapped" in fit.info["observed_data"]
    np.testing.assert_allclose(fit.posterior["w"].mean((0, 1)), [-1.0, 0.0, 1.0], atol=0.1)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_train_data_parallel_with_nccl(tmp_path):
    """Issue 25 on GPUs: torchrun starts one process per GPU, bayesgen joins them with nccl
    (--device cuda), and the distributed VAE fit is written once, by rank 0."""
    import os
    import subprocess
    import sys

    out = tmp_path / "vae.nc"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               "--master_port=29533", "-m", "bayesgen", "fit", "vae", "--engine", "svi", "--distributed",
               "--device", "cuda", "--arg", "batch_size=128", "--option", "num_steps=100", "--option",
               "num_particles=1", "--quiet", "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    fit = bg.load(str(out))
    assert fit.info["processes"].startswith("2 ") and fit.params
