"""Save a Fit to one self-describing netCDF file and load it back, without pickle."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable

import numpy as np
import torch

from bayesgen._files import atomic_write
from bayesgen._lazy import LazyModule
from bayesgen.convert import OPTIMIZATION, read_netcdf
from bayesgen.result import Fit
from bayesgen.spec import ModelSpec

__all__ = ["load", "save"]

_META = "bayesgen_meta"
#: The netCDF group that holds ``Fit.params``, one variable per parameter, written after ArviZ's groups.
_PARAMS = "bayesgen_params"
xr: Any = LazyModule("xarray")


#: The netCDF groups, written after ArviZ's, that hold the optimum and its standard errors, one
#: variable per site in its own dtype (earlier files kept them as JSON lists of floats, still read).
_POINT, _STDERR = "bayesgen_point", "bayesgen_stderr"


def _arrays(meta: dict[str, Any] | str | None, idata: Any, group: str) -> dict[str, np.ndarray] | None:
    """``Fit.point`` or ``Fit.stderr`` as the file holds it: None, a group of arrays, or JSON."""
    if meta is None:
        return None
    if isinstance(meta, str):
        return _named_arrays(idata, group)
    return {k: np.asarray(v["data"], dtype=float).reshape(v["shape"]) for k, v in meta.items()}


def _write_named_arrays(path: str, group: str, arrays: dict[str, np.ndarray]) -> None:
    """Append ``arrays`` to the netCDF file at ``path`` as group ``group``: variables ``p0``,
    ``p1``... with the names (such as "decoder$$$fc.weight", which netCDF variable names may not
    be) kept in an attribute."""
    names = list(arrays)
    variables = {f"p{i}": ([f"p{i}_{axis}" for axis in range(np.ndim(arrays[name]))], np.asarray(arrays[name]))
                 for i, name in enumerate(names)}
    xr.Dataset(variables, attrs={"names": json.dumps(names)}).to_netcdf(path, mode="a", group=group,
                                                                         engine="h5netcdf")


def _named_arrays(idata: Any, group: str) -> dict[str, np.ndarray]:
    """What :func:`_write_named_arrays` wrote (empty where the group is absent)."""
    if group not in idata.groups():
        return {}
    data = idata[group]
    names = json.loads(data.attrs["names"])
    return {name: data[f"p{i}"].values for i, name in enumerate(names)}


def save(fit: Fit, path: str) -> None:
    """Write ``fit`` to ``path`` as netCDF: the ArviZ groups plus a JSON attribute with the rest.

    The file appears whole or not at all (:func:`atomic_write`): an existing file at ``path``
    is replaced only once the new one is complete.
    """
    idata, renamed = _without_slashes(fit.to_arviz())
    meta = {
        "engine": fit.engine, "kind": fit.kind, "settings": fit.settings, "timing": fit.timing,
        "point": None if fit.point is None else _POINT, "stderr": None if fit.stderr is None else _STDERR,
        "info": fit.info,
        "dims": fit.dims, "model_name": fit.model_name, "zoo_model": _is_zoo_model(fit),
        # ArviZ gives a number a dimension of length 1: the shapes bring back 0-d arguments as 0-d
        "constant_shapes": {key: list(np.shape(value)) for key, value in fit.constant_data.items()},
        # the ArviZ groups hold a discrete site's values as integers; the fit holds them as the program took them
        "data_dtypes": {group: {key: str(value.dtype) for key, value in arrays.items()}
                        for group, arrays in (("observed_data", fit.observed_data),
                                              ("posterior_predictive", fit.posterior_predictive))},
        "renamed": renamed,
    }
    _meta_group(idata).attrs[_META] = json.dumps(meta, default=repr)

    def write(temporary: str) -> None:
        idata.to_netcdf(temporary)
        for group, arrays in ((_PARAMS, fit.params), (_POINT, fit.point), (_STDERR, fit.stderr)):
            if arrays:
                _write_named_arrays(temporary, group, arrays)

    atomic_write(path, write)


def _without_slashes(idata: Any) -> tuple[Any, dict[str, str]]:
    """``idata`` with each variable and dimension name that holds a '/' (which netCDF refuses; Pyro's
    ``autoname.scope`` makes names such as ``layer/w``) written with '%2F' instead, and a map of
    each variable's new name to its own."""
    renamed = {}
    for group in idata.groups():
        dataset = idata[group]
        names = {name: name.replace("/", "%2F") for name in [*dataset.variables, *dataset.dims] if "/" in str(name)}
        if names:
            setattr(idata, group, dataset.rename(names))
            renamed.update({new: str(old) for old, new in names.items() if old in dataset.data_vars})
    return idata, renamed


def _group(idata: Any, name: str, renamed: dict[str, str]) -> dict[str, np.ndarray]:
    if name not in idata.groups():
        return {}
    return {renamed.get(str(k), str(k)): v.values for k, v in idata[name].data_vars.items()}


def load(path: str, model: Callable[..., Any] | str | ModelSpec | None = None) -> Fit:
    """Read a Fit written by ``Fit.save``. Only netCDF and JSON are parsed; nothing is unpickled.

    Parameters
    ----------
    path : str
        The file.
    model : callable, str or ModelSpec, optional
        The program the fit belongs to (not stored in the file: code is never unpickled). With
        it, the loaded fit is rebuilt from the file's observed and constant data and can
        ``predict``, ``generate`` and be evaluated like a fresh one; without it, it holds the
        draws, statistics and parameters only, unless it is a fit of a zoo model, whose
        program is found by its name. A program that runs on the file's data but names its
        sites otherwise or scores the data by another likelihood than the fit's is refused.

    Returns
    -------
    Fit
        The fit as it was saved; its log-likelihood and posterior predictive draws as stored.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no saved fit at {path}")
    try:
        idata = read_netcdf(path)
    except OSError as exc:  # h5netcdf's error for a file that is not netCDF names HDF5 internals
        raise ValueError(f"{path} is not a netCDF file written by Fit.save") from exc
    group = _meta_group(idata)
    raw = group.attrs.get(_META) if group is not None else None
    if raw is None:
        raise ValueError(f"{path} was not written by bayesgen (no '{_META}' attribute)")
    meta = json.loads(raw)
    renamed = meta.get("renamed", {})
    dtypes = meta.get("data_dtypes", {})
    fit = Fit(
        engine=meta["engine"], kind=meta["kind"],
        posterior=_group(idata, "posterior", renamed),
        sample_stats={**_group(idata, "sample_stats", renamed), **_group(idata, OPTIMIZATION, renamed)},
        observed_data=_retyped(_group(idata, "observed_data", renamed), dtypes.get("observed_data", {})),
        _log_likelihood=_group(idata, "log_likelihood", renamed),
        settings=meta["settings"], timing=meta["timing"], point=_arrays(meta["point"], idata, _POINT),
        stderr=_arrays(meta["stderr"], idata, _STDERR), info=meta["info"], dims=meta["dims"],
        model_name=meta["model_name"],
        posterior_predictive=_retyped(_group(idata, "posterior_predictive", renamed),
                                      dtypes.get("posterior_predictive", {})),
        params=_named_arrays(idata, _PARAMS),
        constant_data=_reshaped(_group(idata, "constant_data", renamed), meta.get("constant_shapes", {})),
    )
    if model is None and meta.get("zoo_model"):
        model = fit.model_name  # a zoo model's program is found by its name, not unpickled
    if model is not None:
        fit.problem = _problem(fit, model, path, meta.get("string_arguments", {}))  # files of 0.x kept them apart
        _check_same_program(fit, path)
        _warn_of_a_lost_encoder(fit, path)
    return fit


def _warn_of_a_lost_encoder(fit: Fit, path: str) -> None:
    """Warn where the fit was made with its own guide function that amortises local latents (an
    encoder), which the file cannot hold, and the program given has no guide: the held-out
    likelihood, anomaly scores and replicates need it, and would be NaN or refused."""
    from bayesgen.marginal import lost_guide_function, undrawn_local_latents

    assert fit.problem is not None
    if lost_guide_function(fit) and fit.problem.spec.guide is None and undrawn_local_latents(fit, fit.problem):
        warnings.warn(f"the fit in {path} was made with its own guide function ({fit.settings['guide']}), whose "
                      "code a file does not hold: held-out likelihoods and anomaly scores need it as the encoder "
                      "of the local latents; load with bg.load(path, model=bg.ModelSpec(name=..., model=..., "
                      "guide=guide))", UserWarning, stacklevel=3)


def _mapped_again(fit: Fit, path: str) -> dict[str, np.memmap]:
    """The memory-mapped arguments the fit read a minibatch at a time (not in the file), mapped
    again from their files; a ``FileNotFoundError`` naming the argument where one is gone, a
    ``ValueError`` for values that do not lie contiguously in their file (a slice of columns),
    which one map cannot give again."""
    mapped = {}
    for argument, where in fit.info.get("mapped_files", {}).items():
        if where["filename"] is None or where["order"] is None:
            raise ValueError(f"the fit in {path} read data['{argument}'] from a slice of a memory-mapped array whose "
                             "values do not lie together in its file (columns, or a step), which the file does not "
                             "hold and cannot map again; save the slice with np.save and fit it")
        if not os.path.isfile(where["filename"]):
            raise FileNotFoundError(f"the fit in {path} read data['{argument}'] from the memory-mapped file "
                                    f"{where['filename']}, which the fit does not hold and is not there now")
        mapped[argument] = np.memmap(where["filename"], dtype=np.dtype(where["dtype"]), mode="r",
                                     offset=where["offset"], shape=tuple(where["shape"]), order=where["order"])
    return mapped


def _check_same_program(fit: Fit, path: str) -> None:
    """Refuse a program that runs on the file's data but is not the one the fit was made with.

    A program of the same arguments can still name its sites otherwise, or score the data by
    another likelihood; its predictions and held-out scores would then be wrong without a word.
    Three checks catch that: every site the file holds draws of is a latent or deterministic site
    of the program, every parameter the program reads is one the fit holds, and the program's
    pointwise log-likelihood at the first draw equals the one the file holds (computed from the fitting program when the fit was saved), to a tolerance
    set by the dtype. Fits whose stored log-likelihood is an importance-weighted estimate (a
    VAE's) or absent are checked by their sites only.
    """
    assert fit.problem is not None
    density = fit.problem.density
    known = set(density.latent_names) | set(density.deterministic)
    unknown = sorted(set(fit.posterior) - known)
    if unknown:
        raise ValueError(f"the fit in {path} holds draws of {unknown}, which the program given as model= "
                         f"('{fit.problem.spec.name}') does not sample; pass the program it was fitted with")
    weights = sorted(name for name, site in density.prototype.nodes.items()
                     if site["type"] == "param" and name not in fit.params)
    if weights:
        raise ValueError(f"the program given as model= ('{fit.problem.spec.name}') has parameters {weights} that "
                         f"the fit in {path} does not hold: pass the program it was fitted with")
    stored = fit._log_likelihood
    if not stored or fit.num_draws == 0 or set(density.latent_names) - set(fit.posterior):
        return
    from bayesgen._seeding import rng_restored
    from bayesgen.fitting import pointwise_log_likelihood_of
    from bayesgen.generate import trained

    first = {name: value[:1, :1] for name, value in fit._latent_draws(fit.problem).items()}
    with trained(fit.problem, fit.params), rng_restored():
        recomputed = pointwise_log_likelihood_of(fit, first)
    tolerance = 1e-3 if fit.problem.dtype == torch.float32 else 1e-8
    for site, values in stored.items():
        again = recomputed.get(site)
        if again is None or again.shape != values[:1, :1].shape or not np.allclose(
                again, values[:1, :1], rtol=tolerance, atol=tolerance, equal_nan=True):
            raise ValueError(f"the program given as model= ('{fit.problem.spec.name}') scores observed site "
                             f"'{site}' differently from the program the fit in {path} was made with; pass "
                             "that program")


def _is_zoo_model(fit: Fit) -> bool:
    """Whether the fit's program is the zoo's program of its name (so that ``load`` finds it)."""
    from bayesgen.registry import is_zoo_spec

    return fit.problem is not None and is_zoo_spec(fit.problem.spec)


def _meta_group(idata: Any) -> Any:
    """The group whose attributes hold the fit's JSON record: the posterior, or for a program whose
    only unknowns are network weights (nothing to draw) the observed data."""
    for name in ("posterior", "observed_data", "sample_stats", OPTIMIZATION):
        if name in idata.groups():
            return idata[name]
    return None


def _retyped(arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    return {key: value.astype(dtypes[key]) if key in dtypes else value for key, value in arrays.items()}


def _reshaped(arrays: dict[str, np.ndarray], shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    return {key: value.reshape(shapes[key]) if key in shapes else value for key, value in arrays.items()}


def _problem(fit: Fit, model: Callable[..., Any] | str | ModelSpec, path: str, strings: dict[str, str]) -> Any:
    """The fit's problem rebuilt from ``model`` and the data the file holds (``strings``: the string
    arguments that files written before they joined ``constant_data`` kept in their JSON record)."""
    from bayesgen.fitting import prepare, resolve_model

    spec = resolve_model(model)
    arguments = {key: value.item() if value.ndim == 0 else value for key, value in fit.constant_data.items()}
    arguments.update(strings)
    arguments.update(_mapped_again(fit, path))
    renamed = fit.info.get("observed_arguments", {})  # a site observing an argument of another name
    observed = dict(spec.observed) or {site: renamed.get(site, site) for site in fit.observed_data}
    arguments.update({observed.get(site, site): value for site, value in fit.observed_data.items()})
    try:
        return prepare(spec, arguments, dtype=fit.settings.get("dtype"))
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"the fit in {path} (of model '{fit.model_name}') does not run under the program given "
                        f"as model= ('{spec.name}'), which must be the one it was fitted with: {exc}") from exc
