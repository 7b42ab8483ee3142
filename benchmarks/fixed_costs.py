"""Fixed costs of NUTS on small models: bayesgen against NumPyro with cold and warm compile caches.

On a small model recording and compiling take much of a five-second run, so the race is decided
by fixed costs. Each run here is its own process, as a user's script is: the wall time is that of
the fit call (imports excluded, as in ``nuts.py``), 4 chains, 1000 warmup + 1000 draws, float64.

- cold: the process starts with empty compile caches: an empty Inductor cache folder for
  bayesgen; for NumPyro no persistent compilation cache, so XLA compiles in the call.
- warm: an earlier process fitted the same model, and its on-disk caches are kept: Inductor's FX
  graph cache for bayesgen (no C++ compiler runs), JAX's persistent compilation cache for NumPyro
  (no XLA compilation runs). Both still trace the program in the new process.

Each (model, sampler, cache) runs with seeds 0, 1, 2; the table shows medians of the wall time
and of min-ESS per second, with the range of ESS/s, and bayesgen's ratio to NumPyro.

Usage::

    python benchmarks/fixed_costs.py              # wine and eight schools, about 5 minutes on 2 cores
    python benchmarks/fixed_costs.py --smoke      # one seed, 100 + 100 iterations
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MODELS = ["logistic_wine_130x13", "eight_schools_noncentred"]
SAMPLERS = ["bayesgen", "numpyro"]

_CHILD = """
import json, os, sys, time, warnings
sys.path.insert(0, {here!r})
import numpy as np, torch
import nuts as bench
torch.set_default_dtype(torch.float64)
name, sampler, seed, warmup, draws = {name!r}, {sampler!r}, {seed}, {warmup}, {draws}
model, load = bench.MODELS[name]
data = load()
bench.import_compiler_stack(sampler == "numpyro")
if sampler == "numpyro":
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_compilation_cache_dir", os.environ["BENCH_JAX_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    wall, posterior = bench.run_numpyro(name, data, 4, warmup, draws, seed)
else:
    import bayesgen as bg
    start = time.perf_counter()
    fit = bg.fit(model, data, engine="nuts", num_warmup=warmup, num_samples=draws, seed=seed, progress=False)
    wall = time.perf_counter() - start
    posterior = {{k: v for k, v in fit.posterior.items() if k != "theta"}}
print(json.dumps({{"wall": wall, "ess": bench.min_ess(posterior)}}))
"""


def run(name: str, sampler: str, seed: int, warmup: int, draws: int, caches: Path) -> tuple[float, float]:
    """One fit in a new process whose compile caches live in ``caches``; returns (wall s, min bulk ESS)."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"), "BENCH_JAX_CACHE": str(caches / "jax"),
           "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    code = _CHILD.format(here=str(Path(__file__).resolve().parent), name=name, sampler=sampler, seed=seed,
                         warmup=warmup, draws=draws)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["wall"], result["ess"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one seed, 100 warmup + 100 draws")
    args = parser.parse_args()
    seeds = range(1 if args.smoke else args.seeds)
    warmup = draws = 100 if args.smoke else 1000
    print(f"{warmup} warmup + {draws} draws, 4 chains, float64; each fit a new process; machine: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; medians of {len(seeds)} seed(s)")
    print(f"{'model':<26} {'cache':<5} {'sampler':<9} {'wall s':>7} {'min ESS':>8} {'ESS/s':>7} {'ESS/s range':>12} "
          f"{'vs NumPyro':>10} {'load':>5}")
    for name in args.models:
        results: dict[tuple[str, str], np.ndarray] = {}
        for sampler in SAMPLERS:
            walls: dict[str, list[float]] = {"cold": [], "warm": []}
            esses: dict[str, list[float]] = {"cold": [], "warm": []}
            for seed in seeds:
                with tempfile.TemporaryDirectory() as folder:
                    for cache in ("cold", "warm"):  # the warm run finds what the cold one left on disk
                        wall, ess = run(name, sampler, seed, warmup, draws, Path(folder))
                        walls[cache].append(wall)
                        esses[cache].append(ess)
            for cache in ("cold", "warm"):
                results[sampler, cache] = np.array([walls[cache], esses[cache]])
        for cache in ("cold", "warm"):
            reference = np.median(results["numpyro", cache][1] / results["numpyro", cache][0])
            for sampler in SAMPLERS:
                wall, ess = results[sampler, cache]
                rates = ess / wall
                print(f"{name:<26} {cache:<5} {sampler:<9} {np.median(wall):7.2f} {np.median(ess):8.0f} "
                      f"{np.median(rates):7.1f} {f'{rates.min():.0f}-{rates.max():.0f}':>12} "
                      f"{np.median(rates) / reference:10.2f} {os.getloadavg()[0]:5.1f}", flush=True)


if __name__ == "__main__":
    main()
