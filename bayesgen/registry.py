"""Find models and engines by name: one module each under bayesgen.models / bayesgen.inference."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any

from bayesgen._hints import did_you_mean
from bayesgen.spec import ModelSpec

__all__ = ["engine_options", "get_engine_class", "get_model", "list_engines", "list_models", "make_engine"]


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def _unknown(kind: str, name: str, known: list[str]) -> ValueError:
    return ValueError(f"unknown {kind} '{name}'.{did_you_mean(name, known)} Known: {', '.join(known)}")


def list_models() -> dict[str, str]:
    """Zoo model names and their one-line descriptions."""
    return {name: get_model(name).description for name in _modules("bayesgen.models")}


def get_model(name: str) -> ModelSpec:
    """The ``ModelSpec`` of a zoo model, e.g. ``get_model("eight_schools")``."""
    known = _modules("bayesgen.models")
    if name not in known:
        raise _unknown("model", name, known)
    module: ModuleType = importlib.import_module(f"bayesgen.models.{name}")
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"bayesgen.models.{name} defines no ModelSpec called SPEC")
    return spec


def list_engines() -> list[str]:
    """Names of the registered inference engines."""
    return _modules("bayesgen.inference")


def get_engine_class(name: str) -> type:
    """The engine class registered as ``name`` (its module's class whose ``name`` matches)."""
    known = list_engines()
    if name not in known:
        raise _unknown("engine", name, known)
    module = importlib.import_module(f"bayesgen.inference.{name}")
    for value in vars(module).values():
        if isinstance(value, type) and dataclasses.is_dataclass(value) and getattr(value, "name", None) == name:
            return value
    raise TypeError(f"bayesgen.inference.{name} defines no engine class with name = '{name}'")


def make_engine(name: str, options: dict[str, Any]) -> Any:
    """Build engine ``name`` from its options; unknown options raise TypeError listing valid ones."""
    cls = get_engine_class(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in valid:
            raise TypeError(f"engine '{name}' has no option '{key}'.{did_you_mean(key, valid)} "
                            f"Valid options: {', '.join(valid)}")
    return cls(**options)


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
    """
    cls = get_engine_class(name)
    described = _documented(inspect.getdoc(cls) or "")
    return [(f.name, f.default if f.default is not dataclasses.MISSING else None, described.get(f.name, ""))
            for f in dataclasses.fields(cls)]
