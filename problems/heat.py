"""Heat equation u_t = Laplace u on the unit square by implicit Euler (P1 elements).

u(0) = sin(pi x) sin(pi y) decays as exp(-2 pi^2 t).  Every step solves
(M + dt K) u_new = M u_old with the same matrix: the first step factors (or
builds the preconditioner), later steps find the work cached on the pattern.
The summary compares the final field with the exact decay and reports the
first-step and mean later-step solve times.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

import sla
from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, mass, unit_square

from . import Result
from ._common import sines

if TYPE_CHECKING:
    from omegaconf import DictConfig


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    mesh = unit_square(int(cfg.n), dtype=dtype, device=device)
    basis = CellBasis(mesh, ElementP1())
    K, M = assemble(laplace, basis), assemble(mass, basis)
    dt, steps = float(cfg.dt), int(cfg.steps)
    A = M + K * dt
    bd = boundary_dofs(basis)
    u = sines(mesh.points)
    times, cached = [], 0
    for _ in range(steps):
        A0, b0 = apply_dirichlet(A, M @ u, bd, 0.0)
        t0 = time.perf_counter()
        u, info = sla.solve(A0, b0, config=solver, return_info=True)
        times.append(time.perf_counter() - t0)
        cached += bool(info.cached)
    exact = math.exp(-2 * math.pi**2 * dt * steps) * sines(mesh.points)
    summary = {
        "unknowns": mesh.n_points,
        "steps": steps,
        "t_end": dt * steps,
        "relative_error": float((u - exact).norm() / exact.norm()),
        "backend": info.backend,
        "method": info.method,
        "first_step_s": round(times[0], 4),
        "later_step_mean_s": round(sum(times[1:]) / max(1, steps - 1), 5),
        "steps_with_cached_setup": cached,
    }
    return Result(summary, mesh=mesh, point_data={"u": u, "u_exact": exact})
