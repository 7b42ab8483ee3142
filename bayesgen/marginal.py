"""Importance-weighted marginal likelihood of each observation, with an amortised guide as proposal.

A program with local latent variables (a VAE's codes, a belief network's hidden units) has no
closed-form ``p(x_n)``. With the guide the fit trained, ``q(z | x_n)``, the average of
``K`` importance weights ``p(x_n, z_k) / q(z_k | x_n)`` is an unbiased estimate of it, and the
log of the average is a lower bound on ``log p(x_n)`` in expectation that tightens as ``K``
grows (the importance-weighted bound of Burda, Grosse and Salakhutdinov 2016; ``K = 1`` is the
ELBO). This is the held-out likelihood that deep generative models are compared by.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Mapping

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace

from bayesgen.engine import SVI_FAMILIES
from bayesgen.postprocess import pointwise_log_likelihood
from bayesgen.program import is_subsample, on_device, site_log_prob

if TYPE_CHECKING:
    from bayesgen.engine import Problem
    from bayesgen.result import Fit

__all__ = ["NUM_PARTICLES", "amortising_guide", "encoded_local_latents", "importance_log_likelihood",
           "observation_log_likelihood", "per_observation", "undrawn_local_latents"]

#: Importance samples per observation: the bound at 1,000 is within a few hundredths of a nat of
#: the one at 5,000 for the zoo's image models.
NUM_PARTICLES = 1000

_PARTICLE_PLATE = "_bayesgen_particles"
_MAX_ELEMENTS = 2**24  # values of the observed site held at once: particles x observations x event


def amortising_guide(fit: "Fit") -> Callable[..., Any] | None:
    """The guide whose trained parameters give ``fit``'s local latents as a function of each
    observation (an encoder), the proposal of the importance-weighted likelihood: the guide
    callable the svi run was given, or with none given the one the model's spec ships. None for
    other fits, and for a fit loaded from a file whose run was given its own guide (a file holds
    the guide's parameters, not its code: load with a ``ModelSpec`` that ships the guide)."""
    problem = fit.problem
    if problem is None or fit.engine != "svi" or not fit.params:
        return None
    given = fit.settings.get("guide")
    if given is None or lost_guide_function(fit):  # a file's: the spec given to bg.load may ship it
        return problem.spec.guide
    return given if callable(given) and not isinstance(given, type) else None  # not an AutoGuide class


def lost_guide_function(fit: "Fit") -> bool:
    """Whether ``fit`` was loaded from a file of an svi run given its own guide callable (a
    function, a bound method, a module, a partial): the file holds the guide's parameters and, in
    its settings, the callable's repr, not its code. A Gaussian family's name and an AutoGuide
    class (``<class ...>``) are not such guides."""
    given = fit.settings.get("guide")
    return (fit.engine == "svi" and isinstance(given, str) and given not in SVI_FAMILIES
            and not given.startswith("<class "))


def undrawn_local_latents(fit: "Fit", problem: "Problem") -> set[str]:
    """The program's local latent sites (see ``generate.local_latents``) that the fit holds no
    draws of and the plain log-likelihood does not sum out: an amortised guide's codes, or a
    GAN's noise. Their log-likelihood is then not the
    plain one at the posterior draws but needs them integrated out."""
    from bayesgen.generate import local_latents

    local = local_latents(problem.prototype, list(problem.spec.observed))
    # enumerated sites (a mixture's assignments) are summed out by the plain log-likelihood
    drawable = set(problem.density.latent_names) | set(problem.density.discrete_latents)
    return {name for name in local & drawable if name not in fit.posterior}


def _amortises(guide: Callable[..., Any], problem: "Problem") -> bool:
    """Whether ``guide`` gives each observation's local latents as a function of it (an encoder): its
    parameters keep their shapes when it sees fewer observations, where a hand-written guide's
    ``pyro.param("z_loc", torch.zeros(N))`` does not."""
    (argument,) = problem.spec.observed.values()
    total = len(problem.data[argument])
    fewer = {key: value[:1] if per_observation(value, total) else value for key, value in problem.data.items()}
    shapes = []
    store = pyro.get_param_store()
    for data in (problem.data, fewer):
        with store.scope(), torch.no_grad(), on_device(problem.device):
            try:
                poutine.trace(guide).get_trace(**data)
            except Exception:  # noqa: BLE001 - a guide that cannot take one observation is not scored by it
                return False
            shapes.append({name: tuple(store[name].shape) for name in store.keys()})
    return shapes[0] == shapes[1]


def encoded_local_latents(fit: "Fit", problem: "Problem", draws: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Draws of the local latents that ``fit`` holds no draws of, from its amortising guide given
    ``problem``'s observations (a VAE's codes from its encoder): site -> ``(chain, draw, *shape)``
    for ``draws = (chain, draw)``. Empty without such a guide, and where the observations' plate
    subsamples (a run would encode a random minibatch). The posterior predictive of the data a fit
    was made from needs them: codes drawn from the prior would give new images, not replicates."""
    from bayesgen.generate import trained

    guide, undrawn = amortising_guide(fit), undrawn_local_latents(fit, problem)
    if guide is None or not undrawn or problem.density.subsampled:
        return {}
    chains, num = draws
    with torch.no_grad(), trained(problem, fit.params, guide), on_device(problem.device):
        with pyro.plate(_PARTICLE_PLATE, chains * num, dim=-problem.density.max_plate_nesting - 1):
            trace = poutine.trace(guide).get_trace(**problem.data)
    return {name: trace.nodes[name]["value"].reshape((chains, num) + problem.prototype.nodes[name]["value"].shape)
            for name in undrawn}


def observation_log_likelihood(fit: "Fit | None", problem: "Problem", draws: Mapping[str, torch.Tensor], *,
                               seed: int = 0) -> dict[str, torch.Tensor]:
    """The pointwise log-likelihood of ``problem``'s observations under ``fit`` (or under the
    prior ``draws`` when ``fit`` is None): observed site -> ``(chain, draw, *batch_shape)``.

    At the latent ``draws`` where they hold every latent site; the importance-weighted bound with
    the fit's amortising guide (:func:`amortising_guide`), one chain of one draw, where the fit
    holds no draws of the local latents; empty where nothing integrates them out (a GAN's noise)
    or the observations' plate subsamples. The program's parameters must already hold the fit's values
    (``generate.trained``).
    """
    if fit is None or not undrawn_local_latents(fit, problem):
        return pointwise_log_likelihood(problem.density, draws)
    guide = amortising_guide(fit)
    if guide is None or problem.density.subsampled or len(problem.spec.observed) != 1:
        return {}
    if guide is problem.spec.guide:  # its weights are among those the caller's generate.trained set
        weights = importance_log_likelihood(problem, guide=guide, seed=seed)
    elif not _amortises(guide, problem):
        return {}  # a hand-written guide with a parameter per observation: no q for new observations
    else:
        from bayesgen.generate import trained

        with trained(problem, fit.params, guide):  # a given guide's weights are not
            weights = importance_log_likelihood(problem, guide=guide, seed=seed)
    return {name: value[None, None] for name, value in weights.items()}


def importance_log_likelihood(problem: "Problem", *, guide: Callable[..., Any] | None = None,
                              num_particles: int = NUM_PARTICLES, seed: int = 0) -> dict[str, torch.Tensor]:
    """``log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n)`` for each observation ``n`` of each observed
    site, with ``z_k ~ q(. | x_n)`` drawn by ``guide`` (by default the spec's): site -> ``(N,)``.

    The program's parameters must already hold the trained values (``generate.trained``).
    ``z`` are the latent sites in the plate of the observed site's observations; each
    observation's weight sums the log densities of those sites and of the observed site.
    Observations are taken in chunks (every tensor argument whose first dimension has the
    observations' length is cut alike), all ``K`` particles of a chunk in one vectorised run of
    the guide and the program.
    """
    guide = guide if guide is not None else problem.spec.guide
    if guide is None:
        raise ValueError("the importance-weighted likelihood needs an amortising guide: the model's spec "
                         "ships none and none was given")
    if len(problem.spec.observed) != 1:
        raise ValueError("the importance-weighted likelihood needs a program with one observed site")
    (site,) = problem.spec.observed
    argument = problem.spec.observed[site]
    observed = problem.prototype.nodes[site]
    plate = _observation_plate(observed)
    if plate.name in problem.density.subsampled:
        raise ValueError(f"plate '{plate.name}' draws a minibatch at each run: pass batch_size=None "
                         "(or leave it out) for the importance-weighted likelihood")
    total = len(problem.data[argument])
    nesting = problem.density.max_plate_nesting
    per_obs = max(1, observed["value"][0].numel()) if observed["value"].dim() else 1
    chunk = max(1, _MAX_ELEMENTS // (num_particles * per_obs))
    pyro.set_rng_seed(seed)
    pieces = []
    with torch.no_grad(), on_device(problem.device):
        for start in range(0, total, chunk):
            data = {key: value[start:start + chunk] if per_observation(value, total) else value
                    for key, value in problem.data.items()}
            pieces.append(_log_weights(problem.spec.model, guide, data, plate.name, nesting, num_particles))
    log_w = torch.cat(pieces, dim=-1)
    return {site: torch.logsumexp(log_w, 0) - math.log(num_particles)}


def per_observation(value: Any, total: int) -> bool:
    """Whether a program argument holds one row per observation (of ``total``): a tensor whose
    first dimension has that length, which a chunk or minibatch of observations cuts alike."""
    return isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == total


def _observation_plate(site: Mapping[str, Any]) -> Any:
    """The outermost vectorised plate of the observed site: its items are the observations."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
    if not frames:
        raise ValueError(f"site '{site['name']}' is in no plate: the importance-weighted likelihood needs "
                         "its observations in a pyro.plate")
    return min(frames, key=lambda f: f.dim)


def _log_weights(model: Callable[..., Any], guide: Callable[..., Any], data: Mapping[str, Any], plate: str,
                 nesting: int, num_particles: int) -> torch.Tensor:
    """Log importance weights ``(K, n)`` of a chunk of ``n`` observations."""
    with pyro.plate(_PARTICLE_PLATE, num_particles, dim=-nesting - 1):
        guide_trace = poutine.trace(guide).get_trace(**data)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**data)
    total = _site_terms(model_trace, plate, nesting)
    return total - _site_terms(guide_trace, plate, nesting, latent_only=True)


def _site_terms(trace: Trace, plate: str, nesting: int, latent_only: bool = False) -> torch.Tensor:
    """Sum of the log densities of the sites in ``plate``, per particle and item, ``(K, n)``."""
    total: torch.Tensor | float = 0.0
    for node in trace.nodes.values():
        if node["type"] != "sample" or is_subsample(node) or (latent_only and node["is_observed"]):
            continue
        frame = next((f for f in node["cond_indep_stack"] if f.name == plate), None)
        if frame is None:
            continue
        log_p = site_log_prob(node)
        log_p = log_p.reshape((1,) * (nesting + 1 - log_p.dim()) + log_p.shape)
        log_p = log_p.movedim(frame.dim, -1)
        total = total + log_p.reshape(log_p.shape[0], -1, log_p.shape[-1]).sum(1)
    if isinstance(total, float):
        raise ValueError(f"no site lies in plate '{plate}'")
    return total
