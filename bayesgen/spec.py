"""ModelSpec: a Pyro program plus what bayesgen needs to know about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A Pyro program with its metadata (DESIGN.md section 5).

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"eight_schools"``.
    model : callable
        The Pyro program; observed arguments default to None so that it also simulates.
    observed : mapping
        Observed sample site -> the program argument that carries its data. Inferred from
        the first trace when empty (an argument whose tensor is a site's ``obs``).
    dims : mapping
        Site -> ArviZ dimension names for the site's own dims (no chain/draw).
    description : str
        One line for ``bg.list_models()``.
    card : str
        The model card: a paragraph on what the model is for, with references.
    load_data : callable, optional
        Returns the default data set as a dict of program arguments.
    simulate : callable, optional
        ``simulate(seed, ...) -> (data, true_params)`` drawing synthetic data.
    engines : tuple of str
        The engines that apply to this model.
    guide : callable, optional
        The guide the model ships (an amortised encoder, for instance), a Pyro guide taking the
        program's arguments; the ``svi`` engine uses it when no other guide is asked for.
    """

    name: str
    model: Callable[..., Any]
    observed: Mapping[str, str] = field(default_factory=dict)
    dims: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    card: str = ""
    load_data: Callable[[], dict[str, Any]] | None = None
    simulate: Callable[..., tuple[dict[str, Any], dict[str, Any]]] | None = None
    engines: tuple[str, ...] = ("nuts", "hmc", "svi", "mle", "map", "laplace")
    guide: Callable[..., Any] | None = None

    @classmethod
    def from_callable(cls, model: Callable[..., Any]) -> "ModelSpec":
        """Wrap a bare Pyro program."""
        return cls(name=getattr(model, "__name__", "model"), model=model)
