"""Whether an optional package is installed, without importing it (``import sla`` stays light)."""

from __future__ import annotations

import importlib.util

__all__ = ["installed"]


def installed(module: str) -> bool:
    """``True`` when ``module`` can be imported (found on the path; not imported here)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
