"""Discrete latent sites recovered after the fact: posterior samples and MAP (Viterbi) values.

Engines sum enumerable discrete sites out of the density (DESIGN.md section 4). Given a
fit's draws of the continuous latents, ``infer_discrete`` brings them back with Pyro's
``infer_discrete``: at temperature 1 a draw from ``p(z | y, theta)`` per posterior draw,
at temperature 0 the most probable joint assignment (Viterbi decoding for a hidden Markov
chain written with ``pyro.markov``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyro
import torch
from pyro import poutine

from bayesgen.logdensity import LogDensity, per_draw
from bayesgen.program import on_device
from bayesgen.result import Fit

__all__ = ["discrete_marginals", "infer_discrete"]


def _draws(fit: Fit, density: LogDensity, num_samples: int | None) -> dict[str, torch.Tensor]:
    missing = [name for name in density.latent_names if name not in fit.posterior]
    if missing:
        raise ValueError(f"the program's continuous latent sites {missing} are not in the fit's posterior; "
                         "a program passed as model= must have the same continuous sites as the fitted one")
    index = (np.linspace(0, fit.num_draws - 1, num_samples).round().astype(int) if num_samples
             else np.arange(fit.num_draws))
    return {name: torch.as_tensor(fit.posterior[name][:, index], dtype=torch.get_default_dtype())
            for name in density.latent_names}


def infer_discrete(fit: Fit, *, model: Callable[..., Any] | None = None, temperature: int = 1,
                   num_samples: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Values of the enumerated discrete sites at each posterior draw, ``(chain, draw, *shape)``.

    Parameters
    ----------
    fit : Fit
        A fit of a program with enumerable discrete latent sites (any engine).
    model : callable, optional
        The program to decode with, by default the fitted one. It must have the same
        continuous latent sites and data arguments: e.g. a hidden Markov model fitted
        with the forward algorithm (``DiscreteHMM``) is decoded with its ``pyro.markov``
        twin whose states are sample sites.
    temperature : {1, 0}
        1 samples ``z ~ p(z | y, theta)``; 0 takes the jointly most probable assignment
        (Viterbi for Markov chains), both per draw of ``theta``.
    num_samples : int, optional
        Draws per chain to use (evenly spaced); all by default.
    seed : int
        Seed of the sampling at temperature 1.

    Returns
    -------
    dict
        Discrete site -> integer array ``(chain, draw, *site_shape)``.
    """
    if temperature not in (0, 1):
        raise ValueError(f"temperature must be 0 (MAP / Viterbi) or 1 (posterior samples), got {temperature!r}")
    return _decode(fit, _density(fit, model), temperature, num_samples, seed)


def _density(fit: Fit, model: Callable[..., Any] | None) -> LogDensity:
    problem = fit._require_problem()
    density = problem.density if model is None else LogDensity(model, problem.data)
    if not density.enumerated:
        raise ValueError("the program has no enumerable discrete latent sites to infer")
    return density


def _decode(fit: Fit, density: LogDensity, temperature: int, num_samples: int | None,
            seed: int) -> dict[str, np.ndarray]:
    problem = fit._require_problem()
    draws = _draws(fit, density, num_samples)
    lead = next(iter(draws.values())).shape[:2]
    flat = {k: v.reshape((-1,) + v.shape[2:]).to(density.device) for k, v in draws.items()}
    total = lead[0] * lead[1]
    batch_dim = -density.max_plate_nesting - 1
    pyro.set_rng_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        step = density.chunk_size()
        for start in range(0, total, step):
            chunk = {k: v[start:start + step] for k, v in flat.items()}
            size = next(iter(chunk.values())).shape[0]
            program = density.fixed_program(chunk, enumerate=False)
            decoder = pyro.infer.infer_discrete(program, first_available_dim=batch_dim - 1,
                                                temperature=temperature)
            with on_device(density.device), pyro.validation_enabled(False):
                trace = poutine.trace(decoder).get_trace(**problem.data)
            for name in density.enumerated:
                shape = tuple(density.prototype.nodes[name]["value"].shape)
                parts.setdefault(name, []).append(per_draw(trace.nodes[name]["value"], size, shape))
    return {name: torch.cat(values).reshape(tuple(lead) + values[0].shape[1:]).cpu().numpy()
            for name, values in parts.items()}


def discrete_marginals(fit: Fit, *, model: Callable[..., Any] | None = None,
                       num_samples: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Posterior probabilities of each value of every enumerated discrete site, ``(*site_shape, K)``.

    Monte Carlo over the posterior: one draw of ``z ~ p(z | y, theta)`` per posterior draw
    of ``theta`` (``infer_discrete`` at temperature 1), counted per value. The standard
    error of each probability is at most ``0.5 / sqrt(number of draws)`` for independent
    draws. These are, e.g., a mixture's cluster responsibilities or an HMM's state marginals.
    """
    density = _density(fit, model)
    samples = _decode(fit, density, 1, num_samples, seed)
    out = {}
    for name, values in samples.items():
        support = density.prototype.nodes[name]["fn"].enumerate_support(expand=False)
        num_values = support.shape[0]
        flat = values.reshape((-1,) + values.shape[2:]).astype(int)
        out[name] = np.stack([(flat == k).mean(0) for k in range(num_values)], axis=-1)
    return out
