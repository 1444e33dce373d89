"""Distributed preconditioned Krylov solves, assembled per rank (no global matrix anywhere).

Launch with torchrun, one process per rank (gloo on the CPU, NCCL with one GPU a rank)::

    torchrun --standalone --nproc_per_node=4 benchmarks/bench_distributed.py --problem poisson2d --side 500
    torchrun --standalone --nproc_per_node=4 benchmarks/bench_distributed.py --problem p1_3d --side 40
    torchrun --standalone --nproc_per_node=4 benchmarks/bench_distributed.py --device cuda --side 10000

Problems
--------
``poisson2d``: 5-point finite differences on a ``side x side`` interior grid, float64;
each rank owns a box of the grid (``px x py`` boxes) and writes its own stencil rows
(and the rows of its Schwarz overlap), so nothing global is ever built.
``p1_3d``: P1 tetrahedra on the unit cube (``side`` cells an axis, zero Dirichlet
conditions, f = 1), nodes partitioned with METIS on the dual graph, each rank
assembling only the cells touching its (extended) subdomain
(:func:`sla.dist.mesh.assemble_distributed`; every rank holds the mesh itself).

``--weak`` makes ``side`` the size *per rank* (the global grid grows with the ranks).
``--eigsh K`` times the distributed LOBPCG (``D.eigsh(k=K, which='SA')``) instead of the solve.
Rank 0 prints one line (and appends a JSON record to ``--json``): unknowns, ranks,
setup and solve time, iterations, final relative residual, peak memory per rank
(max over ranks; resident set size on the CPU, ``max_memory_allocated`` on a GPU)
and bytes per unknown per rank.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import resource
import time

import torch
import torch.distributed as dist

import sla
from sla import SparseTensor
from sla.dist import DSparseTensor


def _factor(world: int) -> tuple[int, int]:
    px = int(math.isqrt(world))
    while world % px:
        px -= 1
    return world // px, px


def _stencil_rows(nodes: torch.Tensor, side: int, keep: torch.Tensor | None, dev) -> tuple:
    """5-point rows of the global grid nodes ``nodes`` (global ids ``i * side + j``): (rows, cols, vals)
    with row = position in ``nodes``; columns restricted to ``keep`` (a global mask) if given."""
    i, j = nodes // side, nodes % side
    rows, cols, vals = (
        [torch.arange(nodes.numel(), device=dev)],
        [nodes],
        [torch.full_like(nodes, 4, dtype=torch.float64)],
    )
    for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ii, jj = i + di, j + dj
        ok = (ii >= 0) & (ii < side) & (jj >= 0) & (jj < side)
        c = ii * side + jj
        if keep is not None:
            ok &= keep[c.clamp(0, side * side - 1)]
        rows.append(torch.nonzero(ok).flatten())
        cols.append(c[ok])
        vals.append(torch.full((int(ok.sum()),), -1.0, dtype=torch.float64, device=dev))
    return torch.cat(rows), torch.cat(cols), torch.cat(vals)


def poisson2d(side: int, overlap: int, dev) -> tuple:
    """This rank's box of the ``side x side`` grid: (D, b) with b = ones."""
    rank, world = dist.get_rank(), dist.get_world_size()
    px, py = _factor(world)
    bx, by = rank // py, rank % py
    x0, x1 = bx * side // px, (bx + 1) * side // px
    y0, y1 = by * side // py, (by + 1) * side // py

    def box(a0, a1, b0, b1):
        ii = torch.arange(max(a0, 0), min(a1, side), device=dev)
        jj = torch.arange(max(b0, 0), min(b1, side), device=dev)
        return (ii[:, None] * side + jj[None, :]).flatten()

    owned = box(x0, x1, y0, y1)
    r, c, v = _stencil_rows(owned, side, None, dev)
    local = SparseTensor(v, r, c, (owned.numel(), side * side))
    ov = None
    if overlap > 0 and world > 1:
        ext_all = box(x0 - overlap, x1 + overlap, y0 - overlap, y1 + overlap)
        mine = torch.zeros(side * side, dtype=torch.bool, device=dev)
        mine[owned] = True
        ext = torch.cat([owned, ext_all[~mine[ext_all]]])
        keep = torch.zeros(side * side, dtype=torch.bool, device=dev)
        keep[ext] = True
        pos = torch.full((side * side,), -1, dtype=torch.int64, device=dev)
        pos[ext] = torch.arange(ext.numel(), device=dev)
        r, c, v = _stencil_rows(ext, side, keep, dev)
        ov = (ext.cpu(), SparseTensor(v, r, pos[c], (ext.numel(), ext.numel())), overlap)
    D = DSparseTensor.from_local(local, owned.cpu(), (side * side, side * side), overlap=ov)
    return D, _ones(D)


def _ones(D):
    from sla.dist.dtensor import to_dtensor

    return to_dtensor(torch.ones(D.n_owned, dtype=D.dtype, device=D.device), D)


def p1_3d(side: int, overlap: int, dev) -> tuple:
    import sla.assembly as fe
    from sla.dist.mesh import assemble_distributed

    mesh = fe.unit_cube(side)
    D, b, _ = assemble_distributed(mesh, fe.ElementP1("tetra"), fe.laplace, fe.source, overlap=overlap, f=1.0)
    if dev.type != "cpu":
        raise SystemExit("p1_3d assembles on the CPU; run it with --device cpu")
    return D, b


def _reference(problem: str, side: int, rtol: float, dev, eig_k: int = 0) -> dict:
    """The single-process solve of the same system: sla.solve(A, b, backend='pytorch', method='cg',
    preconditioner='amg') on the global matrix (with ``eig_k``: A.eigsh(k, which='SA', method='lobpcg'),
    the same LOBPCG with the single-process AMG)."""
    if problem == "poisson2d":
        A = sla.gallery.poisson2d(side, device=dev)
        b = torch.ones(A.shape[0], dtype=torch.float64, device=dev)
    else:
        import sla.assembly as fe

        basis = fe.CellBasis(fe.unit_cube(side), fe.ElementP1("tetra"))
        A, b = fe.apply_dirichlet(
            fe.assemble(fe.laplace, basis), fe.assemble(fe.source, basis, f=1.0), fe.boundary_dofs(basis)
        )
    t0 = time.perf_counter()
    if eig_k:
        (lam, _), info = A.eigsh(k=eig_k, which="SA", method="lobpcg", return_info=True)
        return {
            "ref_solve_s": round(time.perf_counter() - t0, 3),
            "ref_iterations": info.iterations,
            "ref_lambda_min": float(lam[0]),
        }
    x, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner="amg", rtol=rtol, return_info=True)
    return {"ref_solve_s": round(time.perf_counter() - t0, 3), "ref_iterations": info.iterations}


def _peak_bytes(dev) -> int:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problem", default="poisson2d", choices=["poisson2d", "p1_3d"])
    ap.add_argument("--side", type=int, default=200, help="grid points (poisson2d) / cells (p1_3d) an axis")
    ap.add_argument("--weak", action="store_true", help="side is per rank: the global size grows with the ranks")
    ap.add_argument(
        "--precond",
        default="distributed_amg",
        help="distributed_amg (smoothed aggregation, gathered coarse levels), schwarz (two-level, overlap), "
        "jacobi, amg (block Jacobi with AMG blocks)",
    )
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--method", default="cg")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference", action="store_true", help="on one rank: also time the single-process solve")
    ap.add_argument("--json", default=None, help="append one JSON record per run (rank 0)")
    ap.add_argument(
        "--eigsh",
        type=int,
        default=0,
        metavar="K",
        help="instead of the solve: the K smallest eigenpairs by distributed LOBPCG (D.eigsh(k=K, which='SA'), "
        "the --precond preconditioner); --reference times the single-process LOBPCG (A.eigsh(method='lobpcg'))",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cpu")
    if args.device == "cuda":
        dev = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    importlib.import_module("torch.distributed.tensor")  # imports are not setup time
    for mod in ("sla.dist.amg", "sla.dist.dtensor", "sla.dist.local", "sla.dist.mesh", "sla.assembly"):
        importlib.import_module(mod)

    if importlib.util.find_spec("pyamg"):
        importlib.import_module("pyamg")
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor, Shard

    DTensor.from_local(torch.zeros(1, device=dev), DeviceMesh.from_group(dist.group.WORLD, dev.type), [Shard(0)])
    side = args.side
    if args.weak:
        side = round(side * (world ** (1 / (2 if args.problem == "poisson2d" else 3))))
    t0 = time.perf_counter()
    build = poisson2d if args.problem == "poisson2d" else p1_3d
    D, b = build(side, args.overlap if args.precond == "schwarz" else 0, dev)
    D @ b  # first exchange (connections)
    D._preconditioner(args.precond, False, {})  # build it (collective), counted as setup
    dist.barrier()
    t1 = time.perf_counter()
    if args.eigsh:
        (lam, _), info = D.eigsh(k=args.eigsh, which="SA", preconditioner=args.precond, return_info=True)
    else:
        x, info = sla.solve(D, b, method=args.method, preconditioner=args.precond, rtol=args.rtol, return_info=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    t2 = time.perf_counter()
    peak = torch.tensor([_peak_bytes(dev)], dtype=torch.float64, device=dev)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    n = D.shape[0]
    rec = {
        "problem": args.problem,
        "unknowns": n,
        "ranks": world,
        "device": args.device,
        "precond": args.precond,
        "overlap": args.overlap,
        "setup_s": round(t1 - t0, 3),
        "solve_s": round(t2 - t1, 3),
        "iterations": info.iterations,
        "residual": info.residual,
        "peak_mb_per_rank": round(float(peak) / 2**20, 1),
        "bytes_per_unknown_per_rank": round(float(peak) / (n / world), 1),
    }
    if args.eigsh:
        rec["eigsh_k"] = args.eigsh
        rec["lambda_min"] = float(lam[0])
    if world == 1 and args.reference:
        rec.update(_reference(args.problem, side, args.rtol, dev, args.eigsh))
    if rank == 0:
        print(json.dumps(rec))
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(rec) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
