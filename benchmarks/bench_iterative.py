"""Iterative solvers on 2D Poisson (5-point, float64, b = ones, rtol 1e-8).

Every case is timed *including* its setup (preconditioner / hierarchy build) on a
freshly built matrix, and reports iterations, the true relative residual
``||b - A x|| / ||b||`` (recomputed here) and peak memory.  The references run in
the same invocation:

* ``sla-amg``   ``A.solve(b, backend='pytorch', method='cg', preconditioner='amg')``
* ``sla-gmg``   the same with geometric multigrid (the grid is known)
* ``sla-auto-repeat``  a second AMG solve with *new values on the same pattern*
  (aggregates reused from the pattern cache; the numeric hierarchy is rebuilt)
* ``sla-amg-w``, ``sla-gmg-w``  the same with W-cycles (``options={'cycle': 'W'}``)
* ``sla-amg-mis2``  AMG with the parallel MIS(2) aggregation in torch
* ``sla-*-spd``  any sla case with ``matrix_type='spd'`` declared (no structure detection)
* ``sla-cg``    plain CG, no preconditioner
* ``seed``      the seed project ``torch_sla`` 0.4.0: ``SparseTensor(...).solve(b, backend='pytorch', method='cg')``
* CPU only: ``pyamg`` (smoothed aggregation + CG, setup included) and ``scipy``
  (``spsolve``, SuperLU)

Memory: on CUDA ``torch.cuda.max_memory_allocated`` of the case (matrix included);
on CPU the peak RSS growth of a fresh subprocess per case (``ru_maxrss``).

Usage::

    python benchmarks/bench_iterative.py --device cpu --sizes 256 1024 --threads 1
    python benchmarks/bench_iterative.py --device cuda --sizes 1024 4096 --3d 200
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

import torch

CASES_CPU = ["sla-amg", "sla-gmg", "sla-amg-repeat", "pyamg", "sla-cg", "seed", "scipy"]
CASES_GPU = ["sla-gmg", "sla-amg", "sla-amg-repeat", "sla-cg", "seed"]


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _poisson2d_sorted(n, device):
    """The matrix of ``gallery.poisson2d(n)``, built directly as int32 CSR.

    Same values, pattern and grid record; it only avoids the sort of a general COO
    build, whose temporaries would dominate the peak memory at 100M+ unknowns
    (this build peaks near 100 bytes/unknown, below the solve's).
    """
    from sla import Pattern, SparseTensor

    N = n * n
    it = torch.int32 if 5 * N < 2**31 - 1 else torch.int64
    i = torch.arange(N, device=device, dtype=it)
    iy = i % n
    ok = torch.ones(N, 5, dtype=torch.bool, device=device)
    ok[:n, 0] = False  # no neighbour above the first grid row, none below the last
    ok[N - n :, 4] = False
    ok[:, 1] = iy > 0
    ok[:, 3] = iy < n - 1
    del iy
    cols = (i.unsqueeze(1) + torch.tensor([-n, -1, 0, 1, n], device=device, dtype=it))[ok]
    del i
    vals = torch.tensor([-1.0, -1.0, 4.0, -1.0, -1.0], dtype=torch.float64, device=device).expand(N, 5)[ok]
    crow = torch.zeros(N + 1, dtype=torch.int64, device=device)
    torch.cumsum(ok.sum(1), 0, out=crow[1:])
    del ok
    A = SparseTensor._make(vals, Pattern._from_csr_trusted(crow, cols, (N, N)))
    A.pattern.cache["grid"] = (n, n)
    return A


def _problem(n, dim, device):
    from sla import gallery

    A = _poisson2d_sorted(n, device) if dim == 2 else gallery.poisson3d(n, device=device)
    b = torch.ones(A.shape[0], dtype=torch.float64, device=device)
    return A, b


def _residual(A, x, b):
    return float(torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b))


def run_case(case, n, dim, device, rtol):
    """Run one case; returns a dict (time in seconds, setup included)."""
    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
    A, b = _problem(n, dim, device)
    A.pattern.crow  # noqa: B018  (pattern CSR arrays: part of the matrix, not of the solve)
    A.pattern.ccol  # noqa: B018
    _sync(device)
    out = {"case": case, "n": A.shape[0], "grid": f"{n}^{dim}", "device": device}
    if device == "cuda":
        out["matrix_bytes"] = torch.cuda.memory_allocated() - base
        torch.cuda.reset_peak_memory_stats()
    if case.startswith("sla"):
        # a '-spd' suffix declares the matrix type: no structure detection (time, and its
        # transpose permutation in the peak memory)
        name = case.removesuffix("-spd")
        mtype = "spd" if name != case else None
        pc, opts = {
            "sla-amg": ("amg", None),
            "sla-gmg": ("gmg", None),
            "sla-cg": ("none", None),
            "sla-amg-repeat": ("amg", None),
            "sla-amg-mis2": ("amg", {"aggregation": "mis2"}),
            "sla-amg-w": ("amg", {"cycle": "W"}),
            "sla-gmg-w": ("gmg", {"cycle": "W"}),
        }[name]
        case = name
        if pc == "amg" and (opts or {}).get("aggregation") != "mis2":
            import pyamg
        if case == "sla-amg-repeat":  # warm the pattern cache, then time a solve with new values
            A.solve(b, backend="pytorch", method="cg", preconditioner=pc, rtol=rtol)
            A = A.with_values(A.values * 1.5)
            _sync(device)
        t0 = time.perf_counter()
        x, info = A.solve(
            b,
            backend="pytorch",
            method="cg",
            preconditioner=pc,
            rtol=rtol,
            maxiter=100000,
            matrix_type=mtype,
            options=opts,
            return_info=True,
        )
        _sync(device)
        out.update(
            time=time.perf_counter() - t0,
            setup=info.setup_time,
            iterations=info.iterations,
            notes="; ".join(info.notes),
        )
    elif case == "seed":
        import torch_sla

        S = torch_sla.SparseTensor(A.values, A.pattern.row, A.pattern.col, tuple(A.shape))
        t0 = time.perf_counter()
        x = S.solve(b, backend="pytorch", method="cg", tol=rtol, atol=0.0, maxiter=100000)
        _sync(device)
        out.update(time=time.perf_counter() - t0, iterations=None)
    elif case == "pyamg":
        import numpy as np
        import pyamg

        M = A.to_scipy("csr")
        bb = np.ones(M.shape[0])
        t0 = time.perf_counter()
        ml = pyamg.smoothed_aggregation_solver(M)
        t1 = time.perf_counter()
        res = []
        xs = ml.solve(bb, tol=rtol, accel="cg", residuals=res)
        out.update(time=time.perf_counter() - t0, setup=t1 - t0, iterations=len(res) - 1)
        x = torch.from_numpy(xs)
    elif case == "scipy":
        import scipy.sparse.linalg as spla

        M = A.to_scipy("csc")
        t0 = time.perf_counter()
        xs = spla.spsolve(M, b.numpy())
        out.update(time=time.perf_counter() - t0, iterations=None)
        x = torch.from_numpy(xs)
    else:
        raise ValueError(f"unknown case {case!r}")
    out["residual"] = _residual(A, x.to(device), b)
    if device == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - base  # matrix included
        out["bytes_per_unknown"] = out["peak_bytes"] / out["n"]
        out["matrix_bytes_per_unknown"] = out["matrix_bytes"] / out["n"]
    return out


def _child(args):
    torch.set_num_threads(args.threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = run_case(args.case, args.n, args.dim, args.device, args.rtol)
    if args.device == "cpu":
        r["peak_bytes"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
        r["bytes_per_unknown"] = r["peak_bytes"] / r["n"]
    print("RESULT " + json.dumps(r), flush=True)


def _table(rows):
    head = (
        "| case | grid | unknowns | time (s) | setup (s) | iterations | residual | peak MB | bytes/unknown "
        "| of which matrix |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['grid']} | | failed: {r['error'][:60]} | | | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['grid']} | {r['n']:,} | {r['time']:.3f} | "
            f"{r.get('setup') if r.get('setup') is None else format(r['setup'], '.3f')} | {r.get('iterations')} | "
            f"{r['residual']:.1e} | {r.get('peak_bytes', 0) / 2**20:.0f} | {r.get('bytes_per_unknown', 0):.0f} | "
            f"{r.get('matrix_bytes_per_unknown', float('nan')):.0f} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024], help="grid sides n (n^2 unknowns)")
    ap.add_argument("--3d", dest="sizes3d", type=int, nargs="*", default=[], help="3D grid sides (AMG only)")
    ap.add_argument("--cases", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--max-slow", type=int, default=1024, help="largest n for plain CG / seed / scipy")
    ap.add_argument("--json", default=None)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dim", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        return _child(args)
    torch.set_num_threads(args.threads)
    cases = args.cases or (CASES_GPU if args.device == "cuda" else CASES_CPU)
    plan = [
        (c, n, 2) for n in args.sizes for c in cases if not (c in ("sla-cg", "seed", "scipy") and n > args.max_slow)
    ]
    plan += [(c, n, 3) for n in args.sizes3d for c in ("sla-amg", "sla-amg-repeat", "sla-amg-mis2", "sla-gmg")]
    if args.device == "cuda":  # warm-up: CUDA context, cuSPARSE handles, kernels' first launches
        for case in sorted({c for c, _, _ in plan} - {"seed"}):
            run_case(case, 64, 2, "cuda", args.rtol)
    rows = []
    for case, n, dim in plan:
        if args.device == "cuda":  # one process: CUDA start-up once, peak memory reset per case
            try:
                r = run_case(case, n, dim, "cuda", args.rtol)
            except Exception as exc:
                r = {"case": case, "grid": f"{n}^{dim}", "error": f"{type(exc).__name__}: {exc}"}
            torch.cuda.empty_cache()
        else:
            cmd = [
                sys.executable,
                __file__,
                "--case",
                case,
                "--n",
                str(n),
                "--dim",
                str(dim),
                "--device",
                "cpu",
                "--threads",
                str(args.threads),
                "--rtol",
                str(args.rtol),
            ]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            line = [s for s in p.stdout.splitlines() if s.startswith("RESULT ")]
            r = (
                json.loads(line[-1][7:])
                if line
                else {"case": case, "grid": f"{n}^{dim}", "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
            )
        rows.append(r)
        print(json.dumps(r), flush=True)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"\n{dev}, torch {torch.__version__}, rtol {args.rtol}\n")
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
