"""What ``backend='auto'`` picks on the CPU, against the direct and multigrid paths.

2D (5-point) and 3D (7-point) Poisson, float64, b = ones, one thread.  Each row
times, on a freshly built matrix (setup included):

* ``cholesky``  ``A.solve(b, backend='scipy', method='cholesky')`` (CHOLMOD when installed)
* ``mg-cg``     ``A.solve(b, backend='pytorch', method='cg')`` (preconditioner 'auto':
  GMG where the grid is recorded, else AMG)
* ``auto``      ``A.solve(b)`` -- and what it chose

It is the measurement behind ``sla.solvers.linear.policy.CPU_MULTIGRID_MIN``.

``--reuse K`` times a time loop instead: K solves with one matrix (new right-hand sides),
the factorisation or the multigrid hierarchy built once and reused (``cache``), per solve
after the first and in total -- the measurement behind ``CPU_REUSE_DIRECT_MAX_2D/_3D``.

Usage::

    python benchmarks/bench_auto.py [--threads 1] [--sizes2d 128 256 512 724] [--sizes3d 24 40 64]
    python benchmarks/bench_auto.py --reuse 10 --sizes2d 256 512 --sizes3d 24 32
"""

from __future__ import annotations

import argparse
import time

import torch

from sla import gallery


def _time(A, b, **kw):
    t0 = time.perf_counter()
    x, info = A.solve(b, return_info=True, **kw)
    return time.perf_counter() - t0, info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes2d", type=int, nargs="*", default=[128, 256, 362, 512, 724])
    ap.add_argument("--sizes3d", type=int, nargs="*", default=[24, 32, 40, 50, 64])
    ap.add_argument("--reuse", type=int, default=0, help="time a loop of this many solves with one matrix")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.reuse:
        return _reuse(args)
    gallery.poisson2d(32).solve(torch.ones(1024, dtype=torch.float64), method="cholesky")  # imports, warm-up
    print("| grid | unknowns | cholesky (s) | mg-cg (s) | auto (s) | auto chose | residual (auto) |")
    print("|---|---|---|---|---|---|---|")
    plan = [(f"{n}^2", lambda n=n: gallery.poisson2d(n)) for n in args.sizes2d]
    plan += [(f"{n}^3", lambda n=n: gallery.poisson3d(n)) for n in args.sizes3d]
    for grid, make in plan:
        b = None
        cells = []
        for kw in (dict(backend="scipy", method="cholesky"), dict(backend="pytorch", method="cg"), {}):
            A = make()
            b = torch.ones(A.shape[0], dtype=torch.float64)
            dt, info = _time(A, b, **kw)
            cells.append(dt)
        chose = f"{info.backend}/{info.method}" + (f"+{info.preconditioner}" if info.preconditioner else "")
        print(
            f"| {grid} | {A.shape[0]:,} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[2]:.3f} | {chose} | "
            f"{info.residual:.1e} |",
            flush=True,
        )


def _reuse(args) -> None:
    """K solves with one matrix: direct (factored once) against multigrid CG (set up once)."""
    print(f"| grid | unknowns | cholesky first / later / total of {args.reuse} (s) | mg-cg first / later / total (s) |")
    print("|---|---|---|---|")
    plan = [(f"{n}^2", lambda n=n: gallery.poisson2d(n)) for n in args.sizes2d]
    plan += [(f"{n}^3", lambda n=n: gallery.poisson3d(n)) for n in args.sizes3d]
    for grid, make in plan:
        cells = []
        for kw in (dict(backend="scipy", method="cholesky"), dict(backend="pytorch", method="cg")):
            A = make()
            times = []
            for k in range(args.reuse):
                b = torch.full((A.shape[0],), float(k + 1), dtype=torch.float64)
                times.append(_time(A, b, **kw)[0])
            later = sum(times[1:]) / max(1, len(times) - 1)
            cells.append(f"{times[0]:.3f} / {later:.4f} / {sum(times):.2f}")
        print(f"| {grid} | {A.shape[0]:,} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
