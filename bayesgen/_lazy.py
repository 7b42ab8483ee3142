"""Modules imported at their first use, so that ``import bayesgen`` costs little beyond torch and pyro.

ArviZ (with xarray, matplotlib and scipy.stats behind it), scipy.stats and pandas together take
several times as long to import as the rest of bayesgen; a script that only fits and saves never
needs them, and the command line's ``--help`` should answer at once.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

__all__ = ["LazyModule"]


class LazyModule:
    """Stands for module ``name`` and imports it at the first attribute access.

    Parameters
    ----------
    name : str
        The module's import name, e.g. ``"scipy.stats"``.
    quiet : type of Warning, optional
        A warning category silenced while the module is imported (ArviZ 0.23 announces its
        refactor with a ``FutureWarning`` at import).
    """

    def __init__(self, name: str, quiet: type[Warning] | None = None) -> None:
        self._name = name
        self._quiet = quiet
        self._module: ModuleType | None = None

    def _load(self) -> ModuleType:
        if self._module is None:
            with warnings.catch_warnings():
                if self._quiet is not None:
                    warnings.simplefilter("ignore", self._quiet)
                self._module = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)  # never import for copy/pickle probes of private names
        return getattr(self._load(), attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<module {self._name!r}, {state}>"
