"""bg.LogDensity against hand-written densities (with Jacobians) and finite differences."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroSample
from torch.distributions import biject_to, constraints

import bayesgen as bg
from programs import gaussian_mixture, linear_regression


def constrained_model(y=None):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    rate = pyro.sample("rate", dist.Uniform(1.0, 3.0))
    weights = pyro.sample("weights", dist.Dirichlet(torch.tensor([1.0, 2.0, 3.0])))
    with pyro.plate("obs", 4):
        pyro.sample("y", dist.Normal(weights[..., 0] * rate, scale), obs=y)


Y = torch.tensor([0.3, -0.2, 1.1, 0.7])


def by_hand(u: torch.Tensor, jacobian: bool = True, prior: bool = True) -> torch.Tensor:
    """The same joint density, written out with torch and the Jacobians of each map."""
    log_scale, u_rate, u_w = u[0], u[1], u[2:4]
    scale = log_scale.exp()
    rate = 1.0 + 2.0 * torch.sigmoid(u_rate)
    simplex = biject_to(dist.Dirichlet(torch.ones(3)).support)
    weights = simplex(u_w)
    lp = dist.Normal(weights[0] * rate, scale).log_prob(Y).sum()
    if prior:
        lp = lp + dist.LogNormal(0.0, 1.0).log_prob(scale) + math.log(0.5)
        lp = lp + dist.Dirichlet(torch.tensor([1.0, 2.0, 3.0])).log_prob(weights)
    if jacobian:
        sig = torch.sigmoid(u_rate)
        lp = lp + log_scale + torch.log(2.0 * sig * (1 - sig)) + simplex.log_abs_det_jacobian(u_w, weights)
    return lp


def test_layout_names_shapes_and_sizes():
    density = bg.LogDensity(constrained_model, {"y": Y})
    assert [(s.name, s.shape, s.size) for s in density.layout] == [
        ("scale", (), 1), ("rate", (), 1), ("weights", (3,), 2)]
    assert density.dim == 4 and density.observed == ["y"] and density.vectorized


@pytest.mark.parametrize("jacobian,prior", [(True, True), (False, True), (False, False)])
def test_batched_density_matches_hand_written(jacobian, prior):
    density = bg.LogDensity(constrained_model, {"y": Y})
    u = torch.randn(7, 4)
    expected = torch.stack([by_hand(row, jacobian, prior) for row in u])
    actual = density.log_density(u, jacobian=jacobian, prior=prior)
    assert actual.shape == (7,)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-8)


def test_gradient_matches_finite_differences():
    density = bg.LogDensity(constrained_model, {"y": Y})
    u = torch.randn(3, 4, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: density.log_density(x), (u,), eps=1e-6, atol=1e-6)
    value, grad = density.value_and_grad(u.detach())
    (expected,) = torch.autograd.grad(by_hand(u[0]), u)
    assert torch.allclose(grad[0], expected[0], atol=1e-8)
    assert value.shape == (3,) and grad.shape == (3, 4)


def test_constrain_and_unconstrain_round_trip():
    density = bg.LogDensity(constrained_model, {"y": Y})
    u = torch.randn(5, 4)
    values = density.constrain(u)
    assert values["weights"].shape == (5, 3)
    assert torch.allclose(values["weights"].sum(-1), torch.ones(5))
    assert ((values["rate"] > 1) & (values["rate"] < 3)).all()
    assert torch.allclose(density.unconstrain(values), u, atol=1e-10)


def test_constrain_runs_the_program_only_until_its_last_latent_and_deterministic_sites():
    likelihoods = []

    def program(late_deterministic: bool):
        def model(y=None):
            loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
            with pyro.plate("obs", 4):
                likelihoods.append(loc)  # stands for an expensive likelihood
                pyro.sample("y", dist.Normal(loc, 1.0), obs=y)
            if late_deterministic:
                pyro.deterministic("shifted", loc + 1.0)
        return model

    u = torch.randn(6, 1)
    for late in (False, True):
        density = bg.LogDensity(program(late), {"y": Y})
        before = len(likelihoods)
        values = density.constrain(u)
        assert len(likelihoods) == before + late  # one batched run reaches a deterministic site after it
        assert torch.equal(values["loc"], u[:, 0])
    assert torch.equal(values["shifted"], u[:, 0] + 1.0)


def test_enumerated_discrete_latents_are_summed_out():
    y = torch.tensor([-2.0, 0.1, 3.0, 2.5])
    density = bg.LogDensity(gaussian_mixture, {"y": y})
    assert density.enumerated == ["z"] and density.dim == 3
    u = torch.randn(6, 3)
    simplex = biject_to(dist.Dirichlet(torch.ones(2)).support)

    def marginal(row):
        weights = simplex(row[:1])
        lp = dist.Dirichlet(torch.ones(2)).log_prob(weights) + simplex.log_abs_det_jacobian(row[:1], weights)
        lp = lp + dist.Normal(0.0, 5.0).log_prob(row[1:]).sum()
        mix = weights.log() + dist.Normal(row[1:], 1.0).log_prob(y[:, None])
        return lp + torch.logsumexp(mix, -1).sum()

    expected = torch.stack([marginal(row) for row in u])
    assert torch.allclose(density.log_density(u), expected, atol=1e-8)


def test_unbatchable_program_falls_back_with_a_warning_naming_the_site():
    def scalar_only(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        loc = torch.stack([torch.as_tensor(float(mu)), torch.tensor(1.0)])
        pyro.sample("y", dist.Normal(loc, 1.0).to_event(1), obs=y)

    with pytest.warns(RuntimeWarning, match="site 'mu'"):
        density = bg.LogDensity(scalar_only, {"y": torch.zeros(2)})
    assert not density.vectorized
    u = torch.randn(3, 1)
    expected = dist.Normal(0.0, 1.0).log_prob(u[:, 0]) + dist.Normal(u[:, 0], 1.0).log_prob(torch.tensor(0.0)) \
        + dist.Normal(1.0, 1.0).log_prob(torch.tensor(0.0))
    assert torch.allclose(density.log_density(u), expected, atol=1e-10)


def test_dependent_support_uses_the_bijection_of_each_evaluation():
    def bounded(y=None):
        low = pyro.sample("low", dist.Normal(0.0, 1.0))
        x = pyro.sample("x", dist.Uniform(low, low + 2.0))
        pyro.sample("y", dist.Normal(x, 1.0), obs=y)

    density = bg.LogDensity(bounded, {"y": torch.tensor(0.5)})
    u = torch.randn(4, 2)
    values = density.constrain(u)
    assert ((values["x"] > values["low"]) & (values["x"] < values["low"] + 2)).all()


class _BayesianRegression(PyroModule):
    """Pyro's Bayesian regression tutorial: ``PyroModule[nn.Linear]`` with ``PyroSample`` weights,
    which ``F.linear`` cannot run for a batch of weight matrices."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](3, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 3]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


def test_a_module_with_pyrosample_weights_is_mapped_by_vmap_and_recorded():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    density = bg.LogDensity(_BayesianRegression(), {"x": x, "y": y})  # no warning: they are errors here
    assert density.mapped and not density.vectorized
    u = torch.randn(5, density.dim, generator=torch.Generator().manual_seed(1))
    looped = torch.cat([density._log_density(row[None], True, True, False) for row in u])
    assert torch.allclose(density.log_density(u), looped, atol=1e-10)
    for _ in range(3):  # the third call at one shape records the program's operations
        value, grad = density.value_and_grad(u)
    assert density._replays[(True, True)].ready(u)
    assert torch.allclose(value, looped, atol=1e-10) and grad.shape == u.shape


def test_the_correlation_cholesky_bijection_by_index_is_torchs_without_a_boolean_mask():
    """Same values, inverse and log-Jacobian as torch's CorrCholeskyTransform, for a site wrapped
    in Independent too; and no boolean-mask indexing in its graph (a shape that depends on the
    values, which made Inductor give up on programs with an LKJCholesky site)."""
    from torch.distributions.transforms import CorrCholeskyTransform, IndependentTransform
    from torch.fx.experimental.proxy_tensor import make_fx

    from bayesgen._transforms import bijection

    x = torch.randn(5, 3, 6, generator=torch.Generator().manual_seed(0))  # 4 x 4 factors
    for support, reference in [(constraints.corr_cholesky, CorrCholeskyTransform()),
                               (constraints.independent(constraints.corr_cholesky, 1),
                                IndependentTransform(CorrCholeskyTransform(), 1))]:
        ours = bijection(support)
        y = ours(x)
        torch.testing.assert_close(y, reference(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(ours.inv(y), reference.inv(y), rtol=0, atol=1e-12)
        torch.testing.assert_close(ours.log_abs_det_jacobian(x, y), reference.log_abs_det_jacobian(x, y),
                                   rtol=0, atol=1e-12)

    def there_and_back(u):
        transform = bijection(constraints.corr_cholesky)
        y = transform(u)
        return transform.inv(y), transform.log_abs_det_jacobian(u, y)

    graph = make_fx(there_and_back)(x).graph
    boolean_indices = [node for node in graph.nodes if node.op == "call_function" and "index" in str(node.target)
                       and any(getattr(a, "meta", {}).get("val") is not None and a.meta["val"].dtype == torch.bool
                               for a in (node.args[1] if isinstance(node.args[1], (list, tuple)) else ()))]
    assert boolean_indices == [] and all("nonzero" not in str(node.target) for node in graph.nodes)


def test_numpy_data_are_taken_as_bg_fit_takes_them_and_a_name_is_refused():
    X = np.random.default_rng(0).normal(size=(10, 3))
    from_numpy = bg.LogDensity(linear_regression, {"X": X, "y": X.sum(1)})
    from_tensors = bg.LogDensity(linear_regression, {"X": torch.as_tensor(X), "y": torch.as_tensor(X.sum(1))})
    point = torch.zeros(2, from_numpy.dim)
    assert torch.equal(from_numpy.value_and_grad(point)[0], from_tensors.value_and_grad(point)[0])
    with pytest.raises(TypeError, match=r"LogDensity takes a Pyro program \(a callable\), got 'eight_schools'"):
        bg.LogDensity("eight_schools")


def test_the_prototype_run_is_seeded_and_tries_other_prior_draws_where_the_program_fails():
    # a covariance that is positive definite only for |r| < 1: a third of the prior fails, which the
    # samplers treat as rejected points; the first run of bg.fit crashed there, at an unseeded draw
    def correlated(y=None):
        r = pyro.sample("r", dist.Uniform(-1.5, 1.5))
        one = torch.ones_like(r)
        cov = torch.stack([torch.stack([one, r], -1), torch.stack([r, one], -1)], -2)
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), covariance_matrix=cov), obs=y)

    data = {"y": torch.tensor([0.3, -0.2])}
    values = set()
    for state in range(6):
        torch.manual_seed(state)
        expected = torch.rand(3)
        torch.manual_seed(state)
        values.add(float(bg.LogDensity(correlated, data).prototype.nodes["r"]["value"]))
        assert torch.equal(torch.rand(3), expected)  # the caller's random state is left as it was
    assert len(values) == 1 and abs(values.pop()) < 1  # the same valid draw, whatever the caller's state
