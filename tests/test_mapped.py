"""Data larger than memory: memory-mapped arrays read a minibatch at a time (issue 25)."""

import subprocess
import sys
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

import bayesgen as bg
from bayesgen.inference._minibatches import Minibatches


def logistic(X, y=None, batch=64):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with pyro.plate("data", X.shape[0], subsample_size=batch) as index:
        pyro.sample("y", dist.Bernoulli(logits=(X[index] * w).sum(-1)), obs=None if y is None else y[index])


def _saved(tmp_path, n=3000, d=3, seed=0):
    """Simulated logistic-regression data saved as .npy, and the arrays themselves."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ np.linspace(-1, 1, d)))).astype(float)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return X, y, np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")


@pytest.mark.parametrize("guide", [AutoNormal, "normal"])
def test_mapped_fit_equals_in_memory_fit(tmp_path, guide):
    """The same seed takes the same minibatches, so a fit of memory-mapped arrays is the fit of
    the arrays in memory, to the last bit; and it recovers the simulated weights."""
    X, y, X_mapped, y_mapped = _saved(tmp_path)
    options = dict(engine="svi", guide=guide, num_steps=300, num_draws=200, seed=3, progress=False)
    in_memory = bg.fit(logistic, {"X": X, "y": y}, **options)
    mapped = bg.fit(logistic, {"X": X_mapped, "y": y_mapped}, **options)
    np.testing.assert_array_equal(mapped.posterior["w"], in_memory.posterior["w"])
    assert "X, y memory-mapped" in mapped.info["observed_data"] and "observed_data" not in in_memory.info
    assert mapped.log_likelihood == {} and "plate 'data' takes 64 of its 3000" in mapped.info["log_likelihood"]
    mean = mapped.posterior["w"].mean((0, 1))
    np.testing.assert_allclose(mean, [-1.0, 0.0, 1.0], atol=0.25)  # sd of each weight about 0.05 at n=3000


def test_a_fit_of_mapped_data_loads_with_its_program_by_mapping_the_files_again(tmp_path):
    X, y, X_mapped, y_mapped = _saved(tmp_path, n=500)
    logistic_spec = bg.ModelSpec(name="logistic", model=logistic, observed={"y": "y"})  # obs=y[index]: not inferred
    fit = bg.fit(logistic_spec, {"X": X_mapped, "y": y_mapped}, engine="svi", num_steps=20, num_draws=10,
                 progress=False)
    fit.save(str(tmp_path / "fit.nc"))
    loaded = bg.load(str(tmp_path / "fit.nc"), model=logistic_spec)
    np.testing.assert_array_equal(loaded.predict(seed=1)["y"], fit.predict(seed=1)["y"])
    rows = bg.fit(logistic_spec, {"X": X_mapped[100:400], "y": y_mapped[100:400]}, engine="svi", num_steps=5,
                  num_draws=10, progress=False)  # a block of rows lies together in the file: mapped again
    rows.save(str(tmp_path / "rows.nc"))
    again = bg.load(str(tmp_path / "rows.nc"), model=logistic_spec)
    np.testing.assert_array_equal(again.problem.data["X"].array, X_mapped[100:400])
    np.testing.assert_array_equal(again.predict(seed=1)["y"], rows.predict(seed=1)["y"])
    columns = bg.fit(logistic, {"X": X_mapped[:, :2], "y": y_mapped}, engine="svi", num_steps=5, progress=False)
    columns.save(str(tmp_path / "columns.nc"))
    with pytest.raises(ValueError, match=r"read data\['X'\] from a slice of a memory-mapped array whose values do "
                                         r"not lie together"):
        bg.load(str(tmp_path / "columns.nc"), model=logistic)
    (tmp_path / "X.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"read data\['X'\] from the memory-mapped file .*X.npy"):
        bg.load(str(tmp_path / "fit.nc"), model=logistic)


def test_mapped_rows_read_in_the_fit_dtype_and_refuse_whole_array_use(tmp_path):
    _, _, X_mapped, _ = _saved(tmp_path, n=100)
    problem = bg.fitting.prepare(logistic, {"X": X_mapped},
                                 dtype="float32")
    rows = problem.data["X"]
    index = torch.tensor([4, 0, 7])
    assert rows[index].dtype == torch.float32 and rows[index].shape == (3, 3)
    np.testing.assert_allclose(rows[index].numpy(), X_mapped[[4, 0, 7]], rtol=1e-6)
    assert rows.shape == (100, 3) and len(rows) == 100
    with pytest.raises(TypeError, match=r"data\['X'\] is memory-mapped.*X\[index\]"):
        torch.ones(3) * rows
    with pytest.raises(TypeError, match=r"data\['X'\] is memory-mapped"):
        torch.matmul(rows, torch.ones(3))

    def whole(X, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)

    with pytest.raises(Exception, match=r"data\['X'\] is memory-mapped"):
        bg.fit(whole, {"X": X_mapped, "y": np.zeros(100)}, engine="svi", num_steps=2)


def test_mapped_data_are_checked_for_non_finite_values(tmp_path):
    X = np.zeros((100_000, 2))
    X[70_001, 1] = np.nan
    np.save(tmp_path / "X.npy", X)
    with pytest.raises(ValueError, match=r"data\['X'\] contains nan at index \(70001, 1\)"):
        bg.fit(logistic, {"X": np.load(tmp_path / "X.npy", mmap_mode="r"), "y": np.zeros(100_000)},
               engine="svi", num_steps=2)


def test_minibatches_cover_each_item_once_per_epoch_and_shard_over_ranks():
    plates = {"data": (10, 45)}  # 4 whole batches per epoch; the last 5 items wait for the next epoch
    single = Minibatches(plates, seed=1, data={})
    epoch = torch.cat([single.indices("data", step) for step in range(4)])
    assert len(set(epoch.tolist())) == 40
    assert not torch.equal(single.indices("data", 0), single.indices("data", 4))  # a fresh permutation
    assert torch.equal(single.indices("data", 5), Minibatches(plates, seed=1, data={}).indices("data", 5))
    wide = Minibatches({"data": (20, 45)}, seed=1, data={})
    shards = [Minibatches(plates, seed=1, data={}, rank=rank, world_size=2) for rank in range(2)]
    for step in range(6):
        assert torch.equal(torch.cat([shard.indices("data", step) for shard in shards]), wide.indices("data", step))
    with pytest.raises(ValueError, match="plate 'data'.*60 items per step are more than it has"):
        Minibatches({"data": (20, 45)}, seed=1, data={}, world_size=3)


_MEMORY_CHECK = textwrap.dedent("""
    import sys, threading, time
    import numpy as np, pyro, pyro.distributions as dist, bayesgen as bg
    from pyro.infer.autoguide import AutoNormal

    def anonymous_kib():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon"))

    def model(X, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        with pyro.plate("data", X.shape[0], subsample_size=1024) as index:
            pyro.sample("y", dist.Bernoulli(logits=(X[index] * w).sum(-1)), obs=None if y is None else y[index])

    X = np.load(sys.argv[1], mmap_mode="r")
    y = np.load(sys.argv[2], mmap_mode="r")
    baseline, peak, done = anonymous_kib(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_kib())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    fit = bg.fit(model, {"X": X, "y": y}, engine="svi", guide=AutoNormal, num_steps=300, num_particles=1,
                 num_draws=100, seed=0, progress=False)
    done.set()
    watcher.join()
    print(peak[0] - baseline, *fit.posterior["w"].mean((0, 1)).round(3))
""")


@pytest.mark.slow
def test_a_million_mapped_rows_fit_without_loading_them(tmp_path):
    """10^6 rows of 32 floats (256 MB) fit by SVI in a fresh process whose anonymous memory (what
    it allocates; the mapped file's pages are the kernel's page cache) grows by less than half the
    array: the rows are read a minibatch at a time, never whole."""
    n, d = 1_000_000, 32
    X = np.lib.format.open_memmap(tmp_path / "X.npy", "w+", np.float64, (n, d))
    y = np.lib.format.open_memmap(tmp_path / "y.npy", "w+", np.float64, (n,))
    rng = np.random.default_rng(0)
    weights = np.zeros(d)
    weights[:2] = [1.0, -1.0]
    for start in range(0, n, 100_000):
        x = rng.normal(size=(100_000, d))
        X[start:start + 100_000] = x
        y[start:start + 100_000] = rng.random(100_000) < 1 / (1 + np.exp(-x @ weights))
    X.flush()
    y.flush()
    del X, y
    script = tmp_path / "check.py"
    script.write_text(_MEMORY_CHECK)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "X.npy"), str(tmp_path / "y.npy")],
                         capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1",
                                                                           "PATH": "/usr/bin:/bin"})
    growth_kib, *means = out.stdout.split()
    array_kib = n * d * 8 / 1024
    assert int(growth_kib) < 0.5 * array_kib, (growth_kib, array_kib)
    np.testing.assert_allclose([float(m) for m in means[:3]], [1.0, -1.0, 0.0], atol=0.15)
