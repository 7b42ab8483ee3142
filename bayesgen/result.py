"""Fit: the one result type every engine produces (DESIGN.md section 2)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from bayesgen._counts import check_count
from bayesgen._seeding import check_seed, rng_restored
from bayesgen.program import without_trace_table

if TYPE_CHECKING:
    import pandas as pd

    from bayesgen.convert import InferenceData

    from bayesgen.engine import Problem

__all__ = ["Fit"]


@dataclass
class Fit:
    """The result of ``bg.fit``: draws, statistics and data, the same for every engine.

    Attributes
    ----------
    engine : str
        The engine's registered name.
    kind : str
        ``"samples"`` (MCMC), ``"approximation"`` (SVI, Laplace) or ``"point"`` (MLE/MAP).
    posterior : dict
        Site -> array ``(chain, draw, *shape)`` in the constrained space: every latent and
        every ``pyro.deterministic`` site.
    sample_stats : dict
        ArviZ stat name -> array ``(chain, draw)``; ``loss`` is the optimiser's history.
    log_likelihood : dict
        Observed site -> pointwise log-likelihood ``(chain, draw, *batch_shape)``, computed from
        the program at first use (``to_arviz``, ``bg.compare``, LOO) and kept: it holds draws x
        observations numbers (2.5 GB for 64 x 1000 draws of 5000 observations), which a fit
        whose posterior is all one needs should not pay for, in time or memory.
    observed_data : dict
        Observed site -> array.
    settings : dict
        The engine's full settings.
    timing : dict
        Wall seconds per phase.
    point, stderr : dict or None
        For ``mle``/``map``/``laplace``: the optimum and its standard errors per site; for a
        ``pyro.deterministic`` site, its value at the optimum and the sd of its values at the
        normal approximation's draws (the delta method's standard error, by Monte Carlo).
    info : dict
        Engine facts used by ``bg.check`` (convergence flags and the like).
    dims : dict
        Site -> ArviZ dimension names.
    model_name : str
        The zoo name or program name.
    posterior_predictive : dict
        Filled by ``predict()`` with the original data.
    params : dict
        Trained network and guide parameters, name -> array (constrained values, as
        ``pyro.param`` returns them): what the engine left in Pyro's parameter store. Empty for
        purely Bayesian programs fitted by a density engine. Saved in the fit file as plain
        arrays; :meth:`generate` and :meth:`predict` run the program with them.
    constant_data : dict
        The program's other arguments (covariates, sizes), argument -> array (0-d for
        scalars): with ``observed_data`` they let ``bg.load(path, model=...)`` rebuild the
        problem.
    """

    engine: str
    kind: str
    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    observed_data: dict[str, np.ndarray]
    settings: dict[str, Any]
    timing: dict[str, float]
    point: dict[str, np.ndarray] | None = None
    stderr: dict[str, np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    dims: dict[str, list[str]] = field(default_factory=dict)
    model_name: str = ""
    posterior_predictive: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    constant_data: dict[str, np.ndarray] = field(default_factory=dict)
    problem: "Problem | None" = field(default=None, repr=False, compare=False)
    #: The pointwise log-likelihood once computed (or loaded); None until then.
    _log_likelihood: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def log_likelihood(self) -> dict[str, np.ndarray]:
        """Observed site -> pointwise log-likelihood ``(chain, draw, *batch_shape)``, computed at
        first use from the program and the posterior's draws (then kept, its seconds in
        ``timing["log_likelihood"]``); empty for a fit without its program.

        Where the fit holds no draws of local latents (a VAE's codes) and trained an amortising
        guide (the one its model ships, or a guide callable passed as ``guide=``), it is the
        importance-weighted estimate of each observation's marginal log-likelihood
        (``bayesgen.marginal``), one chain of one draw; where nothing can integrate them out (a
        GAN's noise) or the program subsamples its observations, it is empty."""
        if self._log_likelihood is None:
            if self.problem is None:
                return {}
            from bayesgen.fitting import pointwise_log_likelihood_of
            from bayesgen.generate import trained

            started = time.perf_counter()
            with trained(self.problem, self.params), rng_restored():  # the estimate of a VAE's seeds
                self._log_likelihood = pointwise_log_likelihood_of(self, self._latent_draws(self.problem))
            self.timing["log_likelihood"] = time.perf_counter() - started
        return self._log_likelihood

    def __repr__(self) -> str:
        """One line of what the fit holds (the dataclass's own would print every array)."""
        sites = ", ".join(f"{name}{tuple(value.shape[2:])}" if value.ndim > 2 else name
                          for name, value in self.posterior.items())
        parts = [f"engine={self.engine!r}", f"model={self.model_name!r}",
                 f"chains x draws={self.num_chains}x{self.num_draws}", f"sites=[{sites}]"]
        if self.params:
            parts.append(f"params={len(self.params)} arrays")
        if self.info.get("interrupted"):
            parts.append("interrupted=True")
        return f"Fit({', '.join(parts)})"

    @property
    def num_chains(self) -> int:
        """Number of chains in ``posterior``."""
        return next(iter(self.posterior.values())).shape[0] if self.posterior else 0

    @property
    def num_draws(self) -> int:
        """Number of draws per chain in ``posterior``."""
        return next(iter(self.posterior.values())).shape[1] if self.posterior else 0

    def to_arviz(self) -> "InferenceData":
        """This fit as ArviZ data, with the groups and stat names of the ArviZ schema.

        Returns
        -------
        arviz.InferenceData
            Groups ``posterior``, ``sample_stats`` (an optimiser's loss in a group of its own),
            ``log_likelihood``, ``observed_data`` and ``constant_data``, and
            ``posterior_predictive`` once :meth:`predict` has drawn it at every posterior draw.
        """
        from bayesgen.convert import to_inference_data

        return to_inference_data(self)

    def summary(self) -> "pd.DataFrame":
        """ArviZ's summary table of the posterior (``bayesgen.diagnostics.summary``).

        Returns
        -------
        pandas.DataFrame
            One row per scalar entry of each posterior site (``beta[0]``): mean, sd and hdi, and
            for MCMC mcse, ess_bulk, ess_tail and r_hat (two or more chains); a point fit's
            ``point`` and ``stderr`` first.
        """
        from bayesgen.diagnostics import summary

        return summary(self)

    def save(self, path: str) -> None:
        """Write this fit to one netCDF file (settings as JSON attributes; no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            The file (``.nc`` by convention), replaced only once the new one is complete; its
            folder must exist. ``bg.load(path, model=...)`` reads it back.
        """
        from bayesgen.io import save

        save(self, path)

    @rng_restored()
    def predict(self, num_samples: int | None = None, *, seed: int = 0, **new_data: Any) -> dict[str, np.ndarray]:
        """Posterior predictive draws of the observed sites, ``(chain, draw, *shape)``.

        Sites that only the new data switch on (e.g. a forecast horizon) are drawn too.

        Parameters
        ----------
        num_samples : int, optional
            Draws per chain to use (evenly spaced); all of them by default. More than the fit
            holds reuse its draws, each run simulating the observations afresh (replicates of a
            point fit: the plug-in predictive).
        seed : int
            Seed of the predictive simulation.
        **new_data
            Program arguments to replace, e.g. new covariates. Observed sites are
            simulated: without new data in the shape of the observed data (replicated data,
            also stored as ``posterior_predictive`` and shown by ``to_arviz()`` when drawn at
            every posterior draw, so that ArviZ pairs them, as ``az.loo_pit`` does; local latents
            that an amortising guide stands for, a VAE's codes, are drawn from it given each
            observation, so that replicates are reconstructions); with new
            data their arguments are set to None unless given, so the program sizes them
            from the new arguments. Where a plate subsamples, each run of the program covers
            one random minibatch of its items, and so do the draws; a zoo model simulates them
            all with its minibatch argument set to None (``fit.predict(batch_size=None)``).

        Returns
        -------
        dict of str to numpy.ndarray
            Observed site -> draws ``(chain, draw, *shape)``.
        """
        from bayesgen.fitting import with_fixed_arguments
        from bayesgen.generate import trained
        from bayesgen.marginal import encoded_local_latents
        from bayesgen.postprocess import simulate_sites
        from bayesgen.validate import check_arguments, to_tensors

        seed = check_seed(seed)
        num_samples = check_count("num_samples", num_samples, none_means="all draws")
        problem = self._require_problem()
        check_arguments(problem.spec.model, new_data, partial=True)
        new_data = with_fixed_arguments(problem, new_data) if new_data else {}
        data = {**problem.data, **to_tensors(new_data, problem.device, problem.dtype)}
        cleared = [argument for argument in problem.spec.observed.values() if new_data and argument not in new_data]
        for argument in cleared:
            data[argument] = None
        draws = self._latent_draws(problem)
        if num_samples is not None:
            index = np.linspace(0, self.num_draws - 1, num_samples).round().astype(int)
            draws = {k: v[:, index] for k, v in draws.items()}
        pyro.set_rng_seed(seed)
        if not new_data:  # replicates of the fit's own observations: their codes from the encoder
            lead = next(iter(draws.values())).shape[:2] if draws else (1, num_samples or 1)
            draws = {**draws, **encoded_local_latents(self, problem, tuple(lead))}
        sites = list(problem.spec.observed)
        with torch.no_grad(), trained(problem, self.params):
            try:
                if new_data:
                    _check_new_data(problem, data, draws)
                out = {k: v.cpu().numpy() for k, v in simulate_sites(problem.density, draws, data, sites).items()}
            except (RuntimeError, ValueError, TypeError) as exc:
                named = _with_shapes_named(exc, new_data, problem.data, data)
                if cleared and "None" in str(exc):  # the program met an observed argument set to None
                    named = type(named)(f"{named}. With new data, the observed argument(s) "
                                        f"{', '.join(cleared)} are set to None, so that the program sizes itself "
                                        "from the new arguments; pass them too where it needs them (a forecast "
                                        "continues its series)")
                raise named from exc
        if not new_data and num_samples is None:  # a thinned set would not line up with the posterior's draws
            self.posterior_predictive = out
        return out

    def generate(self, num_samples: int, *, seed: int = 0, temperature: float = 1.0) -> Any:
        """New samples of every observed site from the fitted generative model.

        Global latent sites and network weights come from the fit (one posterior draw, chosen at
        random, per run of the program); local latent sites, those inside a plate that holds an
        observed site (a VAE's codes, a mixture's assignments), are drawn afresh from their
        prior. Each run of the program draws as many observations as its data hold; runs are
        repeated until there are ``num_samples``. A model whose spec names a ``size_argument``
        (the sequence models) draws exactly ``num_samples`` in one run instead.

        Parameters
        ----------
        num_samples : int
            Observations to generate per observed site: images, strings, signal samples.
        seed : int
            Seeds the choice of posterior draws and the simulation: the same seed gives the same
            samples, also from a fit saved and loaded again.
        temperature : float
            For sites drawn symbol by symbol from an autoregressive network (``char_lm``,
            ``wavenet``): the logits are divided by it, so below 1 the draws keep to likely
            continuations and above 1 they wander. Other sites take only 1.

        Returns
        -------
        dict or decoded observations
            Observed site -> array ``(num_samples, *event_shape)``; for a model with a decoder
            (its spec's ``decode``), what that returns: a list of strings from ``char_lm``, a
            signal in [-1, 1] from ``wavenet``.
        """
        from bayesgen.generate import generate

        return generate(self, num_samples, seed=seed, temperature=temperature)

    def _latent_draws(self, problem: "Problem") -> dict[str, torch.Tensor]:
        """The posterior's latent sites as tensors on the program's device."""
        return {k: torch.as_tensor(v, device=problem.device,
                                   dtype=problem.dtype if np.issubdtype(v.dtype, np.floating) else torch.int64)
                for k, v in self.posterior.items() if k in problem.density.latent_names}

    def _require_problem(self) -> "Problem":
        if self.problem is None:
            raise ValueError("this fit was loaded from a file without its program; pass the model to "
                             "bg.load(path, model=...) to predict, generate or evaluate with it")
        if not self.problem.spec.observed:
            raise ValueError("cannot tell which program arguments carry observed data; declare them "
                             "in a ModelSpec(observed={site: argument})")
        return self.problem


def _check_new_data(problem: "Problem", data: dict[str, Any], draws: dict[str, torch.Tensor]) -> None:
    """One run of the program on the new arguments with Pyro's validation on, as ``bg.fit`` checks its
    data, at the fit's first draw (the values predict runs at, where the prior's might not be
    valid): a model's own checks (indices in range, which it makes only then) and the support of
    each distribution's arguments. Its latent sites must have the shapes the fit drew them in:
    a draw of another shape would be broadcast or cut without a word (a ``rank`` argument
    changed after the fit)."""
    from bayesgen.program import ProgramError, trace_prototype

    first = {name: value[0, 0] for name, value in draws.items()}
    try:
        trace = trace_prototype(poutine.condition(problem.spec.model, data=first), data)
    except ProgramError as exc:  # the program's message, and its kind: a TypeError of a None stays one
        try:  # unless the sizes of its sites changed, which the unconditioned program shows
            _check_shapes(trace_prototype(problem.spec.model, data), draws)
        except ProgramError:
            pass
        raise (TypeError if isinstance(exc.__cause__, TypeError) else ValueError)(str(exc)) from exc.__cause__
    _check_shapes(trace, draws)


def _check_shapes(trace: Any, draws: dict[str, torch.Tensor]) -> None:
    for name, value in draws.items():
        site = trace.nodes.get(name)
        if site is not None and site["type"] == "sample" and tuple(site["fn"].shape()) != tuple(value.shape[2:]):
            raise ValueError(f"the fit's draws of site '{name}' have shape {tuple(value.shape[2:])}, but the program "
                             f"with the new data has it of shape {tuple(site['fn'].shape())}: new arguments must "
                             "keep the model's sizes (a rank, a number of groups) as fitted")


def _with_shapes_named(exc: Exception, new_data: dict[str, Any], fitted: dict[str, Any],
                       ran: dict[str, Any]) -> Exception:
    """``exc`` from a program run on new data (``ran``: all the arguments it ran with), as a
    ``ValueError`` naming the likely cause, which torch reports as a mismatch deep inside the
    program, where there is one: new arguments whose shapes differ from the fitted ones beyond
    their first (rows) dimension, or arguments left at the fit's rows beside new ones of
    another number of rows."""
    differ = [f"{key} has shape {tuple(np.shape(value))} where the fit's has {tuple(fitted[key].shape)}"
              for key, value in new_data.items()
              if isinstance(fitted.get(key), torch.Tensor) and np.ndim(value) == fitted[key].dim() >= 1
              and tuple(np.shape(value))[1:] != tuple(fitted[key].shape)[1:]]
    # new rows for some covariates, the fit's for others left out: the program pairs them
    resized = {int(fitted[key].shape[0]): int(np.shape(value)[0]) for key, value in new_data.items()
               if isinstance(fitted.get(key), torch.Tensor) and np.ndim(value) >= 1 and fitted[key].dim() >= 1
               and np.shape(value)[0] != fitted[key].shape[0]}
    differ += [f"{key} still has the fit's {value.shape[0]} rows where the new data have {resized[value.shape[0]]} "
               f"(pass {key}=... for the new rows too)"
               for key, value in ran.items()
               if key not in new_data and isinstance(value, torch.Tensor) and value.dim() >= 1
               and value.shape[0] in resized]
    if not differ:
        kind = next((k for k in (ValueError, TypeError) if isinstance(exc, k)), RuntimeError)
        return kind(without_trace_table(str(exc)))
    return ValueError(f"the program fails on the new data ({type(exc).__name__}: {str(exc).splitlines()[0]}): "
                      f"{'; '.join(differ)}; new data must match the fitted data in all but the number of rows, "
                      "which the arguments of one observation share")

