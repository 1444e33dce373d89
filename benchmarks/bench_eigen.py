"""Eigen backend next to SciPy on the CPU: 2D Poisson, float64, threads pinned.

For each size and solver pair, times ``x = A.solve(b)`` on fresh values (setup
+ solve: factorisation or preconditioner, then the solve) through sla with
``backend='eigen'`` and with ``backend='scipy'``, and the backward pass of
``x.sum()`` (the adjoint solve on the same state).  Iterative methods use
rtol=1e-8 with a Jacobi preconditioner on both sides.

Usage::

    python benchmarks/bench_eigen.py --sizes 316 500 1000 --threads 1

Prints a Markdown table (paste into benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[316, 500, 1000], help="grid points per side")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--pairs",
        nargs="+",
        default=["cg:cg", "bicgstab:bicgstab", "ldlt:cholesky", "lu:lu"],
        help="eigen_method:scipy_method pairs",
    )
    ap.add_argument("--direct-max", type=int, default=10**6, help="largest size for direct methods")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs (1 above 500K unknowns)")
    args = ap.parse_args()
    for k in THREADS_ENV:
        os.environ[k] = str(args.threads)

    import torch

    from sla import gallery
    from sla.solvers.backends import eigen as E

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    E.extension()
    build = time.perf_counter() - t0

    def run(A, b, backend, method):
        A.pattern.clear_cache()  # a fresh setup every time (the values cache would match equal values)
        v = A.values.detach().clone().requires_grad_()
        M = A.with_values(v)
        t = time.perf_counter()
        x, info = M.solve(
            b, backend=backend, method=method, rtol=1e-8, atol=0.0, maxiter=100000, cache=False, return_info=True
        )
        fwd = time.perf_counter() - t
        t = time.perf_counter()
        x.sum().backward()
        bwd = time.perf_counter() - t
        return fwd, bwd, info

    rows = []
    for n in args.sizes:
        A = gallery.poisson2d(n, dtype=torch.float64)
        N = A.shape[0]
        b = torch.ones(N, dtype=torch.float64)
        for pair in args.pairs:
            em, sm = pair.split(":")
            direct = em in ("ldlt", "lu")
            if direct and N > args.direct_max:
                continue
            reps = 1 if N > 500_000 else args.repeat
            res = {}
            for backend, method in (("eigen", em), ("scipy", sm)):
                best = None
                for _ in range(reps):
                    out = run(A, b, backend, method)
                    best = out if best is None or out[0] < best[0] else best
                res[backend] = best
            (ef, eb, ei), (sf, sb, si) = res["eigen"], res["scipy"]
            it = lambda i: "" if i.iterations in (None, 0) else f" ({i.iterations} it)"
            rows.append(
                f"| {N:,} | eigen/{em} vs scipy/{sm} | {ef:.3f} s{it(ei)} | {sf:.3f} s{it(si)} | {sf / ef:.2f}x "
                f"| {eb:.3f} s | {sb:.3f} s | {ei.residual:.1e} / {si.residual:.1e} |"
            )
            print(rows[-1], flush=True)

    print()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}; "
        f"threads {args.threads}; torch {torch.__version__}; Eigen {E.extension().eigen_version}; "
        f"extension load/build in this process {build:.1f} s; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| unknowns | solvers | eigen solve (setup+solve) | scipy solve | scipy/eigen | eigen backward | "
        "scipy backward | residual eigen / scipy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
