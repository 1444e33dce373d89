"""Distributed CG with an AMG block-Jacobi preconditioner over torch.distributed.

    torchrun --standalone --nproc_per_node=2 examples/distributed_solve.py [--side 200]

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=100, help="grid side (n^2 unknowns)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    A = gallery.poisson2d(args.side)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    D = DSparseTensor.partition(A)
    x, info = sla.solve(D, D.scatter(b), method="cg", preconditioner="amg", rtol=1e-10, return_info=True)
    x = D.gather(x)
    log.info("rank %d: %s", rank, D)
    if rank == 0:
        ref = A.solve(b)
        err = float((x - ref).norm() / ref.norm())
        log.info("%d ranks: %d CG iterations, residual %.1e, error vs single process %.1e",
                 dist.get_world_size(), info.iterations, info.residual, err)
        if err > 1e-8:
            raise SystemExit(f"distributed solution differs from the single-process one: {err:.2e}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
