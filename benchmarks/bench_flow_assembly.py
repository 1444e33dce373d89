"""Navier--Stokes assembly per Newton step (Taylor--Hood P2/P1, the cavity mesh): sla's flow kernel
against scikit-fem assembling the same forms on the same mesh, in one run.

Per mesh (``n x n`` squares, two triangles each) the script times, best of ``--repeat``:

* sla: ``flow_system(V, nu, x, newton=True)`` (the Newton Jacobian, one call) and
  ``flow_system(V, nu, x, residual=True)`` (a Picard matrix and the residual);
* scikit-fem: the per-step work of its Navier--Stokes example on the same mesh -- the Oseen and
  Newton convection forms at the current velocity plus the block matrix
  ``[[nu K + C + N, B^T], [B, 0]]`` (the state-independent ``K`` and ``B`` assembled once, outside
  the timing); the reference path of ``bench_cavity.py``.

    PYTHONPATH=. python3 benchmarks/bench_flow_assembly.py --n 48 128
    PYTHONPATH=. python3 benchmarks/bench_flow_assembly.py --device cuda --n 128 354 --paths sla

``torch.set_num_threads(--threads)`` (default 1).  On CUDA the times are synchronised.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")

from problems.cavity import cavity_mesh
from sla.assembly.flow import flow_system
from sla.assembly.mixed import TaylorHood


def _best(fn, repeat: int, device: str) -> float:
    fn()  # warm-up: plans, index lists, reference tensors
    best = float("inf")
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def vortex(p: np.ndarray) -> np.ndarray:
    """The convecting velocity of the timing at points ``p [k, 2]``: ``[k, 2]``."""
    return np.stack([np.sin(np.pi * p[:, 0]) * np.cos(np.pi * p[:, 1]), -np.cos(np.pi * p[:, 0])], 1)


def run_sla(n: int, device: str, repeat: int) -> dict:
    V = TaylorHood(cavity_mesh(n, device=device))
    x = torch.zeros(V.n, dtype=torch.float64)
    x[: V.n_u] = torch.from_numpy(vortex(V.velocity_points().cpu().numpy()).reshape(-1))
    x = x.to(device)
    with torch.no_grad():
        newton = _best(lambda: flow_system(V, 1e-3, x, newton=True), repeat, device)
        picard = _best(lambda: flow_system(V, 1e-3, x, residual=True), repeat, device)
    return dict(unknowns=V.n, nnz=V.pattern.nnz, newton=newton, picard=picard)


def run_skfem(n: int, repeat: int) -> float:
    import scipy.sparse as sp
    from bench_cavity import skfem_setup
    from skfem import asm

    _, ub, pb, (visc, divergence, oseen, newton) = skfem_setup(cavity_mesh(n))

    K, B = asm(visc, ub), asm(divergence, ub, pb)
    comp = np.zeros(ub.N, dtype=int)  # the component of each dof (skfem numbers them its own way)
    comp[np.concatenate([ub.nodal_dofs[1], ub.facet_dofs[1]])] = 1
    wv = ub.interpolate(vortex(ub.doflocs.T)[np.arange(ub.N), comp])

    def step():
        C = asm(oseen, ub, w=wv) + asm(newton, ub, w=wv)
        return sp.bmat([[1e-3 * K + C, B.T], [B, None]], format="csr")

    return _best(step, repeat, "cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[48, 128], help="cells per side")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--paths", default="sla,skfem")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = args.paths.split(",")
    print(f"device {args.device}, torch {torch.__version__}, {args.threads} thread(s), best of {args.repeat}")
    print("| n | unknowns | nnz | sla Newton J (ms) | sla Picard J + R (ms) | skfem step (ms) | skfem / sla Newton |")
    print("|---|---|---|---|---|---|---|")
    for n in args.n:
        r = run_sla(n, args.device, args.repeat)
        sk = run_skfem(n, args.repeat) if "skfem" in paths else float("nan")
        print(
            f"| {n} | {r['unknowns']:,} | {r['nnz']:,} | {1e3 * r['newton']:.1f} | {1e3 * r['picard']:.1f} "
            f"| {1e3 * sk:.1f} | {sk / r['newton']:.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
