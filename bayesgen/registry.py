"""Find models and engines by name: one module each under bayesgen.models / bayesgen.inference."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
import numbers
import os
import pkgutil
import re
import types
import typing
from types import ModuleType
from collections.abc import Collection
from typing import Any, Callable

import numpy as np
import torch

from bayesgen._hints import did_you_mean
from bayesgen.spec import ModelSpec

__all__ = ["checked_engine", "describe_option", "engine_options", "get_engine_class", "get_model", "is_zoo_spec",
           "list_engines", "list_models",
           "make_engine"]


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def _unknown(kind: str, name: str, known: list[str]) -> ValueError:
    return ValueError(f"unknown {kind} '{name}'.{did_you_mean(name, known)} Known: {', '.join(known)}")


def list_models() -> dict[str, str]:
    """Zoo model names and their one-line descriptions.

    Returns
    -------
    dict of str to str
        Each zoo model's name (a module of ``bayesgen.models``), in alphabetical order, and its
        ``ModelSpec.description``. Every zoo module is imported to read it.
    """
    return {name: get_model(name).description for name in _modules("bayesgen.models")}


def get_model(name: str) -> ModelSpec:
    """The ``ModelSpec`` of a zoo model, e.g. ``get_model("eight_schools")``.

    Parameters
    ----------
    name : str
        The model's name, one of :func:`list_models`; another raises ``ValueError`` listing the
        known ones (and suggesting a close one).

    Returns
    -------
    ModelSpec
        The ``SPEC`` of module ``bayesgen.models.<name>``: its program, data loader, simulator and
        metadata.
    """
    known = _modules("bayesgen.models")
    if name not in known:
        raise _unknown("model", name, known)
    module: ModuleType = importlib.import_module(f"bayesgen.models.{name}")
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"bayesgen.models.{name} defines no ModelSpec called SPEC")
    return spec


def is_zoo_spec(spec: ModelSpec) -> bool:
    """Whether ``spec`` holds the program of the zoo model of its name (so that the name finds it).

    Parameters
    ----------
    spec : ModelSpec

    Returns
    -------
    bool
        True where ``spec.name`` is a zoo model's and ``spec.model`` is that model's program.
    """
    if spec.name not in _modules("bayesgen.models"):
        return False
    return spec.model is get_model(spec.name).model


def list_engines() -> list[str]:
    """Names of the registered inference engines.

    Returns
    -------
    list of str
        The modules of ``bayesgen.inference`` (each an engine of that name), in alphabetical order:
        the names ``bg.fit(..., engine=...)`` takes.
    """
    return _modules("bayesgen.inference")


def get_engine_class(name: str) -> type:
    """The engine class registered as ``name`` (its module's class whose ``name`` matches).

    Parameters
    ----------
    name : str
        One of :func:`list_engines`; another raises ``ValueError`` listing the known ones.

    Returns
    -------
    type
        The engine's dataclass, whose fields are its options.
    """
    known = list_engines()
    if name not in known:
        raise _unknown("engine", name, known)
    module = importlib.import_module(f"bayesgen.inference.{name}")
    for value in vars(module).values():
        if isinstance(value, type) and dataclasses.is_dataclass(value) and getattr(value, "name", None) == name:
            return value
    raise TypeError(f"bayesgen.inference.{name} defines no engine class with name = '{name}'")


def make_engine(name: str, options: dict[str, Any], program_arguments: Collection[str] = ()) -> Any:
    """Build engine ``name`` from its options; unknown options raise TypeError listing valid ones
    (and saying so where one is among ``program_arguments``, the fitted program's, such as an
    image model's ``batch_size``, which goes in the data).

    Parameters
    ----------
    name : str
        One of :func:`list_engines`.
    options : dict
        Option -> value. Values are checked and converted to the option's annotated type (an
        integral float such as ``1e4`` to an int); a wrong type or a value out of range raises
        ``TypeError`` or ``ValueError`` naming the option.
    program_arguments : collection of str, default ()
        The fitted program's argument names, used only to word the error for an option that is one.

    Returns
    -------
    object
        An instance of the engine class with those options (the others at their defaults).
    """
    cls = get_engine_class(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key in valid:
            continue
        if key in program_arguments:
            raise TypeError(f"engine '{name}' has no option '{key}': '{key}' is an argument of the program, "
                            f"so pass it in the data: bg.fit(model, {{..., '{key}': ...}}, engine='{name}')")
        hint = did_you_mean(key, valid)
        if key in _SAME_MEANING and _SAME_MEANING[key] in valid:  # the one meaning the spelling misses
            hint = f" Did you mean '{_SAME_MEANING[key]}'?"
        raise TypeError(f"engine '{name}' has no option '{key}'.{hint} Valid options: {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: _checked_option(name, key, hints[key], value) for key, value in options.items()})


def describe_option(value: Any) -> str:
    """An engine option (or a program argument) as text that another process gives alike.

    A function or class is named by its qualified name, a bound method by its class's and its
    own, a ``functools.partial`` by its function and arguments; anything else by its repr with
    memory addresses (``<Guide object at 0x7f...>``, which differ between processes) left out.

    Parameters
    ----------
    value : object
        The option's value.

    Returns
    -------
    str
    """
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.isbuiltin(value):
        return f"{getattr(value, '__module__', None)}.{value.__qualname__}"
    if inspect.ismethod(value):
        owner = type(value.__self__)
        return f"{owner.__module__}.{owner.__qualname__}.{value.__func__.__name__}"
    if isinstance(value, functools.partial):
        arguments = [describe_option(argument) for argument in value.args]
        arguments += [f"{key}={describe_option(argument)}" for key, argument in sorted(value.keywords.items())]
        return f"partial({describe_option(value.func)}, {', '.join(arguments)})"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def checked_engine(engine: Any) -> Any:
    """An instance of a registered engine class (``bg.inference.NUTS(num_samples=0)``) checked
    as :func:`make_engine` checks options given by name, so that a bad value is refused by name
    before the fit, not met deep inside a sampler after warmup; other engines as they are.

    Parameters
    ----------
    engine : object
        An engine instance.

    Returns
    -------
    object
        For a registered engine class, a new instance with the checked, converted options;
        otherwise ``engine`` itself.
    """
    name = getattr(type(engine), "name", None)
    if name not in list_engines() or get_engine_class(name) is not type(engine):
        return engine
    return make_engine(name, {field.name: getattr(engine, field.name) for field in dataclasses.fields(engine)})


#: Options of one meaning under two names: a sampler's ``num_samples`` are the draws that an
#: approximation (``num_draws``) takes from its fitted distribution; by spelling alone
#: ``num_samples`` is closest to ``num_steps``, which means optimiser steps.
_SAME_MEANING = {"num_samples": "num_draws", "num_draws": "num_samples"}

#: The least value of an integer option (counts, sizes, a rank) where it is not 1, by engine and
#: option. No warmup, or no optimisation steps of ``svi`` (a fit that keeps its Laplace start),
#: are runs a user may mean; an optimiser's zero steps would hand back its starting point as an
#: optimum.
_LEAST_COUNT = {("nuts", "num_warmup"): 0, ("hmc", "num_warmup"): 0, ("svi", "num_steps"): 0}

#: The values each real-valued option may take (every one must be finite), in the words of the error.
_REAL_RANGE: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda v: v > 0, "a positive number"),
    "lr_decay": (lambda v: 0 < v <= 1, "in (0, 1] (the factor the learning rate has decayed by at the last step)"),
    "tol": (lambda v: v >= 0, "a non-negative number"),
    "init_scale": (lambda v: v > 0, "a positive number"),
    "target_accept": (lambda v: 0 < v < 1, "strictly between 0 and 1"),
}


def _checked_option(engine: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` as option ``key`` of its annotated type (int, float, bool, str, or one of them or
    None), or a ``TypeError``/``ValueError`` naming the option: the string ``"false"`` would
    otherwise count as true, and ``num_samples="100"`` fail deep inside the sampler.

    Integers accept numpy integers and integral floats (``1e4``); floats accept any real
    number; options of other types (a guide, a discriminator) are the engine's to check.
    """
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:  # lr=torch.tensor(0.01)
        value = value.item()
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    kinds = [kind for kind in allowed if kind in (int, float, bool, str)]
    if len(kinds) != 1:
        return value
    kind, where = kinds[0], f"engine '{engine}': option {key}"
    if kind is bool:
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1)):
            return bool(value)
        raise TypeError(f"{where} must be True or False, got {value!r}")
    if kind is str:
        if isinstance(value, (str, os.PathLike)):  # a checkpoint's path may be a pathlib.Path
            return os.fspath(value)
        raise TypeError(f"{where} must be a string, got {value!r}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if kind is float:
        real = float(value)
        allowed_range, words = _REAL_RANGE.get(key, (lambda v: True, "a finite number"))
        if not (math.isfinite(real) and allowed_range(real)):
            raise ValueError(f"{where} must be {words}, got {value!r}")
        return real
    if not float(value).is_integer():
        raise TypeError(f"{where} must be an integer, got {value!r}")
    count = int(value)
    least = _LEAST_COUNT.get((engine, key), 1)
    if count < least:
        raise ValueError(f"{where} must be at least {least}, got {count}")
    return count


def _documented(doc: str) -> dict[str, str]:
    """Parameter name -> first sentence of its description, from a numpydoc ``Parameters`` section."""
    lines = doc.splitlines()
    start = next((i + 2 for i, line in enumerate(lines) if line.strip() == "Parameters"), len(lines))
    described: dict[str, list[str]] = {}
    names: list[str] = []
    for line in lines[start:]:
        if line and not line[0].isspace():
            if ":" not in line:
                break  # the next section's title
            names = [name.strip() for name in line.split(":")[0].split(",")]
            for name in names:
                described[name] = []
        elif line.strip():
            for name in names:
                described[name].append(line.strip())
    first = {}
    for name, words in described.items():
        text = " ".join(words).replace("``", "")
        first[name] = text.split(". ")[0].rstrip(".") + "." if text else ""
    return first


def engine_options(name: str) -> list[tuple[str, Any, str]]:
    """Engine ``name``'s options as ``(option, default, first line of its description)``, in field order.

    The descriptions come from the engine class's numpydoc ``Parameters`` section, so the
    command line's ``bayesgen engines`` and ``help(bg.inference.NUTS)`` never disagree.

    Parameters
    ----------
    name : str
        One of :func:`list_engines`.

    Returns
    -------
    list of tuple
        ``(option, default, description)`` for each option: its name, its default (None where it
        has none) and the first sentence of its description ("" where it has none).
    """
    cls = get_engine_class(name)
    described = _documented(inspect.getdoc(cls) or "")
    return [(f.name, f.default if f.default is not dataclasses.MISSING else None, described.get(f.name, ""))
            for f in dataclasses.fields(cls)]
