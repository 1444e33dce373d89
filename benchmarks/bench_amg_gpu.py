"""AMG, GMG and the 'auto' policy: the table of issue "lean GPU AMG" (GPU) and the comparison
with pyamg (CPU).

Smoothed aggregation + CG, rtol 1e-8, float64, b = ones (elasticity: its load).  Per matrix:

* ``first``  setup + solve on a freshly built matrix (a new pattern: nothing cached), in a
  process that has already run one small AMG solve (``warm-up`` reports that one);
* ``later``  the same solve again (the hierarchy cached on the pattern);
* ``iters``  CG iterations and ``ms/it`` (``later / iters``: the cost of one preconditioned
  iteration); ``pyamg``: pyamg's ``smoothed_aggregation_solver(A, max_coarse=500)`` + CG on
  the same matrix (CPU, same rtol, ``--pyamg``): iterations and ms per iteration of its solve;
* ``B/unknown``  (CUDA) peak GPU memory of the first solve above what was allocated before it,
  plus the matrix (values and int32 CSR indices), divided by n (vectors and hierarchy included;
  the assembly's mesh caches not).

Rows: AMG on the 5-point Laplacian, P1 triangles (``unit_square``), P1 tetrahedra
(``unit_cube``), what ``'auto'`` picks for the tetrahedra, 2D P2 elasticity with the rigid-body
modes recorded by the assembly, and geometric multigrid on the 5-point matrix.

Usage::

    # the issue's table on one GPU (1M rows; --big adds the 16M AMG and GMG rows)
    PYTHONPATH=. python3 benchmarks/bench_amg_gpu.py --pyamg --big
    # the CPU comparison with pyamg (250K / 160K / 69K / 130K, V- and W-cycles, 1 thread)
    PYTHONPATH=. python3 benchmarks/bench_amg_gpu.py --device cpu --pyamg --cycles V W

``--rows TEXT ...`` runs only the rows whose name contains one of the texts (``--rows elasticity``).
With ``--pyamg`` the elasticity rows compare with pyamg given the same rigid-body modes and nodes as
3 x 3 (2 x 2) blocks, and add its setup + solve time.

``--elasticity`` adds 2D P2 and 3D P1 elasticity rows at about 1M unknowns (1,008,450 and
1,003,275), with the rigid-body modes the assembly records, on either device, at rtol 1e-7: the 2D
cantilever's rounding floor in float64 is near 1e-8 there (a Cholesky solve with a step of iterative
refinement reaches a relative residual of 9.9e-9; 1.1e-8 at 515K), where CG stagnates.

``--variants`` adds AMG rows with degree-3 smoothing, MIS(2) aggregation, double-precision
coarse levels (``coarse_dtype=torch.float64``: the single-precision default on GPUs from 1M
unknowns against it, in the same run; with ``--big`` at 16M too) and a stored finest
prolongator (``prolongation='stored'``: the implicit default on GPUs from 1M unknowns against it).

``--aggregations`` prints instead the comparison of the aggregations (pyamg's serial
``standard`` and the parallel ``mis2``) on the same matrices: CG iterations per cycle,
operator complexity, level sizes, the parallel rounds (independent-set rounds and edge passes
over all levels), setup and solve times.  ``--aggregation-timing N`` times the aggregation of
the finest level alone on the 5-point ``N^2`` graph (standard: the trip to the host included)::

    # the CPU comparison of the aggregations (V and the CPU's 'auto', the K-cycle)
    PYTHONPATH=. python3 benchmarks/bench_amg_gpu.py --device cpu --aggregations --cycles V auto
    # on one GPU: the comparison at 1M (--big: and 16M), and the aggregation alone at 1M and 16M
    PYTHONPATH=. python3 benchmarks/bench_amg_gpu.py --aggregations --big --cycles V auto --aggregation-timing 1000 4000

Writes a markdown table to stdout and ``DIR/bench_amg_gpu.md`` (``--out DIR``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import time

import numpy as np
import torch

import sla
from sla import gallery

DEV = "cuda"


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def _p1_square(n):
    from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, unit_square

    basis = CellBasis(unit_square(n, dtype=torch.float64, device=DEV), ElementP1())
    A = assemble(laplace, basis)
    return apply_dirichlet(A, torch.ones(A.shape[0], dtype=A.dtype, device=DEV), boundary_dofs(basis))[0]


def _p1_cube(n):
    from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, unit_cube

    basis = CellBasis(unit_cube(n, dtype=torch.float64, device=DEV), ElementP1("tetra"))
    A = assemble(laplace, basis)
    return apply_dirichlet(A, torch.ones(A.shape[0], dtype=A.dtype, device=DEV), boundary_dofs(basis))[0]


def _elasticity(nx, ny):
    """The elasticity problem's system (plane-stress P2 cantilever, clamped at x = 0) and its load
    (with b = ones the clamped rows make CG stagnate near 2e-8)."""
    from sla.assembly.cantilever import cantilever_system

    return cantilever_system(nx=nx, ny=ny, device=DEV)[:2]


def _elasticity_3d(m):
    """3D P1 elasticity of a clamped beam (``cantilever_system_3d``: ``8m x m x m`` cubes, six
    tetrahedra each, E = 1000, nu = 0.3) and its load; AMG takes the six rigid-body modes."""
    from sla.assembly.cantilever import cantilever_system_3d

    return cantilever_system_3d(nx=8 * m, ny=m, nz=m, device=DEV)[:2]


def _timed(A, b=None, **kw):
    b = torch.ones(A.shape[0], dtype=A.dtype, device=A.device) if b is None else b
    _sync()
    t0 = time.perf_counter()
    x, info = sla.solve(A, b, return_info=True, **kw)
    _sync()
    return time.perf_counter() - t0, info


_PYAMG: dict = {}


def _pyamg(A, key, b=None, rtol=1e-8):
    """(iterations, ms per iteration of the solve) of pyamg's smoothed aggregation + CG (once per
    matrix).  A vector problem (the assembly records its dof points) gives pyamg the same rigid-body
    modes as sla and its nodes as BSR blocks, and the row adds pyamg's setup + solve time."""
    if key in _PYAMG:
        return _PYAMG[key]
    try:
        import pyamg
    except ImportError:
        return "-"
    from sla.precond import rigid_body_modes

    S = A.to("cpu").to_scipy().tocsr()
    rec = A.pattern.cache.get("dof_points")
    kw = {}
    if rec is not None and rec[1] >= 2:
        points, ncomp = rec
        S = S.tobsr(blocksize=(ncomp, ncomp))
        kw["B"] = rigid_body_modes(points.cpu(), ncomp, dtype=torch.float64).numpy()
    rhs = np.ones(S.shape[0]) if b is None else b.detach().cpu().double().numpy()
    res = []
    t0 = time.perf_counter()
    ml = pyamg.smoothed_aggregation_solver(S, max_coarse=500, **kw)
    t1 = time.perf_counter()
    ml.solve(rhs, tol=rtol, accel="cg", residuals=res, maxiter=500)
    t = time.perf_counter() - t1
    its = len(res) - 1
    total = f", setup + solve {time.perf_counter() - t0:.2f} s" if kw else ""
    _PYAMG[key] = f"{its} ({1e3 * t / max(its, 1):.1f} ms/it{total})"
    return _PYAMG[key]


def _row(name, make, pyamg_ref, **kw):
    gc.collect()  # the previous row's matrix and hierarchy (reference cycles) go before the baseline
    if DEV == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    A = make()
    A, b = A if isinstance(A, tuple) else (A, None)
    n = A.shape[0]
    gc.collect()
    if DEV == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # the assembly's temporaries and mesh caches are not the solver's
    base = torch.cuda.memory_allocated() if DEV == "cuda" else 0
    matrix = sum(t.numel() * t.element_size() for t in (A.values, A.pattern.crow, A.pattern.ccol))
    first, info = _timed(A, b, **kw)
    peak = f"{(torch.cuda.max_memory_allocated() - base + matrix) / n:,.0f}" if DEV == "cuda" else "-"
    later, info2 = _timed(A, b, **kw)
    ref = _pyamg(A, name.rsplit(",", 1)[0], b, kw.get("rtol", 1e-8)) if pyamg_ref else "-"
    chose = f"{info.backend}/{info.method}" + (f"+{info.preconditioner}" if info.preconditioner else "")
    per_it = 1e3 * later / max(info2.iterations, 1)
    line = (
        f"| {name} | {n:,} | {chose} | {first:.3f} | {later:.3f} | {info2.iterations} | {per_it:.2f} | {ref} | "
        f"{peak} | {info2.residual:.1e} |"
    )
    del A
    return line


def _plan(args, amg):
    """(name, builder, solve options, pyamg reference?) per row."""
    if DEV == "cuda":
        sizes = {"p5": 1000, "tri": 1000, "tet": 100, "el": (800, 80)}
    else:
        sizes = {"p5": 500, "tri": 400, "tet": 40, "el": (400, 40)}
    k5, kt, kc, (ex, ey) = sizes["p5"], sizes["tri"], sizes["tet"], sizes["el"]
    plan = []
    for cyc in args.cycles:
        o = dict(amg, options={"cycle": cyc})
        plan += [
            (f"5-point {k5}^2, AMG {cyc}", lambda: gallery.poisson2d(k5, device=DEV), o, args.pyamg),
            (f"P1 triangles unit_square({kt}), AMG {cyc}", lambda: _p1_square(kt), o, args.pyamg),
            (f"P1 tetrahedra unit_cube({kc}), AMG {cyc}", lambda: _p1_cube(kc), o, args.pyamg),
            (
                f"P2 elasticity {ex} x {ey}, AMG {cyc} + rigid-body modes",
                lambda: _elasticity(ex, ey),
                dict(o, on_failure="warn"),
                args.pyamg,
            ),
        ]
    plan += [
        (f"P1 tetrahedra unit_cube({kc}), auto", lambda: _p1_cube(kc), {}, False),
        (f"5-point {k5}^2, GMG", lambda: gallery.poisson2d(k5, device=DEV), dict(amg, preconditioner="gmg"), False),
    ]
    if args.variants:  # the smoother and aggregation options, and double-precision coarse levels
        for opts in (
            {"degree": 3},
            {"aggregation": "mis2"},
            {"coarse_dtype": torch.float64},
            {"prolongation": "stored"},
        ):
            for label, make in (
                (f"5-point {k5}^2", lambda: gallery.poisson2d(k5, device=DEV)),
                (f"P1 triangles unit_square({kt})", lambda: _p1_square(kt)),
                (f"P1 tetrahedra unit_cube({kc})", lambda: _p1_cube(kc)),
            ):
                plan.append((f"{label}, AMG {opts}", make, dict(amg, options=opts), False))
    if args.elasticity:  # the vector problems at about 1M unknowns, on either device, rtol 1e-7
        for cyc in args.cycles:
            o = dict(amg, options={"cycle": cyc}, on_failure="warn", rtol=1e-7)
            plan += [
                (
                    f"P2 elasticity 1120 x 112, AMG {cyc} + rigid-body modes, rtol 1e-7",
                    lambda: _elasticity(1120, 112),
                    o,
                    args.pyamg,
                ),
                (
                    f"P1 elasticity 3D box 272 x 34 x 34, AMG {cyc} + rigid-body modes, rtol 1e-7",
                    lambda: _elasticity_3d(34),
                    o,
                    args.pyamg,
                ),
            ]
    if args.big:
        big = 4000 if DEV == "cuda" else 2000
        for cyc in args.cycles:  # the growth of the iterations from 1M to 16M, per cycle
            o = dict(amg, options={"cycle": cyc})
            plan.append((f"5-point {big}^2, AMG {cyc}", lambda: gallery.poisson2d(big, device=DEV), o, False))
            if args.variants:  # the single-precision coarse levels against double ones, same run
                o64 = dict(amg, options={"cycle": cyc, "coarse_dtype": torch.float64})
                plan.append(
                    (
                        f"5-point {big}^2, AMG {cyc}, coarse float64",
                        lambda: gallery.poisson2d(big, device=DEV),
                        o64,
                        False,
                    )
                )
                stored = dict(amg, options={"cycle": cyc, "prolongation": "stored"})
                plan.append(
                    (f"5-point {big}^2, AMG {cyc}, stored P", lambda: gallery.poisson2d(big, device=DEV), stored, False)
                )
        plan += [
            (
                f"5-point {big}^2, GMG",
                lambda: gallery.poisson2d(big, device=DEV),
                dict(amg, preconditioner="gmg"),
                False,
            ),
        ]
    return plan


class _Rounds(logging.Handler):
    """Sums the rounds and edge passes the parallel aggregation logs (one record per level)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.rounds = self.passes = 0

    def emit(self, record):
        m = re.search(r"(\d+) rounds, (\d+) edge passes", record.getMessage())
        if m:
            self.rounds += int(m.group(1))
            self.passes += int(m.group(2))


def _counting():
    log = logging.getLogger("sla")
    h = _Rounds()
    log.addHandler(h)
    level = log.level
    log.setLevel(logging.DEBUG)
    return h, lambda: (log.removeHandler(h), log.setLevel(level))


def _aggregation_rows(args, emit):
    """Standard vs parallel aggregation on the same matrices: iterations, complexity, rounds, times."""
    from sla.solvers.precond import make_preconditioner

    plan = _plan(argparse.Namespace(cycles=["V"], variants=False, big=False, pyamg=False), {})
    mats = [(name.rsplit(",", 1)[0], make) for name, make, _, _ in plan if name.endswith("AMG V")]
    mats += [(name.split(",")[0], make) for name, make, _, _ in plan if "elasticity" in name]
    if args.big:  # the growth of the iterations with the grid: 16M (CUDA) / 4M (CPU)
        big = 4000 if DEV == "cuda" else 2000
        mats.append((f"5-point {big}^2", lambda: gallery.poisson2d(big, device=DEV)))
    for aggregation in ("standard", "mis2"):  # warm-up: kernels, the pyamg import
        make_preconditioner(gallery.poisson2d(64, device=DEV), "amg", aggregation=aggregation)
    emit(
        "| matrix | unknowns | aggregation | cycle | iterations | operator complexity | level sizes | "
        "rounds (edge passes) | setup (s) | solve (s) |"
    )
    emit("|---|---|---|---|---|---|---|---|---|---|")
    for label, make in dict(mats).items():
        for aggregation in ("standard", "mis2"):
            for cyc in args.cycles:
                A = make()  # a fresh pattern: no cached aggregates
                A, b = A if isinstance(A, tuple) else (A, torch.ones(A.shape[0], dtype=A.dtype, device=DEV))
                h, done = _counting()
                try:
                    _sync()
                    t0 = time.perf_counter()
                    M = make_preconditioner(A, "amg", aggregation=aggregation, cycle=cyc)
                    _sync()
                    t1 = time.perf_counter()
                finally:
                    done()
                _, info = sla.solve(
                    A,
                    b,
                    backend="pytorch",
                    method="cg",
                    preconditioner=M,
                    rtol=1e-8,
                    return_info=True,
                    on_failure="warn",
                )
                _sync()
                t2 = time.perf_counter()
                rounds = f"{h.rounds} ({h.passes})" if aggregation == "mis2" else "-"
                emit(
                    f"| {label} | {A.shape[0]:,} | {aggregation} | {cyc} | {info.iterations} | "
                    f"{M.complexity()[0]:.3f} | {[lv.n for lv in M.levels]} | {rounds} | {t1 - t0:.2f} | {t2 - t1:.2f} |"
                )


def _aggregation_timing(args, emit):
    """The finest level's aggregation alone on the 5-point N^2 graph, per method (best of 3)."""
    from sla.solvers.precond.aggregate import aggregate, mis_aggregation

    methods = ["mis2"] + (["standard"] if _has_pyamg() else [])
    g = gallery.poisson2d(64, device=DEV).pattern
    for m in methods:  # warm-up: kernels, the pyamg import
        aggregate(g.crow, g.ccol, g.shape[0], m)
    emit("")
    emit("| graph | nodes | aggregation | aggregates | rounds | time (ms) |")
    emit("|---|---|---|---|---|---|")
    for N in args.aggregation_timing:
        p = gallery.poisson2d(N, device=DEV).pattern
        n = p.shape[0]
        for m in methods:
            best = float("inf")
            for _ in range(3):
                _sync()
                t0 = time.perf_counter()
                if m == "mis2":
                    _, nagg, rounds = mis_aggregation(p.crow, p.ccol, n, 2)
                else:
                    _, nagg = aggregate(p.crow, p.ccol, n, m)
                    rounds = "-"
                _sync()
                best = min(best, time.perf_counter() - t0)
            emit(f"| 5-point {N}^2 | {n:,} | {m} | {nagg:,} | {rounds} | {1e3 * best:.1f} |")
        del p


def _has_pyamg() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyamg") is not None


def main() -> None:
    global DEV
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--pyamg", action="store_true", help="pyamg's iterations and time per iteration (CPU)")
    ap.add_argument("--big", action="store_true", help="16M (CUDA) / 4M (CPU) AMG and GMG rows")
    ap.add_argument("--cycles", nargs="+", default=["auto"], choices=["auto", "V", "W", "K"])
    ap.add_argument("--elasticity", action="store_true", help="2D and 3D elasticity rows at 1M unknowns")
    ap.add_argument("--variants", action="store_true", help="AMG with degree-3 smoothing, mis2")
    ap.add_argument("--rows", nargs="+", default=None, metavar="TEXT", help="only the rows whose name has one")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    ap.add_argument("--aggregations", action="store_true", help="standard vs parallel aggregation (only this table)")
    ap.add_argument(
        "--aggregation-timing", nargs="*", type=int, default=[], metavar="N", help="time aggregating 5-point N^2"
    )
    args = ap.parse_args()
    DEV = args.device
    if DEV == "cpu":
        torch.set_num_threads(args.threads)
        head = f"cpu, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    else:
        head = f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}"
    lines = [head]

    def emit(s):
        print(s, flush=True)
        lines.append(s)

    if args.aggregations or args.aggregation_timing:
        if args.aggregations:
            _aggregation_rows(args, emit)
        if args.aggregation_timing:
            _aggregation_timing(args, emit)
        with open(os.path.join(args.out, "bench_amg_gpu.md"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return
    amg = dict(backend="pytorch", method="cg", preconditioner="amg", rtol=1e-8)
    t_first, _ = _timed(gallery.poisson2d(256, device=DEV), **amg)
    t_again, _ = _timed(gallery.poisson2d(256, device=DEV), **amg)
    emit(f"warm-up: the process's first AMG solve (65K) {t_first:.3f} s, the same on a new matrix {t_again:.3f} s")
    emit("")
    emit(
        "| matrix | unknowns | ran | first (s) | later (s) | iterations | ms/iteration | pyamg iterations | "
        "peak B/unknown | residual |"
    )
    emit("|---|---|---|---|---|---|---|---|---|---|")
    for name, make, kw, ref in _plan(args, amg):
        if args.rows and not any(t in name for t in args.rows):
            continue
        try:
            emit(_row(name, make, ref, **kw))
        except Exception as exc:  # one failing row must not lose the others
            emit(f"| {name} | failed: {type(exc).__name__}: {str(exc)[:200]} |")
    with open(os.path.join(args.out, "bench_amg_gpu.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
