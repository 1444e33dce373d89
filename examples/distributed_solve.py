"""Distributed CG with an AMG block-Jacobi preconditioner over torch.distributed.

    torchrun --standalone --nproc_per_node=2 examples/distributed_solve.py [--side 200]
    torchrun --standalone --nproc_per_node=2 examples/distributed_solve.py --device cuda   # NCCL, one GPU a rank

Every rank builds the same global 2D Poisson matrix, keeps its METIS block,
solves, and rank 0 checks the gathered solution against a single-process solve.
"""

import argparse
import logging

import torch
import torch.distributed as dist

import sla
from sla import gallery
from sla.dist import DSparseTensor

log = logging.getLogger("distributed_solve")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=100, help="grid side (n^2 unknowns)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: NCCL, one GPU per rank")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank = dist.get_rank()
    device = torch.device("cpu")
    if args.device == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    A = gallery.poisson2d(args.side, device=device)
    b = torch.ones(A.shape[0], dtype=torch.float64, device=device)
    D = DSparseTensor.partition(A)
    x, info = sla.solve(D, D.scatter(b), method="cg", preconditioner="amg", rtol=1e-10, return_info=True)
    x = D.gather(x)
    log.info("rank %d: %s", rank, D)
    if rank == 0:
        ref = A.solve(b)
        err = float((x - ref).norm() / ref.norm())
        log.info(
            "%d ranks on %s: %d CG iterations, residual %.1e, error vs single process %.1e",
            dist.get_world_size(),
            device.type,
            info.iterations,
            info.residual,
            err,
        )
        if err > 1e-8:
            raise SystemExit(f"distributed solution differs from the single-process one: {err:.2e}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
