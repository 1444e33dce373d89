"""Where the peak memory of a multigrid-preconditioned solve goes, phase by phase.

A ``TorchDispatchMode`` records every tensor storage an op creates (size, dtype,
shape and the sla/benchmark source lines that made it) and notes the live set at
the peak of each phase: building the matrix, the solver setup (structure detection
+ preconditioner), and the solve itself (cached setup).  On CUDA the allocator's
own ``max_memory_allocated`` is printed beside it; a gap between the two is memory
that ops allocate internally (library workspaces).

Usage::

    python benchmarks/memtrace.py --n 1024 [--spd] [--pc gmg] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class MemTrace(TorchDispatchMode):
    """Live tensor bytes after every op; the live set at the peak."""

    def __init__(self):
        super().__init__()
        self.live: dict = {}  # data_ptr -> (weakref, nbytes, description)
        self.cur = self.peak = 0
        self.at_peak: tuple = ("", [])

    def reset_peak(self):
        self.peak = self.cur

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
                    where = [
                        f"{f.filename.split('/')[-1]}:{f.lineno}"
                        for f in traceback.extract_stack()[:-1]
                        if "/sla/" in f.filename or "bench" in f.filename
                    ]
                    desc = f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)} {' < '.join(reversed(where[-3:]))}"
                    self.live[s.data_ptr()] = (StorageWeakRef(s), s.nbytes(), desc)
                    self.cur += s.nbytes()
        if self.cur > self.peak:
            self.peak = self.cur
            self.at_peak = (str(func), [(nb, d) for _, nb, d in self.live.values()])
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="grid side (n^2 unknowns, 2D Poisson)")
    ap.add_argument("--pc", default="gmg")
    ap.add_argument("--spd", action="store_true", help="declare matrix_type='spd' (no detection)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--transfers", default=None, help="gmg transfers ('stencil' = the CUDA default)")
    args = ap.parse_args()
    from bench_iterative import _problem

    from sla.config import SolverConfig
    from sla.solvers.linear.solve import prepare

    N = args.n**2
    cuda = args.device == "cuda"
    opts = {"transfers": args.transfers} if args.transfers and args.pc == "gmg" else None
    kw = dict(
        backend="pytorch",
        method="cg",
        preconditioner=args.pc,
        rtol=1e-8,
        matrix_type="spd" if args.spd else None,
        options=opts,
    )

    def report(mt, label):
        line = f"== {label}: traced peak {mt.peak / N:.1f} B/unknown"
        if cuda:
            line += f", allocator peak {(torch.cuda.max_memory_allocated() - base) / N:.1f}"
        print(line + f" (at {mt.at_peak[0]})")
        for nb, d in sorted(mt.at_peak[1], key=lambda v: -v[0]):
            if nb >= N:
                print(f"  {nb / N:6.1f}  {d}")

    base = torch.cuda.memory_allocated() if cuda else 0
    with MemTrace() as mt:
        A, b = _problem(args.n, 2, args.device)
        A.pattern.crow  # noqa: B018
        report(mt, f"matrix + b (now {mt.cur / N:.1f})")
        for label, fn in [
            ("setup", lambda: prepare(A, SolverConfig.resolve(None, **kw))),
            ("solve", lambda: A.solve(b, return_info=True, **kw)),
        ]:
            mt.reset_peak()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            out = fn()
            report(mt, label)
    print("iterations", out[1].iterations, "residual", out[1].residual)


if __name__ == "__main__":
    main()
