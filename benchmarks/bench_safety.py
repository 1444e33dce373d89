"""What the safety checks of issue 18 cost, as ratios in the same run (one thread).

* the exact numeric-cache check (one ``torch.equal`` over the values) vs the factorisation it guards;
* the reciprocal condition estimate of a SuperLU factorisation (``options={'rcond': False}`` skips it).

Run: ``PYTHONPATH=. python3 benchmarks/bench_safety.py [--n 400]``.
"""

from __future__ import annotations

import argparse
import time

import torch

import sla


def _t(fn, reps=3):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="grid side of the 2D Poisson matrix")
    args = ap.parse_args()
    torch.set_num_threads(1)
    A = sla.gallery.poisson2d(args.n)
    N = args.n**2
    b = torch.ones(N, dtype=A.dtype)
    print(f"# poisson2d({args.n}): n = {N}, nnz = {A.nnz}, 1 thread")

    v = A.values
    stored = v.clone()
    t_cmp = _t(lambda: torch.equal(stored, v), reps=10)
    t_lu = _t(lambda: A.solve(b, backend="scipy", method="lu", cache=False, options={"rcond": False}), reps=1)
    t_lu_rc = _t(lambda: A.solve(b, backend="scipy", method="lu", cache=False), reps=1)
    print(f"exact cache check {t_cmp * 1e3:.2f} ms vs LU solve {t_lu * 1e3:.0f} ms: ratio {t_cmp / t_lu:.2e}")
    print(f"LU with rcond {t_lu_rc * 1e3:.0f} ms vs without {t_lu * 1e3:.0f} ms: ratio {t_lu_rc / t_lu:.2f}")


if __name__ == "__main__":
    main()
