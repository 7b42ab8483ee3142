"""Models and engines are found by name."""

import pytest

import bayesgen as bg


def test_list_engines():
    assert bg.list_engines() == ["gan", "hmc", "laplace", "map", "mle", "nuts", "svi"]


def test_list_models_gives_one_line_descriptions():
    models = bg.list_models()
    assert {"eight_schools", "linear_regression"} <= set(models)
    assert all(text and "\n" not in text for text in models.values())


def test_get_model_returns_a_complete_spec():
    spec = bg.get_model("eight_schools")
    assert isinstance(spec, bg.ModelSpec) and spec.observed == {"y": "y"}
    assert "Rubin" in spec.card and spec.load_data is not None and spec.simulate is not None


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown model"):
        bg.get_model("nope")
    with pytest.raises(ValueError, match="unknown engine"):
        bg.registry.get_engine_class("nope")
