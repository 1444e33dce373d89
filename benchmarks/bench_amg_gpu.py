"""AMG, GMG and the 'auto' policy on one GPU: the table of issue "lean GPU AMG".

Smoothed aggregation + CG, rtol 1e-8, float64, b = ones.  Per matrix:

* ``first``  setup + solve on a freshly built matrix (a new pattern: nothing cached), in a
  process that has already run one small AMG solve (``warm-up`` reports that one);
* ``later``  the same solve again (the hierarchy cached on the pattern);
* ``iters``  CG iterations; ``pyamg``: pyamg's smoothed aggregation + CG on the same matrix
  (CPU, same rtol; when pyamg is installed and ``--pyamg`` is given);
* ``B/unknown``  peak GPU memory of the first solve above what was allocated before it, plus
  the matrix (values and int32 CSR indices), divided by n (vectors and hierarchy included; the
  assembly's mesh caches not).

Further rows: geometric multigrid on the 5-point matrix, what ``'auto'`` picks for the 3D P1
Laplacian on ``unit_cube(100)`` (and its time), and 2D P2 elasticity (515K unknowns) with AMG
and the rigid-body modes recorded by the assembly.

Usage (GPU machine)::

    PYTHONPATH=. python3 benchmarks/bench_amg_gpu.py [--out DIR] [--pyamg] [--big] [--variants]

``--big`` adds the 16M rows.  Writes a markdown table to stdout and ``DIR/bench_amg_gpu.md``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import sla
from sla import gallery

DEV = "cuda"


def _p1_square(n):
    from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, unit_square

    basis = CellBasis(unit_square(n, dtype=torch.float64, device=DEV), ElementP1())
    A = assemble(laplace, basis)
    return apply_dirichlet(A, torch.ones(A.shape[0], dtype=A.dtype, device=DEV), boundary_dofs(basis))[0]


def _p1_1m():
    return _p1_square(1000)


def _p1_cube(n):
    from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, unit_cube

    basis = CellBasis(unit_cube(n, dtype=torch.float64, device=DEV), ElementP1("tetra"))
    A = assemble(laplace, basis)
    return apply_dirichlet(A, torch.ones(A.shape[0], dtype=A.dtype, device=DEV), boundary_dofs(basis))[0]


def _elasticity(nx, ny):
    """The elasticity problem's system (plane-stress P2 cantilever, clamped at x = 0)."""
    from sla.assembly.cantilever import cantilever_system

    return cantilever_system(nx=nx, ny=ny, device=DEV)[0]


def _timed(A, **kw):
    b = torch.ones(A.shape[0], dtype=A.dtype, device=A.device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    x, info = sla.solve(A, b, return_info=True, **kw)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, info


def _pyamg_iters(A):
    try:
        import pyamg
    except ImportError:
        return "-"
    S = A.to("cpu").to_scipy().tocsr()
    ml = pyamg.smoothed_aggregation_solver(S, max_coarse=500)
    res = []
    import numpy as np

    ml.solve(np.ones(S.shape[0]), tol=1e-8, accel="cg", residuals=res, maxiter=500)
    return str(len(res) - 1)


def _row(name, make, pyamg_ref, **kw):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    A = make()
    n = A.shape[0]
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()  # the assembly's temporaries and mesh caches are not the solver's
    base = torch.cuda.memory_allocated()
    matrix = sum(t.numel() * t.element_size() for t in (A.values, A.pattern.crow, A.pattern.ccol))
    first, info = _timed(A, **kw)
    peak = (torch.cuda.max_memory_allocated() - base + matrix) / n
    later, info2 = _timed(A, **kw)
    ref = _pyamg_iters(A) if pyamg_ref else "-"
    chose = f"{info.backend}/{info.method}" + (f"+{info.preconditioner}" if info.preconditioner else "")
    line = (
        f"| {name} | {n:,} | {chose} | {first:.3f} | {later:.3f} | {info.iterations} | {ref} | {peak:,.0f} | "
        f"{info.residual:.1e} |"
    )
    del A
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--pyamg", action="store_true")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--variants", action="store_true", help="AMG with W-cycles, degree-3 smoothing, mis2")
    args = ap.parse_args()
    lines = [f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}"]

    def emit(s):
        print(s, flush=True)
        lines.append(s)

    amg = dict(backend="pytorch", method="cg", preconditioner="amg", rtol=1e-8)
    A = gallery.poisson2d(256, device=DEV)
    t_first, _ = _timed(A, **amg)
    t_again, _ = _timed(gallery.poisson2d(256, device=DEV), **amg)
    emit(f"warm-up: the process's first AMG solve (65K) {t_first:.3f} s, the same on a new matrix {t_again:.3f} s")
    emit("")
    emit(
        "| matrix | unknowns | ran | first (s) | later (s) | iterations | pyamg iterations | peak B/unknown | residual |"
    )
    emit("|---|---|---|---|---|---|---|---|---|")
    plan = [
        ("5-point 1M, AMG", lambda: gallery.poisson2d(1000, device=DEV), amg, args.pyamg),
        ("P1 triangles 1M (unit_square(1000)), AMG", lambda: _p1_square(1000), amg, args.pyamg),
        ("P1 tetrahedra 1M (unit_cube(100)), AMG", lambda: _p1_cube(100), amg, False),
        ("P1 tetrahedra 1M (unit_cube(100)), auto", lambda: _p1_cube(100), {}, False),
        (
            "P2 elasticity 515K (800 x 80), AMG + rigid-body modes",
            lambda: _elasticity(800, 80),
            dict(amg, on_failure="warn"),
            False,
        ),
        ("5-point 1M, GMG", lambda: gallery.poisson2d(1000, device=DEV), dict(amg, preconditioner="gmg"), False),
    ]
    if args.variants:  # the cycle and smoother options, for the defaults on GPUs
        for opts in ({"cycle": "W"}, {"degree": 3}, {"aggregation": "mis2"}):
            for label, make in (("5-point 1M", lambda: gallery.poisson2d(1000, device=DEV)), ("P1 1M", _p1_1m)):
                plan.append((f"{label}, AMG {opts}", make, dict(amg, options=opts), False))
    if args.big:
        plan += [
            ("5-point 16M, AMG", lambda: gallery.poisson2d(4000, device=DEV), amg, False),
            ("5-point 16M, GMG", lambda: gallery.poisson2d(4000, device=DEV), dict(amg, preconditioner="gmg"), False),
        ]
    for name, make, kw, ref in plan:
        try:
            emit(_row(name, make, ref, **kw))
        except Exception as exc:  # one failing row must not lose the others
            emit(f"| {name} | failed: {type(exc).__name__}: {str(exc)[:200]} |")
    with open(os.path.join(args.out, "bench_amg_gpu.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
