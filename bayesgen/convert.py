"""The one module that builds ArviZ objects from a Fit, reads them back and draws with ArviZ.

With :mod:`bayesgen.diagnostics` it is bayesgen's boundary with ArviZ: other modules call the
named functions here and there, never ArviZ itself, so that an ArviZ release that changes its
interface (1.x reorganises it) is met in two files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bayesgen._lazy import LazyModule
from bayesgen.validate import has_discrete_support

if TYPE_CHECKING:
    from arviz import InferenceData

    from bayesgen.result import Fit

#: The group of statistics recorded per optimisation step, not per draw (``loss``).
OPTIMIZATION = "optimization"

#: ArviZ, imported at first use; silenced: 0.23's refactor notice
_az: Any = LazyModule("arviz", quiet=FutureWarning)

__all__ = ["OPTIMIZATION", "InferenceData", "is_per_step", "plot_densities", "plot_rank_ecdf", "prior_inference_data",
           "read_netcdf", "to_inference_data"]


def _dims(fit: "Fit", groups: list[dict[str, np.ndarray]]) -> dict[str, list[str]]:
    names = {name for group in groups for name in group}
    return {name: list(dims) for name, dims in fit.dims.items() if name in names}


def is_per_step(stat: str) -> bool:
    """Whether a ``sample_stats`` entry holds one value per optimisation step, not per draw: the
    engines' losses (``loss``, ``discriminator_loss``), by name, whatever their length (an ``svi``
    run of 1,000 steps and 1,000 draws has a loss as long as its draws)."""
    return stat == "loss" or stat.endswith("_loss")


def _discrete_sites(fit: "Fit") -> set[str]:
    """The observed sites whose distributions have discrete support (known from the program)."""
    if fit.problem is None:
        return set()
    nodes = fit.problem.prototype.nodes
    return {name for name in fit.problem.spec.observed
            if name in nodes and has_discrete_support(nodes[name]["fn"])}


def _as_counts(arrays: dict[str, np.ndarray], discrete: set[str]) -> dict[str, np.ndarray]:
    """``arrays`` with the discrete sites' whole-numbered floats as int64, which ArviZ plots as the
    counts they are (``az.plot_ppc`` draws a binary outcome held as floats as a smooth density)."""
    return {name: value.astype(np.int64) if name in discrete and np.issubdtype(value.dtype, np.floating)
            and np.all(np.mod(value, 1) == 0) else value for name, value in arrays.items()}


def to_inference_data(fit: "Fit") -> "InferenceData":
    """Build ``arviz.InferenceData`` from a Fit.

    Groups: posterior, sample_stats, log_likelihood, observed_data, constant_data (the
    program's other arguments), and posterior_predictive when computed. Every array has
    ``(chain, draw)`` leading dims except observed and constant data. The observed and predicted
    values of sites with discrete support are integers. Statistics that are not
    one per draw (an optimiser's ``loss``, one per step) go to a group :data:`OPTIMIZATION`
    with dims ``(chain, step)``: in sample_stats they would pose as 3,000 draws beside the
    posterior's 1,000 (ArviZ's summaries, and xarray's alignment of the groups, pad with NaN).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesgen.result import Fit
    >>> fit = Fit("nuts", "samples", {"mu": np.zeros((2, 5))}, {"diverging": np.zeros((2, 5), bool)},
    ...           {}, {}, {})
    >>> idata = to_inference_data(fit)
    >>> dict(idata.posterior.sizes)
    {'chain': 2, 'draw': 5}
    """
    per_step = {name: value for name, value in fit.sample_stats.items() if is_per_step(name)}
    per_draw = {name: value for name, value in fit.sample_stats.items() if name not in per_step}
    discrete = _discrete_sites(fit)
    groups: dict[str, Any] = {
        "posterior": fit.posterior or None,
        "sample_stats": per_draw or None,
        "log_likelihood": fit.log_likelihood or None,
        "observed_data": _as_counts(fit.observed_data, discrete) or None,
        "constant_data": fit.constant_data or None,
        "posterior_predictive": _as_counts(fit.posterior_predictive, discrete) or None,
    }
    dims = _dims(fit, [g for g in groups.values() if g])
    attrs = {"inference_library": "bayesgen", "engine": fit.engine, "kind": fit.kind}
    idata = _az.from_dict(**groups, dims=dims, attrs=attrs)
    if per_step:
        import xarray as xr

        idata.add_groups({OPTIMIZATION: xr.Dataset(
            {name: (("chain", "step", *(f"{name}_dim_{i}" for i in range(np.ndim(value) - 2))), np.asarray(value))
             for name, value in per_step.items()}, attrs=attrs)})
    return idata


def prior_inference_data(prior: dict[str, np.ndarray], prior_predictive: dict[str, np.ndarray],
                         observed_data: dict[str, np.ndarray], constant_data: dict[str, np.ndarray],
                         dims: dict[str, list[str]], discrete: set[str]) -> "InferenceData":
    """``arviz.InferenceData`` of draws from a program's prior (``bg.sample_prior``): groups prior,
    prior_predictive, observed_data and constant_data, the sites in ``discrete`` as integers."""
    groups = {"prior": prior or None, "prior_predictive": _as_counts(prior_predictive, discrete) or None,
              "observed_data": _as_counts(observed_data, discrete) or None, "constant_data": constant_data or None}
    names = {name for group in groups.values() if group for name in group}
    return _az.from_dict(**groups, dims={name: list(d) for name, d in dims.items() if name in names},
                         attrs={"inference_library": "bayesgen"})


def read_netcdf(path: str) -> "InferenceData":
    """The ``InferenceData`` saved at ``path`` (``Fit.save`` writes one)."""
    return _az.from_netcdf(path)


def plot_densities(datasets: list["InferenceData"], labels: list[str], var_names: list[str] | None) -> Any:
    """Marginal posterior densities of several fits overlaid, one panel per scalar parameter
    (``arviz.plot_density``, lightly shaded); returns the axes.

    Each panel is titled on one line (``theta[1]``, where ArviZ puts the index on a second line
    that runs into the tick labels of the panel above) and has at most five ticks on its axis
    (a wide range, from a fit far off the others, would print numbers into each other)."""
    from matplotlib.ticker import MaxNLocator

    axes = _az.plot_density(datasets, data_labels=labels, var_names=var_names, shade=0.1)
    for axis in np.ravel(axes):
        name, _, index = axis.get_title().partition("\n")
        if index:
            axis.set_title(f"{name}[{index}]", fontsize=axis.title.get_fontsize())
        axis.xaxis.set_major_locator(MaxNLocator(5))
    return axes


def plot_rank_ecdf(ranks: np.ndarray, num_draws: int, *, ci_prob: float = 0.95, ax: Any = None) -> Any:
    """ECDF-difference plot of SBC ranks against the uniform, with a simultaneous band.

    Ranks ``r`` in ``0..num_draws`` become fractional ranks ``(r + 1) / (num_draws + 1)``
    and are evaluated at the ``num_draws + 1`` points ``i / (num_draws + 1)``, where their
    ECDF equals that of the ranks under the discrete uniform. The band is ArviZ's
    "optimized" simultaneous band (Saeilynoja, Buerkner & Vehtari 2022, "Graphical test
    for discrete uniformity", Stat. Comput. 32): the pointwise binomial level is raised
    until the ECDF of uniform ranks stays inside the band at all ``num_draws + 1`` points
    at once with probability ``ci_prob``. Those points do not depend on the ranks, as the
    method requires. (Checked: for 20 to 200 simulations and ``ci_prob`` 0.95 or 0.995,
    the share of 20,000 sets of uniform ranks that stayed inside was within 0.003 of
    ``ci_prob``.) Returns the axes.

    Raises
    ------
    ValueError
        If ``ci_prob`` is not strictly between 0 and 1.
    """
    from scipy.stats import uniform

    if not 0 < ci_prob < 1:
        raise ValueError(f"ci_prob must lie strictly between 0 and 1, got {ci_prob!r}")
    grid = np.arange(1, num_draws + 2) / (num_draws + 1)
    values = (np.asarray(ranks) + 1) / (num_draws + 1)
    return _az.plot_ecdf(values, eval_points=grid, cdf=uniform(0, 1).cdf, difference=True,
                        confidence_bands="optimized", ci_prob=ci_prob, ax=ax)
