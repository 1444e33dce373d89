"""Cantilever: tip deflection against Timoshenko beam theory.

``dim=2``: plane stress, vector P2 triangles.  ``dim=3``: a beam of square cross-section
(``height`` x ``height``), vector P1 tetrahedra, six per cube (they lock in bending: the deflection
approaches the reference from below as the mesh is refined).  Clamped at x = 0, a uniform shear
traction with resultant P on x = L.  The reference is delta = P L^3 / (3 E I) + P L / (kappa G A)
with kappa = 5/6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

import sla
from sla.assembly.cantilever import cantilever_system, cantilever_system_3d, lame, plane_stress_lame

from . import Phases, ProblemConfig, Result, param
from ._common import info_summary, residual_history, solve_timed, system_summary

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass
class Config(ProblemConfig):
    """``problem=elasticity``: beam geometry, material, load and mesh."""

    name: str = "elasticity"
    length: float = param(10.0, gt=0, help="beam length L")
    height: float = param(1.0, gt=0, help="beam height H")
    young: float = param(1000.0, gt=0, help="Young's modulus E")
    poisson: float = param(0.3, ge=0, lt=0.5, help="Poisson's ratio nu")
    load: float = param(1.0, help="shear load P at x = L")
    nx: int = param(40, ge=1, help="cells along the beam")
    ny: int = param(8, ge=1, help="cells across the beam (in 3D: across either side)")
    dim: int = param(2, choices=(2, 3), help="2: plane stress, P2 triangles; 3: P1 tetrahedra")


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    L, H, E, nu, P = (float(cfg[k]) for k in ("length", "height", "young", "poisson", "load"))
    phases = Phases()
    dim, nx, ny = int(cfg.dim), int(cfg.nx), int(cfg.ny)
    with phases("assembly"):
        if dim == 3:
            K0, f0, basis = cantilever_system_3d(L, H, H, E, nu, P, nx, ny, ny, dtype=dtype, device=device)
            mu = lame(E, nu)[1]
        else:
            K0, f0, basis = cantilever_system(L, H, E, nu, P, nx, ny, dtype=dtype, device=device)
            mu = plane_stress_lame(E, nu)[1]
        mesh, el = basis.mesh, basis.element
    u, info, wall = solve_timed(K0, f0, solver, phases)
    u = u.reshape(-1, dim)
    x = el.dof_points(mesh)
    # the tip: the end face's mid-line (2D) or its mean (3D); the deflection is along -y (2D) or -z (3D)
    tip = (x[:, 0] - L).abs() < 1e-9
    if dim == 2:
        tip &= (x[:, 1] - H / 2).abs() < 1e-9
    deflection = -float(u[torch.nonzero(tip).flatten(), dim - 1].mean())
    width = H if dim == 3 else 1.0  # (plane stress: per unit thickness)
    reference = P * L**3 / (3 * E * width * H**3 / 12) + P * L / (5 / 6 * mu * width * H)
    error = abs(deflection - reference) / abs(reference) if reference else abs(deflection)
    summary = system_summary(K0)
    summary.update(info_summary(info, wall))
    summary.update(phases.summary(), error=error, error_measure="tip deflection vs Timoshenko (relative)")
    summary.update(tip_deflection=deflection, timoshenko=reference, relative_error=error)
    disp = (
        u[: mesh.n_points] if dim == 3 else torch.cat([u[: mesh.n_points], torch.zeros_like(u[: mesh.n_points, :1])], 1)
    )
    return Result(
        summary, mesh=mesh, point_data={"displacement": disp}, plot="displacement", history=residual_history(info)
    )
