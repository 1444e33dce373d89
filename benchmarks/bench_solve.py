"""Direct solves on the CPU: `A.solve(b)` (auto) vs the same SciPy/CHOLMOD call made directly.

2D Poisson (5-point), float64, b = ones.  For each size, in one run:

* sla first solve   -- a fresh matrix: structure detection, conversion, factorisation, solve,
                       residual check (everything a user pays on a new pattern);
* direct call       -- the same library call sla made (CHOLMOD ``cholesky(S)(b)`` or SuperLU
                       ``splu(S, <same options>).solve(b)``) on a ready SciPy CSC matrix;
* scipy spsolve     -- what a SciPy user would type (``scipy.sparse.linalg.spsolve``);
* torch-sla         -- the seed project (PyPI ``torch-sla``), default backend, if installed;
* fwd+bwd           -- ``x = A.solve(b); x.sum().backward()`` with values requiring grad
                       (the backward reuses the factorisation);
* repeat            -- a second solve with the same values (cached factorisation).

Usage: python benchmarks/bench_solve.py [--sizes 100 316 1000] [--threads 1] [--seed-project]
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def _args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 316, 1000], help="grid points per side")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3, help="best of N for sizes below 1M")
    p.add_argument("--seed-project", action="store_true", help="also time torch-sla (PyPI) on each size")
    return p.parse_args()


args = _args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402
import torch  # noqa: E402

import sla  # noqa: E402
from sla import gallery  # noqa: E402

torch.set_num_threads(args.threads)


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def direct_call(S, b, method):
    if method == "cholesky":
        from sksparse import cholmod

        return lambda: cholmod.cholesky(S)(b)
    opts = dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options=dict(SymmetricMode=True))
    return lambda: spla.splu(S, **opts).solve(b)


def run(n, repeat):
    N = n * n
    rep = 1 if N >= 10**6 else repeat
    row = {"unknowns": N}

    def fresh():
        return gallery.poisson2d(n)

    b = torch.ones(N, dtype=torch.float64)

    fresh_ones = [fresh() for _ in range(rep)]  # built outside the timing, like S below

    def first_solve():
        return fresh_ones.pop().solve(b, return_info=True)

    row["sla first solve"], (x, info) = best(first_solve, rep)
    row["method"] = f"{info.backend}/{info.method}"
    row["residual"] = info.residual
    S = fresh().to_scipy("csc")
    bn = b.numpy()
    row["direct call"], xd = best(direct_call(S, bn, info.method), rep)
    assert np.allclose(x.numpy(), xd, rtol=1e-8, atol=1e-10)
    row["scipy spsolve"], _ = best(lambda: spla.spsolve(S, bn), rep)
    if args.seed_project:
        try:
            import torch_sla

            A = fresh()
            TA = torch_sla.SparseTensor(A.values, A.row, A.col, tuple(A.shape))
            row["torch-sla"], _ = best(lambda: TA.solve(b), rep)
        except Exception as exc:  # record how it failed instead of hiding it
            row["torch-sla"] = f"failed: {type(exc).__name__}"

    def fwd_bwd(A):
        v = A.values.clone().requires_grad_()
        At = A.with_values(v)
        t0 = time.perf_counter()
        x = At.solve(b)
        t1 = time.perf_counter()
        x.sum().backward()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    fb = [fwd_bwd(fresh()) for _ in range(rep)]
    row["forward"] = min(f for f, _ in fb)
    row["backward"] = min(g for _, g in fb)
    A = fresh()
    A.solve(b)
    row["repeat"], _ = best(lambda: A.solve(b), rep)
    return row


def main():
    print(
        f"# bench_solve: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} thread(s), torch {torch.__version__}, sla {sla.__version__}"
    )
    cols = ["unknowns", "method", "sla first solve", "direct call", "overhead", "scipy spsolve"]
    if args.seed_project:
        cols.append("torch-sla")
    cols += ["forward", "backward", "bwd/fwd", "repeat", "residual"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for n in args.sizes:
        r = run(n, args.repeat)
        r["overhead"] = f"{100 * (r['sla first solve'] / r['direct call'] - 1):+.1f}%"
        r["bwd/fwd"] = f"{r['backward'] / r['forward']:.2f}"
        cells = []
        for c in cols:
            v = r[c]
            if c == "residual":
                cells.append(f"{v:.1e}")
            elif isinstance(v, float):
                cells.append(f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s")
            else:
                cells.append(f"{v:,}" if isinstance(v, int) else str(v))
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
