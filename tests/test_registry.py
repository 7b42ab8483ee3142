"""Models and engines are found by name."""

import numpy as np
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
    with pytest.raises(ValueError, match="unknown engine 'NUTS'. Did you mean 'nuts'"):
        bg.registry.get_engine_class("NUTS")


def test_engine_options_are_checked_against_their_types():
    make = bg.registry.make_engine
    with pytest.raises(TypeError, match="engine 'nuts': option dense_mass must be True or False, got 'false'"):
        make("nuts", {"dense_mass": "false"})  # a non-empty string would count as true
    with pytest.raises(TypeError, match="option num_samples must be an integer, got '100'"):
        make("nuts", {"num_samples": "100"})
    with pytest.raises(TypeError, match="option num_steps must be an integer, got 10.5"):
        make("svi", {"num_steps": 10.5})
    with pytest.raises(TypeError, match="option lr must be a number, got True"):
        make("svi", {"lr": True})
    with pytest.raises(ValueError, match="option num_draws must be at least 1, got 0"):
        make("laplace", {"num_draws": 0})
    nuts = make("nuts", {"num_samples": np.int64(50), "num_warmup": 0, "target_accept": 0.9, "jit_compile": None})
    assert (type(nuts.num_samples), nuts.num_samples, nuts.num_warmup) == (int, 50, 0)
    assert make("svi", {"num_steps": 1e3, "guide": "mvn"}).num_steps == 1000  # an integral float is a count
    import torch

    assert make("svi", {"lr": torch.tensor(0.05), "num_steps": np.array(7)}).lr == 0.05  # 0-d arrays: their number
    from pathlib import Path

    assert make("svi", {"checkpoint": Path("run.pt")}).checkpoint == "run.pt"  # a path is a string option
    assert make("nuts", {"dense_mass": 1}).dense_mass is True  # 0 and 1 are booleans, as in Python


def test_an_engine_instance_is_checked_as_an_engine_name_and_its_options_are():
    """bg.inference.NUTS(num_samples=0) met an IndexError after warmup; SVI(lr=-1) torch's message."""
    from programs import line

    data = {"x": np.linspace(-1, 1, 30), "y": np.sin(np.linspace(-1, 1, 30))}
    with pytest.raises(ValueError, match="engine 'nuts': option num_samples must be at least 1, got 0"):
        bg.fit(line, data, engine=bg.inference.NUTS(num_warmup=5, num_samples=0, num_chains=1))
    with pytest.raises(ValueError, match="engine 'svi': option lr must be a positive number, got -1.0"):
        bg.fit(line, data, engine=bg.inference.SVI(lr=-1.0))
    with pytest.raises(ValueError, match="engine 'mle': option num_steps must be at least 1, got 0"):
        bg.fit(line, data, engine="mle", num_steps=0)  # only svi keeps a start (its Laplace one) as a fit
    with pytest.raises(TypeError, match="positional"):
        bg.inference.NUTS(10)  # keyword-only: a bare 10 is no option
    assert bg.registry.make_engine("svi", {"num_steps": 0}).num_steps == 0


def test_real_options_must_be_finite_and_in_their_range():
    make = bg.registry.make_engine
    cases = [("svi", "lr", -1.0, "a positive number"), ("mle", "lr", float("nan"), "a positive number"),
             ("map", "lr_decay", 0, r"in \(0, 1\]"), ("svi", "lr_decay", 5, r"in \(0, 1\]"),
             ("svi", "tol", -1e-3, "a non-negative number"), ("nuts", "target_accept", 1.0, "strictly between 0 and 1")]
    for engine, option, value, words in cases:
        with pytest.raises(ValueError, match=rf"engine '{engine}': option {option} must be {words}"):
            make(engine, {option: value})
    assert make("svi", {"lr": 3e-3, "lr_decay": 1}).lr_decay == 1.0


def test_a_program_argument_passed_as_an_engine_option_is_pointed_to_the_data():
    with pytest.raises(TypeError, match="'batch_size' is an argument of the program, so pass it in the data"):
        bg.fit("vae", {"images": np.zeros((4, 8, 8))}, engine="svi", batch_size=64)


def test_the_command_line_reads_true_false_and_none_in_any_case():
    from bayesgen.cli import _options

    assert _options(["centered=false", "dense_mass=TRUE", "jit_compile=None", "lr=0.1", "guide=mvn"]) == {
        "centered": False, "dense_mass": True, "jit_compile": None, "lr": 0.1, "guide": "mvn"}
    with pytest.raises(ValueError, match="--option expects key=value, got 'num_samples'"):
        _options(["num_samples"])


def test_an_unknown_command_line_option_shows_its_commands_usage(capsys):
    from bayesgen.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["fit", "eight_schools", "--bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    # the top-level usage (bayesgen [-h] {demo,fit,...}) said nothing about fit's options before
    assert err.startswith("usage: bayesgen fit") and "unrecognized arguments: --bogus" in err
