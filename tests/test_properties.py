"""Property-based tests of data validation (hypothesis): every generated input either gives the right
log density or a clear ValueError/TypeError naming the argument, never a crash from inside torch or
Pyro (DESIGN.md section 7)."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from bayesgen.fitting import prepare
from bayesgen.validate import to_tensors
from programs import line




DTYPES = ["int64", "float32", "float64", "bool"]
CONTAINERS = ["numpy", "list", "series", "tensor"]
FEW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def arrays(draw, length):
    """A data argument: ``(value handed to bg, float64 array of what it holds, dtype name, ndim)``."""
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.sampled_from([1, 1, 1, 0, 2]))
    shape = {0: (), 1: (length,), 2: (length, 1)}[ndim]
    size = math.prod(shape)
    if dtype == "bool":
        values = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)), dtype=bool)
    elif dtype == "int64":
        values = np.array(draw(st.lists(st.integers(-5, 5), min_size=size, max_size=size)), dtype=np.int64)
    else:
        element = st.floats(-5, 5, width=32 if dtype == "float32" else 64)
        if draw(st.integers(0, 9)) == 0:  # now and then a NaN or an infinity
            element = st.one_of(element, st.sampled_from([math.nan, math.inf, -math.inf]))
        values = np.array(draw(st.lists(element, min_size=size, max_size=size)), dtype=dtype)
    values = values.reshape(shape)
    container = draw(st.sampled_from(CONTAINERS)) if ndim == 1 else draw(st.sampled_from(["numpy", "tensor"]))
    if container == "list":
        given_value = values.tolist()
    elif container == "series":
        given_value = pd.Series(values)
    elif container == "tensor":
        given_value = torch.as_tensor(values)
    else:
        given_value = values
    return given_value, values.astype(np.float64), dtype, ndim


@st.composite
def regression_data(draw):
    n_y = draw(st.integers(0, 6))
    n_x = draw(st.one_of(st.just(n_y), st.integers(0, 6)))
    x = draw(arrays(n_x))
    y = draw(arrays(n_y))
    point = draw(st.lists(st.floats(-2, 2), min_size=3, max_size=3))
    return x, y, point


def _closed_form(x: np.ndarray, y: np.ndarray, point: list[float]) -> float:
    """The joint log density of ``line`` at unconstrained ``(a, b, log s)``, with the log-Jacobian."""
    a, b, log_s = point
    s = math.exp(log_s)
    prior = stats.norm.logpdf(a) + stats.norm.logpdf(b) + stats.halfnorm.logpdf(s) + log_s
    return float(prior + stats.norm.logpdf(y, a + b * x, s).sum())


def _expected_failure(x_info, y_info) -> bool:
    """Whether the input is invalid, by the rules the program and DESIGN.md section 7 set.

    Non-finite floats, a 0-d or empty y and bool y (a Normal cannot score it) are refused. The
    plate's size is ``len(y)``; the site's shape is that of ``a + b * x`` with the plate's
    dim (-1) set to it, which needs x's last dim to be that size or 1 (a length-1 x broadcasts,
    as in numpy and Pyro, with a warning); y must have exactly the site's shape (no silent broadcast).
    """
    (_, x, _, x_ndim), (_, y, y_dtype, y_ndim) = x_info, y_info
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return True
    if y_ndim == 0 or y.shape[0] == 0 or y_dtype == "bool":
        return True
    n = y.shape[0]
    if x_ndim >= 1 and x.shape[-1] not in (n, 1):
        return True
    return tuple(y.shape) != np.broadcast_shapes(x.shape, (n,))


def _check(case) -> None:
    x_info, y_info, point = case
    data = {"x": x_info[0], "y": y_info[0]}
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            problem = prepare(line, data)
        value = float(problem.density.log_density(torch.tensor([point])))
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert _expected_failure(x_info, y_info), f"valid input refused: {message}"
        assert "data['x']" in message or "data['y']" in message or "site 'y'" in message, message
        assert "Trace Shapes" not in message  # Pyro's trace table is not the explanation
        return
    assert not _expected_failure(x_info, y_info), "invalid input accepted"
    broadcast = x_info[3] >= 1 and x_info[1].shape[0] == 1 and y_info[1].shape[0] > 1
    assert [str(w.message).split(" (")[0] for w in said] == (["data['x'] has 1 row"] if broadcast else [])
    assert value == pytest.approx(_closed_form(x_info[1], y_info[1], point), rel=1e-9, abs=1e-9)


@FEW
@given(regression_data())
def test_regression_data_give_the_closed_form_or_a_named_error(case):
    _check(case)


@pytest.mark.slow
@MANY
@given(regression_data())
def test_regression_data_give_the_closed_form_or_a_named_error_many(case):
    _check(case)


ODD_VALUES = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    st.lists(st.integers(-10**6, 10**6), max_size=5),
    st.lists(st.booleans(), max_size=5),
    st.lists(st.text(max_size=3), min_size=1, max_size=3),
    st.lists(st.complex_numbers(allow_nan=False, allow_infinity=False, max_magnitude=10), min_size=1, max_size=3),
    st.lists(st.lists(st.floats(-1, 1), max_size=3), min_size=1, max_size=3),  # possibly ragged
    st.lists(st.none(), min_size=1, max_size=2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 10),
)


def _check_conversion(value) -> None:
    try:
        out = to_tensors({"v": value}, torch.device("cpu"))["v"]
    except (ValueError, TypeError) as exc:
        assert "data['v']" in str(exc), str(exc)
        return
    if isinstance(value, (int, float)):
        assert out == value and not (isinstance(value, float) and math.isnan(value))
        return
    raw = np.asarray(value)
    assert raw.dtype.kind in "biuf", f"{raw.dtype} accepted"
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == raw.shape
    if raw.dtype.kind == "f":
        assert out.dtype == torch.get_default_dtype() and np.isfinite(raw).all()
    np.testing.assert_array_equal(out.numpy(), raw.astype(out.numpy().dtype))


@FEW
@given(ODD_VALUES)
def test_conversion_keeps_numbers_or_names_the_argument(value):
    _check_conversion(value)


@pytest.mark.slow
@MANY
@given(ODD_VALUES)
def test_conversion_keeps_numbers_or_names_the_argument_many(value):
    _check_conversion(value)
