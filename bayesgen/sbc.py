"""bg.sbc: simulation-based calibration of any model under any engine (Talts et al. 2018)."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from bayesgen._counts import check_count
from bayesgen._files import save_figure
from bayesgen._lazy import LazyModule
from bayesgen._seeding import rng_restored
from bayesgen.convert import plot_rank_ecdf
from bayesgen.diagnostics import ess
from bayesgen.distributed import Ranks
from bayesgen.engine import Engine
from bayesgen.fitting import fit, prepare
from bayesgen.metrics import chi_square_test
from bayesgen.postprocess import pointwise_log_likelihood
from bayesgen.program import is_subsample, run_program
from bayesgen.registry import get_model, make_engine
from bayesgen.result import Fit
from bayesgen.spec import ModelSpec
from bayesgen.validate import missing_arguments, observed_by_name, to_tensors

__all__ = ["LOG_LIKELIHOOD", "SBCResult", "sbc"]

pd: Any = LazyModule("pandas")

#: The name of the ranked test quantity log p(y | theta) of the simulated data.
LOG_LIKELIHOOD = "log_likelihood"
_MAX_BINS = 20


@dataclass(frozen=True, eq=False)
class SBCResult:
    """Rank statistics of a simulation-based calibration run and their uniformity tests.

    Attributes
    ----------
    ranks : dict
        Quantity -> integer ranks ``(num_simulations,)`` in ``0..num_draws``: for each
        simulation, how many of the ``num_draws`` thinned posterior draws fall below the
        true value. Quantities are every scalar posterior site (``"beta[1]"``) and
        ``"log_likelihood"``, log p(y | theta) of the simulated data.
    num_draws : int
        Posterior draws per simulation that the true value is ranked among.
    tests : pandas.DataFrame
        One row per quantity: ``chi2`` and ``pvalue`` of the chi-square test of uniform
        ranks, ``pvalue_holm`` (Holm-adjusted over the quantities) and ``rejected``
        (``pvalue_holm <= alpha``).
    alpha : float
        Family-wise significance level of the tests.
    min_ess : numpy.ndarray
        Per simulation, the smallest bulk effective sample size over the quantities
        (sampling engines; NaN for approximations, whose draws are independent).
    seeds : numpy.ndarray
        Per simulation, the seeds of the simulation and of the fit.
    """

    ranks: dict[str, np.ndarray]
    num_draws: int
    tests: pd.DataFrame
    alpha: float
    min_ess: np.ndarray
    seeds: np.ndarray

    @property
    def rejected(self) -> list[str]:
        """The quantities whose ranks are not uniform at the corrected level: the engine is miscalibrated there.

        Empty also where nothing could be tested (:attr:`untested`): read both.
        """
        return self.tests.index[self.tests["rejected"]].tolist()

    def __repr__(self) -> str:
        """One line of what was tested and found (the dataclass's own would print every rank)."""
        verdict = f"rejected={self.rejected}" if self.rejected else "no quantity rejected"
        untested = f", untested={self.untested}" if self.untested else ""
        return (f"SBCResult({len(self.seeds)} simulations x {self.num_draws} draws, {len(self.ranks)} quantities, "
                f"alpha={self.alpha}: {verdict}{untested})")

    @property
    def untested(self) -> list[str]:
        """The quantities whose ranks were too few to test (p-value NaN: with fewer than 10
        simulations, no two bins of ranks expect five each)."""
        return self.tests.index[self.tests["pvalue"].isna()].tolist()

    @property
    def band_prob(self) -> float:
        """Per-panel probability of the simultaneous bands that :meth:`plot` draws by default.

        The rule is Bonferroni over the panels: ``1 - alpha / m`` for ``m`` quantities, so
        that for a calibrated engine every curve stays inside its band with probability at
        least ``1 - alpha``, the family-wise level of the tests. The reason: Holm's first
        step is this Bonferroni threshold (a quantity with ``pvalue * m <= alpha`` is
        rejected), so picture and verdict both work at family-wise level ``alpha``. They
        remain two different tests of uniformity (the band bounds the cumulative curve,
        the chi-square compares binned counts), so in borderline cases a curve may leave
        its band while the test passes or the reverse; but neither is looser than the
        other by a factor of ``m``, as a 95% band per panel beside 1% tests would be.
        """
        return 1 - self.alpha / len(self.ranks)

    def plot(self, path: str | None = None, *, ci_prob: float | None = None) -> np.ndarray:
        """ECDF-difference plots of the ranks, one panel per quantity, with simultaneous bands.

        A calibrated engine's curve stays inside the band; a U-shape (curve falling then
        rising) means over-confident posteriors, a hump under-confident ones, and a curve
        above or below zero a biased one. Each panel's title gives the quantity and its
        Holm-adjusted p-value, red when the test rejects it; the figure's title states
        the band's level.

        Parameters
        ----------
        path : str, optional
            Also save the figure there.
        ci_prob : float, optional
            Probability that a calibrated engine's whole curve stays inside its panel's
            band (a simultaneous band, not pointwise). By default :attr:`band_prob`,
            ``1 - alpha / num_quantities``, which matches the family-wise level of the tests.

        Returns
        -------
        numpy.ndarray
            The matplotlib axes, ``(rows, columns)``.
        """
        import matplotlib.pyplot as plt

        prob = self.band_prob if ci_prob is None else ci_prob
        if not 0 < prob < 1:
            raise ValueError(f"ci_prob must lie strictly between 0 and 1, got {ci_prob!r}")
        names = list(self.ranks)
        ncols = min(4, len(names))
        nrows = math.ceil(len(names) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(5.0, 3.2 * ncols), 2.6 * nrows + 0.5),
                                 squeeze=False)
        for ax, name in zip(axes.flat, names):
            plot_rank_ecdf(self.ranks[name], self.num_draws, ci_prob=prob, ax=ax)
            ax.set_title(f"{name} (p_holm={self.tests.loc[name, 'pvalue_holm']:.2g})", fontsize=9,
                         color="C3" if self.tests.loc[name, "rejected"] else "black")
        for ax in axes.flat[len(names):]:
            ax.set_visible(False)
        fig.suptitle(_band_caption(prob, len(names), self.alpha), fontsize=9)
        fig.supxlabel("fractional rank")
        fig.supylabel("ECDF - uniform")
        fig.tight_layout()
        if path is not None:
            save_figure(fig, path)
        return axes


def _percent(prob: float) -> str:
    """``prob`` as a percentage with two significant digits of its complement: 0.995 -> "99.5%"."""
    digits = max(0, math.ceil(-math.log10(100 * (1 - prob)))) + 1
    return f"{np.format_float_positional(round(100 * prob, digits), trim='-')}%"


def _band_caption(prob: float, num_panels: int, alpha: float) -> str:
    """The figure's title: the band's level per panel, its Bonferroni family-wise bound, the test's rule,
    and that the two are separate tests (a curve out of its band under a black title looks like a
    contradiction otherwise)."""
    family = 1 - num_panels * (1 - prob)
    bound = f" (family-wise at least {_percent(family)})" if num_panels > 1 and family > 0 else ""
    return (f"shaded: {_percent(prob)} simultaneous band per panel{bound}\n"
            f"p_holm: Holm-adjusted chi-square test of uniform ranks, rejected (red) at <= {alpha:g}\n"
            "a curve that leaves its band fails the band's own test, which can disagree with p_holm")


@dataclass(frozen=True)
class _Job:
    """What every replicate needs; handed to each worker process once."""

    spec: ModelSpec
    covariates: Mapping[str, Any] | None  # None: draw them per replicate with spec.simulate
    engine: Engine
    num_draws: int
    dtype: torch.dtype


@rng_restored()
def sbc(model: Callable[..., Any] | str | ModelSpec, data: Mapping[str, Any] | None = None, *,
        engine: str | Engine = "nuts", options: Mapping[str, Any] | None = None, num_simulations: int = 100,
        num_draws: int = 99, alpha: float = 0.01, seed: int = 0, num_workers: int | None = None,
        progress: bool | None = None, distributed: bool = False) -> SBCResult:
    """Simulation-based calibration: is ``engine``'s posterior right for ``model``, on average over the prior?

    Each simulation draws parameters from the prior and data from the program (the
    program run with its observed arguments set to None), fits the simulated data with
    the engine, thins the posterior to ``num_draws`` draws, and records the rank of the
    true value among them, for every scalar posterior site and for the log-likelihood
    of the simulated data. A calibrated engine gives uniform ranks (Talts, Betancourt,
    Simpson, Vehtari & Gelman 2018, "Validating Bayesian inference algorithms with
    simulation-based calibration", arXiv:1804.06788).

    Uniformity is tested per quantity with Pearson's chi-square on the ranks binned into
    ``min(20, num_simulations // 5)`` equal-width bins: exact for the discrete ranks
    (a KS test assumes continuity and is conservative on them), sensitive to the
    U-shapes, humps and slopes that over-confidence, under-confidence and bias leave,
    and with at least five expected ranks per bin its chi-square approximation holds
    (below ten simulations nothing is left to test, and the p-values are NaN).
    The p-values are Holm-corrected over the quantities, which keeps the family-wise
    error at ``alpha`` under any dependence between them and rejects at least as much
    as Bonferroni.

    Thinning keeps ``num_draws`` draws evenly spaced over the pooled chains. Ranks are
    uniform only if those draws are nearly independent, so a ``UserWarning`` is raised
    when the median (over simulations) of the smallest bulk ESS is below
    ``num_draws``: draw more samples or lower ``num_draws``.

    Parameters
    ----------
    model : callable, str or ModelSpec
        A Pyro program, a zoo name or a ``ModelSpec``. Its ``observed`` mapping says which
        arguments carry data. For a bare program they are the arguments whose tensors in
        ``data`` the program passes as ``obs`` (as for ``bg.fit``); without those, Pyro's and
        NumPyro's convention is assumed: keyword arguments that default to None and are
        named like the sample site they observe (``def model(y=None): ...
        pyro.sample("y", ..., obs=y)``), each confirmed by running the program with a
        simulated value (``bayesgen.validate.observed_by_name``). A ``ValueError`` says so
        when neither rule finds one.
    data : mapping, optional
        Program arguments. The observed ones are replaced by simulations (a bare program
        needs them only to identify them); the others (covariates, sizes) are kept. By
        default a zoo model's ``simulate(seed)`` provides fresh covariates for each
        simulation (its simulated observations and parameters are not used), else its
        ``load_data()``, else the program's own defaults.
    engine : str or engine instance
        As for ``bg.fit``; with a name, ``options`` are its settings.
    options : mapping, optional
        Settings of the named engine (e.g. ``{"num_samples": 500}``).
    num_simulations : int
        Number of simulations (prior draw, data set, fit).
    num_draws : int
        Posterior draws each true value is ranked among (ranks run from 0 to it). The
        engine must return at least this many.
    alpha : float
        Family-wise level of the uniformity tests.
    seed : int
        Seeds everything: simulation ``i`` gets its own simulation and fit seeds drawn
        from ``numpy.random.SeedSequence(seed)``, so results do not depend on
        ``num_workers``.
    num_workers : int, optional
        Processes that run simulations in parallel; by default the usable CPU cores (one with
        ``distributed=True``, whose processes are the workers).
        Each worker uses one torch thread. On Linux workers are forked, so programs and
        engines defined anywhere (a notebook, a test module) reach them; elsewhere they
        are spawned, and the program and engine must be importable (defined at module
        level). ``num_workers=1`` runs in this process.
    progress : bool, optional
        Show a progress bar over simulations; None shows one when stderr is a terminal.
    distributed : bool
        Share the simulations among the processes of the initialised ``torch.distributed``
        group (a script launched with ``torchrun``, see :mod:`bayesgen.distributed`): rank ``r``
        of ``W`` runs simulations ``r, r + W, ...`` (each in its own ``num_workers`` processes,
        one by default), and every process returns the whole result, the one a single process
        gives with the same seed.

    Returns
    -------
    SBCResult
    """
    _check_settings(num_simulations, num_draws, alpha, num_workers)
    if isinstance(engine, str):
        engine = make_engine(engine, dict(options or {}))
    elif options:
        raise TypeError(f"options {sorted(options)} are only accepted with an engine name; "
                        "set them on the engine instance instead")
    spec, covariates = _resolve(model, data)
    job = _Job(spec, covariates, engine, num_draws, torch.get_default_dtype())
    _refuse_networks(job)
    seeds = np.random.SeedSequence(seed).generate_state(2 * num_simulations).reshape(num_simulations, 2)
    ranks = Ranks.of_group() if distributed else Ranks()
    if num_workers is None and distributed:
        num_workers = 1  # the processes of the group are the workers
    elif num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    show = (sys.stderr.isatty() if progress is None else progress) and ranks.is_root
    mine = ranks.mine(num_simulations)
    shares = ranks.gather(_run_all(job, seeds[list(mine)], max(1, min(num_workers, len(mine))), show))
    outcomes = [shares[i % ranks.world_size][i // ranks.world_size] for i in range(num_simulations)]
    names = list(outcomes[0][0])
    ranks = {name: np.array([ranks[name] for ranks, _ in outcomes]) for name in names}
    min_ess = np.array([ess for _, ess in outcomes])
    if np.isfinite(min_ess).any() and np.nanmedian(min_ess) < num_draws:
        warnings.warn(f"the median over simulations of the smallest bulk ESS is {np.nanmedian(min_ess):.0f}, "
                      f"below num_draws={num_draws}: the thinned draws are autocorrelated and their ranks "
                      "are not uniform even for a calibrated sampler; draw more samples or lower num_draws",
                      UserWarning, stacklevel=2)
    return SBCResult(ranks=ranks, num_draws=num_draws, tests=_uniformity(ranks, num_draws, alpha),
                     alpha=alpha, min_ess=min_ess, seeds=seeds)


def _check_settings(num_simulations: int, num_draws: int, alpha: float, num_workers: int | None) -> None:
    check_count("num_simulations", num_simulations, minimum=2)
    check_count("num_draws", num_draws)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    check_count("num_workers", num_workers, none_means="the usable CPU cores")


def _resolve(model: Callable[..., Any] | str | ModelSpec, data: Mapping[str, Any] | None
             ) -> tuple[ModelSpec, dict[str, Any] | None]:
    """The model's spec (with its observed arguments known) and the fixed covariates (None: simulate them)."""
    if isinstance(model, str):
        spec = get_model(model)
    elif isinstance(model, ModelSpec):
        spec = model
    elif callable(model):
        spec = ModelSpec.from_callable(model)
    else:
        raise TypeError(f"model must be a Pyro program, a zoo name or a ModelSpec, got {type(model).__name__}")
    if not spec.observed:
        spec = _with_observed(spec, data)
    if data is None and spec.simulate is not None:
        return spec, None
    if data is None:
        data = spec.load_data() if spec.load_data is not None else {}
    observed = set(spec.observed.values())
    return spec, {key: value for key, value in data.items() if key not in observed}


def _with_observed(spec: ModelSpec, data: Mapping[str, Any] | None) -> ModelSpec:
    """``spec`` with its observed arguments found: from the data's tensors if ``data`` give them
    (``infer_observed``, as ``bg.fit`` does), else by Pyro's naming convention (``observed_by_name``:
    arguments defaulting to None named like sites, confirmed by observing a simulated value)."""
    if data is not None:
        spec = prepare(spec, data).spec
        if spec.observed:
            return spec
    given = data if data is not None else spec.load_data() if spec.load_data is not None else {}
    observed = observed_by_name(spec.model, given)
    if observed:
        return dataclasses.replace(spec, observed=observed)
    missing = missing_arguments(spec.model, given)
    reason = (f"the program needs argument(s) {', '.join(missing)}, which data do not give" if missing else
              "no program argument defaults to None and, set to a simulated value, becomes the obs of "
              "the sample site it is named after")
    raise ValueError(f"cannot tell which program arguments carry observed data: {reason}; pass them in data "
                     "(their values only identify them) or a ModelSpec(observed={site: argument})")


_JOB: _Job | None = None  # the job of this worker process


def _init_worker(job: _Job) -> None:
    global _JOB
    _JOB = job
    torch.set_num_threads(1)  # also avoids OpenMP's deadlock in forked children of a multi-threaded parent
    torch.set_default_dtype(job.dtype)


def _run_in_worker(seeds: np.ndarray) -> tuple[dict[str, int], float]:
    assert _JOB is not None, "worker not initialised"
    return _replicate(_JOB, seeds)


def _run_all(job: _Job, seeds: np.ndarray, num_workers: int, show: bool) -> list[tuple[dict[str, int], float]]:
    """Run every replicate, in this process or in ``num_workers`` processes, in order of ``seeds``."""
    bar = tqdm(total=len(seeds), disable=not show, desc="sbc")
    if num_workers == 1:
        outcomes = []
        for pair in seeds:
            outcomes.append(_replicate(job, pair))
            bar.update()
        bar.close()
        return outcomes
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    results: dict[int, tuple[dict[str, int], float]] = {}
    with warnings.catch_warnings():
        # Python >= 3.12 warns when forking a process with threads (torch's idle OpenMP pool);
        # the workers never use it (one torch thread each, set before any work)
        warnings.filterwarnings("ignore", message=r"This process .* is multi-threaded", category=DeprecationWarning)
        with ProcessPoolExecutor(num_workers, mp_context=context, initializer=_init_worker,
                                 initargs=(job,)) as pool:
            futures: dict[Future[tuple[dict[str, int], float]], int] = {
                pool.submit(_run_in_worker, pair): i for i, pair in enumerate(seeds)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            finally:
                bar.close()
    return [results[i] for i in range(len(seeds))]


def _refuse_networks(job: _Job) -> None:
    """A ``ValueError`` naming them where the program's unknowns include parameters fitted as points
    (``pyro.module``, ``pyro.param``): they have no prior to draw a truth from. One run of the
    simulating program, before any worker starts, in a scope that leaves Pyro's parameter store as
    it was."""
    blank = {**_covariates(job, 0), **{argument: None for argument in job.spec.observed.values()}}
    with torch.no_grad(), pyro.get_param_store().scope():
        trace = run_program(job.spec.model, to_tensors(blank, torch.device("cpu")))
    weights = list(dict.fromkeys(name.split("$$$")[0] for name, site in trace.nodes.items()  # a module's name
                                 if site["type"] == "param"))
    if weights:
        raise ValueError(f"SBC ranks true values drawn from the prior among posterior draws, but the program's "
                         f"unknowns include parameters fitted as points ({', '.join(weights[:3])}"
                         f"{', ...' if len(weights) > 3 else ''}: pyro.module or pyro.param), which have no prior "
                         "to draw a truth from; judge such a model by held-out likelihood and sample tests, "
                         "bg.evaluate(fit, heldout)")


def _replicate(job: _Job, seeds: np.ndarray) -> tuple[dict[str, int], float]:
    """One simulation: prior draw and data, fit, ranks of every quantity; returns ``(ranks, min_ess)``."""
    simulation_seed, fit_seed = int(seeds[0]), int(seeds[1])
    covariates = _covariates(job, simulation_seed)
    pyro.set_rng_seed(simulation_seed)
    blank = {**covariates, **{argument: None for argument in job.spec.observed.values()}}
    with torch.no_grad():
        trace = run_program(job.spec.model, to_tensors(blank, torch.device("cpu")))
    truth = {name: site["value"] for name, site in trace.nodes.items()
             if site["type"] == "sample" and name not in job.spec.observed and not is_subsample(site)}
    data = {**covariates, **{argument: trace.nodes[site]["value"] for site, argument in job.spec.observed.items()}}
    result = fit(job.spec, data, engine=job.engine, seed=fit_seed, progress=False)
    quantities: dict[str, tuple[float, np.ndarray]] = {}
    for name, draws in result.posterior.items():
        if name in truth:
            quantities.update(_scalars(name, truth[name].cpu().numpy(), draws))
    if result.log_likelihood:
        quantities[LOG_LIKELIHOOD] = _log_likelihood(result, truth)
    rng = np.random.default_rng(fit_seed)
    ranks = {label: _rank(value, _thin(draws, job.num_draws), rng) for label, (value, draws) in quantities.items()}
    return ranks, _min_ess(quantities) if result.kind == "samples" else math.nan


def _log_likelihood(result: Fit, truth: Mapping[str, torch.Tensor]) -> tuple[float, np.ndarray]:
    """log p(y | theta) of the fitted data, summed over observations: at the truth, and per draw ``(chain, draw)``."""
    assert result.problem is not None, "a fresh fit keeps its problem"
    density = result.problem.density
    with torch.no_grad():
        at_truth = pointwise_log_likelihood(density, {name: truth[name][None, None] for name in density.latent_names})
    per_draw = sum(v.reshape(v.shape[:2] + (-1,)).sum(-1) for v in result.log_likelihood.values())
    return float(sum(v.sum() for v in at_truth.values())), np.asarray(per_draw)


def _covariates(job: _Job, seed: int) -> dict[str, Any]:
    """The fixed covariates, or fresh ones from the model's ``simulate(seed)`` (its observations dropped)."""
    if job.covariates is not None:
        return dict(job.covariates)
    assert job.spec.simulate is not None, "_resolve only leaves covariates None for models with simulate()"
    observed = set(job.spec.observed.values())
    return {key: value for key, value in job.spec.simulate(seed)[0].items() if key not in observed}


def _scalars(name: str, value: np.ndarray, draws: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    """Label (``beta[1]``) -> (true value, draws ``(chain, draw)``) for every scalar of a site."""
    if value.ndim == 0:
        return {name: (float(value), draws)}
    flat = draws.reshape(draws.shape[:2] + (-1,))
    return {f"{name}[{','.join(map(str, index))}]": (float(value[index]), flat[..., i])
            for i, index in enumerate(np.ndindex(value.shape))}


def _thin(draws: np.ndarray, num_draws: int) -> np.ndarray:
    """``num_draws`` draws evenly spaced over the pooled chains."""
    flat = draws.reshape(-1)
    if len(flat) < num_draws:
        raise ValueError(f"the engine returned {len(flat)} posterior draws, fewer than num_draws={num_draws}: "
                         "ask it for more or lower num_draws")
    return flat[np.linspace(0, len(flat) - 1, num_draws).round().astype(int)]


def _rank(value: float, draws: np.ndarray, rng: np.random.Generator) -> int:
    """Number of draws below ``value``, ties broken uniformly at random (as Talts et al. do)."""
    below, ties = int(np.sum(draws < value)), int(np.sum(draws == value))
    return below + int(rng.integers(0, ties + 1))


def _min_ess(quantities: Mapping[str, tuple[float, np.ndarray]]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: ESS is NaN, ignored below
        values = [ess(draws) for _, draws in quantities.values() if draws.shape[1] > 3]
    finite = [v for v in values if np.isfinite(v)]
    return min(finite) if finite else math.nan


def _holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN)."""
    m = len(pvalues)
    order = np.argsort(pvalues)  # NaN last
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * pvalues[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def _uniformity(ranks: Mapping[str, np.ndarray], num_draws: int, alpha: float) -> pd.DataFrame:
    """Chi-square test of uniform ranks per quantity, Holm-corrected."""
    num_simulations = len(next(iter(ranks.values())))
    num_bins = int(np.clip(num_simulations // 5, 2, min(_MAX_BINS, num_draws + 1)))
    edges = np.linspace(0, num_draws + 1, num_bins + 1).round().astype(int)  # bin b holds ranks edges[b]..edges[b+1]-1
    probs = np.diff(edges) / (num_draws + 1)
    rows = {}
    for name, values in ranks.items():
        counts = np.histogram(values, bins=edges)[0]
        rows[name] = chi_square_test(counts, probs=probs)
    table = pd.DataFrame({"chi2": [r.statistic for r in rows.values()],
                          "pvalue": [r.pvalue for r in rows.values()]}, index=pd.Index(list(rows), name="quantity"))
    table["pvalue_holm"] = _holm(table["pvalue"].to_numpy())
    table["rejected"] = table["pvalue_holm"] <= alpha
    return table
