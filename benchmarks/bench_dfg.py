"""DFG flow around a cylinder (Schäfer & Turek 1996): 2D-1 (steady, Re = 20) and 2D-2 (unsteady, Re = 100).

Reproduces the benchmark quantities with sla's Taylor--Hood solver on gmsh meshes and prints them
next to the published values (the reference in the same run is the published table):

    python benchmarks/bench_dfg.py --case 2d1 --levels 3
    python benchmarks/bench_dfg.py --case 2d2 --h 0.04 --hc 0.005 --hw 0.02 --dt 0.005 --t-end 6

2D-1: a sequence of meshes (``MESHES_2D1``: ``h`` halved, the cylinder refined faster), Newton
with the direct path (``--linear iterative``: FGMRES + block preconditioner); c_D, c_L, dp and their relative errors, unknowns, Newton steps, time.
2D-2: semi-implicit BDF2 with the LU factors reused as GMRES preconditioner across steps
(:func:`sla.cfd.unsteady.solve_unsteady`), a rotating-cylinder kick for ``t < --t-kick``; St,
max c_D, max c_L over the last three lift periods against the published intervals; the force
history goes to ``--out`` (``.csv``).  ``torch.set_num_threads(--threads)`` (default 1).
"""

from __future__ import annotations

import argparse
import csv
import platform
import time

import torch

from sla.assembly import dfg_channel
from sla.assembly.mixed import TaylorHood
from sla.cfd.dfg import REFERENCE, TOLERANCE_2D1, solve_2d1, solve_2d2

#: (h, h_cylinder) of the 2D-1 meshes: 16, 64 and 128 segments on the cylinder
MESHES_2D1 = [(0.08, 0.02), (0.04, 0.005), (0.02, 0.0025), (0.01, 0.00125)]


def bench_2d1(levels: int, linear: str) -> None:
    ref = REFERENCE["2d1"]
    print(f"DFG 2D-1 (Re = 20), linear={linear}; reference c_D {ref['c_D']}, c_L {ref['c_L']}, dp {ref['dp']}")
    print("| h | h_cyl | unknowns | Newton steps | time | c_D | err | c_L | err | dp | err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for h, hc in MESHES_2D1[:levels]:
        V = TaylorHood(dfg_channel(h=h, h_cylinder=hc))
        t0 = time.perf_counter()
        res, q = solve_2d1(V, linear=linear)
        el = time.perf_counter() - t0
        errs = {n: (float(q[n]) - ref[n]) / ref[n] for n in ("c_D", "c_L", "dp")}
        ok = all(abs(errs[n]) < TOLERANCE_2D1[n] for n in errs)
        print(
            f"| {h:g} | {hc:g} | {V.n:,} | {len(res.steps)} | {el:.2f} s | {float(q['c_D']):.5f} | {errs['c_D']:+.2%} "
            f"| {float(q['c_L']):.6f} | {errs['c_L']:+.2%} | {float(q['dp']):.5f} | {errs['dp']:+.2%} |"
            + (" within the issue's tolerances" if ok else "")
        )


def bench_2d2(args) -> None:
    V = TaylorHood(dfg_channel(h=args.h, h_cylinder=args.hc, h_wake=args.hw))
    print(
        f"DFG 2D-2 (Re = 100): h={args.h}, h_cylinder={args.hc}, h_wake={args.hw}, {V.n:,} unknowns, "
        f"dt={args.dt}, t_end={args.t_end}, kick {args.kick} until t={args.t_kick}"
    )
    stats = {"its": 0, "steps": 0}
    t_start = time.perf_counter()

    def progress(step):
        stats["steps"] += 1
        if step.k % 100 == 0:
            print(f"  t = {step.t:.3f}  ({time.perf_counter() - t_start:.0f} s)", flush=True)

    hist, q = solve_2d2(V, dt=args.dt, t_end=args.t_end, kick=args.kick, t_kick=args.t_kick, callback=progress)
    el = time.perf_counter() - t_start
    if args.out:
        with open(args.out, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["t", "c_D", "c_L", "dp"])
            w.writerows(zip(hist.t, hist.c_D, hist.c_L, hist.dp))
    ref = REFERENCE["2d2"]
    its = sum(hist.iterations) / max(1, len(hist.iterations))
    print(
        f"{stats['steps']} steps in {el:.1f} s ({el / max(1, stats['steps']):.3f} s per step); "
        f"{hist.factorizations} LU factorisations, {its:.1f} GMRES iterations per step on the held factors"
    )
    print("| quantity | sla | published interval | inside |")
    print("|---|---|---|---|")
    for name in ("St", "c_D_max", "c_L_max"):
        lo, hi = ref[name]
        print(f"| {name} | {q[name]:.4f} | [{lo}, {hi}] | {'yes' if lo <= q[name] <= hi else 'no'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=["2d1", "2d2", "all"], default="2d1")
    ap.add_argument("--levels", type=int, default=3, help="2d1: number of meshes")
    ap.add_argument("--linear", choices=["direct", "iterative"], default="direct")
    ap.add_argument("--h", type=float, default=0.04)
    ap.add_argument("--hc", type=float, default=0.005)
    ap.add_argument("--hw", type=float, default=0.02)
    ap.add_argument("--dt", type=float, default=0.005)
    ap.add_argument("--t-end", type=float, default=6.0)
    ap.add_argument("--kick", type=float, default=0.3)
    ap.add_argument("--t-kick", type=float, default=1.0)
    ap.add_argument("--out", default="", help="2d2: CSV file for the force history")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, {args.threads} thread(s)")
    if args.case in ("2d1", "all"):
        bench_2d1(args.levels, args.linear)
    if args.case in ("2d2", "all"):
        bench_2d2(args)


if __name__ == "__main__":
    main()
