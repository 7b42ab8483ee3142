"""``bayesgen demo``: one Pyro program fitted by every engine, compared side by side, saved to open later.

The demo fits the zoo's Bayesian linear regression to scikit-learn's diabetes data with
NUTS, static HMC, mean-field and full-rank SVI, the Laplace approximation, MAP and maximum
likelihood; prints a table of every coefficient's mean and sd per engine and each engine's
``bg.check`` verdict; saves each fit as netCDF and an overlay of the posteriors as a PNG;
and ends with the commands to run next. It lives in the package so that it works after a
regular install, outside a source checkout.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bayesgen._files import save_figure
from bayesgen.compare import plot_compare, scalar_draws
from bayesgen.diagnostics import check, short_run_findings
from bayesgen.fitting import fit
from bayesgen.inference import HMC, MAP, MLE, NUTS, SVI, Laplace
from bayesgen.result import Fit

__all__ = ["DemoResult", "demo_engines", "run_demo"]

MODEL = "linear_regression"
HEADING = ("bayesgen demo: Bayesian linear regression of diabetes progression, one program, six engines\n"
           "data: scikit-learn's diabetes data, 442 patients x 10 baseline covariates (age, sex, BMI, blood\n"
           "pressure, six blood serums), standardised; y = disease progression after one year, standardised")
WIDTH = 100


@dataclass(frozen=True)
class DemoResult:
    """What the demo made: the fits by engine label, the side-by-side table and the files written."""

    fits: dict[str, Fit]
    table: Any  # pandas.DataFrame: parameter rows, engine columns, cells "mean±sd"
    files: list[Path]


def demo_engines(smoke: bool) -> dict[str, Any]:
    """The engines the demo compares, labelled, sized for a full run or a seconds-long smoke run.

    The diabetes covariates are strongly correlated (s1, s2 and s4 measure related blood
    serums), so the samplers adapt a dense mass matrix: with a diagonal one NUTS needs
    about five times more leapfrog steps per draw.
    """
    draws = 100 if smoke else 500
    steps = 300 if smoke else 2000
    return {
        "nuts": NUTS(num_warmup=draws, num_samples=draws, dense_mass=True),
        "hmc": HMC(num_warmup=draws, num_samples=draws, dense_mass=True, num_steps=8),
        "svi-mf": SVI(guide="normal", num_steps=steps, lr=0.05),
        "svi-mvn": SVI(guide="mvn", num_steps=steps, lr=0.05),
        "laplace": Laplace(),
        "map": MAP(),
        "mle": MLE(),
    }


def _side_by_side(fits: dict[str, Fit]) -> Any:
    """Parameter rows, engine columns, each cell ``mean±sd`` to two decimals (fits 100 columns for 7 engines)."""
    import pandas as pd

    columns = {label: {name: f"{draws.mean():.2f}±{draws.std():.2f}"
                       for name, draws in scalar_draws(result, list(result.posterior)).items()}
               for label, result in fits.items()}
    return pd.DataFrame(columns)


def _verdict_lines(label: str, result: Fit, smoke: bool) -> list[str]:
    """The engine's time and ``bg.check`` findings, wrapped; in a smoke run those that its few
    draws and optimiser steps bring about (R-hat, ESS, an unconverged optimiser) only counted:
    listed, they would read as a verdict on the engine."""
    findings = check(result)
    expected = short_run_findings(result, findings) if smoke else []
    shown = [finding for finding in findings if finding not in expected]
    if expected:
        shown.append(f"{len(expected)} finding(s) expected with a smoke run's few draws and steps "
                     "(run without --smoke for the verdict)")
    text = "; ".join(shown) or "no problems found"
    prefix = f"  {label:<8} {result.timing['total']:5.1f} s  "
    return textwrap.wrap(text, WIDTH - 1, initial_indent=prefix, subsequent_indent=" " * len(prefix))


def _next_steps(out: Path) -> str:
    nuts, mvn = out / "nuts.nc", out / "svi-mvn.nc"
    steps = [
        (f"bayesgen summary {nuts}", "ArviZ summary and bg.check of one fit"),
        (f"bayesgen compare {nuts} {mvn}", "two engines, parameter by parameter"),
        (f"python -c \"import bayesgen as bg; print(bg.load('{nuts}').summary())\"", "a fit in Python"),
        (f"python -c \"import arviz as az; az.from_netcdf('{nuts}')\"", "the same file in ArviZ"),
    ]
    lines = ["next:"]
    for command, comment in steps:
        lines += [f"  # {comment}", f"  {command}"]
    lines.append(f"  # and look at {out / 'compare.png'}: the coefficients' posteriors overlaid by engine;")
    lines.append("  # a notebook tour of compare, evaluate and sbc: examples/evaluation.ipynb in the source tree")
    return "\n".join(lines)


def run_demo(out: str | Path = "bayesgen-demo", *, smoke: bool = False,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Fit the diabetes regression with every engine, print the comparison, save fits and a plot to ``out``.

    Parameters
    ----------
    out : str or Path
        Folder for the fit files (``<engine>.nc``, netCDF readable by ``arviz.from_netcdf``
        and ``bg.load``) and the overlay ``compare.png``; created if missing.
    smoke : bool
        A seconds-long run with too few draws for valid inference: a check that everything
        works. Its convergence findings are expected then, and only counted.
    echo : callable
        Where the report's lines go (``print`` by default).

    Returns
    -------
    DemoResult
    """
    import pandas as pd

    from bayesgen.registry import get_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    echo(HEADING)
    if smoke:
        echo("smoke run: a quick check that everything works, with too few draws for valid inference")
    data = get_model(MODEL).load_data()
    fits = {label: fit(MODEL, data, engine=engine, seed=0, progress=False)
            for label, engine in demo_engines(smoke).items()}
    echo("\nengine   time     verdict of bg.check")
    for label, result in fits.items():
        echo("\n".join(_verdict_lines(label, result, smoke)))
    table = _side_by_side(fits)
    echo("\nposterior mean±sd of each parameter (beta: standardised coefficients; alpha: intercept;"
         "\nsigma: noise sd). mle and map give the optimum's normal approximation; svi-mf is mean-field:")
    with pd.option_context("display.width", WIDTH, "display.max_columns", None):
        echo(table.to_string())
    files = []
    for label, result in fits.items():
        path = out / f"{label}.nc"
        result.save(str(path))
        files.append(path)
    files.append(_plot(fits, out / "compare.png"))
    echo(f"\nwrote {len(files) - 1} fits (netCDF) and compare.png to {out}/")
    echo(_next_steps(out))
    return DemoResult(fits=fits, table=table, files=files)


def _plot(fits: dict[str, Fit], path: Path) -> Path:
    import matplotlib.pyplot as plt

    shown = {label: fits[label] for label in ("nuts", "svi-mf", "svi-mvn", "laplace")}
    axes = plot_compare(shown, var_names=["beta"])
    figure = np.ravel(axes)[0].figure
    figure.suptitle("diabetes data (442 patients): posterior of each regression coefficient beta by engine\n"
                    "mean-field SVI is too narrow for beta[4]-beta[8], the correlated blood serums s1-s5", fontsize=14)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(figure, path)
    plt.close(figure)
    return path
