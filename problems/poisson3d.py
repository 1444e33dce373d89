"""-Laplace u = f on the unit cube, u = 0 on the boundary; u = sin(pi x) sin(pi y) sin(pi z).

``fd``: 7-point stencil on the n^3 interior grid; ``fem``: P1 tetrahedra (or
Q1 hexahedra with ``element: Q1``).  Reports the largest nodal error.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

import sla
from sla.assembly import poisson3d_system, unit_cube
from sla.assembly.stencil import grid_points

from . import Result
from ._common import fem_poisson, info_summary, sines, solve_timed

if TYPE_CHECKING:
    from omegaconf import DictConfig


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    n = int(cfg.n)
    if cfg.discretization == "fd":
        A, b = poisson3d_system(n, f=lambda x: 3 * math.pi**2 * sines(x), dtype=dtype, device=device)
        u, info, wall = solve_timed(A, b, solver)
        exact = sines(grid_points((n, n, n), dtype, device))
        summary = {"unknowns": n**3, "h": 1 / (n + 1), "max_nodal_error": float((u - exact).abs().max())}
        summary.update(info_summary(info, wall))
        return Result(summary)
    if cfg.discretization != "fem":
        raise ValueError(f"problem.discretization must be 'fd' or 'fem', got {cfg.discretization!r}")
    mesh = unit_cube(n, cell="hex" if cfg.element == "Q1" else "tet", dtype=dtype, device=device)
    summary, u, _ = fem_poisson(mesh, cfg.element, solver)
    summary["h"] = 1 / n
    return Result(summary, mesh=mesh, point_data={"u": u[: mesh.n_points]})
