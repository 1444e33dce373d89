"""Multigrid cycles compared: V, W and the K-cycle (Krylov-accelerated coarse corrections).

AMG-CG (smoothed aggregation, ``sla.solve(..., backend='pytorch', method='cg',
preconditioner='amg', options={'cycle': c})``), rtol 1e-8, float64, b = ones, on the 5-point
Laplacian at several sizes (the growth of the iterations with the grid), P1 triangles
(``unit_square``) and P1 tetrahedra (``unit_cube``); ``--gmg`` adds geometric multigrid rows
on the 5-point matrices.  Per matrix and cycle:

* ``levels``: the hierarchy's level count (the same for every cycle);
* ``first``: setup + solve (the first solve of that matrix with that cycle; the aggregates are
  cached on the pattern, so only the first cycle of a matrix pays for aggregating);
* ``later``: the same solve again (hierarchy cached), the fastest of ``--repeat`` runs (the
  development machine is shared: the minimum is the least disturbed); ``cpu``: the process CPU
  time of that solve (on the CPU with one thread it does not count the time other jobs took the
  core: the measure to compare on a loaded machine), ``ms/it = cpu / iterations`` (CUDA: wall);
* ``ops/cycle``: torch operator calls in one application of the preconditioner (counted with a
  dispatch mode): on a GPU each is about one kernel launch, which is what the small coarse levels
  cost there.  ``as run / GPU-like``: the K-cycle skips its second coarse Krylov step when the
  first sufficed only on the CPU (``multigrid.K_SKIP_DEVICES``); the second count always runs it,
  as on a GPU;
* ``growth``: iterations over those of the smallest 5-point matrix with the same cycle.

Usage::

    # CPU, 1 thread: 5-point 250K / 1M / 4M, P1 triangles 160K, P1 tetrahedra 69K
    PYTHONPATH=. python3 benchmarks/bench_multigrid_cycles.py --sizes 500 1000 2000
    # one GPU: 5-point 1M / 16M, V, K (Krylov steps on levels >= K_MIN_ROWS['cuda'] = 100K rows)
    # and K on every coarse level
    PYTHONPATH=. python3 benchmarks/bench_multigrid_cycles.py --device cuda --sizes 1000 4000 --no-fem \
        --cycles V K K:0

A cycle ``K:N`` is the K-cycle with ``multigrid.K_MIN_ROWS[device] = N`` (coarse levels below N
rows take one plain correction instead of two Krylov steps); ``K`` uses the default.

Writes a markdown table to stdout and ``DIR/bench_multigrid_cycles.md`` (``--out DIR``).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sla
from sla import gallery


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


_DEFAULT_K_MIN: dict = {}


def _cycle(spec, dev):
    """``'K:N'`` -> ``'K'`` with ``K_MIN_ROWS[dev] = N``; other names as given (the default ``K_MIN_ROWS``)."""
    from sla.solvers.precond import multigrid

    _DEFAULT_K_MIN.setdefault(dev, multigrid.K_MIN_ROWS.get(dev, 0))
    name, _, kmin = spec.partition(":")
    multigrid.K_MIN_ROWS[dev] = int(kmin) if kmin else _DEFAULT_K_MIN[dev]
    return name


def _solve(A, b, pc, cycle):
    _sync(A.device.type)
    t0, c0 = time.perf_counter(), time.process_time()
    x, info = sla.solve(
        A,
        b,
        backend="pytorch",
        method="cg",
        preconditioner=pc,
        options={"cycle": cycle},
        rtol=1e-8,
        return_info=True,
        on_failure="warn",
    )
    _sync(A.device.type)
    return (time.perf_counter() - t0, time.process_time() - c0), x, info


def _ops_per_cycle(A, pc, cycle):
    """Torch operator calls of one preconditioner application (the hierarchy already cached)."""
    from sla.solvers.precond import make_preconditioner, multigrid

    M = make_preconditioner(A, pc, cycle=cycle).flexible()  # what CG runs ('auto': K on the CPU)
    r = torch.ones(1, A.shape[0], 1, dtype=A.dtype, device=A.device)
    M(r)  # warm
    counts = []
    skip = multigrid.K_SKIP_DEVICES
    for devices in (skip, ()):
        multigrid.K_SKIP_DEVICES = devices
        try:
            with _Count() as c:
                M(r)
        finally:
            multigrid.K_SKIP_DEVICES = skip
        counts.append(c.n)
    return f"{counts[0]} / {counts[1]}", len(M.levels)


def _p1(kind, n, dev):
    from sla.assembly import (
        CellBasis,
        ElementP1,
        apply_dirichlet,
        assemble,
        boundary_dofs,
        laplace,
        unit_cube,
        unit_square,
    )

    mesh = (
        unit_square(n, dtype=torch.float64, device=dev)
        if kind == "tri"
        else unit_cube(n, dtype=torch.float64, device=dev)
    )
    basis = CellBasis(mesh, ElementP1() if kind == "tri" else ElementP1("tetra"))
    A = assemble(laplace, basis)
    return apply_dirichlet(A, torch.ones(A.shape[0], dtype=A.dtype, device=dev), boundary_dofs(basis))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[500, 1000, 2000], help="5-point grid sides")
    ap.add_argument("--cycles", nargs="+", default=["V", "W", "K"], help="V, W, K, K:N (see above), auto")
    ap.add_argument("--repeat", type=int, default=3, help="later solves per row (the fastest is reported)")
    ap.add_argument("--tri", type=int, default=400, help="unit_square(N) P1 triangles")
    ap.add_argument("--tet", type=int, default=40, help="unit_cube(N) P1 tetrahedra")
    ap.add_argument("--no-fem", action="store_true", help="only the 5-point rows")
    ap.add_argument("--gmg", action="store_true", help="geometric multigrid rows on the 5-point matrices")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    dev = args.device
    if dev == "cpu":
        torch.set_num_threads(args.threads)
        head = f"cpu, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    else:
        head = f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}"
    lines = [head, ""]

    def emit(s):
        print(s, flush=True)
        lines.append(s)

    # warm-up: the process's first solve loads the kernels / libraries it touches
    A0 = gallery.poisson2d(64, device=dev)
    for c in args.cycles:
        _solve(A0, torch.ones(A0.shape[0], dtype=A0.dtype, device=dev), "amg", _cycle(c, dev))
    emit(
        "| matrix | unknowns | pc | levels | cycle | iterations | growth | first (s) | later (s) | cpu (s) | ms/it "
        "| ops/cycle | residual |"
    )
    emit("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [(f"5-point {k}^2", lambda k=k: gallery.poisson2d(k, device=dev), "amg", True) for k in args.sizes]
    if args.gmg:
        rows += [(f"5-point {k}^2", lambda k=k: gallery.poisson2d(k, device=dev), "gmg", True) for k in args.sizes]
    if not args.no_fem:
        rows += [
            (f"P1 triangles unit_square({args.tri})", lambda: _p1("tri", args.tri, dev), "amg", False),
            (f"P1 tetrahedra unit_cube({args.tet})", lambda: _p1("tet", args.tet, dev), "amg", False),
        ]
    base: dict = {}
    for name, make, pc, growth in rows:
        A = make()
        b = torch.ones(A.shape[0], dtype=A.dtype, device=dev)
        for spec in args.cycles:
            c = _cycle(spec, dev)
            try:
                first, _, _ = _solve(A, b, pc, c)
                later, x, info = _solve(A, b, pc, c)
                for _ in range(args.repeat - 1):
                    t, x, info = _solve(A, b, pc, c)
                    later = (min(later[0], t[0]), min(later[1], t[1]))
                cpu = later[1] if dev == "cpu" else later[0]
                ops, nlev = _ops_per_cycle(A, pc, c)
            except Exception as exc:  # one failing row must not lose the others
                emit(f"| {name} | {A.shape[0]:,} | {pc} | | {spec} | failed: {type(exc).__name__}: {str(exc)[:160]} |")
                continue
            res = float(torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b))
            its = info.iterations
            g = "-"
            if growth:
                base.setdefault((pc, spec), its)
                g = f"{its / base[(pc, spec)]:.2f}"
            emit(
                f"| {name} | {A.shape[0]:,} | {pc} | {nlev} | {spec} | {its} | {g} | {first[0]:.3f} | {later[0]:.3f} | "
                f"{cpu:.3f} | {1e3 * cpu / max(its, 1):.1f} | {ops} | {res:.1e} |"
            )
        del A, b
    with open(os.path.join(args.out, "bench_multigrid_cycles.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
