"""Where the peak memory of a multigrid-preconditioned solve goes, phase by phase.

A ``TorchDispatchMode`` records every tensor storage an op creates (size, dtype,
shape and the sla/benchmark source lines that made it) and notes the live set at
the peak of each phase: building the matrix, the solver setup (structure detection
+ preconditioner), and the solve itself (cached setup).  On CUDA the allocator's
own ``max_memory_allocated`` is printed beside it; a gap between the two is memory
that ops allocate internally (library workspaces).

Usage::

    python benchmarks/memtrace.py --n 1024 [--spd] [--pc gmg] [--device cuda]
    python benchmarks/memtrace.py --matrix tet --n 60 --pc amg --spd --device cpu

``--matrix``: the 5-point Laplacian on an n x n grid (default), or the P1 Laplacian on
``unit_square(n)`` (tri) or ``unit_cube(n)`` (tet), Dirichlet rows on the boundary.  After the
traced phases one more solve runs untraced (its time: a later solve with the cached setup).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class MemTrace(TorchDispatchMode):
    """Live tensor bytes after every op; the live set at the peak."""

    def __init__(self, cuda: bool = False):
        super().__init__()
        self.live: dict = {}  # data_ptr -> (weakref, nbytes, description)
        self.cur = self.peak = 0
        self.at_peak: tuple = ("", [])
        self.cuda = cuda
        self.alloc_max = 0  # the allocator's peak so far (CUDA), and the op that raised it last
        self.alloc_at = ("", 0)

    def reset_peak(self):
        self._sweep()
        self.peak = self.cur
        self.at_peak = ("start", [(nb, d) for _, nb, d in self.live.values()])
        self.alloc_max, self.alloc_at = 0, ("start", self.cur)

    @staticmethod
    def _where() -> str:
        where = [
            f"{f.filename.split('/')[-1]}:{f.lineno}"
            for f in traceback.extract_stack()[:-2]
            if "/sla/" in f.filename or "bench" in f.filename
        ]
        return " < ".join(reversed(where[-3:]))

    def _sweep(self):
        for k in [k for k, (w, _, _) in self.live.items() if w.expired()]:
            self.cur -= self.live.pop(k)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                s = t.untyped_storage()
                if s.data_ptr() and s.data_ptr() not in self.live:
                    desc = f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)} {self._where()}"
                    self.live[s.data_ptr()] = (StorageWeakRef(s), s.nbytes(), desc)
                    self.cur += s.nbytes()
        if self.cur > self.peak:
            self.peak = self.cur
            self.at_peak = (str(func), [(nb, d) for _, nb, d in self.live.values()])
        if self.cuda:  # where the allocator's peak was reached: an op's own workspace shows here only
            m = torch.cuda.max_memory_allocated()
            if m > self.alloc_max:
                self.alloc_max, self.alloc_at = m, (f"{func} {self._where()}", self.cur)
        return out


def _matrix(kind: str, n: int, device: str):
    """The system of ``--matrix`` (``b`` = ones): 5-point n^2, P1 ``unit_square(n)``, P1 ``unit_cube(n)``."""
    if kind == "5pt":
        from bench_iterative import _problem

        return _problem(n, 2, device)
    import bench_amg_gpu

    bench_amg_gpu.DEV = device
    A = bench_amg_gpu._p1_square(n) if kind == "tri" else bench_amg_gpu._p1_cube(n)
    return A, torch.ones(A.shape[0], dtype=A.dtype, device=device)


def _traced_copy(A, b):
    """A copy of the assembled system made inside the trace, on a pattern of its own: the mesh caches
    and the assembly's memos (int64 rows and columns apply_dirichlet keeps on its pattern) are the
    assembly's memory, not the solver's."""
    from sla import Pattern, SparseTensor

    p = A.pattern
    fresh = Pattern._from_csr_trusted(p.crow.clone(), p.ccol.clone(), p.shape)
    return SparseTensor._make(A.values.clone(), fresh), b.clone()


def _csr_bytes(M) -> int:
    if M is None:
        return 0
    if not isinstance(M, torch.Tensor):  # a RowBlockedCSR
        return M.nbytes()
    return sum(t.numel() * t.element_size() for t in (M.crow_indices(), M.col_indices(), M.values()))


def _hierarchy_bytes(M, A) -> tuple[int, int]:
    """(bytes of the levels' operators below the finest, of transfers + diagonals + coarsest inverse)."""
    ops = other = 0
    for h in getattr(M, "hierarchies", []):
        for i, lv in enumerate(h):
            if i > 0 or lv.A.values().data_ptr() != A.values.data_ptr():
                ops += _csr_bytes(lv.A)
            other += _csr_bytes(getattr(lv, "P", None)) + _csr_bytes(getattr(lv, "R", None))
            other += lv.T.nbytes() if getattr(lv, "T", None) is not None else 0
            other += lv.dinv.numel() * lv.dinv.element_size()
    for c in getattr(M, "coarse", []):
        other += 0 if c is None else c.numel() * c.element_size()
    return ops, other


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="grid side: n^2 (5pt), (n+1)^2 (tri), (n+1)^3 (tet) unknowns")
    ap.add_argument("--matrix", default="5pt", choices=["5pt", "tri", "tet"], help="5-point Laplacian or P1 Laplacian")
    ap.add_argument("--pc", default="gmg")
    ap.add_argument("--spd", action="store_true", help="declare matrix_type='spd' (no detection)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--transfers", default=None, help="gmg transfers ('stencil' = the CUDA default)")
    ap.add_argument("--cycle", default=None, help="multigrid cycle (V, W, K; default: the preconditioner's 'auto')")
    ap.add_argument("--coarse-dtype", default=None, choices=["float32", "float64"], help="multigrid coarse_dtype")
    ap.add_argument("--aggregation", default=None, choices=["standard", "mis2"], help="AMG aggregation")
    ap.add_argument("--prolongation", default=None, choices=["stored", "implicit"], help="AMG's finest prolongator")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    ap.add_argument("--min", type=float, default=1.0, help="list live tensors of at least this many B/unknown")
    ap.add_argument(
        "--digest",
        action="store_true",
        help="on the CPU, recognise cached values by a digest as on GPUs (no values copy): the GPU's memory, traced here",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.digest:
        import sla.numeric_cache

        sla.numeric_cache.COPY_DEVICES = set()

    from sla.config import SolverConfig
    from sla.solvers.linear.solve import prepare

    cuda = args.device == "cuda"
    opts = {"transfers": args.transfers} if args.transfers and args.pc == "gmg" else {}
    if args.cycle:
        opts["cycle"] = args.cycle
    if args.coarse_dtype:
        opts["coarse_dtype"] = getattr(torch, args.coarse_dtype)
    if args.aggregation:
        opts["aggregation"] = args.aggregation
    if args.prolongation:
        opts["prolongation"] = args.prolongation
    opts = opts or None
    kw = dict(
        backend="pytorch",
        method="cg",
        preconditioner=args.pc,
        rtol=1e-8,
        matrix_type="spd" if args.spd else None,
        options=opts,
    )
    N = 1

    def report(mt, label):
        line = f"== {label}: traced peak {mt.peak / N:.1f} B/unknown"
        if cuda:  # the allocator's view of the same phase: library workspaces and block rounding on top
            alloc = (torch.cuda.max_memory_allocated() - base) / N
            line += f", allocator peak {alloc:.1f} (excess {alloc - mt.peak / N:+.1f})"
            line += f", reserved {(torch.cuda.max_memory_reserved() - base_reserved) / N:.1f}"
        print(line + f" (at {mt.at_peak[0]})")
        if cuda:
            print(f"   allocator peak reached at {mt.alloc_at[0]} (traced live then {mt.alloc_at[1] / N:.1f})")
        small: dict = {}  # tensors below --min, summed by where they were made (row blocks of one loop)
        for nb, d in sorted(mt.at_peak[1], key=lambda v: -v[0]):
            if nb >= args.min * N:
                print(f"  {nb / N:6.1f}  {d}")
            else:
                dtype, _, rest = d.partition(" (")
                key = f"{dtype} {rest.partition(') ')[2]}"
                small[key] = (small.get(key, (0, 0))[0] + nb, small.get(key, (0, 0))[1] + 1)
        for key, (nb, count) in sorted(small.items(), key=lambda kv: -kv[1][0]):
            if nb >= args.min * N:
                print(f"  {nb / N:6.1f}  {key} ({count} smaller tensors)")

    base = base_reserved = 0
    built = None if args.matrix == "5pt" else _matrix(args.matrix, args.n, args.device)
    with MemTrace(cuda) as mt:
        A, b = _matrix(args.matrix, args.n, args.device) if built is None else _traced_copy(*built)
        del built
        A.pattern.crow  # noqa: B018
        A.pattern.ccol  # noqa: B018
        N = A.shape[0]
        if cuda:  # the allocator's zero: what is allocated now less the traced matrix and b (mesh caches out)
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated() - mt.cur
            base_reserved = torch.cuda.memory_reserved() - mt.cur
            torch.cuda.reset_peak_memory_stats()
        print(f"{args.matrix} n={args.n}: {N:,} unknowns, {A.nnz:,} entries ({A.nnz / N:.2f} per row), {args.device}")
        report(mt, f"matrix + b (now {mt.cur / N:.1f})")
        prep = None
        for label, fn in [
            ("setup", lambda: prepare(A, SolverConfig.resolve(None, **kw))),
            ("solve", lambda: A.solve(b, return_info=True, **kw)),
        ]:
            mt.reset_peak()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            out = fn()
            if cuda:
                torch.cuda.synchronize()
            report(mt, label)
            if label == "setup":
                prep, out = out, None
                M = getattr(prep.states, "M", None)
                ops, other = _hierarchy_bytes(M, A)
                print(
                    f"   after setup: live {mt.cur / N:.1f} B/unknown; hierarchy {(ops + other) / N:.1f} "
                    f"(coarse operators {ops / N:.1f}, transfers + diagonals + coarsest inverse {other / N:.1f})"
                )
    info = out[1]
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    A.solve(b, **kw)
    if cuda:
        torch.cuda.synchronize()
    later = time.perf_counter() - t0
    print(f"iterations {info.iterations} residual {info.residual:.4e} later solve {later:.3f} s (untraced)")


if __name__ == "__main__":
    main()
