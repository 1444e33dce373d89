"""-Laplace u = f on the unit square, u = 0 on the boundary; u = sin(pi x) sin(pi y).

``discretization: fd`` uses the 5-point stencil on the n x n interior grid;
``fem`` uses P1/P2/Q1 elements on an n x n mesh.  The summary reports the
largest nodal error against the exact solution (O(h^2) for fd and P1).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

import sla
from sla.assembly import poisson2d_system, unit_square
from sla.assembly.stencil import grid_points

from . import Result
from ._common import fem_poisson, info_summary, sines, solve_timed

if TYPE_CHECKING:
    from omegaconf import DictConfig


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    n = int(cfg.n)
    if cfg.discretization == "fd":
        A, b = poisson2d_system(n, f=lambda x: 2 * math.pi**2 * sines(x), dtype=dtype, device=device)
        u, info, wall = solve_timed(A, b, solver)
        exact = sines(grid_points((n, n), dtype, device))
        summary = {"unknowns": n * n, "h": 1 / (n + 1), "max_nodal_error": float((u - exact).abs().max())}
        summary.update(info_summary(info, wall))
        return Result(summary)
    if cfg.discretization != "fem":
        raise ValueError(f"problem.discretization must be 'fd' or 'fem', got {cfg.discretization!r}")
    mesh = unit_square(n, cell="quad" if cfg.element == "Q1" else "tri", dtype=dtype, device=device)
    summary, u, basis = fem_poisson(mesh, cfg.element, solver)
    summary["h"] = 1 / n
    return Result(summary, mesh=mesh, point_data={"u": u[: mesh.n_points]})  # vertex values (P2: first dofs)
