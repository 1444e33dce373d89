"""The coarsest level's dense inverse in one thread against torch's threads.

A multigrid setup inverts its coarsest level (a few hundred rows) on the host, for a GPU solve too.
In torch's threads (16 on an H200's host) that took 4-82 ms from setup to setup for well under 1 ms
of work; ``multigrid._ONE_THREAD_MAX`` sets the size up to which it runs in one thread on hosts of more
than ``_ONE_THREAD_FROM`` threads (here "one thread" forces it on any host).  Alternated
in one process, the first call dropped:

* ``inverse``: ``multigrid._dense_inverse`` of the coarsest level of a GMG hierarchy (5-point
  ``--n``^2) and of an AMG one (5-point 1000^2), each timed alone;
* ``solves``: GMG-CG first solves (``matrix_type='spd'``, rtol 1e-8) of new ``--n``^2 matrices.

Usage::

    PYTHONPATH=. python3 benchmarks/bench_coarse_inverse.py               # CUDA: --n 4000
    PYTHONPATH=. python3 benchmarks/bench_coarse_inverse.py --device cpu --n 1000
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import sla
from sla import gallery
from sla.solvers.precond import multigrid


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


WAYS = {"one thread": (multigrid._ONE_THREAD_MAX, 1), "torch's threads": (0, multigrid._ONE_THREAD_FROM)}
SAVED = multigrid._ONE_THREAD_MAX, multigrid._ONE_THREAD_FROM


def _solve(A, dev: str):
    b = torch.ones(A.shape[0], dtype=A.dtype, device=dev)
    M = sla.precond.GMG(graph=False)
    _sync(dev)
    t = time.perf_counter()
    _, info = sla.solve(
        A, b, backend="pytorch", method="cg", preconditioner=M, rtol=1e-8, matrix_type="spd", return_info=True
    )
    _sync(dev)
    return time.perf_counter() - t, info


def inverse(dev: str, n: int, repeats: int) -> None:
    coarse, seen = {}, []
    saved = multigrid._dense_inverse

    def keep(C):
        seen.append(C)
        return saved(C)

    multigrid._dense_inverse = keep
    try:
        for label, A, pc in (
            (f"GMG, 5-point {n}^2", gallery.poisson2d(n, device=dev), sla.precond.GMG(graph=False)),
            ("AMG, 5-point 1000^2", gallery.poisson2d(1000, device=dev), "amg"),
        ):
            seen.clear()
            b = torch.ones(A.shape[0], dtype=A.dtype, device=dev)
            sla.solve(A, b, backend="pytorch", method="cg", preconditioner=pc, rtol=1e-8, matrix_type="spd")
            coarse[label] = seen[0]  # the outermost call's level (on the solve's device)
    finally:
        multigrid._dense_inverse = saved
    print(f"| coarsest level | rows | one thread (ms) | torch's {torch.get_num_threads()} threads (ms) |")
    print("|---|---|---|---|")
    for label, C in coarse.items():
        times = {w: [] for w in WAYS}
        for _ in range(repeats + 1):
            for w, most in WAYS.items():
                multigrid._ONE_THREAD_MAX, multigrid._ONE_THREAD_FROM = most
                _sync(dev)
                t = time.perf_counter()
                multigrid._dense_inverse(C)
                _sync(dev)
                times[w].append(1e3 * (time.perf_counter() - t))
        multigrid._ONE_THREAD_MAX, multigrid._ONE_THREAD_FROM = SAVED
        cells = " | ".join(f"{statistics.median(ts[1:]):.2f} (max {max(ts[1:]):.1f})" for ts in times.values())
        print(f"| {label} | {C.shape[0]} | {cells} |", flush=True)


def solves(dev: str, n: int, rounds: int) -> None:
    print(f"\n| GMG-CG first solve of a new 5-point {n}^2 matrix | first solves (s) | setups (s) | iterations |")
    print("|---|---|---|---|")
    _solve(gallery.poisson2d(n, device=dev), dev)
    res = {w: [] for w in WAYS}
    try:
        for _ in range(rounds):
            for w, most in WAYS.items():
                multigrid._ONE_THREAD_MAX, multigrid._ONE_THREAD_FROM = most
                res[w].append(_solve(gallery.poisson2d(n, device=dev), dev))
    finally:
        multigrid._ONE_THREAD_MAX, multigrid._ONE_THREAD_FROM = SAVED
    for w, rs in res.items():
        first = ", ".join(f"{t:.3f}" for t, _ in rs)
        setup = ", ".join(f"{i.setup_time:.3f}" for _, i in rs)
        print(f"| {w} | {first} | {setup} | {rs[0][1].iterations} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=4000, help="grid side of the GMG matrices")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {name}; host threads {torch.get_num_threads()}; torch {torch.__version__}\n")
    inverse(args.device, args.n, args.repeats)
    solves(args.device, args.n, args.rounds)


if __name__ == "__main__":
    main()
