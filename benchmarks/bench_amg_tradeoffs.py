"""Two AMG trade-offs of memory against time, each measured A/B in one process.

1. ``--prolongation``: later solves of AMG-CG with the finest prolongator stored against applied
   (``AMG(prolongation='stored')`` / ``'implicit'``: ``(I - w D^-1 A) T``, one more product with
   the fine matrix per cycle instead of P's storage). Both preconditioners are built on the same
   matrix and their solves alternated; the median of ``--repeats`` (the first dropped).
2. ``--galerkin``: the AMG setup on new values of a cached pattern (aggregates reused) against the
   Galerkin product's block size (``spgemm.GALERKIN_ROWS``: products per block as a fraction of
   the rows), its time and (CUDA) its allocator peak above the matrix, alternated.
3. ``--blocks``: the same setup with the Galerkin product's blocks on every level sized by the
   finest operator's rows (what the setup does), by each level's own rows (as before), and with the
   smoothed prolongator's blocks sized by the finest rows too, alternated.

Matrices: 5-point 1000^2, P1 triangles ``unit_square(1000)``, P1 tetrahedra ``unit_cube(100)``
(``--big``: 5-point 4000^2 too); on the CPU a quarter of the sizes.  Usage::

    PYTHONPATH=. python3 benchmarks/bench_amg_tradeoffs.py --prolongation --galerkin --big
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_amg_gpu

import sla
from sla import gallery
from sla.solvers.precond import spgemm
from sla.solvers.precond.amg import SmoothedAggregation


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def _matrices(dev: str, big: bool):
    k5, kt, kc = (1000, 1000, 100) if dev == "cuda" else (500, 500, 50)
    out = [
        (f"5-point {k5}^2", lambda: gallery.poisson2d(k5, device=dev)),
        (f"P1 triangles unit_square({kt})", lambda: bench_amg_gpu._p1_square(kt)),
        (f"P1 tetrahedra unit_cube({kc})", lambda: bench_amg_gpu._p1_cube(kc)),
    ]
    if big:
        k = 4000 if dev == "cuda" else 2000
        out.append((f"5-point {k}^2", lambda: gallery.poisson2d(k, device=dev)))
    return out


def prolongation(dev: str, big: bool, repeats: int) -> None:
    print("| matrix | stored (ms) | implicit (ms) | ratio | iterations |")
    print("|---|---|---|---|---|")
    for label, make in _matrices(dev, big):
        A = make()
        b = torch.ones(A.shape[0], dtype=A.dtype, device=dev)
        pcs = {p: sla.precond.AMG(prolongation=p) for p in ("stored", "implicit")}
        times = {p: [] for p in pcs}
        its = {}
        for _ in range(repeats):
            for p, pc in pcs.items():
                _sync(dev)
                t = time.perf_counter()
                _, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner=pc, return_info=True)
                _sync(dev)
                times[p].append(time.perf_counter() - t)
                its[p] = info.iterations
        med = {p: statistics.median(v[1:]) for p, v in times.items()}
        print(
            f"| {label} | {med['stored'] * 1e3:.1f} | {med['implicit'] * 1e3:.1f} | "
            f"{med['implicit'] / med['stored']:.3f} | {its['stored']} / {its['implicit']} |",
            flush=True,
        )
        del A, pcs


def _setups(dev: str, big: bool, repeats: int, column: str, variants: dict) -> None:
    """The setup on new values of a cached pattern under each variant (``name: apply``, ``apply()``
    setting the variant up), alternated: its seconds and (CUDA) its allocator peak above A."""
    print(f"| matrix | {column} | setup (s) | setup peak above A (B/unknown) |")
    print("|---|---|---|---|")
    for label, make in _matrices(dev, big):
        A = make()
        SmoothedAggregation(A)  # the first of its size, and the aggregates cached on the pattern
        rows = {v: [] for v in variants}
        peaks = {}
        for rep in range(repeats):
            for v, apply in variants.items():
                apply()
                A2 = A.with_values(A.values * (1.5 + rep))
                gc.collect()
                _sync(dev)
                if dev == "cuda":
                    torch.cuda.empty_cache()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                M = SmoothedAggregation(A2)
                _sync(dev)
                rows[v].append(time.perf_counter() - t)
                if dev == "cuda":
                    peaks[v] = (torch.cuda.max_memory_allocated() - base) / A.shape[0]
                del M, A2
        for v in variants:
            peak = f"{peaks[v]:.1f}" if v in peaks else "-"
            ts = ", ".join(f"{t:.3f}" for t in rows[v])
            print(f"| {label} | {v} | {ts} | {peak} |", flush=True)
        del A


def galerkin(dev: str, big: bool, fractions: list[float], repeats: int) -> None:
    saved = spgemm.GALERKIN_ROWS, spgemm.GALERKIN_MIN

    def rows(f):
        def apply():
            spgemm.GALERKIN_ROWS, spgemm.GALERKIN_MIN = f, int(f * (1 << 20))

        return apply

    try:
        _setups(dev, big, repeats, "GALERKIN_ROWS", {f: rows(f) for f in fractions})
    finally:
        spgemm.GALERKIN_ROWS, spgemm.GALERKIN_MIN = saved


def _by_level(sa_level):
    """``_sa_level`` with every block sized by the level's own rows (the setup before)."""

    def run(*args, rows=None, **kw):
        return sa_level(*args, **kw)

    return run


def _smoothed_by_finest(sa_level):
    """``_sa_level`` with the smoothed prolongator's blocks sized by the finest rows too."""
    from sla.solvers.precond import amg
    from sla.solvers.precond.transfers import product_chunk

    def run(*args, rows=None, **kw):
        real = amg._smoothed

        def smoothed(C, T, w, chunk=None, dtype=None):
            return real(C, T, w, chunk=product_chunk(C.shape[0] if rows is None else rows), dtype=dtype)

        amg._smoothed = smoothed
        try:
            return sa_level(*args, rows=rows, **kw)
        finally:
            amg._smoothed = real

    return run


def blocks(dev: str, big: bool, repeats: int) -> None:
    from sla.solvers.precond import amg

    real = amg._sa_level

    def sa_level(f):
        def apply():
            amg._sa_level = f

        return apply

    variants = {
        "finest rows": sa_level(real),
        "each level's rows": sa_level(_by_level(real)),
        "finest rows, the prolongator's too": sa_level(_smoothed_by_finest(real)),
    }
    try:
        _setups(dev, big, repeats, "blocks sized by", variants)
    finally:
        amg._sa_level = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prolongation", action="store_true", help="stored against implicit finest prolongator")
    ap.add_argument("--galerkin", action="store_true", help="setup against the Galerkin block size")
    ap.add_argument("--blocks", action="store_true", help="block sizes by the finest rows against each level's")
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5], help="GALERKIN_ROWS values")
    ap.add_argument("--big", action="store_true", help="the 16M 5-point matrix too (4M on the CPU)")
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    if not (args.prolongation or args.galerkin or args.blocks):
        ap.error("choose --prolongation, --galerkin and/or --blocks")
    bench_amg_gpu.DEV = args.device
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# {name}, torch {torch.__version__}")
    warm = gallery.poisson2d(256, device=args.device)  # kernels and the pyamg import
    sla.solve(
        warm,
        torch.ones(warm.shape[0], dtype=warm.dtype, device=args.device),
        backend="pytorch",
        method="cg",
        preconditioner="amg",
    )
    if args.prolongation:
        prolongation(args.device, args.big, args.repeats)
    if args.galerkin:
        galerkin(args.device, args.big, args.fractions, max(1, args.repeats // 4))
    if args.blocks:
        blocks(args.device, args.big, max(1, args.repeats // 4))


if __name__ == "__main__":
    main()
