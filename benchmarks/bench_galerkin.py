"""The AMG setup's Galerkin product ``R A P`` on the operators of a smoothed-aggregation setup, each
level timed alone (median of ``--repeats``, the first call dropped) with its allocator peak above the
inputs on CUDA, three ways:

* ``sla``: ``spgemm.galerkin`` in row blocks sized by the finest operator's rows (what the setup runs);
* ``level blocks``: the same with blocks sized by the level's own rows (the setup before);
* ``torch``: ``R @ (A @ P)``, one torch sparse product each (cuSPARSE's SpGEMM on CUDA, MKL or torch's
  own on the CPU): the library call, without blocks (its buffers grow with the whole product).

The last column is the relative difference of sla's result and torch's on a random vector.

Usage::

    PYTHONPATH=. python3 benchmarks/bench_galerkin.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sla import gallery
from sla.solvers.precond import amg
from sla.solvers.precond.multigrid import Mat
from sla.solvers.precond.spgemm import galerkin, galerkin_chunk


def torch_galerkin(R: Mat, A: Mat, P: Mat) -> Mat:
    """``R @ (A @ P)`` in one torch sparse product each (the reference: the library call)."""
    dt = A.val.dtype
    return Mat.from_torch(R.csr64(R.val.to(dt)) @ (A.csr64() @ P.csr64(P.val.to(dt))))


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def _matrices(dev: str):
    import bench_amg_gpu

    bench_amg_gpu.DEV = dev
    sizes = (256, 1000, 4000) if dev == "cuda" else (256, 500, 1000)
    out = [(f"5-point {k}^2", lambda k=k: gallery.poisson2d(k, device=dev)) for k in sizes]
    k = 1000 if dev == "cuda" else 300
    out.append((f"P1 triangles unit_square({k})", lambda k=k: bench_amg_gpu._p1_square(k)))
    k = 100 if dev == "cuda" else 40
    out.append((f"P1 tetrahedra unit_cube({k})", lambda k=k: bench_amg_gpu._p1_cube(k)))
    return out


def _triples(A):
    """The ``(R, A, P)`` of every level of A's setup (the product run by sla's own)."""
    seen = []

    def record(R, C, P, chunk=None, consume=False):
        seen.append(tuple(Mat(M.crow.clone(), M.col.clone(), M.val.clone(), M.shape) for M in (R, C, P)))
        return galerkin(R, C, P, chunk=chunk, consume=consume)

    saved = amg.galerkin
    amg.galerkin = record
    try:
        amg.SmoothedAggregation(A, prolongation="stored")
    finally:
        amg.galerkin = saved
    return seen


def _time(f, dev: str, repeats: int):
    times = []
    for _ in range(repeats + 1):
        _sync(dev)
        t = time.perf_counter()
        C = f()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:]), C


def _peak(f, dev: str) -> float | None:
    if dev != "cuda":
        return None
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    C = f()
    _sync(dev)
    del C
    return torch.cuda.max_memory_allocated() - base


def levels(dev: str, repeats: int) -> None:
    print(
        "| matrix | level rows | coarse rows | sla (ms) | level blocks (ms) | torch (ms) | "
        "peak sla / level blocks / torch (MB) | rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, make in _matrices(dev):
        A = make()
        fine = A.shape[0]
        for R, C, P in _triples(A):
            x = torch.randn(P.shape[1], 1, dtype=C.val.dtype, device=dev)
            ways = {
                "sla": lambda: galerkin(R, C, P, chunk=galerkin_chunk(fine)),
                "level": lambda: galerkin(R, C, P, chunk=galerkin_chunk(C.shape[0])),
                "torch": lambda: torch_galerkin(R, C, P),
            }
            res = {}
            for name, f in ways.items():
                t, M = _time(f, dev, repeats)
                res[name] = (t, _peak(f, dev), M.csr64() @ x)
                del M
            ys, yt = res["sla"][2], res["torch"][2]
            diff = float((ys - yt).norm() / yt.norm())
            peaks = [res[k][1] for k in ways]
            peak = "-" if peaks[0] is None else " / ".join(f"{p / 2**20:.1f}" for p in peaks)
            times = " | ".join(f"{res[k][0] * 1e3:.2f}" for k in ways)
            print(f"| {label} | {C.shape[0]:,} | {P.shape[1]:,} | {times} | {peak} | {diff:.1e} |", flush=True)
        del A


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}\n")
    levels(args.device, args.repeats)


if __name__ == "__main__":
    main()
