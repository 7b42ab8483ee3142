"""Save a Fit to one self-describing netCDF file and load it back, without pickle."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from bayesgen.convert import az
from bayesgen.result import Fit

__all__ = ["load", "save"]

_META = "bayesgen_meta"


def _jsonable(arrays: dict[str, np.ndarray] | None) -> dict[str, Any] | None:
    if arrays is None:
        return None
    return {k: {"shape": list(np.shape(v)), "data": np.asarray(v, dtype=float).ravel().tolist()}
            for k, v in arrays.items()}


def _arrays(meta: dict[str, Any] | None) -> dict[str, np.ndarray] | None:
    if meta is None:
        return None
    return {k: np.asarray(v["data"], dtype=float).reshape(v["shape"]) for k, v in meta.items()}


def save(fit: Fit, path: str) -> None:
    """Write ``fit`` to ``path`` as netCDF: the ArviZ groups plus a JSON attribute with the rest."""
    idata = fit.to_arviz()
    meta = {
        "engine": fit.engine, "kind": fit.kind, "settings": fit.settings, "timing": fit.timing,
        "point": _jsonable(fit.point), "stderr": _jsonable(fit.stderr), "info": fit.info,
        "dims": fit.dims, "model_name": fit.model_name,
    }
    idata.posterior.attrs[_META] = json.dumps(meta, default=repr)
    idata.to_netcdf(path)


def _group(idata: Any, name: str) -> dict[str, np.ndarray]:
    if name not in idata.groups():
        return {}
    return {str(k): v.values for k, v in idata[name].data_vars.items()}


def load(path: str) -> Fit:
    """Read a Fit written by ``Fit.save``. Only netCDF and JSON are parsed; nothing is unpickled.

    The loaded fit has no program attached, so ``predict`` is unavailable on it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no saved fit at {path}")
    try:
        idata = az.from_netcdf(path)
    except OSError as exc:  # h5netcdf's error for a file that is not netCDF names HDF5 internals
        raise ValueError(f"{path} is not a netCDF file written by Fit.save") from exc
    raw = idata.posterior.attrs.get(_META)
    if raw is None:
        raise ValueError(f"{path} was not written by bayesgen (no '{_META}' attribute)")
    meta = json.loads(raw)
    return Fit(
        engine=meta["engine"], kind=meta["kind"],
        posterior=_group(idata, "posterior"), sample_stats=_group(idata, "sample_stats"),
        observed_data=_group(idata, "observed_data"), _log_likelihood=_group(idata, "log_likelihood"),
        settings=meta["settings"], timing=meta["timing"], point=_arrays(meta["point"]),
        stderr=_arrays(meta["stderr"]), info=meta["info"], dims=meta["dims"],
        model_name=meta["model_name"], posterior_predictive=_group(idata, "posterior_predictive"),
    )
