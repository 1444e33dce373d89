"""GPU direct solves: sla's cuDSS backend beside nvmath-python called directly and torch-sla 0.4.0.

2D Poisson (5-point), float64, one GPU.  For each size it measures

* first solve: plan (reordering + symbolic analysis) + factorisation + solve, on a fresh pattern;
* later solve: new values on the same pattern (numeric refactorisation + solve) -- median of ``--repeat``;
* backward: the adjoint pass of a solve (reuses the factors) -- median;
* the relative residual ``|b - A x| / |b|``;

and the same first / later solve through nvmath-python's ``DirectSolver`` used directly
(plan once, copy new values in place, ``factorize()``, ``solve()``) to show the
wrapper's overhead, and through torch-sla 0.4.0's ``backend='cudss'`` (it may fail:
the error is recorded).  With ``--crossover`` it also times the 'pytorch' Krylov
backend, when registered, over a range of sizes.

Run:  python benchmarks/bench_direct.py --sides 1000 2000 --out results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from sla import SparseTensor, gallery
from sla.solvers.linear import registry


def _sync():
    torch.cuda.synchronize()


def _time(fn):
    _sync()
    t0 = time.perf_counter()
    out = fn()
    _sync()
    return time.perf_counter() - t0, out


def _residual(A, x, b):
    r = b - A @ x
    return float(r.norm() / b.norm())


def bench_sla(side: int, repeat: int, backend: str = "cudss") -> dict:
    A = gallery.poisson2d(side, device="cuda")
    n = A.shape[0]
    b = torch.randn(n, dtype=torch.float64, device="cuda")
    first, (x, info) = _time(lambda: A.solve(b, backend=backend, return_info=True))
    out = {
        "n": n,
        "nnz": A.nnz,
        "first_s": first,
        "method": info.method,
        "residual_first": _residual(A, x, b),
        "setup_s_first": info.setup_time,
    }
    later, res = [], []
    for k in range(repeat):
        Ak = A.with_values(A.values * (1.0 + 0.01 * (k + 1)))
        t, xk = _time(lambda: Ak.solve(b, backend=backend))
        later.append(t)
        res.append(_residual(Ak, xk, b))
    out["later_s"] = statistics.median(later)
    out["residual"] = max(res)
    back = []
    w = torch.randn(n, dtype=torch.float64, device="cuda")
    for k in range(repeat):
        v = (A.values * (1.0 + 0.02 * (k + 1))).requires_grad_(True)
        bk = b.clone().requires_grad_(True)
        xk = A.with_values(v).solve(bk, backend=backend)
        loss = (xk * w).sum()
        t, _ = _time(lambda: loss.backward())
        back.append(t)
    out["backward_s"] = statistics.median(back)
    A.pattern.clear_cache()
    return out


def bench_nvmath(side: int, repeat: int) -> dict:
    import nvmath.sparse.advanced as nva
    from nvmath.bindings import cudss

    from sla.solvers.backends.cudss import mtlayer_path

    A = gallery.poisson2d(side, device="cuda")
    p = A.pattern
    n = A.shape[0]
    vals = A.values.clone()
    b = torch.randn(n, 1, dtype=torch.float64, device="cuda")

    def first():
        a = torch.sparse_csr_tensor(p.crow, p.ccol, vals, (n, n))
        opts = nva.DirectSolverOptions(sparse_system_type=cudss.MatrixType.SPD, multithreading_lib=mtlayer_path())
        s = nva.DirectSolver(a, b, options=opts)
        s.plan()
        s.factorize()
        return s, s.solve()

    t_first, (s, x) = _time(first)
    later = []
    for k in range(repeat):
        new = A.values * (1.0 + 0.01 * (k + 1))

        def again():
            vals.copy_(new)
            s.factorize()
            return s.solve()

        t, x = _time(again)
        later.append(t)
    Ak = SparseTensor._make(vals, p)
    out = {"first_s": t_first, "later_s": statistics.median(later), "residual": _residual(Ak, x[:, 0], b[:, 0])}
    # the same with what sla adds for safety: wait for the factorisation and read cuDSS's INFO
    # (zero pivot / not positive definite) before solving
    later = []
    for k in range(repeat):
        new = A.values * (1.0 + 0.03 * (k + 1))

        def checked():
            vals.copy_(new)
            s.factorize()
            torch.cuda.synchronize()
            if s.factorization_info.info != 0:
                raise RuntimeError("singular")
            return s.solve()

        t, x = _time(checked)
        later.append(t)
    out["later_checked_s"] = statistics.median(later)
    s.free()
    return out


def first_sla(side: int) -> float:
    """Seconds of one first solve (plan + factor + solve) on a fresh pattern."""
    A = gallery.poisson2d(side, device="cuda")
    b = torch.randn(A.shape[0], dtype=torch.float64, device="cuda")
    t, _ = _time(lambda: A.solve(b, backend="cudss"))
    A.pattern.clear_cache()
    return t


def first_nvmath(side: int) -> float:
    """Seconds of one first solve through nvmath-python's DirectSolver, the same steps."""
    import nvmath.sparse.advanced as nva
    from nvmath.bindings import cudss

    from sla.solvers.backends.cudss import mtlayer_path

    A = gallery.poisson2d(side, device="cuda")
    p, n = A.pattern, A.shape[0]
    b = torch.randn(n, 1, dtype=torch.float64, device="cuda")

    def run():
        a = torch.sparse_csr_tensor(p.crow, p.ccol, A.values, (n, n))
        opts = nva.DirectSolverOptions(sparse_system_type=cudss.MatrixType.SPD, multithreading_lib=mtlayer_path())
        s = nva.DirectSolver(a, b, options=opts)
        s.plan()
        s.factorize()
        return s, s.solve()

    t, (s, _) = _time(run)
    s.free()
    return t


def bench_torch_sla(side: int, repeat: int) -> dict:
    try:
        import torch_sla
    except ImportError as exc:
        return {"error": f"torch_sla not importable here: {exc}"}
    A = gallery.poisson2d(side, device="cuda")
    n = A.shape[0]
    b = torch.randn(n, dtype=torch.float64, device="cuda")
    try:
        t_first, x = _time(lambda: torch_sla.spsolve(A.values, A.row, A.col, (n, n), b, backend="cudss"))
        later = []
        for k in range(repeat):
            v = A.values * (1.0 + 0.01 * (k + 1))
            t, x = _time(lambda: torch_sla.spsolve(v, A.row, A.col, (n, n), b, backend="cudss"))
            later.append(t)
        return {
            "version": torch_sla.__version__,
            "first_s": t_first,
            "later_s": statistics.median(later),
            "residual": _residual(A.with_values(v), x, b),
        }
    except Exception as exc:  # recorded, not hidden: the comparison says how it failed
        return {"version": getattr(torch_sla, "__version__", "?"), "error": f"{type(exc).__name__}: {exc}"[:300]}


def breakdown(side: int, repeat: int) -> dict:
    """Where a later solve's time goes: input checks + type guess, refactorisation, solve + residual."""
    from sla import SolverConfig, structure
    from sla.solvers.linear.solve import _run, check_matrix, prepare

    A = gallery.poisson2d(side, device="cuda")
    b = torch.randn(A.shape[0], dtype=torch.float64, device="cuda")
    A.solve(b, backend="cudss")  # plan
    cfg = SolverConfig.resolve(None, backend="cudss")
    parts = {"checks_s": [], "prepare_s": [], "run_s": []}
    for k in range(repeat):
        Ak = A.with_values(A.values * (1.0 + 0.01 * (k + 1)))
        t, _ = _time(lambda: (check_matrix(Ak), structure.guess_matrix_type(Ak)))
        parts["checks_s"].append(t)
        t, prep = _time(lambda: prepare(Ak, cfg))
        parts["prepare_s"].append(t)
        t, _ = _time(lambda: _run(Ak, b, prep, False))
        parts["run_s"].append(t)
    A.pattern.clear_cache()
    return {k: statistics.median(v) for k, v in parts.items()}


def crossover(sides, repeat) -> list[dict]:
    rows = []
    have_pt = "pytorch" in registry.backend_names() and registry.is_available("pytorch")
    for side in sides:
        row = {"n": side * side, "cudss": bench_sla(side, repeat, "cudss")}
        if have_pt:
            row["pytorch"] = bench_sla(side, repeat, "pytorch")
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sides", type=int, nargs="*", default=[1000, 2000], help="grid sides (n = side^2)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--first-repeat", type=int, default=3, help="first solves per size and side (alternating)")
    ap.add_argument("--crossover", type=int, nargs="*", default=None, help="grid sides for the cudss vs pytorch sweep")
    ap.add_argument("--torch-sla-sides", type=int, nargs="*", default=[1000], help="sides to try torch-sla 0.4.0 on")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_direct needs a CUDA GPU")
    # CPU threads: left at their default -- cuDSS planning runs on the host (multithreading layer)
    from sla.solvers.backends.cudss import mtlayer_path

    res = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "mtlayer": mtlayer_path(), "sizes": []}
    try:
        import nvmath

        res["nvmath"] = nvmath.__version__
    except Exception as exc:
        res["nvmath"] = f"unavailable: {exc}"
    # warm-up: CUDA context, cuDSS handle, kernels (not counted)
    bench_sla(32, 1)
    for side in args.sides:
        row = {"side": side, "sla": bench_sla(side, args.repeat), "nvmath": bench_nvmath(side, args.repeat)}
        fs, fn = [row["sla"]["first_s"]], [row["nvmath"]["first_s"]]
        for _ in range(args.first_repeat - 1):  # alternate, so neither side gets a warmer process
            fn.append(first_nvmath(side))
            fs.append(first_sla(side))
        row["sla"]["first_samples"], row["nvmath"]["first_samples"] = fs, fn
        row["sla"]["first_s"], row["nvmath"]["first_s"] = statistics.median(fs), statistics.median(fn)
        if side in args.torch_sla_sides:
            row["torch_sla"] = bench_torch_sla(side, 2)
        row["overhead_later"] = row["sla"]["later_s"] / row["nvmath"]["later_s"] - 1
        row["overhead_first"] = row["sla"]["first_s"] / row["nvmath"]["first_s"] - 1
        res["sizes"].append(row)
        print(json.dumps(row), flush=True)
    if args.sides:
        res["breakdown_1st_side"] = breakdown(args.sides[0], args.repeat)
        print("later-solve breakdown:", {k: f"{1e3 * v:.2f} ms" for k, v in res["breakdown_1st_side"].items()})
    if args.crossover:
        res["crossover"] = crossover(args.crossover, 3)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    print(f"\ncard: {res['card']}  torch {res['torch']}  nvmath {res['nvmath']}  mtlayer: {bool(res['mtlayer'])}")
    print(
        "| n | sla first (s) | sla later (ms) | sla backward (ms) | residual | nvmath first (s) | nvmath later (ms) "
        "| nvmath later + INFO check (ms) | overhead later | torch-sla 0.4.0 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in res["sizes"]:
        s, v, t = r["sla"], r["nvmath"], r.get("torch_sla", {})
        ts = t.get("error") or f"first {t['first_s']:.2f} s, later {1e3 * t['later_s']:.1f} ms" if t else "not run"
        print(
            f"| {s['n']:,} | {s['first_s']:.2f} | {1e3 * s['later_s']:.1f} | {1e3 * s['backward_s']:.1f} | "
            f"{s['residual']:.1e} | {v['first_s']:.2f} | {1e3 * v['later_s']:.1f} | {1e3 * v['later_checked_s']:.1f} | "
            f"{100 * r['overhead_later']:+.1f}% | {ts} |"
        )
    for r in res.get("crossover", []):
        c, p = r["cudss"], r.get("pytorch")
        line = (
            f"crossover n={r['n']:,}: cudss first {c['first_s']:.3f} s, later {1e3 * c['later_s']:.1f} ms, "
            f"backward {1e3 * c['backward_s']:.1f} ms, residual {c['residual']:.0e}"
        )
        if p:
            line += (
                f" | pytorch ({p['method']}) first {p['first_s']:.3f} s, later {1e3 * p['later_s']:.1f} ms, "
                f"backward {1e3 * p['backward_s']:.1f} ms, residual {p['residual']:.0e}"
            )
        print(line)


if __name__ == "__main__":
    main()
