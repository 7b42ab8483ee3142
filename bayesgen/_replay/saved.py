"""Inductor's compiled programs saved by the recorded graph they compile, for the next process.

Inductor's own on-disk cache keys a graph only after AOTAutograd has traced it again in the new
process (most of a second for a NUTS step), and hands back the program inside wrappers that
:func:`~bayesgen._replay.inductor.compile_graph` then gets past. A recorded graph already says
everything that decides Inductor's program: its code, and the layout (shapes, strides, dtypes,
devices, shared storage) of its constants and arguments. So the program that
``compile_graph`` called directly is saved here under a hash of those, with the torch and Python
versions, the machine, Inductor's configuration and the choice of vector instructions, and a
later process with the same recording loads it (Inductor's C++ kernels from Inductor's own
cache, or compiled again where that was emptied) without tracing or lowering anything.

Values are not part of the key, as they are not of Inductor's: the constants (the data) are
arguments of the program, not compiled into it, so a model fitted again to other data of the
same shape loads the same program. ``compile_graph`` still checks a loaded program against the
recording before it uses it, and compiles again (and saves anew) what fails to load or disagrees.

The programs live in a folder ``bayesgen`` of Inductor's cache folder
(``TORCHINDUCTOR_CACHE_DIR``, by default under the system's temporary folder): emptying
Inductor's cache empties this one too.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import fx

from bayesgen._files import atomic_write

__all__ = ["constants_of", "folder", "forget", "key_of", "load", "save"]

_log = logging.getLogger(__name__)

#: Part of every key: changing how programs are saved or called changes it, so that no process
#: loads a program saved by code that called it otherwise.
_FORMAT = "bayesgen-inductor-program-1"


def folder() -> Path:
    """Where programs are saved: ``bayesgen`` inside Inductor's cache folder (read at every call,
    so that a process that points ``TORCHINDUCTOR_CACHE_DIR`` elsewhere saves there)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / "bayesgen"


def constants_of(graph_module: fx.GraphModule) -> list[torch.Tensor]:
    """The graph's constants in the order Inductor's program takes them, before the arguments
    (AOTAutograd's: parameters, then buffers)."""
    return [value for named in (graph_module.named_parameters, graph_module.named_buffers)
            for _, value in named(remove_duplicate=False)]


def key_of(graph_module: fx.GraphModule, args: Sequence[torch.Tensor], scalar: bool) -> str:
    """The hash under which the program compiled from ``graph_module`` at ``args`` is saved.

    ``scalar`` is the choice of scalar kernels only (:func:`~bayesgen._replay.inductor.compile_graph`).
    """
    from torch._inductor import config

    digest = hashlib.sha256()
    for part in (_FORMAT, torch.__version__, sys.version, platform.machine(), _cpu_features(), str(scalar),
                 repr(sorted(config.save_config_portable().items())), graph_module.code):
        digest.update(part.encode())
        digest.update(b"\0")
    storages: dict[int, int] = {}
    for tensor in (*constants_of(graph_module), *args):
        shared = storages.setdefault(tensor.untyped_storage().data_ptr(), len(storages))
        digest.update(repr((tuple(tensor.shape), tensor.stride(), tensor.storage_offset(), str(tensor.dtype),
                            str(tensor.device), shared)).encode())
    return digest.hexdigest()


@functools.cache
def _cpu_features() -> str:
    """The CPU's model and instruction-set flags, where the system says them: a program whose
    kernels use AVX-512 must not be loaded on a machine without it (a folder shared by two)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))


def save(key: str, program: Callable[[list[torch.Tensor]], Any]) -> None:
    """Save the Python module of Inductor's ``program`` (its ``call``) under ``key``; nothing if
    the module is not a file or cannot be written (a read-only folder: the next process compiles)."""
    try:
        source = Path(program.__func__.__code__.co_filename).read_text()
        target = folder()
        target.mkdir(parents=True, exist_ok=True)
        atomic_write(target / f"{key}.py", lambda temporary: Path(temporary).write_text(source))
        # written last: a program counts as saved once its description is there
        atomic_write(target / f"{key}.json", lambda temporary: Path(temporary).write_text(
            json.dumps({"format": _FORMAT, "torch": torch.__version__})))
    except (AttributeError, OSError) as exc:
        _log.debug("compiled program not saved: %s: %s", type(exc).__name__, exc)


def load(key: str) -> Callable[[list[torch.Tensor]], Any] | None:
    """The program saved under ``key`` (its module's ``call``), or None if there is none or it
    fails to load (its kernels are built again from their C++ source if Inductor's cache lost
    them). The caller checks its outputs before using it."""
    target = folder()
    if not (target / f"{key}.json").is_file():
        return None
    try:
        spec = importlib.util.spec_from_file_location(f"bayesgen_program_{key[:16]}", target / f"{key}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.call
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: compile again
        _log.debug("saved program %s not loaded: %s: %s", key, type(exc).__name__, exc)
        return None


def forget(key: str) -> None:
    """Remove the program saved under ``key`` (it loaded but disagreed with its recording)."""
    for suffix in (".json", ".py"):
        try:
            os.remove(folder() / f"{key}{suffix}")
        except OSError:
            pass
