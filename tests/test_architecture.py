"""The boundaries of DESIGN.md: who imports arviz, models vs inference, no **kwargs in public APIs."""

import ast
import importlib
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import bayesgen as bg

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LazyModule"
              and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)  # imported at first use, an import all the same
    return names


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_only_convert_and_diagnostics_import_arviz():
    importers = {p.relative_to(ROOT).as_posix() for folder in ("bayesgen", "models", "inference")
                 for p in _sources(folder) if any(m.split(".")[0] == "arviz" for m in _imports(p))}
    assert importers == {"bayesgen/convert.py", "bayesgen/diagnostics.py"}


def test_no_module_hands_arviz_itself_to_another():
    """Other modules call convert's and diagnostics' named functions; none takes their ArviZ."""
    for folder in ("bayesgen", "models", "inference"):
        for path in _sources(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module in ("bayesgen.convert", "bayesgen.diagnostics"):
                    taken = {alias.name for alias in node.names}
                    assert not taken & {"az", "_az", "arviz"}, (path, taken)
    for module in ("bayesgen.convert", "bayesgen.diagnostics"):
        assert "az" not in importlib.import_module(module).__all__


def test_no_module_imports_another_modules_private_names():
    """What one module uses of another is public there (in its __all__ or at least without a
    leading underscore); private modules such as bayesgen._replay may be imported, their private
    names may not."""
    for folder in ("bayesgen", "models", "inference"):
        for path in _sources(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bayesgen"):
                    private = [alias.name for alias in node.names if alias.name.startswith("_")]
                    assert not private, f"{path.relative_to(ROOT)} imports {private} from {node.module}"


def test_models_and_inference_never_import_each_other():
    for path in _sources("models"):
        assert not any(m.startswith("bayesgen.inference") for m in _imports(path)), path
    for path in _sources("inference"):
        assert not any(m.startswith("bayesgen.models") for m in _imports(path)), path


def test_engines_are_frozen_dataclasses_named_after_their_module():
    for name in bg.list_engines():
        cls = bg.registry.get_engine_class(name)
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        assert cls.name == name == cls.__module__.rsplit(".", 1)[1]


def test_no_public_signature_takes_var_keyword_except_fit_predict_and_augment():
    # fit's are an engine's options; predict's and augment's are the program's own arguments
    allowed = {"fit", "predict", "augment"}
    for module in (bg, bg.inference):
        for name in module.__all__:
            obj = getattr(module, name)
            members = [obj] + [m for _, m in inspect.getmembers(obj, inspect.isfunction)] \
                if inspect.isclass(obj) else [obj]
            for member in members:
                if not callable(member) or member.__name__.startswith("_"):
                    continue
                params = inspect.signature(member).parameters.values()
                if any(p.kind is p.VAR_KEYWORD for p in params):
                    assert member.__name__ in allowed, f"{name}.{member.__name__} takes **kwargs"


def test_every_module_has_a_docstring_and_public_ones_an_all():
    for folder in ("bayesgen", "models", "inference"):
        for path in _sources(folder):
            tree = ast.parse(path.read_text())
            assert ast.get_docstring(tree), f"{path} has no module docstring"
            if not path.name.startswith("_") or path.name == "__init__.py":
                assigned = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                            if isinstance(t, ast.Name)}
                assert "__all__" in assigned or path.name == "__main__.py", f"{path} has no __all__"


def test_import_leaves_arviz_pandas_scipy_stats_and_matplotlib_for_first_use():
    """``import bayesgen`` costs little beyond torch and pyro: the heavy analysis stack loads when used."""
    probe = ("import sys, bayesgen; print(sorted(m for m in ('arviz', 'pandas', 'scipy.stats', 'scipy.spatial', "
             "'matplotlib', 'xarray', 'sklearn') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
