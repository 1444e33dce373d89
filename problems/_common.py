"""Small helpers shared by the model problems."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

import sla
from sla.assembly import (
    CellBasis,
    Mesh,
    apply_dirichlet,
    assemble,
    boundary_dofs,
    element_for,
    laplace,
    poisson2d_system,
    poisson3d_system,
    source,
    unit_cube,
    unit_square,
)
from sla.assembly.stencil import grid_points

from . import Result

if TYPE_CHECKING:
    from omegaconf import DictConfig


def sines(x: torch.Tensor) -> torch.Tensor:
    """prod_d sin(pi x_d): the manufactured solution; -Laplace of it is d pi^2 times it."""
    return torch.sin(math.pi * x).prod(-1)


def solve_timed(
    A: sla.SparseTensor, b: torch.Tensor, solver: sla.SolverConfig
) -> tuple[torch.Tensor, sla.SolveInfo, float]:
    t0 = time.perf_counter()
    x, info = sla.solve(A, b, config=solver, return_info=True)
    return x, info, time.perf_counter() - t0


def info_summary(info: sla.SolveInfo, wall: float) -> dict:
    return {
        "backend": info.backend,
        "method": info.method,
        "preconditioner": info.preconditioner,
        "iterations": info.iterations,
        "residual": info.residual,
        "setup_s": round(info.setup_time, 4),
        "solve_wall_s": round(wall, 4),
    }


def fem_poisson(mesh: Mesh, element: str, solver: sla.SolverConfig) -> tuple[dict, torch.Tensor, CellBasis]:
    """P1/P2/Q1 Poisson with the manufactured solution; returns (summary, u at dofs, basis)."""
    degree = {"P1": 1, "Q1": 1, "P2": 2}[element]
    basis = CellBasis(mesh, element_for(mesh.cell_type, degree))
    d = mesh.points.shape[1]
    A = assemble(laplace, basis)
    b = assemble(source, basis, f=lambda x: d * math.pi**2 * sines(x))
    A0, b0 = apply_dirichlet(A, b, boundary_dofs(basis), 0.0)
    u, info, wall = solve_timed(A0, b0, solver)
    exact = sines(basis.element.dof_points(mesh))
    out = {"unknowns": A.sparse_shape[0], "max_nodal_error": float((u - exact).abs().max())}
    out.update(info_summary(info, wall))
    return out, u, basis


def poisson_run(
    cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype, dim: int
) -> Result:
    """``-Laplace u = f`` on the unit square (``dim=2``) or cube (``dim=3``), ``u = prod_d sin(pi x_d)``:
    finite differences on the ``n^dim`` interior grid (``cfg.discretization == 'fd'``) or P1/P2/Q1
    elements on an ``n^dim`` mesh (``'fem'``); the summary reports the largest nodal error."""
    n = int(cfg.n)
    if cfg.discretization == "fd":
        system = poisson2d_system if dim == 2 else poisson3d_system
        A, b = system(n, f=lambda x: dim * math.pi**2 * sines(x), dtype=dtype, device=device)
        u, info, wall = solve_timed(A, b, solver)
        exact = sines(grid_points((n,) * dim, dtype, device))
        summary = {"unknowns": n**dim, "h": 1 / (n + 1), "max_nodal_error": float((u - exact).abs().max())}
        summary.update(info_summary(info, wall))
        return Result(summary)
    if cfg.discretization != "fem":
        raise ValueError(f"problem.discretization must be 'fd' or 'fem', got {cfg.discretization!r}")
    q1 = cfg.element == "Q1"
    if dim == 2:
        mesh = unit_square(n, cell="quad" if q1 else "tri", dtype=dtype, device=device)
    else:
        mesh = unit_cube(n, cell="hex" if q1 else "tet", dtype=dtype, device=device)
    summary, u, _ = fem_poisson(mesh, cfg.element, solver)
    summary["h"] = 1 / n
    return Result(summary, mesh=mesh, point_data={"u": u[: mesh.n_points]})  # vertex values (P2: first dofs)
