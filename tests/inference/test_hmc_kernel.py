"""Tests of the batched multi-chain NUTS / HMC sampler on closed-form potentials."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from bayesgen.inference._adaptation import adaptation_windows, find_reasonable_step_size
from bayesgen.inference._integrator import (
    PhasePoint,
    energy_error,
    initial_state,
    kinetic_energy,
    leapfrog,
    make_metric,
    velocity,
)
from bayesgen.inference._nuts import _checkpoint_range
from bayesgen.inference._kernels import HMCKernel, NUTSKernel
from bayesgen.inference._sampler import HMCResult, run_hmc
from bayesgen.inference._streams import ChainStreams

DTYPE = torch.float64
STAT_KEYS = {"lp", "diverging", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate"}


def _arviz():
    """Import arviz without its import-time FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

    return arviz


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _streams(seed: int, chains: int, dtype: torch.dtype = DTYPE) -> ChainStreams:
    return ChainStreams(seed, range(chains), dtype=dtype, device="cpu")


def _diag_gaussian(mean: torch.Tensor, sd: torch.Tensor):
    """Batched log density and gradient of independent normals."""

    def logp_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = (x - mean) / sd
        return -0.5 * (r * r).sum(-1), -r / sd

    return logp_and_grad


def _dense_gaussian(cov: torch.Tensor):
    """Batched log density and gradient of a zero-mean correlated normal."""
    precision = torch.linalg.inv(cov)

    def logp_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        px = x @ precision
        return -0.5 * (px * x).sum(-1), -px

    return logp_and_grad


def _funnel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neal's centred funnel: y ~ N(0, 3), x_i ~ N(0, exp(y / 2))."""
    y, rest = x[:, 0], x[:, 1:]
    inv_var = torch.exp(-y)
    sq = (rest * rest).sum(-1)
    logp = -y * y / 18.0 - 0.5 * sq * inv_var - 0.5 * rest.shape[1] * y
    grad_y = -y / 9.0 + 0.5 * sq * inv_var - 0.5 * rest.shape[1]
    return logp, torch.cat([grad_y.unsqueeze(-1), -rest * inv_var.unsqueeze(-1)], -1)


MEAN3 = torch.tensor([1.0, -2.0, 3.0], dtype=DTYPE)
SD3 = torch.tensor([0.5, 2.0, 10.0], dtype=DTYPE)


def _run3(
    algorithm: str,
    seed: int = 1,
    max_tree_depth: int = 10,
    init_step_size: float | None = None,
    adapt: bool = True,
    num_samples: int = 1000,
) -> HMCResult:
    init = torch.randn((4, 3), generator=_generator(100 + seed), dtype=DTYPE)
    return run_hmc(
        _diag_gaussian(MEAN3, SD3),
        init,
        num_warmup=500,
        num_samples=num_samples,
        streams=_streams(seed, 4),
        kernel=NUTSKernel(max_tree_depth) if algorithm == "nuts" else HMCKernel(),
        init_step_size=init_step_size,
        adapt_step_size=adapt,
        adapt_mass_matrix=adapt,
    )


@pytest.fixture(scope="module")
def nuts3() -> HMCResult:
    return _run3("nuts")


@pytest.fixture(scope="module")
def hmc3() -> HMCResult:
    return _run3("hmc")


@pytest.mark.parametrize("name", ["nuts3", "hmc3"])
def test_known_answer_gaussian(name: str, request: pytest.FixtureRequest) -> None:
    az = _arviz()
    result = request.getfixturevalue(name)
    draws = result.draws.numpy()
    for i in range(3):
        x = draws[:, :, i]
        mean_err = abs(x.mean() - MEAN3[i].item())
        sd_err = abs(x.std() - SD3[i].item())
        assert mean_err < 4 * az.mcse(x), (i, mean_err)
        assert sd_err < 4 * az.mcse(x, method="sd"), (i, sd_err)
    assert result.stats["diverging"].sum() == 0


@pytest.mark.parametrize("name", ["nuts3", "hmc3"])
def test_output_shapes_and_dtypes(name: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(name)
    assert isinstance(result, HMCResult)
    assert result.draws.shape == (4, 1000, 3) and result.draws.dtype == DTYPE
    assert set(result.stats) == STAT_KEYS
    dtypes = {"diverging": torch.bool, "tree_depth": torch.int64, "n_steps": torch.int64}
    for key, value in result.stats.items():
        assert value.shape == (4, 1000), key
        assert value.dtype == dtypes.get(key, DTYPE), key
    assert result.step_size.shape == (4,) and result.step_size.dtype == DTYPE
    assert result.inverse_mass_matrix.shape == (4, 3) and result.inverse_mass_matrix.dtype == DTYPE
    assert result.warmup_divergences.shape == (4,)
    assert result.warmup_divergences.dtype == torch.int64
    assert torch.equal(result.stats["step_size"], result.step_size[:, None].expand(4, 1000))
    accept = result.stats["acceptance_rate"]
    assert bool(((accept >= 0) & (accept <= 1)).all())
    assert torch.isfinite(result.stats["lp"]).all() and torch.isfinite(result.stats["energy"]).all()
    assert bool((result.stats["energy"] >= -result.stats["lp"]).all())


def test_stats_consistency(nuts3: HMCResult, hmc3: HMCResult) -> None:
    depth, steps = nuts3.stats["tree_depth"], nuts3.stats["n_steps"]
    assert bool((depth >= 1).all()) and bool((depth <= 10).all())
    assert bool((steps >= 2 ** (depth - 1)).all()) and bool((steps <= 2**depth - 1).all())
    lp = _diag_gaussian(MEAN3, SD3)(nuts3.draws.reshape(-1, 3))[0].reshape(4, 1000)
    assert torch.allclose(lp, nuts3.stats["lp"])
    assert bool((hmc3.stats["tree_depth"] == 0).all()) and bool((hmc3.stats["n_steps"] == 10).all())
    # the adapted diagonal inverse mass matrix estimates the posterior variance
    ratio = nuts3.inverse_mass_matrix / (SD3**2)
    assert bool(((ratio > 0.5) & (ratio < 2.0)).all())


def test_high_dim_standard_normal_ess() -> None:
    az = _arviz()
    dim = 100
    init = torch.randn((4, dim), generator=_generator(7), dtype=DTYPE)
    logp = _diag_gaussian(torch.zeros(dim, dtype=DTYPE), torch.ones(dim, dtype=DTYPE))
    result = run_hmc(logp, init, num_warmup=500, num_samples=500, streams=_streams(8, 4))
    draws = result.draws.numpy()
    ess = np.array([az.ess(draws[:, :, i]) for i in range(dim)])
    assert ess.min() / draws[:, :, 0].size > 0.5
    assert result.stats["diverging"].sum() == 0


def test_dense_mass_matrix_adaptation() -> None:
    sd = torch.tensor([1.0, 10.0], dtype=DTYPE)
    corr = torch.tensor([[1.0, 0.95], [0.95, 1.0]], dtype=DTYPE)
    cov = corr * sd[:, None] * sd[None, :]
    init = torch.randn((4, 2), generator=_generator(11), dtype=DTYPE)
    result = run_hmc(_dense_gaussian(cov), init, num_warmup=1500, num_samples=10,
                     streams=_streams(12, 4), dense_mass=True)
    inv_mass = result.inverse_mass_matrix
    assert inv_mass.shape == (4, 2, 2)
    diag = torch.diagonal(inv_mass, dim1=-2, dim2=-1)
    assert bool(((diag / cov.diagonal() - 1).abs() < 0.2).all()), diag
    est_corr = inv_mass[:, 0, 1] / torch.sqrt(diag[:, 0] * diag[:, 1])
    assert bool(((est_corr - 0.95).abs() < 0.05).all()), est_corr


def test_funnel_produces_divergences() -> None:
    init = torch.randn((4, 10), generator=_generator(21), dtype=DTYPE)
    result = run_hmc(
        _funnel, init, num_warmup=150, num_samples=150, streams=_streams(22, 4), kernel=NUTSKernel(7)
    )
    assert result.stats["diverging"].sum() > 0
    assert torch.isfinite(result.draws).all() and torch.isfinite(result.stats["lp"]).all()


def test_non_finite_log_density_is_divergent_not_fatal() -> None:
    """A density that is -inf (nan gradient) outside the positive orthant, or nan far out."""

    def logp_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = -0.5 * ((x - 0.5) ** 2).sum(-1)
        grad = -(x - 0.5)
        outside = (x <= 0).any(-1)
        logp = torch.where(outside, -torch.inf, logp)
        logp = torch.where((x > 4).any(-1), torch.nan, logp)
        return logp, torch.where(outside.unsqueeze(-1), torch.nan, grad)

    init = torch.full((4, 2), 0.5, dtype=DTYPE)
    # trees at most 2^6 steps: divergences near the edges shrink the step size, and deeper trees
    # only take longer to reach the same verdict
    for kernel in (NUTSKernel(max_tree_depth=6), HMCKernel()):
        result = run_hmc(logp_and_grad, init, num_warmup=100, num_samples=200,
                         streams=_streams(5, 4), kernel=kernel)
        assert bool((result.draws > 0).all()) and bool((result.draws < 4).all())
        assert torch.isfinite(result.stats["lp"]).all()
        total = result.stats["diverging"].sum() + result.warmup_divergences.sum()
        assert total > 0


def test_determinism_and_distinct_chains() -> None:
    first = _run3("nuts", seed=3, max_tree_depth=6, num_samples=100)
    second = _run3("nuts", seed=3, max_tree_depth=6, num_samples=100)
    assert torch.equal(first.draws, second.draws)
    for key in STAT_KEYS:
        assert torch.equal(first.stats[key], second.stats[key]), key
    assert torch.equal(first.step_size, second.step_size)
    assert torch.equal(first.inverse_mass_matrix, second.inverse_mass_matrix)
    for i in range(4):
        for j in range(i):
            assert not torch.equal(first.draws[i], first.draws[j])
    assert not torch.equal(first.step_size[0], first.step_size[1])


def test_max_tree_depth_is_respected() -> None:
    result = _run3("nuts", seed=4, max_tree_depth=2, num_samples=100)
    assert int(result.stats["tree_depth"].max()) == 2
    assert int(result.stats["n_steps"].max()) <= 3


def test_no_warmup_uses_given_step_size_and_identity_metric() -> None:
    init = torch.zeros((3, 3), dtype=DTYPE)
    logp = _diag_gaussian(MEAN3, SD3)
    result = run_hmc(logp, init, num_warmup=0, num_samples=20, streams=_streams(0, 3),
                     init_step_size=0.3)
    assert torch.equal(result.step_size, torch.full((3,), 0.3, dtype=DTYPE))
    assert torch.equal(result.inverse_mass_matrix, torch.ones((3, 3), dtype=DTYPE))
    assert torch.equal(result.warmup_divergences, torch.zeros(3, dtype=torch.int64))
    dense = run_hmc(logp, init, num_warmup=0, num_samples=5, streams=_streams(0, 3),
                    dense_mass=True)
    assert torch.equal(dense.inverse_mass_matrix, torch.eye(3, dtype=DTYPE).expand(3, 3, 3))
    assert bool((dense.step_size != 1.0).all())


def test_fixed_step_size_and_metric_when_not_adapting() -> None:
    result = _run3("hmc", seed=6, init_step_size=0.25, adapt=False, num_samples=10)
    assert torch.equal(result.step_size, torch.full((4,), 0.25, dtype=DTYPE))
    assert torch.equal(result.inverse_mass_matrix, torch.ones((4, 3), dtype=DTYPE))


def test_float32_and_progress_bar() -> None:
    init = torch.zeros((2, 3), dtype=torch.float32)
    logp = _diag_gaussian(MEAN3.float(), SD3.float())
    result = run_hmc(logp, init, num_warmup=30, num_samples=10, streams=_streams(0, 2, torch.float32),
                     progress=True)
    assert result.draws.dtype == torch.float32 and result.stats["lp"].dtype == torch.float32
    assert result.step_size.dtype == torch.float32


def test_argument_validation() -> None:
    logp = _diag_gaussian(MEAN3, SD3)
    init = torch.zeros((2, 3), dtype=DTYPE)
    with pytest.raises(TypeError, match="kernel must be a sampler kernel.*'mala'"):
        run_hmc(logp, init, num_warmup=1, num_samples=1, streams=_streams(0, 2), kernel="mala")
    with pytest.raises(ValueError, match="max_tree_depth"):
        NUTSKernel(0)
    with pytest.raises(ValueError, match="num_steps"):
        HMCKernel(0)
    with pytest.raises(ValueError, match="shapes"):
        run_hmc(lambda x: (x, x), init, num_warmup=1, num_samples=1, streams=_streams(0, 2))
    with pytest.raises(ValueError, match="init"):
        run_hmc(logp, init[0], num_warmup=1, num_samples=1, streams=_streams(0, 2))
    calls = []
    with pytest.raises(ValueError, match="streams has 3 chains' streams, init 2 chains"):
        run_hmc(lambda x: calls.append(x) or logp(x), init, num_warmup=1, num_samples=1, streams=_streams(0, 3))
    assert not calls  # refused before the density runs


def test_stan_adaptation_windows() -> None:
    assert adaptation_windows(1000) == [(75, 99), (100, 149), (150, 249), (250, 449), (450, 949)]
    assert adaptation_windows(150) == [(75, 99)]
    assert adaptation_windows(100) == [(15, 89)]
    assert adaptation_windows(500) == [(75, 99), (100, 149), (150, 249), (250, 449)]
    assert adaptation_windows(19) == []


def test_checkpoint_indices_match_numpyro() -> None:
    # NumPyro's _leaf_idx_to_ckpt_idxs: idx_max 6 -> 2, 7 -> 2, 13 -> 2; trailing ones 0, 3, 1.
    assert _checkpoint_range(6) == (3, 2)
    assert _checkpoint_range(7) == (0, 2)
    assert _checkpoint_range(13) == (2, 2)
    assert _checkpoint_range(0) == (1, 0)
    assert _checkpoint_range(1) == (0, 0)


@pytest.mark.parametrize("dense", [False, True])
def test_leapfrog_is_reversible_and_conserves_energy(dense: bool) -> None:
    cov = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=DTYPE)
    logp_and_grad = _dense_gaussian(cov)
    diag = torch.rand((3, 2), generator=_generator(1), dtype=DTYPE) + 0.5
    inv = cov.expand(3, 2, 2).clone() if dense else diag
    metric = make_metric(inv)
    state = initial_state(logp_and_grad, torch.randn((3, 2), generator=_generator(2), dtype=DTYPE))
    p = torch.randn((3, 2), generator=_generator(3), dtype=DTYPE)
    point = PhasePoint(state.z, p, velocity(metric, p), state.logp, state.grad)
    energy0 = kinetic_energy(p, point.v) - state.logp
    step = torch.tensor([[0.01], [0.02], [-0.03]], dtype=DTYPE)
    forward = point
    for _ in range(20):
        forward = leapfrog(logp_and_grad, forward, step, metric)
    assert bool((energy_error(forward, energy0)[1].abs() < 1e-3).all())
    back = forward
    for _ in range(20):
        back = leapfrog(logp_and_grad, back, -step, metric)
    assert torch.allclose(back.z, point.z, atol=1e-10)
    assert torch.allclose(back.p, point.p, atol=1e-10)


def test_reasonable_step_size_is_per_chain() -> None:
    logp = _diag_gaussian(torch.zeros(5, dtype=DTYPE), torch.ones(5, dtype=DTYPE))
    state = initial_state(logp, torch.zeros((2, 5), dtype=DTYPE))
    # chain 1's metric is 100 times too wide, so its step size must be about 10 times smaller
    metric = make_metric(torch.tensor([[1.0] * 5, [100.0] * 5], dtype=DTYPE))
    step = find_reasonable_step_size(logp, state, torch.ones(2, dtype=DTYPE), metric, _streams(9, 2))
    assert step.shape == (2,)
    assert 0.25 <= step[0].item() <= 4.0
    assert 2.0 <= math.log2(step[0].item() / step[1].item()) <= 5.0


def test_a_stopped_chain_is_left_as_it_was_by_later_doublings() -> None:
    """`_combine` updates a chain that stopped running without masking it: its subtree must be
    neutral (edge unchanged, zero momentum sum and steps, log weight -inf) so that its trajectory,
    proposal and weight come out bitwise equal."""
    from bayesgen.inference._nuts import (
        _Checkpoints,
        _Context,
        _build_subtree,
        _combine,
        _empty_subtree,
        _initial_tree,
        eager_leaves,
    )

    logp = _diag_gaussian(torch.zeros(3, dtype=DTYPE), torch.ones(3, dtype=DTYPE))
    state = initial_state(logp, torch.randn(4, 3, generator=_generator(0), dtype=DTYPE))
    metric = make_metric(torch.ones(4, 3, dtype=DTYPE))
    streams = _streams(1, 4)
    tree = _initial_tree(state, metric, streams)
    tree = tree._replace(running=torch.tensor([True, False, True, False]))
    step_size = torch.full((4,), 0.3, dtype=DTYPE)
    ctx = _Context(eager_leaves(logp), step_size, tree.proposal.energy, metric, _empty_subtree(tree))
    ckpts = _Checkpoints(torch.zeros(4, 5, 3, dtype=DTYPE), torch.zeros(4, 5, 3, dtype=DTYPE))
    for depth, right in enumerate([True, False, True]):
        going_right = torch.full((4,), right)
        sub = _build_subtree(ctx, tree, ckpts, going_right, streams.uniform(1 << depth).T.contiguous())
        after = _combine(tree, sub, going_right, streams.uniform(1)[:, 0])
        stopped = ~tree.running
        for field in ("left", "right", "proposal"):
            for new, old in zip(getattr(after, field), getattr(tree, field)):
                assert torch.equal(new[stopped], old[stopped]), field
        for field in ("log_weight", "r_sum", "depth", "n_steps", "sum_accept"):
            assert torch.equal(getattr(after, field)[stopped], getattr(tree, field)[stopped]), field
        assert not after.running[stopped].any()
        tree = after
