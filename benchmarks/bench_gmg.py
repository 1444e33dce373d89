"""Geometric multigrid CG on the 5-point Laplacian: first and later solves, with and without the
CUDA graph of the coarse levels (issue "faster geometric multigrid": 16M unknowns <= 0.12 s and
<= 200 bytes/unknown on one H200).

Per grid and mode (``A.solve(b, backend='pytorch', method='cg', preconditioner=GMG(graph=...),
rtol=1e-8)``, b = ones, float64):

* ``first``  setup + solve on a freshly built matrix (type detection included unless ``--spd``),
  in a process that has already run a small GMG solve of the same mode (the process's one-time
  CUDA/cuSPARSE initialisation is reported on the ``warm-up`` line);
* ``setup``  the hierarchy's build inside ``first`` (``SolveInfo.setup_time``);
* ``later``  the same solve again (hierarchy cached, the graph captured);
* ``ms/it``  ``later / iterations``;
* ``B/unknown``  (CUDA) peak GPU memory of the first solve above what was allocated before it,
  plus the matrix (values and int32 CSR), divided by n;
* ``residual``  ``||b - A x|| / ||b||`` recomputed here.

Usage::

    PYTHONPATH=. python3 benchmarks/bench_gmg.py                      # CUDA: 1000^2 and 4000^2
    PYTHONPATH=. python3 benchmarks/bench_gmg.py --device cpu --sizes 500 1000

Writes the markdown table to stdout and ``DIR/bench_gmg.md`` (``--out DIR``).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import sla
from sla import gallery


def _sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def _solve(A, b, graph, spd):
    kw = dict(backend="pytorch", method="cg", rtol=1e-8, return_info=True)
    if spd:
        kw["matrix_type"] = "spd"
    _sync(A.device.type)
    t0 = time.perf_counter()
    x, info = sla.solve(A, b, preconditioner=sla.precond.GMG(graph=graph), **kw)
    _sync(A.device.type)
    return x, info, time.perf_counter() - t0


def _row(n, dev, graph, spd):
    if dev == "cuda":
        torch.cuda.empty_cache()
    A = gallery.poisson2d(n, device=dev)
    A.pattern.crow  # noqa: B018
    b = torch.ones(n * n, dtype=A.dtype, device=dev)
    matrix = sum(t.numel() * t.element_size() for t in (A.values, A.pattern.crow, A.pattern.ccol))
    if dev == "cuda":
        _sync(dev)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() - b.numel() * b.element_size() - matrix
    x, info, first = _solve(A, b, graph, spd)
    peak = f"{(torch.cuda.max_memory_allocated() - base) / n**2:,.0f}" if dev == "cuda" else "-"
    x, info2, later = _solve(A, b, graph, spd)
    res = float(torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b))
    status = ", ".join(_BUILT[-1].graph_status()) if _BUILT else "?"
    its = max(info2.iterations, 1)
    return (
        f"| {n}^2 | {n * n:,} | {'on' if graph else 'off'} | {first:.3f} | {info.setup_time:.3f} | {later:.3f} | "
        f"{info2.iterations} | {1e3 * later / its:.2f} | {peak} | {res:.1e} | {status} |"
    )


_BUILT: list = []


def _record_builds() -> None:
    """Keep the last GeometricMultigrid built (for its graph status)."""
    from sla.solvers.precond.gmg import GeometricMultigrid

    init = GeometricMultigrid.__init__

    def recording(self, *a, **k):
        init(self, *a, **k)
        _BUILT[:] = [self]

    GeometricMultigrid.__init__ = recording


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="grid sides (default 1000 4000 on CUDA)")
    ap.add_argument("--spd", action="store_true", help="declare matrix_type='spd' (no type detection)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    dev = args.device
    sizes = args.sizes or ([1000, 4000] if dev == "cuda" else [500, 1000])
    if dev == "cpu":
        torch.set_num_threads(args.threads)
        head = f"cpu, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    else:
        head = f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}"
    modes = [True, False] if dev == "cuda" else [False]
    _record_builds()
    lines = [head]

    def emit(s):
        print(s, flush=True)
        lines.append(s)

    for graph in modes:  # the process's one-time initialisation, per mode
        t = [
            _solve(gallery.poisson2d(256, device=dev), torch.ones(256**2, dtype=torch.float64, device=dev), graph, 0)[2]
        ]
        t.append(
            _solve(gallery.poisson2d(256, device=dev), torch.ones(256**2, dtype=torch.float64, device=dev), graph, 0)[2]
        )
        emit(
            f"warm-up (graph {'on' if graph else 'off'}): first GMG solve of the process (65K) {t[0]:.3f} s, again {t[1]:.3f} s"
        )
    emit("")
    emit(
        "| grid | unknowns | graph | first (s) | setup (s) | later (s) | iterations | ms/iteration | peak B/unknown | residual | graph status |"
    )
    emit("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for graph in modes:
            try:
                emit(_row(n, dev, graph, args.spd))
            except Exception as exc:  # one failing row must not lose the others
                emit(f"| {n}^2 | failed: {type(exc).__name__}: {str(exc)[:200]} |")
    with open(os.path.join(args.out, "bench_gmg.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
