"""Plane-stress cantilever (vector P2 triangles): tip deflection against Timoshenko beam theory.

Clamped at x = 0, a uniform shear traction with resultant P on x = L.  The
reference is delta = P L^3 / (3 E I) + P L / (kappa G A) with kappa = 5/6.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

import sla
from sla.assembly import (
    CellBasis,
    ElementP2,
    ElementVector,
    apply_dirichlet,
    assemble,
    boundary_dofs,
    elasticity,
    neumann,
    rectangle,
)

from . import Result
from ._common import info_summary, solve_timed

if TYPE_CHECKING:
    from omegaconf import DictConfig


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    L, H, E, nu, P = (float(cfg[k]) for k in ("length", "height", "young", "poisson", "load"))
    lam = E * nu / ((1 + nu) * (1 - 2 * nu))
    mu = E / (2 * (1 + nu))
    lam_ps = 2 * lam * mu / (lam + 2 * mu)  # plane stress
    mesh = rectangle(0, L, 0, H, int(cfg.nx), int(cfg.ny), "tri", dtype=dtype, device=device)
    el = ElementVector(ElementP2())
    basis = CellBasis(mesh, el)
    K = assemble(elasticity, basis, lam=lam_ps, mu=mu)
    f = neumann(basis, [0.0, -P / H], "xmax")
    u, info, wall = solve_timed(*apply_dirichlet(K, f, boundary_dofs(basis, "xmin")), solver)
    u = u.reshape(-1, 2)
    x = el.dof_points(mesh)
    tip = torch.nonzero(((x[:, 0] - L).abs() < 1e-9) & ((x[:, 1] - H / 2).abs() < 1e-9)).flatten()
    deflection = -float(u[tip, 1].mean())
    reference = P * L**3 / (3 * E * H**3 / 12) + P * L / (5 / 6 * mu * H)
    summary = {
        "unknowns": K.sparse_shape[0],
        "tip_deflection": deflection,
        "timoshenko": reference,
        "relative_error": abs(deflection - reference) / reference,
    }
    summary.update(info_summary(info, wall))
    disp = torch.cat([u[: mesh.n_points], torch.zeros_like(u[: mesh.n_points, :1])], 1)
    return Result(summary, mesh=mesh, point_data={"displacement": disp})
