"""Recorded-and-replayed densities (bayesgen._replay) against running the Pyro program."""

import time
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from programs import gaussian_mixture, linear_regression, needs_compiler, regression_data

import bayesgen as bg
from bayesgen._replay import (
    RECORD_AFTER,
    VECTORIZE_MIN_LOOP,
    Fused,
    Replayed,
    agrees,
    compile_graph,
    record,
    script,
)


def constrained_model(y=None):
    """Sites on (0, inf), (1, 3) and the simplex: every evaluation adds their log-Jacobians."""
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    rate = pyro.sample("rate", dist.Uniform(1.0, 3.0))
    weights = pyro.sample("weights", dist.Dirichlet(torch.tensor([1.0, 2.0, 3.0])))
    tau = pyro.sample("tau", dist.HalfCauchy(2.0))  # its log_prob writes in place (masked_fill_)
    with pyro.plate("obs", 4):
        pyro.sample("y", dist.Normal(weights[..., 0] * rate, scale + tau), obs=y)


def branching_model(y=None):
    """Each point's noise scale depends on the sign of its mu through Python control flow."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = torch.tensor([1.0 if m > 0 else 2.0 for m in mu.reshape(-1)]).reshape(mu.shape)
    pyro.sample("y", dist.Normal(mu, scale), obs=y)


X, Y = regression_data(n=30)
PROGRAMS = {
    "constrained": (constrained_model, {"y": torch.tensor([0.3, -0.2, 1.1, 0.7])}),
    "plates_and_deterministic": (linear_regression, {"X": torch.as_tensor(X), "y": torch.as_tensor(Y)}),
    "enumerated_mixture": (gaussian_mixture, {"y": torch.tensor([-2.0, 0.1, 3.0, 2.5])}),
}


def _eager(density, u, **flags):
    return density._value_and_grad(u, jacobian=flags.get("jacobian", True), prior=flags.get("prior", True))


def _recording(density, u, **flags):
    return density._replays[(flags.get("jacobian", True), flags.get("prior", True))].recordings.get(
        (tuple(u.shape), u.dtype, u.device))


@pytest.mark.parametrize("name", list(PROGRAMS))
@pytest.mark.parametrize("flags", [{}, {"jacobian": False, "prior": False}], ids=["joint", "likelihood"])
def test_replay_equals_running_the_program(name, flags):
    model, data = PROGRAMS[name]
    density = bg.LogDensity(model, data)
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(5, density.dim, generator=gen)
    for _ in range(RECORD_AFTER):
        density.value_and_grad(u, **flags)
    assert _recording(density, u, **flags) is not None
    for scale in (0.01, 1.0, 4.0):
        point = torch.randn(5, density.dim, generator=gen) * scale
        value, grad = density.value_and_grad(point, **flags)
        expected_value, expected_grad = _eager(density, point, **flags)
        assert torch.allclose(value, expected_value, rtol=0, atol=1e-10)
        assert torch.allclose(grad, expected_grad, rtol=0, atol=1e-10)
        # the same ATen kernels on the same numbers: bitwise equal, not only close
        assert torch.equal(value, expected_value) and torch.equal(grad, expected_grad)


def test_each_batch_size_is_recorded_separately():
    model, data = PROGRAMS["plates_and_deterministic"]
    density = bg.LogDensity(model, data)
    for batch in (1, 3, 8):
        u = torch.randn(batch, density.dim)
        for _ in range(RECORD_AFTER + 1):
            value, grad = density.value_and_grad(u)
        assert _recording(density, u) is not None and value.shape == (batch,) and grad.shape == u.shape
        expected_value, expected_grad = _eager(density, u)
        assert torch.equal(value, expected_value) and torch.equal(grad, expected_grad)
    assert len(density._replays[(True, True)].recordings) == 3


def test_value_dependent_control_flow_falls_back_to_the_program():
    y = torch.tensor(0.4)
    density = bg.LogDensity(branching_model, {"y": y})
    u = torch.tensor([[-1.0], [0.5], [2.0], [-0.1]])
    for _ in range(RECORD_AFTER + 1):
        value, grad = density.value_and_grad(u)
    assert density.vectorized and _recording(density, u) is None
    mu = u[:, 0]
    scale = torch.where(mu > 0, 1.0, 2.0)
    expected = dist.Normal(0.0, 1.0).log_prob(mu) + dist.Normal(mu, scale).log_prob(y)
    expected_grad = -mu + (y - mu) / scale**2
    assert torch.allclose(value, expected, atol=1e-12) and torch.allclose(grad[:, 0], expected_grad, atol=1e-12)


def test_contracted_recording_turns_large_broadcast_products_into_matrix_products():
    from bayesgen._replay.rewrites import CONTRACT_MIN_ELEMENTS

    model, data = PROGRAMS["plates_and_deterministic"]  # alpha + (X * beta).sum(-1)
    density = bg.LogDensity(model, data)
    small = torch.randn(6, density.dim)
    assert "einsum" not in record(density.value_and_grad, [small], contract=True).code
    chains = CONTRACT_MIN_ELEMENTS // data["X"].numel() + 1
    u = torch.randn(chains, density.dim)
    graph = record(density.value_and_grad, [u], contract=True)
    assert sum(node.target is torch.ops.aten.einsum.default for node in graph.graph.nodes) == 2
    for scale in (0.1, 3.0):
        point = torch.randn(chains, density.dim) * scale
        for actual, expected in zip(graph(point), _eager(density, point)):
            assert torch.allclose(actual, expected, rtol=1e-12, atol=1e-10)


def logistic_value_and_grad(logits, y):
    """A Bernoulli log-likelihood on logits, summed per row, with its gradient."""
    logits = logits.detach().requires_grad_()
    value = dist.Bernoulli(logits=logits, validate_args=False).log_prob(y).sum(-1)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    return value, grad


def test_contracted_recording_computes_a_logistic_likelihood_and_its_gradient_from_one_exponential():
    y = (torch.rand(500, dtype=torch.float64) < 0.5).double()
    logits = torch.randn(8, 500, dtype=torch.float64)
    graph = record(logistic_value_and_grad, [logits, y], contract=True)
    ops = [node.target for node in graph.graph.nodes]
    aten = torch.ops.aten
    assert aten.binary_cross_entropy_with_logits.default not in ops and aten.sigmoid.default not in ops
    assert ops.count(aten.exp.default) == 1
    assert "sigmoid" in record(logistic_value_and_grad, [logits, y]).code  # without contract: kept
    extreme = torch.tensor([-800.0, -40.0, -1e-300, 0.0, 1e-300, 40.0, 800.0], dtype=torch.float64)
    for point in (logits * 0.1, logits * 30.0, extreme[torch.arange(500) % 7].repeat(8, 1)):
        target = (torch.rand(point.shape[-1], dtype=torch.float64) < 0.5).double()
        expected, actual = logistic_value_and_grad(point, target), graph(point, target)
        for a, e in zip(actual, expected):
            assert torch.isfinite(a).all()
            assert torch.allclose(a, e, rtol=1e-13, atol=1e-13)


def test_folded_constants_are_stored_at_the_size_they_vary_in():
    y = (torch.rand(500, dtype=torch.float64) < 0.5).double()
    graph = record(lambda logits: logistic_value_and_grad(logits, y), [torch.randn(64, 500, dtype=torch.float64)])
    # the data broadcast over rows and the minus ones that the sum passes back: stored once
    assert max(buffer.numel() for buffer in graph.buffers()) <= 500
    point = torch.randn(64, 500, dtype=torch.float64)
    for a, e in zip(graph(point), logistic_value_and_grad(point, y)):
        assert torch.allclose(a, e, rtol=1e-13, atol=1e-13)


def test_record_refuses_random_functions_and_reads_of_values():
    x = torch.randn(3)
    assert record(lambda t: t + torch.randn_like(t), [x]) is None
    assert record(lambda t: t * float(t.sum()), [x]) is None
    assert record(lambda t: torch.exp(t).sum(), [x]) is not None


def test_recording_keeps_arguments_apart_and_constants_fresh():
    def fn(a, b):
        buffer = torch.zeros(3)
        buffer.add_(a)  # a constant made varying in place: must not be folded or accumulate
        return buffer * 2 + b, torch.ones(3) * 5

    same = torch.ones(3)
    graph = record(fn, [same, same])  # one tensor passed twice when recorded
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])
    for _ in range(2):
        out, constant = graph(a, b)
        assert torch.equal(out, fn(a, b)[0]) and torch.equal(constant, torch.full((3,), 5.0))
        constant.add_(1.0)  # a caller writing to an output must not change the next call


def test_replayed_checks_its_recording_at_random_points():
    calls = []

    def peeking(x):
        calls.append(x)
        time.sleep(0.002)  # Python-side overhead, which replays skip
        return x * 2

    replayed = Replayed(peeking)
    x = torch.randn(2, 3)
    for _ in range(RECORD_AFTER + 2):
        assert torch.equal(replayed(x), x * 2)
    # RECORD_AFTER eager calls, one while recording, three probes; then only replays
    assert len(calls) == RECORD_AFTER + 1 + 3
    assert replayed.ready(x) and replayed.replays[(tuple(x.shape), x.dtype, x.device)]
    assert not Replayed(lambda t: t * float(t[0, 0])).ready(x)


def test_fused_runs_eagerly_what_it_cannot_record():
    fused = Fused(lambda t: (t * float(t.sum()),))
    x = torch.randn(4)
    for _ in range(2):
        assert torch.equal(fused(x)[0], x * float(x.sum()))
    assert list(fused.replays.values()) == [None]


def test_fused_records_once_per_argument_layout():
    calls = []

    def step(a, b):
        calls.append(1)
        return a * b + 1.0, (a - b).sum(-1)

    fused = Fused(step)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    for _ in range(3):
        assert agrees((a * b + 1.0, (a - b).sum(-1)), fused(a, b))
    c = torch.randn(5, 3)  # another shape: recorded again, never replayed at the old shape
    for _ in range(2):
        assert torch.equal(fused(c, c)[1], torch.zeros(5))
    assert len(fused.replays) == 2 and all(replay is not None for replay in fused.replays.values())
    before = len(calls)
    fused(a.T.contiguous().T, b)  # same shape, other strides: a layout of its own
    assert len(calls) > before and len(fused.replays) == 3


def test_scripted_recording_is_bitwise_the_graph():
    model, data = PROGRAMS["plates_and_deterministic"]
    density = bg.LogDensity(model, data)
    u = torch.randn(6, density.dim)
    graph = record(density.value_and_grad, [u])
    scripted = script(graph, [u])
    point = torch.randn(6, density.dim) * 2
    for actual, expected in zip(scripted(point), _eager(density, point)):
        assert torch.equal(actual, expected)


def test_agrees_tolerance_and_non_finite_values():
    x = torch.tensor([1.0, -torch.inf, torch.nan, 1e4])
    assert agrees(x, x.clone())
    assert agrees(x, x + torch.tensor([0.0, 0.0, 0.0, 1e-6]))  # within sqrt(eps) * 1e4
    assert not agrees(x, x + torch.tensor([1e-3, 0.0, 0.0, 0.0]) * 1e3)
    assert not agrees(x, torch.tensor([1.0, torch.inf, torch.nan, 1e4]))
    assert not agrees(x, torch.tensor([1.0, -torch.inf, 0.0, 1e4]))
    assert not agrees((x, x), (x,))
    assert not agrees(torch.tensor([True]), torch.tensor([False]))


def test_fused_bind_returns_the_replay_for_a_layout():
    calls = []

    def step(a, b):
        calls.append(1)
        return (a * b - 2.0,)

    fused = Fused(step)
    a, b = torch.randn(3, 2), torch.randn(3, 2)
    replay = fused.bind((a, b))  # records now: one call of step, then only the replay
    before = len(calls)
    for _ in range(3):
        assert agrees((a * b - 2.0,), replay(a, b))
    assert len(calls) == before and fused.bind((a, b)) is replay
    assert Fused(lambda t: (t * float(t.sum()),)).bind((a,)).__name__ == "<lambda>"  # unrecordable


@needs_compiler
def test_fused_compiles_its_recordings_on_request(caplog):
    import logging

    def step(a, b):
        return torch.exp(a) * b + a.sum(-1, keepdim=True), (a - b).abs().sum()

    fused = Fused(step)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    fused(a, b)
    scripted = fused.bind((a, b))
    with caplog.at_level(logging.DEBUG, logger="bayesgen._replay"):
        fused.compile_recordings()
    assert "compiled" in caplog.text and fused.compile
    compiled = fused.bind((a, b))
    assert compiled is not scripted
    a2, b2 = torch.randn(4, 3), torch.randn(4, 3)  # the compilation is general in the values
    assert agrees(step(a2, b2), compiled(a2, b2))
    c = torch.randn(2, 3)  # a new layout after compile_recordings is compiled at once
    assert agrees(step(c, c), fused(c, c)) and fused.bind((c, c)) is not None


@needs_compiler
def test_small_graphs_compile_to_scalar_kernels_after_a_vectorised_compilation(monkeypatch):
    from torch._inductor import cpu_vec_isa
    from torch._inductor.utils import fresh_cache, run_and_get_code

    class ProbedAVX2(cpu_vec_isa.VecAVX2):
        def __bool__(self) -> bool:
            return True  # like Inductor's AVX-512 checks once they ran: cached, blind to config.cpp.vec_isa_ok

    def as_probed():
        return [ProbedAVX2()]  # what Inductor keeps once anything in the process compiled with SIMD

    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", as_probed)
    a, b = torch.randn(4, 40), torch.randn(4, 40)
    graph = record(lambda a, b: (torch.exp(a) * b + a.sum(-1, keepdim=True),), (a, b))
    with fresh_cache():
        compiled, sources = run_and_get_code(compile_graph, graph, (a, b))
    kernels = "".join(sources)
    assert "cpp_pybinding" in kernels and "at::vec" not in kernels
    assert cpu_vec_isa.valid_vec_isa_list is as_probed  # the choice of instruction sets is left as it was
    assert agrees((torch.exp(a) * b + a.sum(-1, keepdim=True),), compiled(a, b))


@needs_compiler
def test_compiled_graphs_are_called_without_autograd_wrappers_and_keep_their_constants():
    scale, shift = torch.randn(4, 3), torch.randn(3)  # constants of the recording, in this order

    def step(a, b):
        return torch.exp(a) * scale + b.sum(-1, keepdim=True), (a - shift).abs().sum()

    a, b = torch.randn(4, 3), torch.randn(4, 3)
    compiled = compile_graph(record(step, (a, b)), (a, b))
    assert not hasattr(compiled, "__wrapped__")  # AOTAutograd's runtime wrapper has one
    for _ in range(2):
        a, b = torch.randn(4, 3), torch.randn(4, 3)
        assert agrees(step(a, b), compiled(a, b))


@needs_compiler
def test_compiled_programs_take_their_buffers_from_two_sets_used_in_turn():
    def step(a, b):  # one intermediate (the row sums) and two outputs
        return torch.exp(-a.abs()) * b + a.sum(-1, keepdim=True), b - 0.5 * a

    a, b = torch.randn(4, 3), torch.randn(4, 3)
    compiled = compile_graph(record(step, (a, b)), (a, b))
    first, second, third = (compiled(a, b)[0].data_ptr() for _ in range(3))
    assert first == third != second  # a call's outputs survive the next call, not the one after
    expected, replayed = (a, b), (a, b)
    for _ in range(5):  # outputs passed straight back in as the next call's inputs
        expected, replayed = step(*expected), compiled(*replayed)
        assert agrees(expected, replayed)


def test_programs_whose_wrapper_is_written_otherwise_keep_their_allocations():
    from bayesgen._replay.inductor import _reusing_buffers

    assert _reusing_buffers(lambda inputs: inputs) is None  # not a method of Inductor's runner

    class Runner:
        def call(self, args):  # no allocation to hoist
            return (args[0] * 2.0,)

    assert _reusing_buffers(Runner().call) is None


def test_a_compiled_program_is_called_directly_only_where_it_gives_the_same_outputs():
    from bayesgen._replay.inductor import _direct

    a = torch.randn(3)
    graph = record(lambda t: (t * 2.0,), (a,))

    def wrapped(t):  # stands in for the program inside AOTAutograd's wrappers
        return (t * 2.0,)

    class Program:  # stands in for Inductor's compiled program, called with a list of inputs
        def __init__(self, factor: float) -> None:
            self.current_callable = lambda inputs: (inputs[-1] * factor,)

    assert _direct(wrapped, [Program(3.0)], graph, (a,)) is wrapped  # disagrees: keep the wrappers
    assert _direct(wrapped, [], graph, (a,)) is wrapped  # no program seen (a cache served it whole)
    direct = _direct(wrapped, [Program(2.0)], graph, (a,))
    assert direct is not wrapped and torch.equal(direct(a)[0], a * 2.0)


@needs_compiler
def test_only_loops_over_many_values_are_vectorised():
    from torch._inductor.codegen.cpp import CppScheduling
    from torch._inductor.cpu_vec_isa import pick_vec_isa
    from torch._inductor.utils import fresh_cache, run_and_get_code

    if not pick_vec_isa():
        pytest.skip("this CPU has no vector instruction set Inductor uses")
    proxy = CppScheduling.kernel_proxy_cls
    large, small = torch.randn(4, 1000), torch.randn(4, 10)  # rows of 1000 values and of 10
    assert small.shape[-1] < VECTORIZE_MIN_LOOP <= large.shape[-1]

    def step(large, small):
        return torch.exp(large) * 2.0, torch.exp(small).sum(-1)

    graph = record(step, (large, small))
    with fresh_cache():
        compiled, sources = run_and_get_code(compile_graph, graph, (large, small))
    kernels = "".join(sources)
    assert "loadu(in_ptr0" in kernels  # the large input is read a vector at a time
    assert "in_ptr1[" in kernels and "loadu(in_ptr1" not in kernels  # the small one a value at a time
    assert CppScheduling.kernel_proxy_cls is proxy  # Inductor's own kernels are back for others
    assert agrees(step(large, small), compiled(large, small))


def test_fused_stops_compiling_when_no_recording_compiles(monkeypatch):
    from bayesgen._replay import runtime

    monkeypatch.setattr(runtime, "compile_graph", lambda graph, args: None)  # no C++ compiler, say
    fused = Fused(lambda a: (a * 3.0,))
    a = torch.randn(5)
    fused(a)
    scripted = fused.bind((a,))
    fused.compile_recordings()
    assert not fused.compile and fused.bind((a,)) is scripted
    assert torch.equal(fused(a)[0], a * 3.0)


@needs_compiler
def test_a_compiled_graph_is_saved_and_the_next_process_loads_it_without_compiling(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices from Inductor's imports
        from torch._inductor import compile_fx as inductor
        from torch._inductor.utils import clear_caches

    from bayesgen._replay import saved

    def step(a, b):
        return torch.exp(-a.abs()) * b + a.sum(-1, keepdim=True), b - 0.5 * a

    compilations = []
    compile_fx = inductor.compile_fx
    monkeypatch.setattr(inductor, "compile_fx", lambda *args, **kwargs: compilations.append(1) or compile_fx(*args, **kwargs))
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    outputs = []
    for _ in range(2):  # the second finds the first's program on disk, as a new process would
        clear_caches()
        compiled = compile_graph(record(step, (a, b)), (a, b))
        outputs.append([t.clone() for t in compiled(a, b)])
    clear_caches()
    assert len(compilations) == 1  # Inductor compiled once; the second loaded the saved program
    assert len(list(saved.folder().glob("*.py"))) == 1
    assert all(torch.equal(x, y) for x, y in zip(*outputs))
    first, second, third = (compiled(a, b)[0].data_ptr() for _ in range(3))
    assert first == third != second  # the loaded program reuses its buffers too


@needs_compiler
def test_a_graph_whose_shapes_depend_on_the_values_compiles(tmp_path, monkeypatch, caplog):
    """Boolean indexing needs a shape environment for its data-dependent size: the first attempt,
    without one, fails and the compilation is made again with one, not given up."""
    def step(a, b):
        return ((a[a > 0] * 2.0).sum() + b).exp(), b * 3.0

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    with caplog.at_level("WARNING", logger="bayesgen._replay"):
        compiled = compile_graph(record(step, (a, b)), (a, b))
    assert compiled is not None and not caplog.records
    for _ in range(3):  # another count of positive values each time
        a = torch.randn(4, 3)
        assert agrees(step(a, b), compiled(a, b))


def test_a_scripted_replay_raises_where_the_program_raises_a_linalg_error():
    """torch.linalg.cholesky, inv and solve record as an unchecked call and a check that
    TorchScript's tracer drops: the scripted replay must still raise where the program does (the
    sampler's guard counts such points as failed densities), not return NaN, and agree with it
    elsewhere."""
    def step(a):
        return torch.linalg.cholesky(a).diagonal(dim1=-2, dim2=-1).log().sum(), torch.linalg.inv(a).sum()

    good = torch.tensor([[2.0, 0.5], [0.5, 1.0]]).expand(3, 2, 2).clone()
    bad = torch.tensor([[1.0, 1.2], [1.2, 1.0]]).expand(3, 2, 2).clone()
    scripted = script(record(step, (good,)), (good,))
    assert scripted is not None and agrees(step(good), scripted(good))
    with pytest.raises(RuntimeError, match="not positive-definite"):
        scripted(bad)
    singular = torch.tensor([[1.0, 1.0], [1.0, 1.0]]).expand(3, 2, 2).clone()
    for singular_at in (lambda a: (torch.linalg.inv(a).sum(),), lambda a: (torch.linalg.solve(a, a[..., 0]).sum(),)):
        with pytest.raises(RuntimeError, match="singular"):
            script(record(singular_at, (good,)), (good,))(singular)


def test_saved_programs_are_keyed_by_the_graph_and_the_layout_not_the_values():
    from bayesgen._replay.saved import key_of

    def step(a, b):
        return (a * b + 1.0,)

    a, b = torch.randn(4, 3), torch.randn(4, 3)
    graph = record(step, (a, b))
    key = key_of(graph, (a, b), scalar=True)
    assert key == key_of(record(step, (a, b)), (torch.randn(4, 3), torch.randn(4, 3)), scalar=True)
    assert key != key_of(graph, (a, b), scalar=False)
    assert key != key_of(graph, (a, torch.randn(3, 4).T), scalar=True)  # other strides
    assert key != key_of(graph, (a, a), scalar=True)  # one storage for both
    assert key != key_of(record(lambda a, b: (a * b + 2.0,), (a, b)), (a, b), scalar=True)


@needs_compiler
def test_a_damaged_or_wrong_saved_program_is_compiled_again(tmp_path, monkeypatch):
    from torch._inductor.utils import clear_caches

    from bayesgen._replay import saved

    def step(a, b):
        return torch.exp(-a.abs()) * b + a.sum(-1, keepdim=True), b - 0.5 * a

    def other(a, b):
        return torch.exp(-a.abs()) * b - a.sum(-1, keepdim=True), b + 0.5 * a

    a, b = torch.randn(4, 3), torch.randn(4, 3)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    compile_graph(record(step, (a, b)), (a, b))
    compile_graph(record(other, (a, b)), (a, b))
    (path, other_path) = sorted(saved.folder().glob("*.py"), key=lambda p: p.stat().st_mtime_ns)
    other_source = other_path.read_text()
    for damage in ("this is not Python(", other_source):  # a broken file; another graph's program
        path.write_text(damage)
        clear_caches()
        compiled = compile_graph(record(step, (a, b)), (a, b))
        assert agrees(step(a, b), compiled(a, b))
        assert path.read_text() != damage  # compiled again and saved again
    clear_caches()


def _fast_path_works() -> bool:
    """Whether a small step compiles with Inductor and is called with its buffers reused (two sets
    used in turn), as on the torch versions setup.cfg lists."""
    def step(a, b):
        return torch.exp(-a.abs()) * b + a.sum(-1, keepdim=True), b - 0.5 * a

    a, b = torch.randn(4, 3), torch.randn(4, 3)
    compiled = compile_graph(record(step, (a, b)), (a, b))
    if compiled is None:
        return False
    first, second, third = (compiled(a, b)[0].data_ptr() for _ in range(3))
    return first == third != second and agrees(step(a, b), compiled(a, b))


@needs_compiler
def test_the_installed_torch_keeps_the_fast_path():
    """A torch upgrade that breaks the compiled step or the buffer reuse fails here, instead of
    making every fit silently slower."""
    assert _fast_path_works(), "the compiled fast path falls back on this torch: see the log's warning"


@needs_compiler
def test_a_broken_fast_path_is_caught_and_said_once(monkeypatch, caplog, tmp_path):
    """The check above fails when Inductor's compiler raises (patched here to do so), and the
    fallback is a warning the first time, then debug. Such a failure is not retried with a shape
    environment (only a data-dependent shape is), so each graph is compiled once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices from Inductor's imports
        from torch._inductor import compile_fx as inductor

    from bayesgen._replay import fallback

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # no saved program to load instead

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("an Inductor that changed")

    monkeypatch.setattr(inductor, "compile_fx", broken)
    monkeypatch.setattr(fallback, "FELL_BACK", set())
    with caplog.at_level("DEBUG", logger="bayesgen._replay"):
        assert not _fast_path_works()
        assert not _fast_path_works()
    assert len(calls) == 2
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "fast path 'inductor'" in r.getMessage()]
    assert [level for level, _ in said] == ["WARNING", "DEBUG"]
    assert "an Inductor that changed" in said[0][1] and torch.__version__ in said[0][1]
