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
        Site or program argument -> ArviZ dimension names for its own dims (no chain/draw):
        naming an argument's dims too (``X``: obs, feature) lets xarray align it with the sites.
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
    size_argument : str, optional
        The program argument that sets how many observations a run simulates when its observed
        arguments are None (a text model's number of sequences, a signal model's length):
        ``fit.generate(n)`` sets it to ``n`` and runs the program once, so that drawing costs
        what it returns. Without it, ``generate`` repeats runs of the data's size.
    decode : callable, optional
        Maps program arguments (numpy arrays), the observed ones holding generated values, to
        what the observations mean (strings for a text model, a signal in [-1, 1] for a signal
        model): ``fit.generate`` returns its result. The module's ``decode``, the inverse of
        its ``encode``.
    fixed_arguments : tuple of str
        Arguments that define the fitted model rather than its data (network sizes, a text
        model's alphabet): ``bg.evaluate``, ``bg.anomaly_scores`` and ``fit.predict`` take them
        from the fit where new data leave them out, and refuse other values, under which the
        fit's weights would mean something else.
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
    size_argument: str | None = None
    decode: Callable[[Mapping[str, Any]], Any] | None = None
    fixed_arguments: tuple[str, ...] = ()

    @classmethod
    def from_callable(cls, model: Callable[..., Any]) -> "ModelSpec":
        """Wrap a bare Pyro program.

        Parameters
        ----------
        model : callable
            The Pyro program.

        Returns
        -------
        ModelSpec
            Named after ``model.__name__`` (``"model"`` where it has none), every other field at
            its default: the observed sites are inferred from the first trace, and there is no
            data loader, simulator, description or guide.
        """
        return cls(name=getattr(model, "__name__", "model"), model=model)
