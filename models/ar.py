"""Stationary autoregressive AR(p) time series, parametrised by partial autocorrelations, with forecasts."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints

from bayesgen._counts import check_count
from bayesgen.datasets import require
from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "AutoRegressive", "levinson", "load_data", "model", "pacf_to_ar", "simulate"]


def levinson(pacf: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Durbin-Levinson recursion from partial autocorrelations to AR coefficients of every order.

    ``phi[k]_j = phi[k-1]_j - r_k * phi[k-1]_{k-j}`` and ``phi[k]_k = r_k`` (Monahan 1984):
    any ``r`` in ``(-1, 1)^p`` gives a stationary AR(p) and every stationary AR(p) has one.

    Parameters
    ----------
    pacf : Tensor, shape ``(..., p)``
        Partial autocorrelations ``r_1, ..., r_p`` in ``(-1, 1)``.
    scale : Tensor, shape ``(...)``
        Innovation sd ``sigma`` of the AR(p) process.

    Returns
    -------
    coefficients : Tensor, shape ``(..., p + 1, p)``
        Row ``k`` holds the coefficients of the best linear predictor of ``y_t - mu`` from its
        ``k`` previous values (most recent first), padded with zeros; row ``p`` holds the
        AR(p) coefficients ``phi``.
    sds : Tensor, shape ``(..., p + 1)``
        The prediction-error sd of each predictor, ``sigma / sqrt(prod_{j > k} (1 - r_j^2))``:
        ``sds[..., 0]`` is the stationary sd and ``sds[..., p] = sigma``.
    """
    p = pacf.shape[-1]
    phi, rows = pacf[..., :0], [pacf.new_zeros(pacf.shape)]
    for k in range(p):
        r = pacf[..., k:k + 1]
        phi = torch.cat([phi - r * phi.flip(-1), r], dim=-1)
        rows.append(torch.nn.functional.pad(phi, (0, p - k - 1)))
    remaining = (1.0 - pacf**2).flip(-1).cumprod(-1).flip(-1)  # prod_{j >= k} (1 - r_j^2)
    remaining = torch.cat([remaining, pacf.new_ones(pacf.shape[:-1] + (1,))], dim=-1)
    return torch.stack(rows, dim=-2), scale[..., None] / remaining.sqrt()


def pacf_to_ar(pacf: torch.Tensor) -> torch.Tensor:
    """AR coefficients ``phi``, shape ``(..., p)``, of partial autocorrelations in ``(-1, 1)``.

    The last row of :func:`levinson`'s coefficients (which do not depend on the innovation sd).

    Parameters
    ----------
    pacf : Tensor, shape ``(..., p)``
        Partial autocorrelations ``r_1, ..., r_p``, each in ``(-1, 1)``.

    Returns
    -------
    Tensor, shape ``(..., p)``
        The coefficients ``phi_1, ..., phi_p`` of the stationary AR(p) process, lag 1 first, in ``pacf``'s dtype.

    Examples
    --------
    >>> pacf_to_ar(torch.tensor([0.5, -0.2]))
    tensor([ 0.6000, -0.2000])
    """
    return levinson(pacf, pacf.new_ones(pacf.shape[:-1]))[0][..., -1, :]


class AutoRegressive(TorchDistribution):
    """The next ``num_times`` values of a stationary Gaussian AR(p) series that continues ``history``.

    ``y_t = mu + sum_k phi_k (y_{t-k} - mu) + sigma * eps_t``. While fewer than p past
    values exist (the start of a series without history) each value is drawn from its
    exact stationary conditional given the values so far (the lower-order predictors of
    :func:`levinson`), so ``log_prob`` is the exact likelihood and ``sample`` draws from it.

    Parameters
    ----------
    loc : Tensor, shape ``(...)``
        The stationary mean ``mu``.
    pacf : Tensor, shape ``(..., p)``
        Partial autocorrelations in ``(-1, 1)``.
    scale : Tensor, shape ``(...)``
        Innovation sd ``sigma``.
    num_times : int
        Length of the series (the event shape).
    history : Tensor, shape ``(..., H)``, optional
        Values that precede the series (the last p matter); None starts it stationary.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive,
                       "pacf": constraints.independent(constraints.interval(-1.0, 1.0), 1)}
    support = constraints.real_vector

    def __init__(self, loc: torch.Tensor, pacf: torch.Tensor, scale: torch.Tensor, num_times: int,
                 history: torch.Tensor | None = None, validate_args: bool | None = None) -> None:
        history = pacf.new_zeros(0) if history is None else history
        batch_shape = torch.broadcast_shapes(loc.shape, scale.shape, pacf.shape[:-1], history.shape[:-1])
        self.loc, self.scale = loc.expand(batch_shape), scale.expand(batch_shape)
        self.pacf = pacf.expand(batch_shape + pacf.shape[-1:])
        self.history = history.expand(batch_shape + history.shape[-1:])
        self.num_times = num_times
        self.coefficients, self.sds = levinson(self.pacf, self.scale)
        super().__init__(batch_shape, torch.Size([num_times]), validate_args=validate_args)

    def expand(self, batch_shape: torch.Size | tuple[int, ...], _instance: Any = None) -> AutoRegressive:
        """The same process with its parameters broadcast to ``batch_shape``."""
        shape = torch.Size(batch_shape)
        if shape == self.batch_shape:
            return self
        return AutoRegressive(self.loc.expand(shape), self.pacf.expand(shape + self.pacf.shape[-1:]),
                              self.scale.expand(shape), self.num_times,
                              self.history.expand(shape + self.history.shape[-1:]), validate_args=False)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Draw series by running the recursion forward, vectorised over sample and batch dims."""
        shape = torch.Size(sample_shape) + self.batch_shape
        p = self.pacf.shape[-1]
        with torch.no_grad():
            # centred values, most recent first, padded with zeros that zero coefficients ignore
            recent = (self.history - self.loc[..., None]).flip(-1)[..., :p].expand(shape + (-1,))
            recent = torch.nn.functional.pad(recent, (0, p - recent.shape[-1]))
            seen, path = self.history.shape[-1], []
            for _ in range(self.num_times):
                order = min(seen, p)
                mean = (self.coefficients[..., order, :] * recent).sum(-1)
                value = mean + self.sds[..., order] * torch.randn(shape, dtype=mean.dtype, device=mean.device)
                recent = torch.cat([value[..., None], recent[..., :-1]], dim=-1)
                path.append(value)
                seen += 1
            return torch.stack(path, dim=-1) + self.loc[..., None]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact Gaussian log-likelihood of the series ``value`` given ``history``, shape ``batch_shape``."""
        if self._validate_args:
            self._validate_sample(value)
        lead = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        start, p = self.history.shape[-1], self.pacf.shape[-1]
        x = torch.cat([self.history.expand(lead + (start,)), value.expand(lead + value.shape[-1:])], dim=-1)
        x = x - self.loc[..., None]
        times = torch.arange(start, x.shape[-1], device=x.device)
        orders = times.clamp(max=p)  # values before time t: t, at most p of them used
        lags = (times[:, None] - 1 - torch.arange(p, device=x.device)).clamp(min=0)  # (n, p), zero-weighted if < 0
        mean = (x[..., lags] * self.coefficients[..., orders, :]).sum(-1)
        return dist.Normal(mean, self.sds[..., orders]).log_prob(x[..., start:]).sum(-1)


def _series_length(y: torch.Tensor | None, num_times: int | None) -> int:
    if y is not None:
        if y.dim() != 1:
            raise ValueError(f"y must be one series, shape (num_times,), got shape {tuple(y.shape)}")
        return int(y.shape[0])
    if isinstance(num_times, bool) or not isinstance(num_times, numbers.Integral) or num_times < 1:
        raise ValueError(f"pass the series y, or num_times (a positive int) to simulate one; got num_times={num_times!r}")
    return int(num_times)


def model(y: torch.Tensor | None = None, num_lags: int = 2, horizon: int = 0, num_times: int | None = None) -> None:
    """Stationary AR(p): ``y_t = mu + sum_k phi_k (y_{t-k} - mu) + sigma * eps_t``, ``eps_t ~ Normal(0, 1)``.

    Priors (for a standardised series): ``mu ~ Normal(0, 1)``, ``sigma ~ HalfNormal(1)`` and
    the partial autocorrelations ``pacf_k ~ Uniform(-1, 1)``, mapped to the coefficients
    ``phi`` (a deterministic site) by :func:`levinson`, so every draw is stationary. The
    likelihood is exact: the first p values come from the stationary process rather than
    being conditioned on. The same recursion gives their terms at no extra cost, and the
    site ``y`` then covers the whole series, so simulated and replicated series have the
    data's shape and ``log_prob`` is the density that ``sample`` draws from.

    Parameters
    ----------
    y : Tensor, shape ``(T,)``, optional
        The series; None simulates one of length ``num_times``.
    num_lags : int
        The order p.
    horizon : int
        If positive, also draw the ``forecast`` site: the next ``horizon`` values after
        ``y``. ``fit.predict(horizon=20, y=series)`` returns the forecast draws.
    num_times : int, optional
        Length of a simulated series, needed when ``y`` is None (``bg.sbc``, ``fit.generate``);
        ignored when ``y`` is given, so that a fit's ``num_times`` does not stop
        ``fit.predict(horizon=h, y=longer)`` forecasting after a longer series.
    """
    num_lags, horizon = check_count("num_lags", num_lags), check_count("horizon", horizon, minimum=0)
    length = _series_length(y, num_times)
    if y is not None and num_lags >= length:
        raise ValueError(f"num_lags={num_lags} needs a series longer than its lags, and y has {length} values")
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    pacf = pyro.sample("pacf", dist.Uniform(-1.0, 1.0).expand([int(num_lags)]).to_event(1))
    pyro.deterministic("phi", pacf_to_ar(pacf), event_dim=1)
    pyro.sample("y", AutoRegressive(mu, pacf, sigma, length), obs=y)
    if horizon:
        if y is None:
            raise ValueError("a forecast continues an observed series: pass it with the horizon, "
                             "e.g. fit.predict(horizon=20, y=series)")
        pyro.sample("forecast", AutoRegressive(mu, pacf, sigma, int(horizon), history=y[-int(num_lags):]))


def load_data() -> dict[str, Any]:
    """Yearly mean sunspot numbers 1700-2008 (statsmodels), square-root transformed and standardised.

    Returns
    -------
    dict
        The program's arguments: ``"y"``, float ndarray ``(309,)`` (mean 0, sd 1), and ``"num_times"``: 309.
    """
    datasets = require("statsmodels.datasets", "the sunspot numbers")
    counts = datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(float)
    root = np.sqrt(counts)
    return {"y": (root - root.mean()) / root.std(), "num_times": len(root)}


def simulate(seed: int, num_times: int = 200, num_lags: int = 2) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stationary AR(p) series from known parameters; returns ``(data, truth)``.

    ``mu ~ Normal(0, 1)``, ``sigma ~ Uniform(0.5, 1)``, ``pacf_k ~ Uniform(-0.5, 0.5)``: kept
    away from +-1, since several small ``1 - pacf_k^2`` factors put a root of
    the AR polynomial next to the unit circle, where the series mixes so slowly that its
    estimates are far from normal. ``truth`` holds them and the deterministic ``phi``.
    The series starts stationary, as the model's likelihood assumes.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same series.
    num_times : int
        T, the length of the series.
    num_lags : int
        The order p.

    Returns
    -------
    data : dict
        The program's arguments: ``"y"``, float ndarray ``(T,)``, and ``"num_times"``.
    truth : dict
        ``"mu"`` and ``"sigma"`` (floats), ``"pacf"`` and ``"phi"``, float ndarrays ``(p,)``.
    """
    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(), rng.uniform(0.5, 1.0)
    pacf = rng.uniform(-0.5, 0.5, num_lags)
    coefficients, sds = (t.numpy() for t in levinson(torch.tensor(pacf), torch.tensor(sigma)))
    x = np.zeros(num_times)  # the recursion of AutoRegressive.sample, driven by numpy's generator
    for t, eps in enumerate(rng.normal(size=num_times)):
        order = min(t, num_lags)
        x[t] = coefficients[order, :order] @ x[t - 1::-1][:order] + sds[order] * eps
    y = x + mu
    return {"y": y, "num_times": num_times}, {"mu": mu, "sigma": sigma, "pacf": pacf,
                                             "phi": pacf_to_ar(torch.tensor(pacf)).numpy()}


SPEC = ModelSpec(
    name="ar",
    model=model,
    observed={"y": "y"},
    dims={"pacf": ("lag",), "phi": ("lag",), "y": ("time",), "forecast": ("horizon",)},
    description="Stationary AR(p) time series with forecasts (yearly sunspot numbers, 1700-2008)",
    card=(
        "Gaussian autoregression of order p whose prior puts all its mass on stationary "
        "processes: the coefficients phi are a deterministic function of partial "
        "autocorrelations pacf in (-1, 1)^p (Barndorff-Nielsen & Schou 1973, J. Multivar. Anal. "
        "3(4); Monahan 1984, 'A note on enforcing stationarity in autoregressive-moving average "
        "models', Biometrika 71(2)), through the Durbin-Levinson recursion, which also gives "
        "the exact likelihood of the first p values (Box, Jenkins & Reinsel, Time Series "
        "Analysis, ch. 7), so no value is conditioned on; the MLE is statsmodels' exact ARIMA(p, 0, 0) "
        "estimate. The uniform prior on the partial autocorrelations follows Jones (1987), "
        "'Randomly choosing parameters from the stationarity and invertibility region', "
        "Technometrics 29(2). Forecasts: fit.predict(horizon=h, y=series) draws the next h "
        "values from the posterior predictive. The default data are the yearly mean sunspot "
        "numbers 1700-2008 bundled with statsmodels; the square root stabilises their "
        "variance (the usual transform since Tong 1990, Non-linear Time Series) and the "
        "result is standardised, so the priors are weakly informative. Yule (1927), Phil. "
        "Trans. R. Soc. A 226, fitted the first AR(2) to these data; its period of about "
        "11 years shows as complex roots of the AR polynomial. The pointwise log-likelihood "
        "is one term per series (time points are not exchangeable, so PSIS-LOO does not apply)."
    ),
    load_data=load_data,
    simulate=simulate,
)
