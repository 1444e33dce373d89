"""Heat equation u_t = Laplace u on the unit square by implicit Euler (P1 elements).

u(0) = sin(pi x) sin(pi y) decays as exp(-2 pi^2 t).  Every step solves
(M + dt K) u_new = M u_old with the same matrix: the first step factors (or
builds the preconditioner), later steps find the work cached on the pattern.
The summary compares the final field with the exact decay and reports the
first-step and mean later-step solve times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

import sla
from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, mass, unit_square

from . import Phases, ProblemConfig, Result, param, progress
from ._common import info_summary, residual_history, sines, solve_timed, system_summary

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass
class Config(ProblemConfig):
    """``problem=heat``: mesh size, time step and number of steps."""

    name: str = "heat"
    n: int = param(128, ge=1, help="cells per side")
    dt: float = param(0.001, gt=0, help="time step")
    steps: int = param(50, ge=1, help="implicit Euler steps")


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    phases = Phases()
    with phases("assembly"):
        mesh = unit_square(int(cfg.n), dtype=dtype, device=device)
        basis = CellBasis(mesh, ElementP1())
        K, M = assemble(laplace, basis), assemble(mass, basis)
        dt, steps = float(cfg.dt), int(cfg.steps)
        A = M + K * dt
        bd = boundary_dofs(basis)
    u = sines(mesh.points)
    times, cached = [], 0
    for _ in progress(range(steps), total=steps, desc="time steps"):
        with phases("assembly"):
            A0, b0 = apply_dirichlet(A, M @ u, bd, 0.0)
        u, info, wall = solve_timed(A0, b0, solver, phases)
        times.append(wall)
        cached += bool(info.cached)
    exact = math.exp(-2 * math.pi**2 * dt * steps) * sines(mesh.points)
    error = float((u - exact).norm() / exact.norm())
    summary = system_summary(A0)
    summary.update(info_summary(info, sum(times)))
    summary.update(phases.summary(), error=error, error_measure="relative L2 nodal error vs exact decay")
    summary.update(
        steps=steps,
        t_end=dt * steps,
        relative_error=error,
        first_step_s=round(times[0], 4),
        later_step_mean_s=round(sum(times[1:]) / max(1, steps - 1), 5),
        steps_with_cached_setup=cached,
    )
    return Result(summary, mesh=mesh, point_data={"u": u, "u_exact": exact}, plot="u", history=residual_history(info))
