"""fit.generate: new samples of the observed sites from a fitted generative model."""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, NamedTuple

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from torch.distributions import transform_to

from bayesgen._counts import check_count
from bayesgen._seeding import check_seed, rng_restored
from bayesgen.dtypes import computing_in
from bayesgen.logdensity import Uncondition
from bayesgen.program import is_latent, on_device, run_program, trace_prototype
from bayesgen.validate import check_arguments, to_tensors

if TYPE_CHECKING:
    from bayesgen.engine import Problem
    from bayesgen.result import Fit

__all__ = ["generate", "kept_networks", "local_latents", "sampling_temperature", "tempered", "trained"]

_TEMPERATURE: contextvars.ContextVar[float] = contextvars.ContextVar("bayesgen_sampling_temperature", default=1.0)


@contextlib.contextmanager
def tempered(temperature: float) -> Iterator[None]:
    """Inside the block, autoregressive categorical sites draw with logits divided by ``temperature``.

    Below 1 the draws keep to the likeliest continuations, above 1 they wander; 1 draws from the
    fitted model itself. ``fit.generate(..., temperature=...)`` sets it.
    """
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a positive number, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    token = _TEMPERATURE.set(float(temperature))
    try:
        yield
    finally:
        _TEMPERATURE.reset(token)


def sampling_temperature() -> float:
    """The temperature that :func:`tempered` set (1 outside it)."""
    return _TEMPERATURE.get()


def local_latents(trace: Trace, observed: list[str]) -> set[str]:
    """The latent sites that belong to single observations: those inside a plate that also holds an
    observed site (a VAE's codes, a mixture's assignments, eight schools' school effects).

    Generating new data draws them afresh from their prior, as new observations come with new
    values of them; every other latent site is global and is taken from the fit.
    """
    frames = {frame.name for name in observed for frame in trace.nodes[name]["cond_indep_stack"]}
    return {name for name, site in trace.nodes.items()
            if site["type"] == "sample" and is_latent(site) and name not in observed
            and any(frame.name in frames for frame in site["cond_indep_stack"])}


class _LiveParameters(NamedTuple):
    tensors: dict[str, torch.Tensor]
    constraints: dict[str, Any]
    of_model: set[str]  # the names the model reads (the rest are its spec's guide's)


def _live_parameters(problem: "Problem", guide: Callable[..., Any] | None = None) -> _LiveParameters:
    """The tensors the program, its spec's guide and ``guide`` (one the fit was given) really read,
    by parameter name, with each one's constraint: the programs run once in an empty, scoped
    parameter store, so that every parameter is registered as the tensor it is (a module's own
    ``nn.Parameter`` under ``pyro.module`` or ``PyroModule``; the unconstrained tensor of a
    ``pyro.param``)."""
    store = pyro.get_param_store()
    guides = [g for g in (problem.spec.guide, guide) if g is not None]
    with store.scope():
        with torch.no_grad(), on_device(problem.device):
            trace_prototype(problem.spec.model, problem.data)
            of_model = set(store.keys())
            for program in dict.fromkeys(guides):  # each once
                trace_prototype(program, problem.data)
        live = store.get_state()
    return _LiveParameters(live["params"], live["constraints"], of_model)


@contextlib.contextmanager
def kept_networks(problem: "Problem", guide: Callable[..., Any] | None = None) -> Iterator[None]:
    """Inside the block the networks of the program and its guides may train; afterwards they
    hold their old weights.

    ``bg.fit`` trains inside it, so that a network (a ``pyro.module`` or ``PyroModule``, which
    outlives the parameter store) starts every fit from the same weights, and one seed gives
    one fit; the trained weights are kept in ``Fit.params``.
    """
    tensors = _live_parameters(problem, guide).tensors
    with _restored(tensors, {name: tensor.detach().clone() for name, tensor in tensors.items()}):
        yield


@contextlib.contextmanager
def _restored(tensors: Mapping[str, torch.Tensor], backups: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Copy ``backups`` back into ``tensors`` (in place, by name) when the block ends, and drop the
    gradients the block left on them: Pyro's SVI adds a step's gradient to what ``.grad`` holds,
    so the last gradient of one fit (a GAN's generator) would enter the first step of the next."""
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in backups.items():
                tensors[name].copy_(value)
                tensors[name].grad = None


@contextlib.contextmanager
def trained(problem: "Problem", params: Mapping[str, np.ndarray],
            guide: Callable[..., Any] | None = None) -> Iterator[None]:
    """Inside the block the program's weights hold the fit's trained values ``params``; afterwards
    Pyro's parameter store and the networks hold what they held before.

    The fit's values are copied into the very tensors the program reads (see
    :func:`_live_parameters`), mapped to the unconstrained space of each parameter's
    constraint, and copied back at the end. Writing the values into the store instead would
    leave the networks on their own weights. Parameters the program does not use (an
    AutoGuide's, whose draws are in the posterior) are left out, and so are those of a guide the
    fit was given unless it is passed as ``guide`` (an encoder, for the held-out likelihood); a
    parameter the model reads that the fit does not hold means that the program is not the one
    the fit was made with (a ``ValueError``), whose weights would silently stay untrained.

    The block computes in the problem's dtype (:mod:`bayesgen.dtypes`), as the fit did, so that
    everything that runs the program with the fit's weights (predictions, log-likelihoods,
    samples, held-out scores) does.
    """
    with computing_in(problem.dtype):
        if not params:
            yield
            return
        tensors, constraints, of_model = _live_parameters(problem, guide)
        untrained = sorted(of_model - set(params))
        if untrained:
            raise ValueError(f"the program reads parameter(s) {_some(untrained)} that the fit does not hold (it "
                             f"holds {_some(list(params))}): is it the program the fit was made with, and are its "
                             "arguments the fit's (those that choose its networks)?")
        backups = {}
        with torch.no_grad():
            for name, value in params.items():
                target = tensors.get(name)
                if target is None:
                    continue
                if tuple(target.shape) != tuple(np.shape(value)):
                    raise ValueError(f"parameter '{name}' of the fit has shape {tuple(np.shape(value))}, but the "
                                     f"program with these arguments builds it with shape {tuple(target.shape)}: pass "
                                     "the arguments the fit was made with (sizes of its networks: see "
                                     "fit.constant_data), and data of the sizes it was fitted to (images of "
                                     "the same height and width; text encoded with the fit's alphabet, "
                                     "char_lm.encode(texts, alphabet=...))")
                backups[name] = target.detach().clone()
                constrained = torch.as_tensor(value, device=target.device)
                target.copy_(transform_to(constraints[name]).inv(constrained))
        with _restored(tensors, backups):
            yield


def _some(names: list[str]) -> str:
    """The first three names, quoted, and how many more there are."""
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(repr(name) for name in names[:3]) + more


@rng_restored()
def generate(fit: "Fit", num_samples: int, *, seed: int = 0, temperature: float = 1.0,
             conditions: Mapping[str, Any] | None = None, point: bool = False) -> Any:
    """New samples of every observed site, ``(num_samples, *event_shape)``, decoded where the model
    has a decoder: see :meth:`Fit.generate`.

    ``conditions`` replace program arguments (new covariates, a class), the observed arguments
    then left out so that their sizes follow the new ones. ``point`` takes every global latent
    site at the centre of its posterior (the mean in the unconstrained space, mapped back, so
    that it lies in the site's support) instead of a random draw per run.
    """
    num_samples, seed = check_count("num_samples", num_samples), check_seed(seed)
    problem = fit._require_problem()
    with computing_in(problem.dtype):
        return _generate(fit, problem, num_samples, seed, temperature, conditions, point)


def _check_conditioned_globals(prototype: Trace, skipped: set[str], draws: Mapping[str, torch.Tensor],
                               conditions: Mapping[str, Any]) -> None:
    """A ``ValueError`` where the program run with ``conditions`` has a global latent site (not in
    ``skipped``: the local latents and the observed sites, which the run draws) the fit
    holds no draws of (``robust=True`` switching on a Student-t's degrees of freedom, which would
    come from its prior) or of another shape (``num_components=3`` for a fit of 2): the samples
    would not be the fitted model's, without a word."""
    named = ", ".join(f"{key}={value!r}" for key, value in conditions.items() if not hasattr(value, "shape"))
    given = f" ({named})" if named else ""
    for name, site in prototype.nodes.items():
        if not is_latent(site) or name in skipped or site["fn"].support.is_discrete:  # summed out, not drawn
            continue
        if name not in draws:
            raise ValueError(f"with the conditions{given} the program samples site '{name}', which the fit holds "
                             "no draws of: it would come from its prior, not the fit; condition on data only, "
                             "not on arguments that change the model")
        if tuple(site["value"].shape) != tuple(draws[name].shape[1:]):
            raise ValueError(f"with the conditions{given} site '{name}' has shape {tuple(site['value'].shape)}, "
                             f"but the fit's draws have shape {tuple(draws[name].shape[1:])}: condition on data "
                             "only, not on arguments that change the model")


def _generate(fit: "Fit", problem: "Problem", num_samples: int, seed: int, temperature: float,
              conditions: Mapping[str, Any] | None, point: bool) -> Any:
    """:func:`generate` in the fit's dtype."""
    spec = problem.spec
    arguments, prototype = dict(problem.data), problem.prototype
    if conditions:
        check_arguments(spec.model, conditions, partial=True)
        arguments.update({argument: None for argument in spec.observed.values()})
        arguments.update(to_tensors(conditions, problem.device, problem.dtype))
        with torch.no_grad(), on_device(problem.device):
            prototype = run_program(spec.model, arguments)
    observed = list(spec.observed)
    local = local_latents(prototype, observed)
    # the global latents' draws as tensors, flat over chains: (chain * draw, *shape)
    draws = {name: value.reshape((-1,) + value.shape[2:])
             for name, value in fit._latent_draws(problem).items() if name not in local}
    if conditions:
        _check_conditioned_globals(prototype, local | set(observed), draws, conditions)
    if point:
        draws = {name: _centre(value, prototype.nodes[name]["fn"].support)[None]
                 for name, value in draws.items()}
    if spec.size_argument is not None:
        # one run simulates exactly num_samples observations, the observed arguments left out
        arguments.update({argument: None for argument in spec.observed.values()})
        arguments[spec.size_argument] = num_samples
        runs = 1
    else:
        per_run = min(_observations_per_run(prototype.nodes[name]) for name in observed)
        runs = math.ceil(num_samples / per_run)
    rng = np.random.default_rng(seed)
    total = len(next(iter(draws.values()))) if draws else 0
    picks = rng.choice(total, runs, replace=runs > total) if total else [None] * runs
    program = Uncondition()(spec.model)
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in observed}
    with trained(problem, fit.params), torch.no_grad(), on_device(problem.device), tempered(temperature):
        pyro.set_rng_seed(seed)
        for pick in picks:
            fixed = {name: value[pick] for name, value in draws.items()}
            trace = run_program(poutine.condition(program, data=fixed), arguments)
            for name in observed:
                site = trace.nodes[name]
                if temperature != 1 and not getattr(site["fn"], "supports_temperature", False):
                    raise ValueError(f"temperature applies to sites drawn symbol by symbol from an autoregressive "
                                     f"network (char_lm, wavenet); site '{name}' is drawn from "
                                     f"{type(site['fn']).__name__}: leave temperature at 1")
                # a run sized by the size argument draws (num_samples, ...) as they are (a
                # sequence's symbols are one observation); else each batch element is one
                value = site["value"]
                if spec.size_argument is None:
                    value = value.reshape((-1,) + tuple(site["fn"].event_shape))
                pieces[name].append(value.cpu().numpy())
    samples = {name: np.concatenate(chunks)[:num_samples] for name, chunks in pieces.items()}
    if spec.decode is None:
        return samples
    values = {key: value.cpu().numpy() if isinstance(value, torch.Tensor) else value
              for key, value in arguments.items()}
    values.update({spec.observed[name]: value for name, value in samples.items()})
    return spec.decode(values)


def _centre(draws: torch.Tensor, support: Any) -> torch.Tensor:
    """The mean of ``draws`` ``(S, *shape)`` in the unconstrained space of ``support``, mapped back."""
    transform = transform_to(support)
    return transform(transform.inv(draws).mean(0))


def _observations_per_run(site: Mapping[str, Any]) -> int:
    """How many observations one run of the program draws at an observed site: its batch elements."""
    return max(1, math.prod(site["fn"].batch_shape))
