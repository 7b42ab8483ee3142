"""Check and convert user data before any engine runs (DESIGN.md section 7)."""

from __future__ import annotations

import hashlib
import inspect
import math
import numbers
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import pyro
import pyro.distributions
import pyro.util
import torch
from pyro.poutine.trace_struct import Trace
from torch.distributions import constraints

from bayesgen._hints import did_you_mean
from bayesgen.mapped import MappedRows, is_mapped, place_in_file
from bayesgen.program import is_deterministic, is_subsample, run_program
from bayesgen.spec import ModelSpec

__all__ = ["check_arguments", "check_observed", "check_single_rows", "data_digest", "has_discrete_support",
           "infer_observed", "keyword_parameters", "missing_arguments", "observations_as_floats", "observed_by_name",
           "to_tensors"]


def keyword_parameters(model: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The program's parameters that can be passed by keyword; None if its signature cannot be read."""
    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return None
    return {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def missing_arguments(model: Callable[..., Any], data: Mapping[str, Any]) -> list[str]:
    """The program's required arguments (no default) that ``data`` does not give, in signature order.

    Empty when the signature cannot be read.
    """
    params = keyword_parameters(model) or {}
    return [n for n, p in params.items() if p.default is p.empty and n not in data]


def check_arguments(model: Callable[..., Any], data: Mapping[str, Any], partial: bool = False) -> None:
    """Data keys must be the program's keyword arguments, and (unless ``partial``) required ones present."""
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping of the program's keyword arguments, got {type(data).__name__}")
    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    names = list(keyword_parameters(model) or {})
    for key in data:
        if key not in names:
            raise TypeError(f"data key '{key}' is not an argument of the program.{did_you_mean(key, names)} "
                            f"The program takes: {', '.join(names) or 'no arguments'}")
    for key, value in data.items():
        _check_like_default(key, value, params[key].default)
    missing = missing_arguments(model, data)
    if missing and not partial:
        raise TypeError(f"data is missing required program argument(s): {', '.join(missing)}")


def _check_like_default(key: str, value: Any, default: Any) -> None:
    """An argument whose default is True/False or a number takes no string: ``centered="no"``
    would otherwise count as true in the program's ``if centered:``, and ``hidden="400"`` fail
    deep inside torch. (Arrays and tensors pass: a mask may default to True.)"""
    if not isinstance(value, str):
        return
    if isinstance(default, bool):
        raise TypeError(f"data['{key}'] is a switch of the program (default {default}): pass True or False, "
                        f"got {value!r}")
    if isinstance(default, numbers.Number):
        raise TypeError(f"data['{key}'] must be a number like its default {default!r}, got the string {value!r}")


def _as_tensor(key: str, value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """One data value as a tensor on ``device``; values that are not arrays pass through.

    Rules: tensors, numpy arrays, lists, tuples and anything with ``to_numpy`` (pandas) are
    arrays. Their elements must be bool, integer or floating numbers (not strings, objects,
    complex numbers or ragged nested lists: a ``TypeError`` naming ``data[key]``). Floating
    arrays take ``dtype`` (the fit's, see :mod:`bayesgen.dtypes`) and must be finite (a
    ``ValueError`` with the first bad index), since a NaN in a likelihood or a covariate
    makes every density NaN. Integer and bool arrays keep their dtype (counts, indices, masks),
    except unsigned integers, which become int64 (torch reads a uint8 index as a mask).
    """
    if isinstance(value, torch.Tensor):
        array = value
        if not (array.is_floating_point() or array.dtype == torch.bool or _integer(array.dtype)):
            raise TypeError(f"data['{key}'] has dtype {array.dtype}; expected numbers (bool, int or float)")
        if array.dtype == torch.uint8:  # as for numpy's: an index, not a mask
            array = array.long()
    elif isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "to_numpy"):
        try:
            raw = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"data['{key}'] cannot be read as an array of numbers ({exc}); nested lists "
                            "must be rectangular") from exc
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"data['{key}'] has dtype {raw.dtype}; expected numbers (bool, int or float)")
        if raw.dtype.kind == "u":
            # torch has no uint64 arithmetic, and indexes with a uint8 tensor as with a boolean
            # mask: x[index] would pick rows by truth, not by number
            raw = raw.astype(np.int64)
        if raw.dtype.kind == "f":
            raw = raw.astype(np.float64)
        elif not raw.flags.writeable:  # a pandas column under copy-on-write: torch warns on sharing it
            raw = raw.copy()
        array = torch.as_tensor(raw)
    else:
        return value
    if array.is_floating_point():
        array = array.to(dtype)
        bad = ~torch.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(f"data['{key}'] contains {array[index].item()} at index {index}; "
                             "observed data must be finite (drop or impute missing values)")
    return array.to(device)


def _integer(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` is one of torch's integer dtypes."""
    return dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def to_tensors(data: Mapping[str, Any], device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Convert arrays to tensors on ``device`` (floats in ``dtype``, by default torch's default
    dtype); scalars pass through.

    Numpy scalars (``np.float32(2.0)``, ``np.int64(3)``) become the Python numbers they
    hold, so that they act as the numbers they are (a plate size, a scalar observation).
    A NaN number is refused with a ``ValueError`` naming the argument: no program means
    it (infinite numbers may be bounds, and observed ones are refused by
    :func:`check_observed`). Memory-mapped arrays (``np.load(path, mmap_mode="r")``) become
    :class:`~bayesgen.mapped.MappedRows`, read a minibatch at a time; their finiteness is
    checked in chunks.
    """
    out = {}
    for key, value in data.items():
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"data['{key}'] is nan; data must be finite (drop or impute missing values)")
        if isinstance(value, (bool, numbers.Number, str)) or value is None:
            out[key] = value
        elif is_mapped(value):
            out[key] = MappedRows(key, value, device, dtype or torch.get_default_dtype())
            out[key].check_finite()
        else:
            out[key] = _as_tensor(key, value, device, dtype or torch.get_default_dtype())
    return out


def infer_observed(trace: Trace, data: Mapping[str, Any]) -> dict[str, str]:
    """Observed site -> the argument whose tensor the program passed as ``obs``, or whose Python
    number it passed, where the argument is named like the site (a number is no object of its own:
    ``n=21, k=21`` would hold the same one)."""
    found = {}
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and site["is_observed"] and not is_deterministic(site):
            for key, value in data.items():
                if site["value"] is value and (isinstance(value, torch.Tensor)
                                               or key == name and isinstance(value, (bool, int, float))):
                    found[name] = key
    return found


def observed_by_name(model: Callable[..., Any], data: Mapping[str, Any]) -> dict[str, str]:
    """Observed site -> argument, for a program that follows Pyro's and NumPyro's convention.

    The convention: the data of an observed site reach the program through a keyword
    argument named like the site and defaulting to None, passed on as the site's
    ``obs``, so that the program simulates the site when the argument is left out.
    ``infer_observed`` needs the data's tensors to recognise their arguments; this
    finds the observed arguments when no data are at hand (``bg.sbc`` simulates them).

    Rule: a candidate is a keyword parameter of ``model`` whose default is None and
    whose name is a sample site (not deterministic, not a subsample index) of the
    program's trace run with ``data`` (other arguments at their defaults). A candidate
    is taken only once confirmed: the program is run with the candidates left None,
    then again with this one set to the value its site took, and that site must now be
    observed (``site["is_observed"]``) with exactly that value. The name alone is not
    trusted, because an argument named like a site may serve another purpose (an
    initial value, a mask) and treating it as data would fit the wrong model.

    Parameters
    ----------
    model : callable
        The Pyro program.
    data : mapping
        Program arguments to run it with (covariates, sizes); any value the data give
        for a candidate is replaced by None, then by the simulated value.

    Returns
    -------
    dict
        Site -> argument (the same name); empty when nothing can be told: no confirmed
        candidate, a signature that cannot be read, or required arguments (see
        :func:`missing_arguments`) that ``data`` do not give. Pyro's global random state
        is left as it was.

    Raises
    ------
    bayesgen.program.ProgramError
        If the program raises in one of these runs.
    """
    params = keyword_parameters(model)
    if params is None or missing_arguments(model, data):
        return {}
    state = pyro.util.get_rng_state()
    try:
        with torch.no_grad():
            given = to_tensors(data, torch.device("cpu"))
            sites = _sample_sites(run_program(model, given))
            candidates = [name for name, p in params.items() if p.default is None and name in sites]
            if not candidates:
                return {}
            blank = {**given, **{name: None for name in candidates}}
            simulated = _sample_sites(run_program(model, blank))
            found = {}
            for name in candidates:
                site = simulated.get(name)
                if site is not None and not site["is_observed"] and _observes(model, blank, name, site["value"]):
                    found[name] = name
            return found
    finally:
        pyro.util.set_rng_state(state)


def _sample_sites(trace: Trace) -> dict[str, dict[str, Any]]:
    """The trace's sample sites, without deterministic and subsample-index sites."""
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not is_deterministic(site) and not is_subsample(site)}


def _observes(model: Callable[..., Any], blank: Mapping[str, Any], name: str, value: torch.Tensor) -> bool:
    """Whether the program, run with argument ``name`` set to ``value``, observes site ``name`` at exactly it."""
    site = run_program(model, {**blank, name: value}).nodes.get(name)
    if site is None or site["type"] != "sample" or not site["is_observed"]:
        return False
    observed = torch.as_tensor(site["value"])
    return observed.shape == value.shape and torch.equal(observed.to(value.dtype), value)


def _scores(fn: Any, value: torch.Tensor) -> bool:
    """Whether ``fn.log_prob`` takes ``value`` (its dtype; a value outside the support still counts)."""
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            fn.log_prob(value)
    except (RuntimeError, TypeError, AttributeError):
        return False
    except ValueError:  # the distribution's own support check: reported by _check_support
        return True
    return True


def has_discrete_support(fn: Any) -> bool:
    """Whether a distribution's support is discrete (False where it declares none, as an observed
    site's distribution need not)."""
    try:
        return bool(fn.support.is_discrete)
    except NotImplementedError:
        return False


def observations_as_floats(trace: Trace, spec: ModelSpec, data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Observed arguments to pass again as float arrays: Python numbers (``obs=21``, which a
    ``log_prob`` cannot take), and whole-number or bool arrays of a discrete site that its
    distribution scores as floats only (0/1 responses of a Bernoulli), as PyMC and Stan take
    them. Integer data that their distribution scores as they are (a Poisson's counts) stay
    integers; bools under a continuous distribution are refused by :func:`check_observed`."""
    out = {}
    for name, argument in spec.observed.items():
        site, value = trace.nodes.get(name), data.get(argument)
        if site is None or not site["is_observed"] or site["value"] is not value:
            continue
        if isinstance(value, (bool, int, float)) and (not isinstance(value, bool) or has_discrete_support(site["fn"])):
            out[argument] = np.asarray(float(value))
        elif isinstance(value, torch.Tensor) and not value.is_floating_point() and has_discrete_support(site["fn"]) \
                and not _scores(site["fn"], value) and _scores(site["fn"], value.to(torch.get_default_dtype())):
            out[argument] = value.cpu().numpy().astype(float)
    return out


def _check_scorable(name: str, site: Mapping[str, Any], value: torch.Tensor, spec: ModelSpec) -> None:
    """Bool or integer data must be ones the site's distribution can score.

    Torch refuses some of them deep inside ``log_prob`` (``Normal`` on a bool tensor: "Subtraction
    ... with a bool tensor is not supported"), which would surface only once an engine runs.
    One ``log_prob`` of the data here turns that into a ``TypeError`` naming the site and the fix.
    """
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            site["fn"].log_prob(value)
    except ValueError:  # the distribution's own support check, made when it was built: _check_support says more
        return
    except (RuntimeError, TypeError) as exc:
        argument = spec.observed.get(name)
        data = f"data['{argument}']" if argument else "the data"
        raise TypeError(
            f"observed site '{name}' has data of dtype {value.dtype}, which its distribution "
            f"{type(site['fn']).__name__} cannot score ({(str(exc).splitlines() or [''])[0]}); pass {data} "
            "as floats (e.g. y.astype(float))"
        ) from exc


#: The distributions that wrap another without changing what values it takes.
_WRAPPERS = (torch.distributions.Independent, pyro.distributions.MaskedDistribution,
             pyro.distributions.ExpandedDistribution)


def _kept(site: Mapping[str, Any], dims: int) -> torch.Tensor | None:
    """Which entries of a site's value (its first ``dims`` dims) the program scores: a boolean
    tensor that broadcasts to them, all True without masks, None where a mask is False.

    A mask broadcasts to the batch shape of the distribution it masks, which starts at a
    dimension of the value that wrapping shifts: ``Independent`` moves batch dims to the event
    (the start stays), ``expand`` adds leading batch dims (the start moves right).
    """
    kept = torch.ones((1,) * dims, dtype=torch.bool)
    fn, start = site["fn"], 0
    masks = [(site["mask"], tuple(fn.batch_shape), 0)]
    while isinstance(fn, _WRAPPERS):
        if isinstance(fn, pyro.distributions.MaskedDistribution):
            masks.append((fn._mask, tuple(fn.batch_shape), start))
        if isinstance(fn, pyro.distributions.ExpandedDistribution):
            start += len(fn.batch_shape) - len(fn.base_dist.batch_shape)
        fn = fn.base_dist
    for mask, batch, first in masks:
        if mask is False:
            return None
        if isinstance(mask, torch.Tensor):
            shape = (1,) * first + batch + (1,) * (dims - first - len(batch))
            kept = kept & mask.to(torch.bool).expand(batch).reshape(shape)
    return kept


def _check_support(name: str, site: Mapping[str, Any], value: torch.Tensor, spec: ModelSpec) -> None:
    """Observed values must lie in the support of the site's distribution (where the program
    does not mask them out), checked here so that every path meets it: a fit fails later in a
    log-density evaluation, but scoring held-out data (``bg.evaluate``) runs without Pyro's
    validation and would return a number for pixels of 2 under a Bernoulli.

    Distributions that do not declare their support (or whose support depends on the value) are
    not checked, nor are entries masked out: by ``poutine.mask`` or by a distribution's
    ``.mask(...)`` at any level of its wrappers (missing values held by a placeholder such as -1).
    """
    try:
        support = site["fn"].support
        while isinstance(support, constraints.independent):  # check entries, not whole events
            support = support.base_constraint
        if constraints.is_dependent(support):
            return
        inside = support.check(value)
        kept = _kept(site, inside.dim())
    except (NotImplementedError, RuntimeError, TypeError, ValueError):
        return
    if kept is None:  # all masked out
        return
    inside = inside | ~kept.expand_as(inside)
    if bool(inside.all()):
        return
    outside = tuple((~inside).nonzero()[0].tolist())
    shown = f": {float(value[outside]):g}" if len(outside) == value.dim() else ""
    argument = spec.observed.get(name)
    data = f"data['{argument}']" if argument else "the data"
    fn = site["fn"]
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    raise ValueError(f"observed site '{name}' has a value outside the support of its distribution "
                     f"{type(fn).__name__} ({support}) at index {outside}{shown}; check {data}")


def check_observed(trace: Trace, spec: ModelSpec) -> None:
    """Observed values must have exactly the site's shape (no silent broadcasting), be finite,
    lie in the support of the site's distribution, and (bool or integer data) be of a dtype the
    site's distribution can score."""
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or is_deterministic(site) or is_subsample(site):
            continue
        expected = tuple(site["fn"].batch_shape + site["fn"].event_shape)
        if isinstance(site["value"], np.ndarray):
            raise TypeError(f"observed site '{name}' got a numpy array as obs; Pyro scores tensors only: pass the "
                            "data argument itself (bayesgen makes it a tensor) or torch.as_tensor(...) of it")
        if isinstance(site["value"], numbers.Number) and name not in spec.observed \
                and not _scores(site["fn"], site["value"]):  # obs=1.0 in the program itself scores as it is
            raise TypeError(f"observed site '{name}' got the Python number {site['value']!r} as obs, which its "
                            f"distribution cannot score, from an argument bayesgen cannot tell (none is named "
                            f"'{name}'): pass it as an array "
                            f"(np.asarray(...)), name the argument '{name}', or declare it in a "
                            f"ModelSpec(observed={{'{name}': argument}})")
        if not isinstance(site["value"], (torch.Tensor, numbers.Number)):
            argument = spec.observed.get(name)
            raise TypeError(f"observed site '{name}' got {type(site['value']).__name__} {site['value']!r:.40} as its "
                            f"data; pass {f'data[{argument!r}]' if argument else 'its data'} as numbers (an array)")
        value = torch.as_tensor(site["value"])  # a number observed as such (``obs=1.0``) has no shape
        if tuple(value.shape) != expected:
            raise ValueError(
                f"observed site '{name}' has data of shape {tuple(value.shape)} but the site's "
                f"distribution has shape {expected} (batch {tuple(site['fn'].batch_shape)} + event "
                f"{tuple(site['fn'].event_shape)}); reshape the data, since broadcasting would "
                "silently change the likelihood"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            index = tuple(int(i) for i in (~torch.isfinite(value)).nonzero()[0])
            raise ValueError(f"observed site '{name}' has a non-finite value at index {index}")
        if not value.is_floating_point():
            _check_scorable(name, site, value, spec)
        _check_support(name, site, value, spec)
    for name in spec.observed:
        site = trace.nodes.get(name)
        if site is None or not site["is_observed"]:
            raise ValueError(f"site '{name}' is observed in this model but got no data: "
                             f"pass data['{spec.observed[name]}']")


def check_single_rows(trace: Trace, data: Mapping[str, Any], spec: ModelSpec) -> None:
    """Warn about a data argument with one row where the observations sit in a larger plate.

    Inside ``pyro.plate("data", N)`` a covariate of shape ``(1, p)`` or ``(1,)`` is broadcast
    to all N observations without an error (Pyro's plate semantics), and after the plate has
    expanded the site, its one row looks the same as a parameter shared by design (an
    intercept). So the rule is on the data: an argument whose first dimension is 1, in a
    program whose observed sites sit in a plate of size N > 1 that another argument has N
    rows for, and that has no plate of size 1 the row could belong to. It is a warning, not
    an error, because such an argument can be meant (a one-element array of a constant).
    """
    observed_arguments = set(spec.observed.values())
    plate_sizes: set[int] = set()
    observation_plates: dict[int, str] = {}
    for site in _sample_sites(trace).values():
        for frame in site["cond_indep_stack"]:
            size = int(frame.full_size or frame.size)
            plate_sizes.add(size)
            if site["is_observed"] and frame.vectorized and size > 1:
                observation_plates.setdefault(size, frame.name)
    if not observation_plates or 1 in plate_sizes:
        return
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor) and v.dim() >= 1}
    for key, value in tensors.items():
        if key in observed_arguments or value.shape[0] != 1:
            continue
        for size, plate in observation_plates.items():
            rows = [k for k, v in tensors.items() if k != key and v.shape[0] == size]
            if rows:
                warnings.warn(
                    f"data['{key}'] has 1 row (shape {tuple(value.shape)}) but the observations sit in "
                    f"plate '{plate}' of size {size}, as many as the rows of data['{rows[0]}']: inside the "
                    f"plate its one row is used for every observation. Pass one row per observation, or "
                    "drop the first dimension if one value is meant for all", stacklevel=2)
                break


def data_digest(data: Mapping[str, Any]) -> str:
    """A digest of a program's arguments, to tell whether two runs were given the same data (a
    checkpoint resumed, the processes of a distributed fit): the values of tensors and arrays
    held in memory; the file, place and shape of memory-mapped ones (reading them whole would
    defeat the mapping); the repr of anything else.

    Parameters
    ----------
    data : mapping
        Argument name -> value, as :func:`to_tensors` makes them.

    Returns
    -------
    str
        32 hexadecimal digits.
    """
    from bayesgen.registry import describe_option

    digest = hashlib.blake2b(digest_size=16)

    def add(value: Any) -> None:
        if isinstance(value, np.ndarray) and not isinstance(value, np.memmap) and value.dtype.kind in "biufc":
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(memoryview(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
        elif isinstance(value, (MappedRows, np.memmap)):
            place = place_in_file(value.array if isinstance(value, MappedRows) else value)
            # as written before place_in_file, so that an earlier run's checkpoint still resumes
            digest.update(f"{place['filename']}@{place['offset']}{tuple(place['strides'])}{tuple(place['shape'])}"
                          f"{np.dtype(place['dtype'])}".encode())
        elif isinstance(value, torch.nn.Module):  # its weights, not only its structure
            digest.update(describe_option(value).encode())
            for key, tensor in value.state_dict().items():
                digest.update(key.encode())
                add(tensor)
        else:
            digest.update(describe_option(value).encode())  # a function by its name, not its address

    for name in sorted(data):
        digest.update(name.encode())
        add(data[name])
    return digest.hexdigest()

