"""Inverse design: recover a conductivity field from the solution it produces.

-div(k grad u) = 1 on the unit square (P1), u = 0 on the boundary.  The true
k = 1 + 0.5 sin(2 pi x) sin(2 pi y) (per cell) gives observations u_obs.
Starting from k = 1, Adam minimises ||u(k) - u_obs||^2 / ||u_obs||^2 over the
coefficients c_ij of k = 1 + sum c_ij sin(i pi x) sin(j pi y), i, j <= modes;
gradients flow through assembly and the solve by the adjoint method (one extra
solve with the cached factorisation per step).  The true field has c_22 = 0.5.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

import sla
from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, diffusion, source, unit_square

from . import Phases, ProblemConfig, Result, param, postfix, progress
from ._common import system_summary

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass
class Config(ProblemConfig):
    """``problem=inverse_conductivity``: mesh, number of modes and the optimiser's settings."""

    name: str = "inverse_conductivity"
    n: int = param(32, ge=2, help="cells per side")
    modes: int = param(3, ge=1, help="sine modes per direction in k")
    steps: int = param(100, ge=1, help="Adam steps")
    lr: float = param(0.05, gt=0, help="Adam learning rate")


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    phases = Phases()
    with phases("assembly"):
        mesh = unit_square(int(cfg.n), dtype=dtype, device=device)
        basis = CellBasis(mesh, ElementP1())
        centre = mesh.points[mesh.cells].mean(1)
        k_true = 1 + 0.5 * torch.sin(2 * math.pi * centre[:, 0]) * torch.sin(2 * math.pi * centre[:, 1])
        b = assemble(source, basis, f=1.0)
        bd = boundary_dofs(basis)
    last = {}

    def forward(k):
        with phases("assembly"):
            A0, b0 = apply_dirichlet(assemble(diffusion, basis, k=k), b, bd, 0.0)
        t0 = time.perf_counter()
        u, info = sla.solve(A0, b0, config=solver, return_info=True)
        wall = time.perf_counter() - t0
        phases.add("setup", min(info.setup_time, wall))
        phases.add("solve", wall - min(info.setup_time, wall))
        last.update(A=A0, info=info)
        return u

    with torch.no_grad():
        u_obs = forward(k_true)
    m = int(cfg.modes)
    i = torch.arange(1, m + 1, dtype=dtype, device=device)
    sx = torch.sin(math.pi * centre[:, :1] * i)  # [E, m]
    sy = torch.sin(math.pi * centre[:, 1:] * i)
    phi = (sx[:, :, None] * sy[:, None, :]).reshape(len(centre), m * m)  # [E, m*m]
    coef = torch.zeros(m * m, dtype=dtype, device=device, requires_grad=True)
    opt = torch.optim.Adam([coef], lr=float(cfg.lr))
    losses = []
    steps = int(cfg.steps)
    bar = progress(range(steps), total=steps, desc="Adam steps")
    for _ in bar:
        opt.zero_grad()
        loss = ((forward(1 + phi @ coef) - u_obs) ** 2).sum() / (u_obs**2).sum()
        t0 = time.perf_counter()
        loss.backward()
        phases.add("adjoint", time.perf_counter() - t0)
        opt.step()
        losses.append(loss.item())
        postfix(bar, loss=losses[-1])
    k = (1 + phi @ coef).detach()
    error = float((k - k_true).norm() / k_true.norm())
    info = last["info"]
    summary = system_summary(last["A"])
    summary.update(
        backend=info.backend,
        method=info.method,
        preconditioner=info.preconditioner,
        iterations=info.iterations,
        residual=info.residual,
    )
    summary.update(phases.summary(), error=error, error_measure="relative L2 error of k vs the true field")
    summary.update(
        cells=mesh.n_cells,
        steps=steps,
        loss_first=losses[0],
        loss_last=losses[-1],
        k_relative_error_first=float((1 - k_true).norm() / k_true.norm()),
        k_relative_error_last=error,
    )
    return Result(summary, mesh=mesh, cell_data={"k": k, "k_true": k_true}, plot="k", history={"objective": losses})
