#!/usr/bin/env bash
# The GPU check, run on a machine with CUDA in one go: the CUDA tests, then the GPU benchmark.
# Expects wheels of what the machine lacks (pyro-ppl, pyro-api, arviz 0.23, h5netcdf,
# xarray-einstats, platformdirs; py-spy for the profile) in .whl/, as the device tool carries them.
# Everything it writes goes to $OUT (default /tmp): cuda_tests.log, gpu_scaling.log,
# gpu_scaling.prof.gz (py-spy's raw stacks of the scaling run, when py-spy can attach) and
# gpu_benchmark.log. About 6 minutes on an H200 (the tests 1, the scaling 3, NumPyro beside
# bayesgen 1), plus the machine's start.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# the package as installed: bayesgen/ with models/ and inference/ mapped inside it
mkdir -p /tmp/bg && cp -r bayesgen /tmp/bg/ && cp -r models /tmp/bg/bayesgen/models && cp -r inference /tmp/bg/bayesgen/inference
export PYTHONPATH=/tmp/bg:/tmp/site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
out=${OUT:-/tmp}
nvidia-smi -L
python3 -c "import torch, pyro, arviz; print('torch', torch.__version__, 'pyro', pyro.__version__, 'arviz', arviz.__version__)"
(cd tests && timeout 120 python3 -m pytest -q -p no:cacheprovider test_cuda.py 2>&1 | tee "$out/cuda_tests.log")
# the 1,000+ chains: wall time as the chains grow, on a compute-bound model and an
# overhead-bound one (80 and 76 s on an H200 on 2026-11-28, after the tests warmed the imports)
common=(--device cuda --num-warmup 500 --num-samples 500 --repeats 1)
timeout 300 python3 benchmarks/nuts.py "${common[@]}" --models \
    --scaling-models logistic_synthetic_5000x20 eight_schools_noncentred \
    --chains 4 64 1024 > "$out/gpu_scaling.log" 2>&1 &
bench=$!
if [ -x /tmp/site/bin/py-spy ]; then
    /tmp/site/bin/py-spy record --pid "$(sleep 1; pgrep -P $bench -f benchmarks/nuts.py || echo $bench)" --rate 25 \
        --nonblocking --format raw -o "$out/gpu_scaling.prof" > "$out/py-spy.log" 2>&1 &
fi
wait $bench
sleep 1; [ -f "$out/gpu_scaling.prof" ] && gzip "$out/gpu_scaling.prof"
cat "$out/gpu_scaling.log"
# 4 chains against NumPyro's vectorised NUTS on the same GPU
timeout 120 python3 benchmarks/nuts.py "${common[@]}" --peers numpyro --models logistic_synthetic_5000x20 \
    --scaling-models --chains 2>&1 | tee "$out/gpu_benchmark.log"
