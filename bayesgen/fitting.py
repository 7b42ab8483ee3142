"""bg.fit: resolve the model and engine, validate the data, run, and build the Fit."""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import pyro
import torch
from pyro.poutine.trace_struct import Trace

from bayesgen._seeding import check_seed, rng_restored
from bayesgen.distributed import Ranks
from bayesgen.dtypes import ParameterDtypes, computing_in, data_dtype, dtype_name, requested_dtype
from bayesgen.engine import CHECKPOINT_OPTIONS, Engine, EngineResult, Problem
from bayesgen.generate import kept_networks
from bayesgen.mapped import MappedRows, place_in_file
from bayesgen.marginal import observation_log_likelihood
from bayesgen.postprocess import deterministic_sites
from bayesgen.program import ProgramError, is_subsample, on_device, trace_prototype
from bayesgen.registry import checked_engine, describe_option, get_model, is_zoo_spec, list_engines, make_engine
from bayesgen.result import Fit
from bayesgen.spec import ModelSpec
from bayesgen.validate import (check_arguments, check_observed, check_single_rows, data_digest, infer_observed,
                               keyword_parameters, observations_as_floats, to_tensors)

__all__ = ["constant_arguments", "fit", "prepare", "resolve_model", "with_fixed_arguments"]


def resolve_model(model: Callable[..., Any] | str | ModelSpec) -> ModelSpec:
    """The ``ModelSpec`` of a zoo name, a Pyro program or a spec."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        return get_model(model)
    if callable(model):
        return _zoo_spec_of(model) or ModelSpec.from_callable(model)
    raise TypeError(f"model must be a Pyro program, a zoo name or a ModelSpec, got {type(model).__name__}")


def _zoo_spec_of(program: Callable[..., Any]) -> ModelSpec | None:
    """The zoo's spec whose program ``program`` is (``bayesgen.models.char_lm.model`` is the spec
    ``"char_lm"``, with its observed sites, guide and decoder), else None."""
    module = sys.modules.get(getattr(program, "__module__", None) or "")
    spec = getattr(module, "SPEC", None)
    if isinstance(spec, ModelSpec) and spec.model is program and module.__name__.startswith("bayesgen.models."):
        return spec
    return None


def _argument_names(model: Any) -> list[str]:
    """The keyword arguments of the program that ``model`` names (none where it names none)."""
    try:
        program = resolve_model(model).model
    except (LookupError, TypeError, ValueError):  # an unknown name or a bad model: prepare says so
        return []
    return list(keyword_parameters(program) or ())


def _resolve_device(device: str | torch.device | None, data: Mapping[str, Any]) -> torch.device:
    if device is not None:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N' (a torch.device), got {device!r}") from exc
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device='{device}' but CUDA is not available on this machine")
        return resolved
    for value in data.values():
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            return value.device
    return torch.device("cpu")


def with_fixed_arguments(fitted: Problem, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (new data for a fit of ``fitted``) with the fit's values of its spec's fixed
    arguments where they are left out; a ``ValueError`` naming one given with another value (a
    text encoded with its own alphabet would be read in the fit's, silently)."""
    out = dict(data)
    for key in fitted.spec.fixed_arguments:
        if key not in fitted.data:
            continue
        fit_value = fitted.data[key]
        if key not in out:
            out[key] = fit_value
        elif not _same_value(out[key], fit_value):
            raise ValueError(f"data['{key}'] is {_shown(out[key])}, but the fit was made with {_shown(fit_value)}: "
                             f"'{key}' defines the fitted model ({fitted.spec.name}), so leave it out to take the "
                             "fit's (for text, encode it with the fit's alphabet)")
    return out


def _array(value: Any) -> np.ndarray:
    return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)


def _same_value(given: Any, fitted: Any) -> bool:
    given, fitted = _array(given), _array(fitted)
    return given.shape == fitted.shape and bool(np.all(given == fitted))


def _shown(value: Any) -> str:
    """A value for a message: itself where short, else its shape."""
    array = _array(value)
    return repr(array.tolist()) if array.size <= 8 else f"an array of shape {array.shape}"


def prepare(model: Callable[..., Any] | str | ModelSpec, data: Mapping[str, Any] | None,
            device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> Problem:
    """Resolve the model, check and convert the data, choose the dtype and trace the program once.

    The dtype follows :mod:`bayesgen.dtypes`: ``dtype`` when given, else the parameters'
    dtype where the program has networks, else the data's. Raises clear
    ``TypeError``/``ValueError`` naming the argument or site for bad input (DESIGN.md
    section 7), before any engine runs.
    """
    spec = resolve_model(model)
    if data is None:
        data = spec.load_data() if spec.load_data is not None else {}
    check_arguments(spec.model, data)
    resolved = _resolve_device(device, data)
    requested = requested_dtype(dtype)
    chosen = requested or data_dtype(data) or torch.get_default_dtype()
    tensors, prototype, kinds = _traced(spec, data, resolved, chosen)
    if prototype is None:  # the run failed where the data met parameters of another dtype
        chosen = _parameter_dtype(kinds, requested)
        tensors, prototype, kinds = _traced(spec, data, resolved, chosen)
        if prototype is None:
            _parameter_dtype(kinds, None)  # raises: parameters of two dtypes
    if set(kinds.values()) - {chosen}:  # the run passed, but the parameters have another dtype
        chosen = _parameter_dtype(kinds, requested)
        tensors, prototype, _ = _traced(spec, data, resolved, chosen)
    assert prototype is not None
    if not spec.observed:
        spec = dataclasses.replace(spec, observed=infer_observed(prototype, tensors))
    as_floats = observations_as_floats(prototype, spec, tensors)
    if as_floats:  # a Bernoulli's 0/1 as integers, a count as a Python int: the program runs again on floats
        tensors, prototype, _ = _traced(spec, {**data, **as_floats}, resolved, chosen)
    check_observed(prototype, spec)
    check_single_rows(prototype, tensors, spec)
    return Problem(spec=spec, data=tensors, prototype=prototype, device=resolved, dtype=chosen)


def _traced(spec: ModelSpec, data: Mapping[str, Any], device: torch.device,
            dtype: torch.dtype) -> tuple[dict[str, Any], Trace | None, dict[str, torch.dtype]]:
    """The data as tensors in ``dtype``, one trace of the program computing in it, and the dtypes
    of the parameters it read. The trace is None where the program failed after reading a
    parameter of another dtype (float64 data met a float32 network); any other failure raises.

    The run uses an empty parameter store, so that a ``pyro.param`` left by an earlier fit (in
    another dtype, say) is made afresh, as the fit will make it.
    """
    tensors = to_tensors(data, device, dtype)
    parameters = ParameterDtypes()
    with computing_in(dtype), on_device(device), pyro.get_param_store().scope():
        try:
            return tensors, trace_prototype(parameters(spec.model), tensors), parameters.found
        except ProgramError:
            if set(parameters.found.values()) - {dtype}:
                return tensors, None, parameters.found
            raise


def _parameter_dtype(kinds: Mapping[str, torch.dtype], requested: torch.dtype | None) -> torch.dtype:
    """The one dtype of a program's parameters (made before the fit, as networks are), which the
    fit computes in; a ``ValueError`` naming them when they disagree with each other or with an
    explicit ``dtype=``."""
    found = sorted({dtype_name(kind) for kind in kinds.values()})
    named = ", ".join(f"'{name}' ({dtype_name(kind)})" for name, kind in list(kinds.items())[:4])
    if len(found) > 1:
        raise ValueError(f"the program's parameters mix dtypes {found}: {named}; convert its networks to "
                         "one (module.float() or module.double()) before fitting")
    if requested is not None:
        raise ValueError(f"dtype={dtype_name(requested)!r} was asked, but the program's parameters are "
                         f"{found[0]}: {named}; convert the networks (module.to(torch.{dtype_name(requested)})) "
                         f"or leave dtype out to compute in {found[0]}")
    return next(iter(kinds.values()))


def pointwise_log_likelihood_of(fit: Fit, draws: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The pointwise log-likelihood of a fit's own data (:attr:`Fit.log_likelihood`), observed
    site -> ``(chain, draw, *batch_shape)`` (see ``marginal.observation_log_likelihood``), on the
    fit's device, the trained parameters already in place."""
    problem = fit.problem
    if problem is None:
        raise ValueError("this fit was loaded from a file without its program")
    with torch.no_grad():
        loglik = observation_log_likelihood(fit, problem, draws)
    # the spec's observed sites: a pyro.factor (a penalty, a weight prior) is no observation
    observed = problem.spec.observed or loglik
    return _numpy({name: value for name, value in loglik.items() if name in observed}) or {}


def _numpy(tensors: Mapping[str, torch.Tensor] | None) -> dict[str, np.ndarray] | None:
    if tensors is None:
        return None
    return {k: v.detach().cpu().numpy() for k, v in tensors.items()}


@rng_restored()
def fit(model: Callable[..., Any] | str | ModelSpec, data: Mapping[str, Any] | None = None, *,
        engine: str | Engine = "nuts", seed: int = 0, device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None, progress: bool | None = None, distributed: bool = False,
        **options: Any) -> Fit:
    """Fit a Pyro program with any engine and return a ``bg.Fit``.

    Parameters
    ----------
    model : callable, str or ModelSpec
        A Pyro program, a zoo name such as ``"eight_schools"``, or a ``ModelSpec``.
    data : mapping, optional
        Keyword arguments of the program. Observed sites take their values from the
        program's own ``obs=`` arguments. None with a zoo name loads its default data set.
    engine : str or engine instance
        ``"nuts"``, ``"hmc"``, ``"svi"``, ``"mle"``, ``"map"``, ``"laplace"``, or an instance
        such as ``bg.inference.NUTS(num_chains=4)``.
    seed : int
        Seeds torch and Pyro; the same seed gives identical draws.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``; None means CPU unless the data live on a GPU.
    dtype : str, optional
        ``"float32"`` or ``"float64"``, the precision the fit computes in. None keeps the
        data's: float64 arrays (numpy's default) fit in float64, float32 tensors in float32,
        and a program with networks computes in their dtype. Recorded in
        ``fit.settings["dtype"]``; see :mod:`bayesgen.dtypes` for the whole rule.
    progress : bool, optional
        Show a progress bar; None shows one when stderr is a terminal.
    distributed : bool
        Share the fit among the processes of the initialised ``torch.distributed`` group (a
        script launched with ``torchrun``; see :mod:`bayesgen.distributed`). Each process takes
        its ``subsample_size`` items of every step's minibatch and the gradients are averaged,
        so ``W`` processes fit as one process with ``W`` times the subsample would (exactly, for
        programs whose latents are global; local latents inside the plate share their guide's
        noise between processes, so the estimate is unbiased but less averaged); every process
        returns the same fit. Every process must be given the same model, data, seed and options,
        which is checked; rank 0 writes the checkpoints, so on several machines ``resume`` needs
        its file where every process can read it. For the step-wise engines (``"svi"``, and
        ``"mle"``/``"map"`` of programs with networks) of programs with a plate that subsamples; and for ``"nuts"``
        and ``"hmc"``, whose chains it shares out (the draws are those of one process).
    **options
        The named engine's settings (e.g. ``num_samples=500``); unknown options raise
        ``TypeError`` listing the valid ones.

    Returns
    -------
    Fit

    Notes
    -----
    The networks of the program and of a guide callable (``pyro.module``, ``PyroModule``) train
    during the fit and hold their old weights again afterwards, so that every fit starts from
    the same weights and one seed gives one fit. The trained weights are in ``fit.params``, and
    ``fit.generate``, ``fit.predict`` and ``bg.evaluate`` run the program with them.

    Examples
    --------
    A Pyro program whose observed argument defaults to None (so that it also simulates),
    fitted by two engines and compared:

    >>> import pyro, pyro.distributions as dist, bayesgen as bg
    >>> def coin(flips=None):
    ...     p = pyro.sample("p", dist.Beta(1.0, 1.0))
    ...     with pyro.plate("tosses", 20):
    ...         pyro.sample("flips", dist.Bernoulli(p), obs=flips)
    >>> flips = [1.0] * 14 + [0.0] * 6
    >>> nuts = bg.fit(coin, {"flips": flips}, engine="nuts", num_samples=500, progress=False)
    >>> laplace = bg.fit(coin, {"flips": flips}, engine="laplace")
    >>> round(float(nuts.posterior["p"].mean()), 1)  # Beta(15, 7): mean 0.68
    0.7
    >>> table = bg.compare({"nuts": nuts, "laplace": laplace})  # one row per engine and parameter
    >>> bg.check(nuts)  # plain-language findings; empty when nothing is wrong
    []
    """
    seed = check_seed(seed)
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True, False or None (a bar where stderr is a terminal), got {progress!r}")
    if isinstance(engine, str):
        engine = make_engine(engine, options, _argument_names(model))
    elif not callable(getattr(engine, "run", None)):
        raise TypeError(f"engine must be an engine's name ({', '.join(list_engines())}) or an engine instance "
                        f"such as bg.inference.NUTS(num_chains=4), got {engine!r}")
    elif options:
        raise TypeError(f"options {sorted(options)} are only accepted with an engine name; "
                        "set them on the engine instance instead")
    else:
        engine = checked_engine(engine)
    start = time.perf_counter()
    shares = getattr(engine, "shares_minibatches", False) or getattr(engine, "splits_chains", False)
    if distributed and not shares:  # before the data are read and checked
        raise ValueError(f"engine '{type(engine).name}' cannot share a fit among processes; distributed=True "
                         "is for the step-wise engines 'svi', 'mle' and 'map', whose minibatches it shares out, "
                         "and for 'nuts' and 'hmc', whose chains it shares out")
    ranks = Ranks.of_group() if distributed else Ranks()
    problem = prepare(model, data, device, dtype)
    problem.ranks = ranks
    ranks.require_same({"model": problem.spec.name, "data": data_digest(problem.data), "seed": str(seed),
                        "engine": type(engine).name, **_described_settings(engine)})
    _check_engine_applies(model, problem.spec, type(engine).name)
    _warn_of_unobserved_data(problem, data)
    with computing_in(problem.dtype):
        return _run(engine, problem, seed, sys.stderr.isatty() if progress is None else progress, start)


def _warn_of_unobserved_data(problem: Problem, data: Mapping[str, Any] | None) -> None:
    """Warn where a bare program's argument that defaults to None, named like one of its sample
    sites, was not given (``def model(X, y=None)`` fitted with ``{"X": X}``): the site is then a
    latent, so the fit is of the prior, which nothing else would say."""
    if problem.spec.observed or data is None:
        return
    parameters, nodes = keyword_parameters(problem.spec.model) or {}, problem.prototype.nodes
    left_out = [name for name, parameter in parameters.items()
                if parameter.default is None and name not in data and name in nodes
                and nodes[name]["type"] == "sample" and not nodes[name]["is_observed"]]
    if left_out:
        names = ", ".join(f"'{name}'" for name in left_out)
        warnings.warn(f"the program observes no data: its site(s) {names} are sampled as unknowns because their "
                      f"argument(s) were not given, so this fits the prior; pass "
                      f"{', '.join(f'data[{name!r}]' for name in left_out)} to condition on them",
                      UserWarning, stacklevel=4)


def _check_engine_applies(model: Any, spec: ModelSpec, engine: str) -> None:
    """Warn where a zoo model is fitted by a registered engine its spec does not list (a VAE is
    meant for ``svi`` with the encoder its module ships, which ``bg.evaluate`` then scores
    held-out images with). A user's program or spec, or a user's engine, is the user's call."""
    zoo = isinstance(model, str) or (isinstance(model, ModelSpec) and is_zoo_spec(model))
    if zoo and engine in list_engines() and engine not in spec.engines:
        warnings.warn(f"engine '{engine}' is not among those model '{spec.name}' is meant for "
                      f"({', '.join(spec.engines)}; its ModelSpec.engines): the fit may not mean what it "
                      "would under them", UserWarning, stacklevel=4)


def _run(engine: Engine, problem: Problem, seed: int, show: bool, start: float) -> Fit:
    """Run ``engine`` on the prepared problem and build the Fit (in the problem's dtype)."""
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    guide = getattr(engine, "guide", None)  # svi's: a guide callable's networks are kept alike
    with kept_networks(problem, guide if callable(guide) and not isinstance(guide, type) else None):
        result: EngineResult = engine.run(problem, seed=seed, progress=show)
        if result.info.get("interrupted"):  # an engine that caught Ctrl-C hands back the work done
            warnings.warn(f"engine '{type(engine).name}' was interrupted (KeyboardInterrupt): "
                          f"{result.info.get('interrupted_note', 'the fit holds the work done so far')}; "
                          "the fit is incomplete (fit.info['interrupted']) and bg.check reports it",
                          RuntimeWarning, stacklevel=4)
        params = {name: pyro.param(name).detach().clone() for name in pyro.get_param_store().keys()}
        # copies before the networks are reset: an engine may hand back their very tensors
        point = None if result.point is None else {k: v.detach().cpu().numpy().copy() for k, v in result.point.items()}
        post_start = time.perf_counter()
        with torch.no_grad():  # with the trained networks, before they are reset: a deterministic may read them
            deterministic = deterministic_sites(problem.density, result.draws)
            latents = problem.density.latent_names
            if point is not None and deterministic and result.point is not None and set(latents) <= set(result.point):
                # the deterministic sites at the optimum (their standard errors: below)
                at_point = deterministic_sites(problem.density,
                                               {name: result.point[name][None, None] for name in latents})
                point.update({name: value[0, 0].detach().cpu().numpy() for name, value in at_point.items()})
    stderr = _numpy(result.stderr)
    if stderr is not None and point is not None:
        # a deterministic site's: the sd of its values at the normal approximation's draws (the delta method's
        # spread, by Monte Carlo)
        for name in (name for name in point if name not in stderr and name in deterministic):
            values = deterministic[name].reshape((-1,) + tuple(deterministic[name].shape[2:]))
            if values.shape[0] > 1 and values.is_floating_point():
                stderr[name] = values.std(0).detach().cpu().numpy()
            else:  # one draw, or an integer or bool site: no spread to read
                stderr[name] = np.full(tuple(values.shape[1:]), np.nan)
    timing = {**result.timing, "postprocess": time.perf_counter() - post_start}
    timing["total"] = time.perf_counter() - start
    observed = {name: _observed_data(problem, name) for name in problem.spec.observed
                if not isinstance(problem.data[problem.spec.observed[name]], MappedRows)}
    info = {**result.info, **_notes(problem, getattr(engine, "splits_chains", False))}
    return Fit(
        engine=type(engine).name, kind=result.kind,
        posterior=_numpy({**result.draws, **deterministic}) or {},
        sample_stats=_numpy(result.sample_stats) or {}, observed_data=_numpy(observed) or {},
        settings={**{f.name: getattr(engine, f.name) for f in dataclasses.fields(engine)},
                  "dtype": dtype_name(problem.dtype)}, timing=timing,
        point=point, stderr=stderr, info=info,
        dims=site_dims(problem), model_name=problem.spec.name,
        params=_numpy(params) or {}, constant_data=constant_arguments(problem), problem=problem,
    )


def site_dims(problem: Problem) -> dict[str, list[str]]:
    """ArviZ dims of the program's sites: the spec's where it names them, else a plate's name
    for each dimension that a plate indexes (as ``az.from_pyro``/``az.from_numpyro`` give), so
    that sites of one plate share a dimension and their arrays line up (``y1 + y2`` of two
    observations in ``plate("obs", 25)`` is 25 values, not a 25 x 25 outer sum). Other
    dimensions keep ArviZ's ``{site}_dim_{i}``; a plate named like a site or an argument, or of
    another size than the site's dimension there (a minibatch), names nothing."""
    sites = {name: site for name, site in problem.prototype.nodes.items()
             if site["type"] == "sample" and not is_subsample(site)}
    taken = set(sites) | set(problem.data) | {"chain", "draw", "step"}  # ArviZ's own dims, and the loss's
    dims = {}
    for name, site in sites.items():
        if name in problem.spec.dims:
            continue
        shape = tuple(site["value"].shape)
        batch = len(shape) - len(site["fn"].event_shape)
        by_dim = {frame.dim: frame for frame in site["cond_indep_stack"]
                  if frame.dim is not None and frame.name not in taken}
        names = [by_dim[j - batch].name if j - batch in by_dim and by_dim[j - batch].size == shape[j]
                 else f"{name}_dim_{j}" for j in range(len(shape))]
        if any(not label.startswith(f"{name}_dim_") for label in names):
            dims[name] = names
    return {**dims, **{name: list(value) for name, value in problem.spec.dims.items()}}


def _described_settings(engine: Engine) -> dict[str, str]:
    """An engine's settings as text that every process gives alike (a function by its name)."""
    if not dataclasses.is_dataclass(engine):
        return {}
    return {f"option {field.name}": describe_option(getattr(engine, field.name)) for field in dataclasses.fields(engine)
            if field.name not in CHECKPOINT_OPTIONS}  # where files go may differ between processes


def _notes(problem: Problem, splits_chains: bool) -> dict[str, str]:
    """``Fit.info`` entries that say what a fit of data at scale leaves out, and why."""
    notes = {}
    subsampled = problem.density.subsampled
    if subsampled:
        plates = "; ".join(f"plate '{plate}' takes {subsample_size} of its {size} items per run"
                           for plate, (subsample_size, size) in subsampled.items())
        notes["log_likelihood"] = f"not computed: {plates}, so no run of the program scores every observation"
    mapped = {key: value.array for key, value in problem.data.items() if isinstance(value, MappedRows)}
    if mapped:
        notes["observed_data"] = (f"not kept: {', '.join(mapped)} memory-mapped, read a minibatch at a time; "
                                  "the fit holds no copy")
        # where the rows live, so that bg.load(path, model=...) maps the same values again
        notes["mapped_files"] = {key: place_in_file(array) for key, array in mapped.items()}
    renamed = {site: argument for site, argument in problem.spec.observed.items() if site != argument}
    if renamed:  # what bg.load needs to pass each observed site's data back to its argument
        notes["observed_arguments"] = renamed
    if problem.ranks.world_size > 1:
        share = "of the chains" if splits_chains else "of every minibatch"
        notes["processes"] = f"{problem.ranks.world_size} (torch.distributed), each with its share {share}"
    return notes


def _observed_data(problem: Problem, site: str) -> torch.Tensor:
    """What the site observed in the first run of the program; for a site in a plate that
    subsamples, that run saw one minibatch, so the data are taken from its argument whole."""
    node = problem.prototype.nodes[site]
    if any(frame.name in problem.density.subsampled for frame in node["cond_indep_stack"]):
        return problem.data[problem.spec.observed[site]]
    return node["value"]


def constant_arguments(problem: Problem) -> dict[str, np.ndarray]:
    """The program's arguments other than the observed ones, as arrays (0-d for numbers and strings): what
    ``bg.load(path, model=...)`` needs beside the observed data to rebuild the problem."""
    observed = set(problem.spec.observed.values())
    out = {}
    for key, value in problem.data.items():
        if key in observed or value is None:
            continue
        if isinstance(value, torch.Tensor):
            out[key] = value.detach().cpu().numpy()
        elif isinstance(value, (bool, int, float, str, np.number)):  # a string: which network, a name
            out[key] = np.asarray(value)
    return out
