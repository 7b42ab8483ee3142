"""Autoregression: Yule's AR(2) for the sunspot cycle, four engines and a 20-year forecast.

Fits bayesgen's stationary AR(2) — coefficients parametrised by partial autocorrelations
in (-1, 1), exact Gaussian likelihood — to the yearly mean sunspot numbers 1700-2008 that
statsmodels bundles (square-root transformed and standardised, as ``load_data`` returns
them) with NUTS, the Laplace approximation, mean-field SVI and maximum likelihood. Prints
``bg.compare`` against NUTS, the cycle length implied by the complex roots of the AR
polynomial (about 11 years), and draws the posterior predictive forecast of the next 20
years as a fan (50% and 90% intervals) to ``ar_forecast.png``.

Run ``python examples/ar.py`` (``--smoke`` for a seconds-long check; it uses a simulated
series when statsmodels is not installed).

References: Yule (1927), "On a method of investigating periodicities in disturbed series,
with special reference to Wolfer's sunspot numbers", Phil. Trans. R. Soc. A 226; Monahan
(1984), Biometrika 71(2); Box, Jenkins & Reinsel, Time Series Analysis, ch. 3 and 7.
"""

from __future__ import annotations

import argparse
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402
import arviz as az  # noqa: E402  (after bayesgen, which silences ArviZ's import-time notice)

FIRST_YEAR = 1700
HORIZON = 20


def load(smoke: bool) -> tuple[dict[str, Any], str]:
    """The sunspot series and its name; a simulated AR(2) series (smoke mode) without statsmodels."""
    spec = bg.get_model("ar")
    try:
        return spec.load_data(), f"Yearly sunspot numbers {FIRST_YEAR}-2008"
    except ImportError as exc:
        if not smoke:
            raise
        print(f"{exc}; using a simulated series")
        return spec.simulate(seed=0, num_times=120)[0], "Simulated data"


def cycle_years(phi: np.ndarray) -> np.ndarray:
    """Period of the AR(2) cycle, ``2 pi / arg(root)``, per draw; NaN where the roots are real."""
    phi1, phi2 = phi[..., 0], phi[..., 1]
    cos = np.where(phi2 < 0, phi1 / (2 * np.sqrt(np.abs(phi2))), np.nan)
    angle = np.arccos(np.clip(cos, -1, 1))
    return np.divide(2 * np.pi, angle, out=np.full_like(angle, np.nan), where=np.abs(cos) < 1)


def plot_forecast(fit: bg.Fit, y: np.ndarray, path: str, title: str, sunspots: bool = True) -> None:
    """The last 60 years and the forecast fan, in the model's (standardised square-root) units."""
    forecast = fit.predict(horizon=HORIZON, y=y)["forecast"]
    years = (FIRST_YEAR if sunspots else 0) + np.arange(len(y))
    ahead = years[-1] + 1 + np.arange(HORIZON)
    ax = az.plot_hdi(ahead, forecast, hdi_prob=0.9, fill_kwargs={"alpha": 0.25, "label": "90% interval"})
    az.plot_hdi(ahead, forecast, hdi_prob=0.5, ax=ax, fill_kwargs={"alpha": 0.45, "label": "50% interval"})
    ax.plot(ahead, np.median(forecast, axis=(0, 1)), color="C0", label="median forecast")
    ax.plot(years[-60:], y[-60:], color="k", lw=1, label="observed")
    ax.set(xlabel="year" if sunspots else "time step",
           ylabel="sqrt(sunspot number), standardised" if sunspots else "simulated value", title=title)
    ax.legend(loc="best", fontsize=8, framealpha=0.5)
    ax.figure.savefig(path, dpi=90, bbox_inches="tight")


def main(smoke: bool = False, out: str = "ar_forecast.png") -> pd.DataFrame:
    """Fit four engines, print the comparison and the cycle length, save the forecast; returns bg.compare's table."""
    torch.set_num_threads(1)  # the tensors are small: OpenMP hand-offs would cost more than they save
    draws, steps, chains = (40, 150, 2) if smoke else (500, 2000, 4)
    engines = {
        "nuts": bg.inference.NUTS(num_warmup=draws, num_samples=draws, num_chains=chains),
        "laplace": bg.inference.Laplace(),
        "svi-normal": bg.inference.SVI(guide="normal", num_steps=steps, lr=0.05),
        "mle": bg.inference.MLE(),
    }
    data, source = load(smoke)
    sunspots = not source.startswith("Simulated")
    unit = "years" if sunspots else "steps"
    print(f"data: {source}, {len(data['y'])} {unit}")
    fits = {label: bg.fit("ar", data, engine=engine, seed=0, progress=False) for label, engine in engines.items()}
    for label, fit in fits.items():
        period = cycle_years(fit.posterior["phi"])
        low, mid, high = np.nanquantile(period, [0.05, 0.5, 0.95])
        print(f"{label:>10}: {fit.timing['total']:5.1f} s; cycle {mid:.1f} {unit} (90%: {low:.1f}-{high:.1f}); "
              + _smoke.verdict(fit, smoke))
    table = bg.compare(fits, reference="nuts")
    columns = ["engine", "parameter", "ref_mean", "ref_sd", "mean_diff_sd", "sd_ratio", "ks_pvalue"]
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(table[columns].to_string(index=False, float_format="{:.3f}".format))
    title = f"{source}: AR(2) forecast of the next {HORIZON} {unit}"
    plot_forecast(fits["nuts"], np.asarray(data["y"]), out, _smoke.title(title, smoke), sunspots)
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    parser.add_argument("--out", default="ar_forecast.png", help="where to write the forecast plot")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(args.smoke, args.out)
