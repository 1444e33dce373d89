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

from . import Phases, Result

if TYPE_CHECKING:
    from omegaconf import DictConfig


def sines(x: torch.Tensor) -> torch.Tensor:
    """prod_d sin(pi x_d): an eigenfunction of the Laplacian (-Laplace of it is d pi^2 times it);
    the heat problem's initial condition, whose exact decay is exp(-d pi^2 t)."""
    return torch.sin(math.pi * x).prod(-1)


def bubble(x: torch.Tensor) -> torch.Tensor:
    """u = prod_d g(x_d) with g(t) = t (1 - t) e^t: the Poisson problems' manufactured solution.

    Zero on the boundary of the unit box, smooth, and -- unlike ``sines`` -- no eigenvector of
    the stencil or the element matrices, so an iterative solver has to do real work."""
    return (x * (1 - x) * torch.exp(x)).prod(-1)


def bubble_source(x: torch.Tensor) -> torch.Tensor:
    """f = -Laplace u of :func:`bubble`: sum_d t_d (t_d + 3) e^(t_d) prod_(e != d) g(x_e)  (g'' = -t (t + 3) e^t)."""
    g = x * (1 - x) * torch.exp(x)
    minus_g2 = x * (x + 3) * torch.exp(x)
    d = x.shape[-1]
    terms = [minus_g2[..., i] * torch.cat([g[..., :i], g[..., i + 1 :]], -1).prod(-1) for i in range(d)]
    return torch.stack(terms, -1).sum(-1)


def solve_timed(
    A: sla.SparseTensor, b: torch.Tensor, solver: sla.SolverConfig, phases: Phases | None = None
) -> tuple[torch.Tensor, sla.SolveInfo, float]:
    """``sla.solve`` with its info and wall time; with ``phases``, the time goes to ``setup``
    (the solver's own setup time) and ``solve`` (the rest)."""
    t0 = time.perf_counter()
    x, info = sla.solve(A, b, config=solver, return_info=True)
    wall = time.perf_counter() - t0
    if phases is not None:
        setup = min(float(info.setup_time or 0.0), wall)
        phases.add("setup", setup)
        phases.add("solve", wall - setup)
    return x, info, wall


def info_summary(info: sla.SolveInfo, wall: float) -> dict:
    """The solve's standard summary keys (backend, method, preconditioner, iterations, residual)."""
    return {
        "backend": info.backend,
        "method": info.method,
        "preconditioner": info.preconditioner,
        "iterations": info.iterations,
        "residual": info.residual,
        "solve_wall_s": round(wall, 4),
    }


def residual_history(info: sla.SolveInfo) -> dict:
    """``{'residual': [...]}`` for :class:`Result.history` when the solve recorded one (iterative)."""
    h = getattr(info, "history", None)
    return {"residual": [float(v) for v in h]} if h else {}


def system_summary(A: sla.SparseTensor) -> dict:
    """Unknowns and stored nonzeros of a system matrix."""
    return {"unknowns": int(A.sparse_shape[0]), "nonzeros": int(A.nnz)}


def grid_mesh(u: torch.Tensor, n: int, dim: int) -> tuple[Mesh, torch.Tensor]:
    """The ``(n + 1)^dim``-cell quad/hex mesh of the unit box whose interior nodes are the
    finite-difference grid points, and ``u`` (on the ``n^dim`` interior grid, ``'ij'`` order)
    spread to its nodes with zero boundary values."""
    mesh = (unit_square if dim == 2 else unit_cube)(n + 1, "quad" if dim == 2 else "hex", u.dtype, u.device)
    idx = torch.round(mesh.points.detach() * (n + 1)).long() - 1  # interior grid index per axis, -1 / n outside
    inside = ((idx >= 0) & (idx < n)).all(1)
    flat = torch.zeros_like(idx[:, 0])
    for d in range(dim):
        flat = flat * n + idx[:, d].clamp(0, n - 1)
    values = torch.where(inside, u.detach()[flat], torch.zeros((), dtype=u.dtype, device=u.device))
    return mesh, values


def fem_poisson(
    mesh: Mesh, element: str, solver: sla.SolverConfig, phases: Phases | None = None
) -> tuple[dict, torch.Tensor, CellBasis, sla.SolveInfo]:
    """P1/P2/Q1 Poisson with the manufactured solution; returns (summary, u at dofs, basis, solve info)."""
    phases = phases if phases is not None else Phases()
    degree = {"P1": 1, "Q1": 1, "P2": 2}[element]
    with phases("assembly"):
        basis = CellBasis(mesh, element_for(mesh.cell_type, degree))
        A = assemble(laplace, basis)
        b = assemble(source, basis, f=bubble_source)
        A0, b0 = apply_dirichlet(A, b, boundary_dofs(basis), 0.0)
    u, info, wall = solve_timed(A0, b0, solver, phases)
    exact = bubble(basis.element.dof_points(mesh))
    out = system_summary(A0)
    out.update(info_summary(info, wall))
    out["max_nodal_error"] = float((u - exact).abs().max())
    return out, u, basis, info


def poisson_run(
    cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype, dim: int
) -> Result:
    """``-Laplace u = f`` on the unit square (``dim=2``) or cube (``dim=3``), ``u`` = :func:`bubble`:
    finite differences on the ``n^dim`` interior grid (``cfg.discretization == 'fd'``) or P1/P2/Q1
    elements on an ``n^dim`` mesh (``'fem'``); the summary reports the largest nodal error."""
    n = int(cfg.n)
    phases = Phases()
    if cfg.discretization == "fd":
        system = poisson2d_system if dim == 2 else poisson3d_system
        with phases("assembly"):
            A, b = system(n, f=bubble_source, dtype=dtype, device=device)
        u, info, wall = solve_timed(A, b, solver, phases)
        exact = bubble(grid_points((n,) * dim, dtype, device))
        summary = system_summary(A)
        summary.update(info_summary(info, wall))
        summary.update(h=1 / (n + 1), max_nodal_error=float((u - exact).abs().max()))
        mesh, values = grid_mesh(u, n, dim)
    elif cfg.discretization == "fem":
        q1 = cfg.element == "Q1"
        if dim == 2:
            mesh = unit_square(n, cell="quad" if q1 else "tri", dtype=dtype, device=device)
        else:
            mesh = unit_cube(n, cell="hex" if q1 else "tet", dtype=dtype, device=device)
        summary, u, _, info = fem_poisson(mesh, cfg.element, solver, phases)
        summary["h"] = 1 / n
        values = u[: mesh.n_points]  # vertex values (P2: the first dofs are the vertices)
    else:
        raise ValueError(f"problem.discretization must be 'fd' or 'fem', got {cfg.discretization!r}")
    summary.update(phases.summary(), error=summary["max_nodal_error"], error_measure="max nodal error vs exact")
    exact_nodes = bubble(mesh.points)
    history = residual_history(info)
    return Result(summary, mesh=mesh, point_data={"u": values, "u_exact": exact_nodes}, plot="u", history=history)
