"""What a run shows and writes: the end-of-run table, ``summary.json``, ``solution.vtu``, ``solution.png``."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from typing import Any

log = logging.getLogger("sla.run")

# the table's first rows, in this order; a problem's own keys follow
STANDARD = (
    "problem",
    "unknowns",
    "nonzeros",
    "device",
    "dtype",
    "backend",
    "method",
    "preconditioner",
    "iterations",
    "residual",
    "assembly_s",
    "setup_s",
    "solve_s",
    "error",
    "error_measure",
)


def ordered(summary: dict) -> dict:
    """``summary`` with the standard keys first (missing ones as ``None``), then the rest."""
    out = {k: summary.get(k) for k in STANDARD}
    out.update((k, v) for k, v in summary.items() if k not in out)
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.3e}"
    return str(v)


def table(summary: dict) -> str:
    """A two-column text table of ``summary`` (standard keys first)."""
    rows = [(k, _fmt(v)) for k, v in ordered(summary).items()]
    w = max(len(k) for k, _ in rows)
    wv = max(len(v) for _, v in rows)
    rule = "-" * (w + wv + 3)
    return "\n".join([rule, *(f"{k:<{w}} | {v}" for k, v in rows), rule])


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_summary(path: str, summary: dict) -> None:
    """``summary.json`` (atomically), standard keys first."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(ordered(summary), fh, indent=2, default=str)
            fh.write("\n")

    _atomic(path, write)


def write_outputs(out: str, result: Any, plot: bool, rtol: float | None = None) -> list[str]:
    """``solution.vtu`` (the mesh and its fields) and, with ``plot``, ``solution.png`` (the field
    named by ``result.plot``) plus ``<name>_history.png`` for the result's histories (the residual
    one with the ``rtol`` line); returns the paths."""
    written = []
    if result.mesh is None:
        return written
    from ..assembly import write_mesh

    vtu = os.path.join(out, "solution.vtu")
    _atomic(vtu, lambda tmp: write_mesh(tmp, result.mesh, point_data=result.point_data, cell_data=result.cell_data))
    written.append(vtu)
    if not plot:
        return written
    from .. import viz

    fields = {**result.point_data, **result.cell_data}
    name = result.plot if result.plot in fields else next(iter(fields), None)
    if name is not None:
        png = os.path.join(out, "solution.png")
        _atomic(png, lambda tmp: viz.plot_field(result.mesh, fields[name], path=tmp, title=name))
        written.append(png)
    for key, values in result.history.items():
        png = os.path.join(out, f"{key}_history.png")
        if key == "residual":
            _atomic(png, lambda tmp, values=values: viz.plot_residuals(values, path=tmp, rtol=rtol))
        else:
            _atomic(png, lambda tmp, key=key, values=values: viz.plot_objective(values, path=tmp, title=key))
        written.append(png)
    return written
