"""The AMG setup's time on new matrices, with three of its choices turned back, alternated in one process.

* ``head``: the setup as it was: the independent-set rounds of the ``'mis2'`` aggregation over every
  row each round (``aggregate.RESTRICT = 0``), an entry's row found per block with one host look
  (:func:`rows_by_host_look`, kept here as the reference), the smoothed prolongator's blocks sized by
  each level's rows alone (``transfers.PRODUCT_FINE = 0``);
* ``now``: the rounds restricted to the undecided nodes once few are left, the rows by a search (no
  host look), the prolongator's blocks at least ``fine / 8`` products;
* ``now, rounds over every row``: ``now`` with ``RESTRICT = 0`` (what the restricted rounds save).

Each row: the AMG-CG first solve of a new matrix (``matrix_type='spd'``, rtol 1e-8; the pattern new,
so the aggregation runs), its setup, its allocator peak (CUDA; the matrix included) and iterations,
three rounds.  Then the ``'mis2'`` aggregation of the finest graph alone, rounds restricted or not:
time and edges read per edge of the graph.  ``--phases``: instead, where one such first solve's setup
spends its time, each of the setup's functions timed per call (every call synchronised).

Usage::

    PYTHONPATH=. python3 benchmarks/bench_amg_setup.py               # CUDA: 5-point 1M, 16M, P1 tetrahedra 1M
    PYTHONPATH=. python3 benchmarks/bench_amg_setup.py --device cpu  # a sixteenth of the sizes
    PYTHONPATH=. python3 benchmarks/bench_amg_setup.py --phases      # the 16M setup, function by function
    PYTHONPATH=. python3 benchmarks/bench_amg_setup.py --phases --matrix elasticity-3d   # 3D elasticity 1M
    PYTHONPATH=. python3 benchmarks/bench_amg_setup.py --vector-blocks --which prolongator  # its blocks' size
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_amg_gpu

import sla
from sla import gallery
from sla.kernels import repeat_rows
from sla.solvers.precond import aggregate, multigrid, transfers


def rows_by_host_look(self, lo: int, hi: int) -> torch.Tensor:
    """``Mat.rows`` as it was: the rows of the block's first and last entries read on the host, then
    each row repeated by its count in the block."""
    if self._row is not None:
        return self._row[lo:hi]
    ends = torch.tensor([lo, hi - 1], dtype=self.crow.dtype, device=self.crow.device)
    r0, r1 = (torch.searchsorted(self.crow, ends, right=True) - 1).tolist()
    crow = self.crow[r0 : r1 + 2]
    counts = crow[1:].clamp(max=hi) - crow[:-1].clamp(min=lo)
    return repeat_rows(counts, r0, hi - lo, self.col.dtype)


CONFIGS = {
    "head": (rows_by_host_look, 0.0, 0.0),
    "now": (multigrid.Mat.rows, aggregate.RESTRICT, transfers.PRODUCT_FINE),
    "now, rounds over every row": (multigrid.Mat.rows, 0.0, transfers.PRODUCT_FINE),
}


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def _matrices(dev: str):
    k1, k16, kc = (1000, 4000, 100) if dev == "cuda" else (250, 1000, 40)
    bench_amg_gpu.DEV = dev
    return [
        (f"5-point {k1}^2", lambda: gallery.poisson2d(k1, device=dev)),
        (f"5-point {k16}^2", lambda: gallery.poisson2d(k16, device=dev)),
        (f"P1 tetrahedra unit_cube({kc})", lambda: bench_amg_gpu._p1_cube(kc)),
    ]


def _first_solve(A, dev: str, rtol: float = 1e-8, b=None):
    b = torch.ones(A.shape[0], dtype=A.dtype, device=dev) if b is None else b
    matrix = sum(t.numel() * t.element_size() for t in (A.values, A.pattern.crow, A.pattern.ccol))
    if dev == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    _sync(dev)
    t = time.perf_counter()
    _, info = sla.solve(
        A, b, backend="pytorch", method="cg", preconditioner="amg", rtol=rtol, matrix_type="spd", return_info=True
    )
    _sync(dev)
    t = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() - base + matrix) / A.shape[0] if dev == "cuda" else None
    return t, info.setup_time, peak, info.iterations


def solves(dev: str, rounds: int) -> None:
    print("| matrix | setup | first solve (s) | setup (s) | peak B/unknown | iterations |")
    print("|---|---|---|---|---|---|")
    saved = multigrid.Mat.rows, aggregate.RESTRICT, transfers.PRODUCT_FINE
    try:
        for label, make in _matrices(dev):
            _first_solve(make(), dev)  # the memory caches hold a solve of this size
            res = {name: [] for name in CONFIGS}
            for _ in range(rounds):
                for name, (rows, restrict, fine) in CONFIGS.items():
                    multigrid.Mat.rows, aggregate.RESTRICT, transfers.PRODUCT_FINE = rows, restrict, fine
                    res[name].append(_first_solve(make(), dev))
            for name, rs in res.items():
                peak = "-" if rs[0][2] is None else ", ".join(f"{r[2]:.0f}" for r in rs)
                print(
                    f"| {label} | {name} | {', '.join(f'{r[0]:.3f}' for r in rs)} | "
                    f"{', '.join(f'{r[1]:.3f}' for r in rs)} | {peak} | {rs[0][3]} |",
                    flush=True,
                )
    finally:
        multigrid.Mat.rows, aggregate.RESTRICT, transfers.PRODUCT_FINE = saved


def aggregation(dev: str, repeats: int) -> None:
    print("\n| graph | rounds restricted | mis2 aggregation (ms, median) | rounds | edges read per edge |")
    print("|---|---|---|---|---|")
    records = []
    h = logging.Handler()
    h.emit = records.append
    log = logging.getLogger("sla")
    old_level, saved = log.level, aggregate.RESTRICT
    log.addHandler(h)
    log.setLevel(logging.DEBUG)
    try:
        for label, make in _matrices(dev):
            p = make().pattern
            for restrict in (saved, 0.0):
                aggregate.RESTRICT = restrict
                times = []
                for _ in range(repeats + 1):
                    records.clear()
                    _sync(dev)
                    t = time.perf_counter()
                    _, _, rounds = aggregate.mis_aggregation(p.crow, p.ccol, p.shape[0], 2)
                    _sync(dev)
                    times.append(time.perf_counter() - t)
                msg = [r.getMessage() for r in records if "edges per edge" in r.getMessage()][-1]
                read = msg.split("reading ")[1].split(" edges")[0]
                times = sorted(times[1:])
                print(
                    f"| {label} | {'yes' if restrict else 'no'} | {1e3 * times[len(times) // 2]:.1f} | {rounds} | {read} |"
                )
    finally:
        aggregate.RESTRICT = saved
        log.removeHandler(h)
        log.setLevel(old_level)


def phases(dev: str, matrix: str = "5-point", ungrouped: bool = False) -> None:
    """Per call, the time of each of the setup's functions (synchronised) in a first solve of a new
    matrix, twice: the second 5-point matrix of :func:`_matrices`, or with ``matrix='elasticity-3d'``
    3D P1 elasticity with its six rigid-body modes (``bench_amg_gpu._elasticity_3d``: 1M unknowns on
    CUDA, 133K on the CPU).  ``ungrouped``: the smoothed prolongator with one key per product, as
    before its rows were summed by group (``spgemm.Right``'s ``grouped``)."""
    import collections
    import functools

    from sla.solvers.precond import amg, chebyshev

    calls = collections.defaultdict(list)
    saved = []

    def wrap(owner, name, label):
        f = getattr(owner, name)
        saved.append((owner, name, f))

        @functools.wraps(f)
        def timed(*a, **k):
            _sync(dev)
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                _sync(dev)
                calls[label].append(1e3 * (time.perf_counter() - t))

        setattr(owner, name, timed)

    for name in ("aggregate", "_smoothed", "_transpose", "galerkin", "_drop_cancelled", "_level"):
        wrap(amg, name, name)
    for name in ("amalgamate", "fit_candidates", "_candidates"):  # a vector problem's own steps
        wrap(amg, name, name)
    wrap(chebyshev, "gershgorin_bound", "gershgorin_bound")
    wrap(chebyshev, "lanczos_bound", "lanczos_bound")
    wrap(multigrid.Mat, "diag", "Mat.diag")
    wrap(multigrid.Multigrid, "__init__", "Multigrid.__init__ (coarsest inverse)")
    if ungrouped:
        real_right = transfers.Right
        saved.append((transfers, "Right", real_right))
        transfers.Right = lambda B, grouped=False: real_right(B, False)
    if matrix == "elasticity-3d":
        bench_amg_gpu.DEV = dev
        m = 34 if dev == "cuda" else 17
        label, make = f"3D P1 elasticity box {8 * m} x {m} x {m}", lambda: bench_amg_gpu._elasticity_3d(m)[0]
    else:
        label, make = _matrices(dev)[1]
    try:
        _first_solve(make(), dev)
        for _ in range(2):
            calls.clear()
            t, setup, _, its = _first_solve(make(), dev)
            print(f"\n{label}: first solve {t:.3f} s, setup {setup:.3f} s, {its} iterations\n")
            print("| function | total (ms) | per call, finest level first (ms) |")
            print("|---|---|---|")
            for k, v in sorted(calls.items(), key=lambda kv: -sum(kv[1])):
                print(f"| {k} | {sum(v):.1f} | {' '.join(f'{x:.1f}' for x in v)} |")
    finally:
        for owner, name, f in saved:
            setattr(owner, name, f)


def vector_blocks(dev: str, rounds: int, scales=(1, 3, 6, 12), which: str = "galerkin") -> None:
    """The Galerkin product's blocks of a vector problem (``galerkin_chunk`` of the finest rows times
    ``scale``; the setup's own: ``amg.VECTOR_BLOCKS`` times the candidates, 12 in 3D and 3 in 2D), or with ``which=
    'prolongator'`` the smoothed prolongator's (``product_chunk`` times ``scale``; the setup's own: times
    the candidates too): AMG-CG first solves of new 3D and 2D elasticity matrices (1M unknowns on
    CUDA, a sixteenth on the CPU), the scales alternated: time, setup, peak (CUDA, the matrix
    included), iterations."""
    from sla.assembly.cantilever import cantilever_system, cantilever_system_3d
    from sla.solvers.precond import amg

    m, (ex, ey) = (34, (1120, 112)) if dev == "cuda" else (14, (280, 28))
    mats = [
        (
            f"3D P1 elasticity box {8 * m} x {m} x {m}",
            6,
            lambda: cantilever_system_3d(nx=8 * m, ny=m, nz=m, device=dev),
        ),
        (f"P2 elasticity {ex} x {ey}", 3, lambda: cantilever_system(nx=ex, ny=ey, device=dev)),
    ]
    name = "galerkin_chunk" if which == "galerkin" else "product_chunk"
    real = getattr(amg, name)
    print(f"{which} blocks\n")
    print("| matrix | blocks x | first solve (s) | setup (s) | peak B/unknown | iterations |")
    print("|---|---|---|---|---|---|")
    try:
        for label, k, make in mats:
            for _ in range(rounds):
                # (the setup multiplies what galerkin_chunk gives by VECTOR_BLOCKS * k, product_chunk by k)
                dofs = 3 if k == 6 else 2  # (dofs per node: 6 candidates in 3D, 3 in 2D)
                own = k * (amg.VECTOR_BLOCKS.get(dofs, 1) if which == "galerkin" else 1)
                for scale in scales:
                    setattr(amg, name, lambda *a, scale=scale, own=own: max(1, scale * real(*a) // own))
                    A, b = make()[:2]  # (the load: with b = ones the clamped rows make CG stagnate)
                    t, setup, peak, its = _first_solve(A, dev, rtol=1e-7, b=b)
                    peak = f"{peak:.0f}" if peak is not None else "-"
                    print(f"| {label} | {scale} | {t:.3f} | {setup:.3f} | {peak} | {its} |", flush=True)
                    del A, b
    finally:
        setattr(amg, name, real)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds of the first solves")
    ap.add_argument("--repeats", type=int, default=5, help="aggregations timed (the first dropped)")
    ap.add_argument("--phases", action="store_true", help="the setup's functions, timed per call")
    ap.add_argument("--matrix", default="5-point", choices=["5-point", "elasticity-3d"], help="of --phases")
    ap.add_argument("--vector-blocks", action="store_true", help="elasticity: the Galerkin blocks' size")
    ap.add_argument(
        "--which", choices=["galerkin", "prolongator"], default="galerkin", help="of --vector-blocks: whose blocks"
    )
    ap.add_argument("--scales", nargs="+", type=int, default=[1, 3, 6, 12], help="of --vector-blocks")
    ap.add_argument("--ungrouped", action="store_true", help="--phases: one key per product in the prolongator")
    args = ap.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}\n")
    if args.phases:
        phases(args.device, args.matrix, args.ungrouped)
        return
    if args.vector_blocks:
        vector_blocks(args.device, args.rounds, scales=args.scales, which=args.which)
        return
    solves(args.device, args.rounds)
    aggregation(args.device, args.repeats)


if __name__ == "__main__":
    main()
