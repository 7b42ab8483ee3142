#!/usr/bin/env bash
# The GPU check, run on a machine with CUDA in one go: the CUDA tests, then the GPU benchmark.
# Expects wheels of what the machine lacks (pyro-ppl, pyro-api, arviz 0.23, h5netcdf,
# xarray-einstats) in .whl/, as the device tool carries them.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# the package as installed: bayesgen/ with models/ and inference/ mapped inside it
mkdir -p /tmp/bg && cp -r bayesgen /tmp/bg/ && cp -r models /tmp/bg/bayesgen/models && cp -r inference /tmp/bg/bayesgen/inference
export PYTHONPATH=/tmp/bg:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, pyro, arviz; print('torch', torch.__version__, 'pyro', pyro.__version__, 'arviz', arviz.__version__)"
out=${OUT:-/tmp}
(cd tests && timeout 240 python3 -m pytest -q -x test_cuda.py 2>&1 | tee "$out/cuda_tests.log")
timeout 330 python3 benchmarks/nuts.py --device cuda --peers numpyro --models logistic_synthetic_5000x20 --scaling-models logistic_synthetic_5000x20 \
    --num-warmup 500 --num-samples 500 --repeats 1 --chains 4 64 1024 2>&1 | tee "$out/gpu_benchmark.log"
