"""What ``backend='auto'`` picks on the CPU, against the direct and multigrid paths.

2D (5-point) and 3D (7-point) Poisson, float64, b = ones, one thread.  Each row
times, on a freshly built matrix (setup included):

* ``cholesky``  ``A.solve(b, backend='scipy', method='cholesky')`` (CHOLMOD when installed)
* ``mg-cg``     ``A.solve(b, backend='pytorch', method='cg')`` (preconditioner 'auto':
  GMG where the grid is recorded, else AMG)
* ``auto``      ``A.solve(b)`` -- and what it chose

It is the measurement behind ``sla.solvers.linear.policy.CPU_MULTIGRID_MIN``.

Usage::

    python benchmarks/bench_auto.py [--threads 1] [--sizes2d 128 256 512 724] [--sizes3d 24 40 64]
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
