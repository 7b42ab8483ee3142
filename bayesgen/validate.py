"""Check and convert user data before any engine runs (DESIGN.md section 7)."""

from __future__ import annotations

import difflib
import inspect
import numbers
from typing import Any, Callable, Mapping

import numpy as np
import torch
from pyro.poutine.trace_struct import Trace

from bayesgen.program import is_deterministic, is_subsample
from bayesgen.spec import ModelSpec

__all__ = ["check_arguments", "check_observed", "infer_observed", "to_tensors"]


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
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise TypeError(f"data key '{key}' is not an argument of the program.{hint} "
                            f"The program takes: {', '.join(names) or 'no arguments'}")
    missing = [n for n, p in params.items()
               if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in data]
    if missing and not partial:
        raise TypeError(f"data is missing required program argument(s): {', '.join(missing)}")


def _as_tensor(key: str, value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        array = value
    elif isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "to_numpy"):
        raw = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"data['{key}'] has dtype {raw.dtype}; expected numbers (bool, int or float)")
        array = torch.as_tensor(raw.astype(np.float64) if raw.dtype.kind == "f" else raw)
    else:
        return value
    if array.is_floating_point():
        array = array.to(torch.get_default_dtype())
        bad = ~torch.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(f"data['{key}'] contains {array[index].item()} at index {index}; "
                             "observed data must be finite (drop or impute missing values)")
    return array.to(device)


def to_tensors(data: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Convert arrays to tensors on ``device`` (floats in the default dtype); scalars pass through."""
    out = {}
    for key, value in data.items():
        if isinstance(value, (bool, numbers.Number, str)) or value is None:
            out[key] = value
        else:
            out[key] = _as_tensor(key, value, device)
    return out


def infer_observed(trace: Trace, data: Mapping[str, Any]) -> dict[str, str]:
    """Observed site -> the argument whose tensor the program passed as ``obs``."""
    found = {}
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and site["is_observed"] and not is_deterministic(site):
            for key, value in data.items():
                if isinstance(value, torch.Tensor) and site["value"] is value:
                    found[name] = key
    return found


def check_observed(trace: Trace, spec: ModelSpec) -> None:
    """Observed values must have exactly the site's shape (no silent broadcasting) and be finite."""
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or is_deterministic(site) or is_subsample(site):
            continue
        expected = tuple(site["fn"].batch_shape + site["fn"].event_shape)
        value = site["value"]
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
    for name in spec.observed:
        site = trace.nodes.get(name)
        if site is None or not site["is_observed"]:
            raise ValueError(f"site '{name}' is observed in this model but got no data: "
                             f"pass data['{spec.observed[name]}']")
