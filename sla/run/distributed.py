"""``dist=on``: the Poisson problems decomposed from the mesh, under ``torchrun``.

``torchrun --standalone --nproc_per_node=N -m sla.run problem=poisson2d dist=on`` partitions
the mesh (pymetis, dual graph), lets every rank assemble P1 elements on its own cells only
(:func:`sla.dist.mesh.assemble_distributed`: no global matrix anywhere), solves with the
distributed Krylov path (smoothed-aggregation multigrid across ranks when the preconditioner
is ``auto``), and writes ``solution_<rank>.vtu`` plus ``solution.pvtu``; rank 0 prints the
table and writes ``summary.json``.  Finite differences (``problem.discretization=fd``) have no
mesh to decompose, so ``dist=on`` always uses P1 elements on the same ``n x n`` mesh.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from ..config import SolverConfig
from .schema import ConfigError

log = logging.getLogger("sla.run")

PROBLEMS = {"poisson2d": 2, "poisson3d": 3}


def _init(device: str) -> tuple[int, int]:
    import torch.distributed as dist

    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise ConfigError(
                "dist=on is not allowed outside torchrun: launch with "
                "torchrun --standalone --nproc_per_node=N -m sla.run ... dist=on"
            )
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def check(cfg: Any) -> None:
    """What ``dist=on`` cannot run, before any work."""
    name = cfg.problem.name
    if name not in PROBLEMS:
        raise ConfigError(f"dist=on is not allowed with problem={name}: expected one of {', '.join(PROBLEMS)}")
    if cfg.problem.get("discretization") == "fem" and cfg.problem.get("element", "P1") != "P1":
        raise ConfigError(f"problem.element={cfg.problem.element} is not allowed with dist=on: expected P1")
    if str(cfg.device) != "cpu":
        raise ConfigError(
            f"device={cfg.device} is not allowed with dist=on: the per-rank assembly runs on the CPU (gloo); "
            "expected device=cpu"
        )


def execute(cfg: Any, solver: SolverConfig, dtype: torch.dtype, out_dir: str | None) -> dict:
    """Solve ``cfg.problem`` across the ranks of ``torchrun``; returns the summary on every rank."""
    import importlib

    import torch.distributed as dist

    import sla

    from .. import assembly as fe
    from ..dist.comm import all_reduce
    from ..dist.dtensor import local_block
    from ..dist.mesh import assemble_distributed
    from ..dist.vtk import write_pvtu
    from .schema import problems_package

    common = importlib.import_module(problems_package().__name__ + "._common")

    check(cfg)
    rank, world = _init(str(cfg.device))
    dim, n = PROBLEMS[cfg.problem.name], int(cfg.problem.n)
    if cfg.problem.get("discretization", "fd") != "fem" and rank == 0:
        log.info("dist=on: P1 finite elements on the %d^%d mesh (each rank assembles its own cells)", n, dim)
    mesh = fe.unit_square(n, dtype=dtype) if dim == 2 else fe.unit_cube(n, dtype=dtype)
    element = fe.ElementP1("triangle" if dim == 2 else "tetra")
    t0 = time.perf_counter()
    D, b, parts = assemble_distributed(mesh, element, fe.laplace, fe.source, f=common.bubble_source)
    assembly_s = time.perf_counter() - t0
    if solver.preconditioner in (None, "auto") and solver.method in (None, "auto", "cg"):
        solver = solver.replace(preconditioner="distributed_amg")
    t0 = time.perf_counter()
    x, info = sla.solve(D, b, config=solver, return_info=True)
    solve_s = time.perf_counter() - t0
    xl, _ = local_block(x, D, "x")
    exact = common.bubble(mesh.points[D.owned].to(xl.device, xl.dtype))
    worst = (xl - exact).abs().max() if xl.numel() else xl.new_zeros(())
    error = float(all_reduce(worst.reshape(1), op=dist.ReduceOp.MAX)[0])
    summary = {
        "problem": cfg.problem.name,
        "unknowns": D.shape[0],
        "device": str(cfg.device),
        "dtype": str(cfg.dtype),
        "backend": info.backend,
        "method": info.method,
        "preconditioner": info.preconditioner,
        "iterations": info.iterations,
        "residual": info.residual,
        "assembly_s": round(assembly_s, 4),
        "setup_s": round(float(info.setup_time or 0.0), 4),
        "solve_s": round(solve_s, 4),
        "error": error,
        "error_measure": "max nodal error vs exact",
        "ranks": world,
        "discretization": "P1, assembled per rank",
    }
    if out_dir is not None:
        paths = [out_dir]
        dist.broadcast_object_list(paths, src=0)  # rank 0's folder for everyone (Hydra's clock differs)
        os.makedirs(paths[0], exist_ok=True)
        write_pvtu(paths[0], "solution", mesh, parts, D, x)
        summary["output"] = paths[0]
    return summary
