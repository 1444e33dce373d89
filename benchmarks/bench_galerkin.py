"""The AMG setup's Galerkin product ``R A P``: sla's expand-sort-compress product
(``sla.solvers.precond.spgemm.galerkin``) against torch's sparse product ``R @ (A @ P)`` (cuSPARSE's
SpGEMM on CUDA, MKL or torch's own on the CPU), on the operators of a smoothed-aggregation setup.

Two tables:

1. ``--levels``: every level's product of the setup of each matrix, each timed alone (median of
   ``--repeats``, the first call dropped), with its allocator peak above the inputs on CUDA and the
   relative difference of the two results on a random vector.
2. ``--first``: fresh processes (one SpMV run first, as a program would), each setting up AMG on a
   65K 5-point matrix with one of the two products, then on new values: the products' seconds in
   the process's first setup and in the later one (the first includes loading their kernels).

Usage::

    PYTHONPATH=. python3 benchmarks/bench_galerkin.py --device cuda --levels --first
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sla import gallery
from sla.solvers.precond import amg
from sla.solvers.precond.multigrid import Mat
from sla.solvers.precond.spgemm import galerkin


def torch_galerkin(R: Mat, A: Mat, P: Mat, chunk=None, consume: bool = False) -> Mat:
    """``R @ (A @ P)`` in one torch sparse product each (the reference: the library call)."""
    dt = A.val.dtype
    return Mat.from_torch(R.csr64(R.val.to(dt)) @ (A.csr64() @ P.csr64(P.val.to(dt))))


IMPLEMENTATIONS = {"sla": galerkin, "torch": torch_galerkin}


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def _matrices(dev: str):
    import bench_amg_gpu

    bench_amg_gpu.DEV = dev
    sizes = (256, 1000, 4000) if dev == "cuda" else (256, 500, 1000)
    out = [(f"5-point {k}^2", lambda k=k: gallery.poisson2d(k, device=dev)) for k in sizes]
    k = 1000 if dev == "cuda" else 300
    out.append((f"P1 triangles unit_square({k})", lambda: bench_amg_gpu._p1_square(k)))
    k = 100 if dev == "cuda" else 40
    out.append((f"P1 tetrahedra unit_cube({k})", lambda: bench_amg_gpu._p1_cube(k)))
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
        "| matrix | level rows | coarse rows | sla (ms) | torch (ms) | torch / sla | peak sla / torch (MB) | rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, make in _matrices(dev):
        A = make()
        for R, C, P in _triples(A):
            x = torch.randn(P.shape[1], 1, dtype=C.val.dtype, device=dev)
            res = {}
            for name, impl in IMPLEMENTATIONS.items():
                t, M = _time(lambda impl=impl: impl(R, C, P), dev, repeats)
                y = M.csr64() @ x
                res[name] = (t, _peak(lambda impl=impl: impl(R, C, P), dev), y)
            (ts, ps, ys), (tt, pt, yt) = res["sla"], res["torch"]
            diff = float((ys - yt).norm() / yt.norm())
            peak = "-" if ps is None else f"{ps / 2**20:.1f} / {pt / 2**20:.1f}"
            print(
                f"| {label} | {C.shape[0]:,} | {P.shape[1]:,} | {ts * 1e3:.2f} | {tt * 1e3:.2f} | "
                f"{tt / ts:.2f} | {peak} | {diff:.1e} |",
                flush=True,
            )
        del A


def child(dev: str, impl: str, k: int) -> None:
    """One fresh process: an SpMV, then AMG set up twice (new values), the products timed."""
    A = gallery.poisson2d(k, device=dev)
    x = torch.ones(A.shape[0], dtype=A.dtype, device=dev)
    _ = A @ x
    _sync(dev)
    spent = []

    def timed(*args, **kw):
        _sync(dev)
        t = time.perf_counter()
        out = IMPLEMENTATIONS[impl](*args, **kw)
        _sync(dev)
        spent.append(time.perf_counter() - t)
        return out

    amg.galerkin = timed
    out = {}
    for name, M in (("first", A), ("later", A.with_values(A.values * 2))):
        spent.clear()
        t = time.perf_counter()
        amg.SmoothedAggregation(M)
        _sync(dev)
        out[name] = (sum(spent), time.perf_counter() - t)
    print(json.dumps(out))


def first(dev: str, processes: int, k: int = 256) -> None:
    print(
        "| product | process | products in the first setup (s) | in the later one (s) | first setup (s) | later setup (s) |"
    )
    print("|---|---|---|---|---|---|")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    for p in range(processes):
        for impl in IMPLEMENTATIONS:
            cmd = [sys.executable, os.path.abspath(__file__), "--device", dev, "--child", impl, "--k", str(k)]
            run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            out = json.loads(run.stdout.strip().splitlines()[-1])
            (g1, s1), (g2, s2) = out["first"], out["later"]
            print(f"| {impl} | {p + 1} | {g1:.3f} | {g2:.3f} | {s1:.3f} | {s2:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--levels", action="store_true")
    ap.add_argument("--first", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--child", choices=sorted(IMPLEMENTATIONS))
    ap.add_argument("--k", type=int, default=256)
    args = ap.parse_args()
    if args.child:
        child(args.device, args.child, args.k)
        return
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}\n")
    if args.levels:
        levels(args.device, args.repeats)
        print()
    if args.first:
        first(args.device, args.processes, args.k)


if __name__ == "__main__":
    main()
