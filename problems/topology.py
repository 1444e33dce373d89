"""Topology optimisation: SIMP minimum compliance with a density filter and OC updates.

The half MBB beam (``case=mbb``), the 2D cantilever (``case=cantilever``) on
``nelx x nely`` unit quads, or the 3D cantilever (``case=cantilever3d``) on
``nelx x nely x nelz`` unit hexahedra, with :class:`sla.design.SIMP`:
sensitivities by autograd through the assembly and the adjoint solve.  Each
iteration logs its compliance, volume fraction and largest density change;
the runner writes the final densities (``solution.vtu``; the picture of the
design is ``solution.png``) and the compliance history (``objective_history.png``).  The checks: the volume constraint
is met and the compliance decreased from the uniform start.

The state solve follows the runner's ``solver``: ``solver=auto`` (default) is CG with the
element-wise Galerkin geometric multigrid on a 3D hexahedral grid that coarsens (cell counts
divisible by a power of two) and a sparse Cholesky factorisation otherwise; ``solver=gmg``
asks for the multigrid (also in 2D), ``solver=amg`` for smoothed aggregation, ``solver=cholesky``
for the factorisation::

    python -m sla.run problem=topology problem.case=cantilever3d problem.nelx=64 problem.nely=32 \
        problem.nelz=32 solver=gmg device=cuda
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

import sla
from sla.design import SIMP, cantilever, mbb_beam

from . import Phases, ProblemConfig, Result, param, postfix, progress

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger("sla.problems.topology")


@dataclass
class Config(ProblemConfig):
    """``problem=topology``: load case, mesh, SIMP parameters and stopping rule."""

    name: str = "topology"
    case: str = param("mbb", choices=("mbb", "cantilever", "cantilever3d"), help="load case")
    nelx: int = param(60, ge=1, help="cells along x")
    nely: int = param(20, ge=1, help="cells along y")
    nelz: int = param(8, ge=1, help="cells along z (cantilever3d)")
    volfrac: float = param(0.5, gt=0, lt=1, help="volume fraction")
    penal: float = param(3.0, ge=1, help="SIMP penalisation p")
    rmin: float = param(1.5, gt=0, help="density filter radius (cells)")
    maxiter: int = param(60, ge=1, help="largest number of OC iterations")
    tol: float = param(0.01, gt=0, help="stop when no density changes by more than this")


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    phases = Phases()
    nelx, nely, nelz = int(cfg.nelx), int(cfg.nely), int(cfg.nelz)
    with phases("assembly"):
        if cfg.case == "mbb":
            case = mbb_beam(nelx, nely, dtype=dtype, device=device)
        elif cfg.case == "cantilever":
            case = cantilever(nelx, nely, dtype=dtype, device=device)
        else:
            case = cantilever(nelx, nely, nelz, dtype=dtype, device=device)
        opt = SIMP(
            case.mesh,
            case.fixed,
            case.load,
            volfrac=float(cfg.volfrac),
            penal=float(cfg.penal),
            rmin=float(cfg.rmin),
            solver=solver,
        )
    maxiter = int(cfg.maxiter)
    bar = progress(range(maxiter), total=maxiter, desc="OC iterations")
    it_bar = iter(bar)

    def report(it: int, c: float, vol: float, change: float) -> None:
        next(it_bar, None)
        postfix(bar, compliance=c, volume=vol)
        log.info("it %3d  compliance %.6g  volume %.4f  change %.4f", it, c, vol, change)

    with phases("solve"):
        res = opt.optimize(maxiter=maxiter, tol=float(cfg.tol), callback=report)
    if hasattr(bar, "close"):
        bar.close()
    info = opt.last_info
    summary = {
        "unknowns": opt.basis.ndofs,
        "nonzeros": opt.stiffness_pattern.nnz,
        "backend": info.backend,
        "method": info.method,
        "preconditioner": info.preconditioner,
        "residual": info.residual,
        "error": abs(res.volume[-1] - float(cfg.volfrac)),
        "error_measure": "|volume - volfrac|",
        "cells": case.mesh.n_cells,
        "iterations": info.iterations,
        "design_iterations": res.iterations,
        "converged": res.converged,
        "compliance_first": res.compliance[0],
        "compliance_last": res.compliance[-1],
        "volume_last": res.volume[-1],
        "volume_target": float(cfg.volfrac),
        "seconds_per_iteration": sum(res.seconds) / len(res.seconds),
    }
    if opt.hierarchy is not None:
        summary["multigrid_levels"] = " / ".join(str(n) for n in opt.hierarchy.sizes)
    summary.update(phases.summary())
    return Result(
        summary,
        mesh=case.mesh,
        cell_data={"density": res.x},
        plot="density",
        history={"objective": res.compliance},
    )
