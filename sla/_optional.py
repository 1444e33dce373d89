"""Optional packages: whether one is installed, without importing it (``import sla`` stays light),
and one compiled kernel of a package loaded without the package's own imports."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

__all__ = ["extension", "installed"]


def installed(module: str) -> bool:
    """``True`` when ``module`` can be imported (found on the path; not imported here)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


_EXTENSIONS: dict[str, ModuleType | None] = {}


def extension(name: str) -> ModuleType | None:
    """The compiled extension module ``name`` (e.g. ``'pyamg.amg_core.smoothed_aggregation'``),
    loaded from its file without running the ``__init__`` of the packages above it; ``None`` when
    the package is not installed or has no such compiled file.

    A package's ``__init__`` may import far more than one kernel needs: ``import pyamg`` imports
    SciPy's sparse module and every pyamg solver, about half a second, where its standard
    aggregation kernel alone loads in milliseconds.  Already imported modules are returned as they are.
    """
    if name in sys.modules:
        return sys.modules[name]
    if name not in _EXTENSIONS:
        _EXTENSIONS[name] = _load(name)
    return _EXTENSIONS[name]


def _load(name: str) -> ModuleType | None:
    top, *inner = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = os.path.join(root, *inner[:-1])
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, inner[-1] + suffix)
            if os.path.isfile(path):
                loader = importlib.machinery.ExtensionFileLoader(name, path)
                module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
                try:
                    loader.exec_module(module)
                except ImportError:
                    return None
                return module
    return None
