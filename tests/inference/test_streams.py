"""Per-chain random streams: their numbers, and what they are for: a chain samples the same
whichever chains share its batch (the ground of distributed NUTS)."""

import numpy as np
import pytest
import torch
from scipy import stats

import bayesgen as bg
from bayesgen.inference._kernels import HMCKernel, NUTSKernel
from bayesgen.inference._sampler import run_hmc
from bayesgen.inference._streams import ChainStreams

DTYPE = torch.float64


def _streams(seed, chains, dtype=DTYPE):
    return ChainStreams(seed, chains, dtype=dtype, device="cpu")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniforms_and_normals_have_their_distributions(dtype):
    streams = _streams(0, range(4), dtype)
    u = streams.uniform(50_000)
    assert u.shape == (4, 50_000) and u.dtype == dtype
    assert 0.0 < float(u.min()) and float(u.max()) < 1.0
    for row in u.double().numpy():
        assert stats.kstest(row, "uniform").pvalue > 1e-3
    z = streams.normal(50_000).double().numpy()
    for row in z:
        assert stats.kstest(row, "norm").pvalue > 1e-3
    # neighbouring chains and consecutive draws are uncorrelated: |r| < 4 / sqrt(n)
    assert abs(np.corrcoef(z[0], z[1])[0, 1]) < 4 / np.sqrt(50_000)
    assert abs(np.corrcoef(z[0, 1:], z[0, :-1])[0, 1]) < 4 / np.sqrt(50_000)


def test_a_chain_s_stream_depends_on_the_seed_and_its_index_only():
    whole = _streams(7, range(4))
    first, second = whole.uniform(3), whole.uniform(5)
    alone = _streams(7, [2])
    assert torch.equal(alone.uniform(3)[0], first[2]) and torch.equal(alone.uniform(5)[0], second[2])
    assert not torch.equal(_streams(8, [2]).uniform(3)[0], first[2])
    assert len({tuple(row.tolist()) for row in first}) == 4


def test_only_the_active_chains_draw_and_advance():
    streams, reference = _streams(3, range(3)), _streams(3, range(3))
    masked = streams.uniform(4, torch.tensor([True, False, True]))
    expected = reference.uniform(4)
    assert torch.equal(masked[[0, 2]], expected[[0, 2]]) and bool((masked[1] == 0.5).all())
    later = streams.uniform(2)
    assert torch.equal(later[1], _streams(3, range(3)).uniform(2)[1])  # chain 1 starts where it was
    assert torch.equal(later[0], reference.uniform(2)[0])


def _correlated(x):
    precision = torch.tensor([[2.0, -1.2, 0.0], [-1.2, 1.5, 0.3], [0.0, 0.3, 0.8]], dtype=x.dtype)
    grad = -(x @ precision)
    return 0.5 * (x * grad).sum(-1), grad


@pytest.mark.parametrize("kernel, dense, fuse", [(NUTSKernel(), False, False), (NUTSKernel(), True, False),
                                                 (NUTSKernel(), False, True), (HMCKernel(5), False, False)])
def test_chains_sample_the_same_beside_any_other_chains(kernel, dense, fuse):
    """Chains 1 and 3 of a 4-chain run, run as a batch of their own, give the same warmup,
    step sizes and draws, bitwise: how deep the other chains' trees grow changes nothing."""
    init = torch.randn((4, 3), generator=torch.Generator().manual_seed(0), dtype=DTYPE)

    def run(chains):
        return run_hmc(_correlated, init[chains], num_warmup=150, num_samples=100, kernel=kernel, dense_mass=dense,
                       streams=_streams(5, chains), fuse=fuse, jit_compile=False)

    whole, part = run([0, 1, 2, 3]), run([1, 3])
    assert torch.equal(part.draws, whole.draws[[1, 3]])
    assert torch.equal(part.step_size, whole.step_size[[1, 3]])
    for name in ("tree_depth", "n_steps", "acceptance_rate"):
        assert torch.equal(part.stats[name], whole.stats[name][[1, 3]]), name
    # the trees differ between chains, so the batch did run deeper than some of its chains
    assert bool((whole.stats["tree_depth"].amax(0) > whole.stats["tree_depth"].amin(0)).any()) or \
        isinstance(kernel, HMCKernel)


def test_fit_draws_do_not_depend_on_the_number_of_chains():
    """bg.fit's chain i is the same in a 2-chain and a 4-chain run with the same seed."""
    options = {"engine": "nuts", "num_warmup": 100, "num_samples": 50, "seed": 3, "progress": False}
    four = bg.fit("eight_schools", num_chains=4, **options)
    two = bg.fit("eight_schools", num_chains=2, **options)
    np.testing.assert_array_equal(two.posterior["mu"], four.posterior["mu"][:2])
