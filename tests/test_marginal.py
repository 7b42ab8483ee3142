"""The importance-weighted marginal likelihood (bayesgen.marginal) against closed forms."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bayesgen.fitting import prepare
from bayesgen.marginal import importance_log_likelihood
from bayesgen.spec import ModelSpec

X = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.9])


def model(x=None):
    """z_n ~ Normal(0, 1), x_n ~ Normal(z_n, 1): the marginal is x_n ~ Normal(0, sqrt 2)."""
    with pyro.plate("obs", 5):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def exact_guide(x=None):
    """The exact posterior z_n | x_n ~ Normal(x_n / 2, sqrt 1/2): every weight equals p(x_n)."""
    with pyro.plate("obs", 5):
        pyro.sample("z", dist.Normal(x / 2, math.sqrt(0.5)))


def prior_guide(x=None):
    with pyro.plate("obs", 5):
        pyro.sample("z", dist.Normal(0.0, 1.0))


def truth():
    return dist.Normal(0.0, math.sqrt(2.0)).log_prob(X).numpy()


def test_exact_posterior_as_proposal_gives_the_marginal_exactly():
    problem = prepare(ModelSpec(name="m", model=model, guide=exact_guide, observed={"x": "x"}), {"x": X})
    estimate = importance_log_likelihood(problem, num_particles=10)["x"].numpy()
    np.testing.assert_allclose(estimate, truth(), atol=1e-12)


def test_prior_as_proposal_converges_to_the_marginal_and_tightens_the_elbo():
    problem = prepare(ModelSpec(name="m", model=model, guide=prior_guide, observed={"x": "x"}), {"x": X})
    estimate = importance_log_likelihood(problem, num_particles=20000, seed=1)["x"].numpy()
    # the weights p(x_n | z) have relative sd below 1.5 here, so the log of their mean over
    # 20,000 draws is within 0.05 of log p(x_n) with overwhelming probability
    np.testing.assert_allclose(estimate, truth(), atol=0.05)
    elbo = np.mean([importance_log_likelihood(problem, num_particles=1, seed=s)["x"].numpy()
                    for s in range(200)], axis=0)
    assert (elbo < estimate).all()  # K = 1 is the ELBO, the loosest of the bounds
