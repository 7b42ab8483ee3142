"""Scale: SVI step time and memory as the data grow to 10^7 memory-mapped rows, and the throughput
of two processes against one (torchrun, gloo) for data-parallel SVI, SBC simulations and NUTS chains.

    python benchmarks/scale.py            # the full run quoted in the README (about 10 minutes)
    python benchmarks/scale.py --smoke    # the same tables at toy sizes, in about a minute

Every measurement runs in a fresh process with one torch thread; the step times are medians of
three rounds over the sizes in turn (this machine's speed drifts by tens of percent). Step time is the difference
between a fit of ``long`` and one of ``short`` steps in the same process (after a first fit that
pays the process's one-off costs), divided by the steps between them, so that tracing, the
checks of the data and the posterior draws cancel. Memory is the
process's peak anonymous resident memory (RssAnon, sampled every 5 ms): what it allocates itself;
the pages of a memory-mapped file it has read are the kernel's page cache, shared and reclaimable.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

MODEL = textwrap.dedent("""
    import pyro, pyro.distributions as dist

    def logistic(X, y=None, batch=1024):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        with pyro.plate("data", X.shape[0], subsample_size=batch) as index:
            pyro.sample("y", dist.Bernoulli(logits=(X[index] * w).sum(-1)), obs=None if y is None else y[index])
""")

STEP_TIME = MODEL + textwrap.dedent("""
    import json, sys, threading, time
    import numpy as np, bayesgen as bg
    from pyro.infer.autoguide import AutoNormal

    def anonymous_kib():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon"))

    peak, done = [anonymous_kib()], threading.Event()
    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_kib())
            time.sleep(0.005)
    threading.Thread(target=watch, daemon=True).start()
    folder, short, long = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = {"X": np.load(folder + "/X.npy", mmap_mode="r"), "y": np.load(folder + "/y.npy", mmap_mode="r")}
    seconds = []
    for steps in (short, short, long):  # the first pays the process's one-off costs
        start = time.perf_counter()
        fit = bg.fit(logistic, data, engine="svi", guide=AutoNormal, num_steps=steps, num_particles=1,
                     num_draws=100, progress=False)
        seconds.append(time.perf_counter() - start)
    done.set()
    print(json.dumps({"step_ms": 1000 * (seconds[2] - seconds[1]) / (long - short), "peak_mib": peak[0] / 1024,
                      "fit_s": seconds[2], "w": fit.posterior["w"].mean((0, 1)).round(3).tolist()}))
""")

DATA_PARALLEL = MODEL + textwrap.dedent("""
    import json, sys, time
    import numpy as np, bayesgen as bg
    from pyro.infer.autoguide import AutoNormal
    from bayesgen.distributed import init_process_group

    ranks = init_process_group()
    folder, steps = sys.argv[1], int(sys.argv[2])
    data = {"X": np.load(folder + "/X.npy", mmap_mode="r"), "y": np.load(folder + "/y.npy", mmap_mode="r")}
    bg.fit(logistic, data, engine="svi", guide=AutoNormal, num_steps=20, progress=False, distributed=True)
    start = time.perf_counter()
    bg.fit(logistic, data, engine="svi", guide=AutoNormal, num_steps=steps, num_particles=1, num_draws=100,
           progress=False, distributed=True)
    if ranks.is_root:
        print(json.dumps({"seconds": time.perf_counter() - start}))
""")

VAE_PARALLEL = textwrap.dedent("""
    import json, sys, time
    import bayesgen as bg
    from bayesgen.distributed import init_process_group

    ranks = init_process_group()
    steps, batch = int(sys.argv[1]), int(sys.argv[2])
    data = {**bg.get_model("vae").load_data(), "batch_size": batch}
    bg.fit("vae", data, engine="svi", num_steps=10, num_particles=1, progress=False, distributed=True)
    start = time.perf_counter()
    bg.fit("vae", data, engine="svi", num_steps=steps, num_particles=1, progress=False, distributed=True)
    if ranks.is_root:
        print(json.dumps({"seconds": time.perf_counter() - start}))
""")

SBC = textwrap.dedent("""
    import json, sys, time
    import torch, bayesgen as bg
    from bayesgen.distributed import init_process_group

    ranks = init_process_group()
    torch.set_default_dtype(torch.float64)
    simulations, warmup, samples = (int(a) for a in sys.argv[1:4])
    start = time.perf_counter()
    bg.sbc("eight_schools", engine="nuts", options={"num_warmup": warmup, "num_samples": samples, "num_chains": 2},
           num_simulations=simulations, num_draws=min(99, samples), progress=False, distributed=True)
    if ranks.is_root:
        print(json.dumps({"seconds": time.perf_counter() - start}))
""")


CHAINS = textwrap.dedent("""
    import json, sys, time
    import torch, bayesgen as bg
    from bayesgen.distributed import init_process_group

    ranks = init_process_group()
    torch.set_default_dtype(torch.float64)
    chains, warmup, samples, rows = (int(a) for a in sys.argv[1:5])
    data = bg.get_model("logistic_regression").simulate(seed=0, num_obs=rows, num_features=20)[0]
    options = {"engine": "nuts", "num_chains": chains, "num_warmup": warmup, "num_samples": samples, "seed": 1,
               "progress": False, "distributed": True}
    bg.fit("logistic_regression", data, **options)  # compile caches filled: the timed run loads them
    start = time.perf_counter()
    fit = bg.fit("logistic_regression", data, **options)
    if ranks.is_root:
        print(json.dumps({"seconds": time.perf_counter() - start, "steps": int(fit.sample_stats["n_steps"].sum())}))
""")


def _write_data(folder: Path, rows: int, columns: int = 10, chunk: int = 1_000_000) -> None:
    """Simulated logistic-regression data as .npy files, written a chunk at a time."""
    rng = np.random.default_rng(0)
    weights = np.linspace(-1, 1, columns)
    X = np.lib.format.open_memmap(folder / "X.npy", "w+", np.float64, (rows, columns))
    y = np.lib.format.open_memmap(folder / "y.npy", "w+", np.float64, (rows,))
    for start in range(0, rows, chunk):
        x = rng.normal(size=(min(chunk, rows - start), columns))
        X[start:start + len(x)] = x
        y[start:start + len(x)] = rng.random(len(x)) < 1 / (1 + np.exp(-x @ weights))
    X.flush()
    y.flush()


def _python(script: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _torchrun(script: str, processes: int, *args: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(script)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               "--master_addr=127.0.0.1", f"--master_port={port}", handle.name, *args]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    os.unlink(handle.name)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, to check the script")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.smoke else [10_000, 100_000, 1_000_000, 10_000_000]
    short, long = (20, 120) if args.smoke else (100, 2100)
    print(f"# scale benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, one torch thread per process")
    print("\n## SVI (AutoNormal) on memory-mapped logistic-regression data, 10 covariates, minibatch 1,024")
    print(f"| rows | file MiB | ms per step, median of {1 if args.smoke else 3} (range) | vs 10^4 | peak RssAnon MiB | "
          "vs 10^4 | weights recovered |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    rounds = 1 if args.smoke else 3
    with tempfile.TemporaryDirectory(dir=os.environ.get("BAYESGEN_SCALE_DIR")) as root:
        for rows in sizes:
            (Path(root) / str(rows)).mkdir()
            _write_data(Path(root) / str(rows), rows)
        results: dict[int, list[dict]] = {rows: [] for rows in sizes}
        for _ in range(rounds):  # the sizes in turn, so that the machine's drift touches each alike
            for rows in sizes:
                results[rows].append(_python(STEP_TIME, str(Path(root) / str(rows)), str(short), str(long)))
        base_ms = float(np.median([r["step_ms"] for r in results[sizes[0]]]))
        base_mib = float(np.median([r["peak_mib"] for r in results[sizes[0]]]))
        for rows in sizes:
            step_ms = [r["step_ms"] for r in results[rows]]
            peak = float(np.median([r["peak_mib"] for r in results[rows]]))
            recovered = np.abs(np.array(results[rows][0]["w"]) - np.linspace(-1, 1, 10)).max()
            print(f"| {rows:,} | {rows * 11 * 8 / 2 ** 20:,.0f} | {np.median(step_ms):.2f} ({min(step_ms):.2f}-"
                  f"{max(step_ms):.2f}) | {np.median(step_ms) / base_ms:.2f}x | {peak:.0f} | {peak / base_mib:.2f}x "
                  f"| max error {recovered:.3f} |", flush=True)
        parallel_rows = "1000000" if not args.smoke else "100000"
        steps = "300" if args.smoke else "3000"
        print(f"\n## Two processes against one (torchrun, gloo, {os.cpu_count()} cores)")
        print("| work | 1 process s | 2 processes s | throughput ratio |")
        print("| --- | ---: | ---: | ---: |")
        one = _torchrun(DATA_PARALLEL, 1, str(Path(root) / parallel_rows), steps)["seconds"]
        two = _torchrun(DATA_PARALLEL, 2, str(Path(root) / parallel_rows), steps)["seconds"]
        print(f"| SVI, {steps} steps of 1,024 rows per process ({int(parallel_rows):,} rows) | {one:.1f} | {two:.1f} "
              f"| {2 * one / two:.2f}x |", flush=True)
    steps, batch = ("30", "256") if args.smoke else ("200", "512")
    one = _torchrun(VAE_PARALLEL, 1, steps, batch)["seconds"]
    two = _torchrun(VAE_PARALLEL, 2, steps, batch)["seconds"]
    print(f"| VAE on the digits (`vae`, svi), {steps} steps of {batch} images per process | {one:.1f} | {two:.1f} "
          f"| {2 * one / two:.2f}x |", flush=True)
    simulations, warmup, samples = ("4", "100", "100") if args.smoke else ("40", "300", "300")
    one = _torchrun(SBC, 1, simulations, warmup, samples)["seconds"]
    two = _torchrun(SBC, 2, simulations, warmup, samples)["seconds"]
    print(f"| SBC, {simulations} simulations of eight schools (NUTS, 2 chains, {warmup}+{samples}) | {one:.1f} "
          f"| {two:.1f} | {one / two:.2f}x |", flush=True)
    # few chains: a step costs about the same for 4 chains as for 8 (reading the data, the
    # per-step overheads); many: the arithmetic grows with the chains
    runs = [("4", "100", "100", "500")] if args.smoke else [("8", "500", "500", "2000"), ("64", "150", "150", "5000")]
    for chains, warmup, samples, rows in runs:
        one = _torchrun(CHAINS, 1, chains, warmup, samples, rows)
        two = _torchrun(CHAINS, 2, chains, warmup, samples, rows)
        assert one["steps"] == two["steps"]  # the same draws: the same work
        print(f"| NUTS, {chains} chains of a logistic regression ({int(rows):,} x 20, {warmup}+{samples}; the "
              f"same draws) | {one['seconds']:.1f} | {two['seconds']:.1f} | {one['seconds'] / two['seconds']:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
