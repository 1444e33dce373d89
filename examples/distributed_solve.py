"""Distributed CG over torch.distributed, written the seed project's way.

    torchrun --standalone --nproc_per_node=2 examples/distributed_solve.py [--side 200]
    torchrun --standalone --nproc_per_node=2 examples/distributed_solve.py --device cuda   # NCCL, one GPU a rank

Every rank builds the same global 2D Poisson matrix, keeps its METIS block
(``DSparseTensor.partition(A, mesh, partition_method='metis')``), solves with the
distributed smoothed-aggregation multigrid preconditioner, and rank 0 checks
``x_dt.full_tensor()`` against a single-process solve; then the four smallest
eigenpairs by distributed LOBPCG (``D.eigsh``), checked the same way.
"""

import argparse
import logging

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import sla
from sla import DSparseTensor, SolverConfig, gallery

log = logging.getLogger("distributed_solve")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=100, help="grid side (n^2 unknowns)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: NCCL, one GPU per rank")
    ap.add_argument("--preconditioner", default="distributed_amg", help="distributed_amg, schwarz, amg, jacobi")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank = dist.get_rank()
    device = torch.device("cpu")
    if args.device == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    A = gallery.poisson2d(args.side, device=device)
    b = torch.ones(A.shape[0], dtype=torch.float64, device=device)
    D = DSparseTensor.partition(A, mesh, partition_method="metis")
    b_dt = D.scatter(b)
    with SolverConfig(method="cg", rtol=1e-10, preconditioner=args.preconditioner):
        x_dt, info = sla.solve(D, b_dt, return_info=True)
    r_dt = b_dt - D @ x_dt
    x = x_dt.full_tensor()
    rn = float(r_dt.full_tensor().norm())
    log.info("rank %d: %s", rank, D)
    if rank == 0:
        ref = A.solve(b)
        err = float((x - ref).norm() / ref.norm())
        log.info(
            "%d ranks on %s: %d CG iterations (%s), residual %.1e (|b - D @ x| = %.1e), error vs single process %.1e",
            dist.get_world_size(),
            device.type,
            info.iterations,
            args.preconditioner,
            info.residual,
            rn,
            err,
        )
        if err > 1e-8:
            raise SystemExit(f"distributed solution differs from the single-process one: {err:.2e}")
    (lam, V_dt), einfo = D.eigsh(k=4, which="SA", return_info=True)  # eigenvectors: DTensor[Shard(0)]
    V = V_dt.full_tensor()
    if rank == 0:
        ref = A.eigsh(k=4, which="SA", return_eigenvectors=False)
        lerr = float((lam - ref).abs().max() / ref.abs().max())
        verr = float((A @ V - V * lam).norm() / lam.abs().max())
        log.info(
            "eigsh: %d LOBPCG iterations (%s), eigenvalue error vs single process %.1e, |A V - V diag(lam)| %.1e",
            einfo.iterations,
            einfo.notes[-1] if einfo.notes else "",
            lerr,
            verr,
        )
        if lerr > 1e-8 or verr > 1e-6:
            raise SystemExit(f"distributed eigenpairs differ from the single-process ones: {lerr:.2e}, {verr:.2e}")
    # every rank ends together: a rank that tore its process group down while rank 0 still computed
    # the reference sometimes aborted at exit ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
