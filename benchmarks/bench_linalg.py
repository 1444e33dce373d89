"""Eigenpairs and nonlinear solves on the 2D Poisson problem, CPU, against SciPy in the same run.

1. ``eigsh``: the k = 6 smallest eigenpairs of the 5-point Laplacian (n x n
   interior grid), checked against the closed form
   ``4 - 2 cos(i pi h) - 2 cos(j pi h)``:

   * reference: ``scipy.sparse.linalg.eigsh(A, k=6, sigma=0, which='LM')``
     (ARPACK shift-invert, SciPy's own factorisation);
   * ``A.eigsh(k=6, which='SA', method='lobpcg', preconditioner='amg')``
     (torch LOBPCG, smoothed-aggregation AMG, setup included);
   * ``A.eigsh(k=6, which='SA', method='arpack')`` (ARPACK shift-invert through
     CHOLMOD when installed).

2. Newton on the nonlinear Poisson problem ``-div((1 + u^2) grad u) = f``
   (f = 20, u = 0 on the boundary, finite differences), to ``||F|| <= 1e-10 ||F_0||``:

   * ``linear_solver='sparse'``: Jacobian assembled from coloured exact VJPs,
     sparse LU per step;
   * ``linear_solver='gmres'``: Jacobian-free Newton-Krylov, AMG of the
     Laplacian as right preconditioner;
   * the backward pass of ``u.sum()`` w.r.t. ``f`` (one adjoint solve), and a
     SciPy ``spsolve`` of the final Jacobian for scale.

Times are the best of ``--repeat`` runs with torch/BLAS pinned to ``--threads``.

    python benchmarks/bench_linalg.py               # n = 316 (99,856 unknowns)
    python benchmarks/bench_linalg.py --n 100       # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import time

THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def best(fn, repeat):
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def fmt(t):
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def nlpoisson(n):
    import torch

    h = 1.0 / (n + 1)

    def residual(u, f):
        U = torch.nn.functional.pad(u.reshape(n, n), (1, 1, 1, 1))
        k = 1 + U**2
        fx = 0.5 * (k[1:, 1:-1] + k[:-1, 1:-1]) * (U[1:, 1:-1] - U[:-1, 1:-1])
        fy = 0.5 * (k[1:-1, 1:] + k[1:-1, :-1]) * (U[1:-1, 1:] - U[1:-1, :-1])
        return (-((fx[1:] - fx[:-1]) + (fy[:, 1:] - fy[:, :-1])) / h**2).reshape(-1) - f

    return residual


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=316, help="grid side (unknowns = n^2)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-eigen", action="store_true")
    ap.add_argument("--skip-newton", action="store_true")
    ap.add_argument(
        "--det-sides",
        type=int,
        nargs="*",
        default=[50, 100],
        help="grid sides for the slogdet forward/backward timing (empty list: skip)",
    )
    args = ap.parse_args()
    for k in THREADS_ENV:
        os.environ[k] = str(args.threads)
    import numpy as np
    import scipy.sparse.linalg as spla
    import torch

    import sla
    from sla.gallery import poisson2d

    torch.set_num_threads(args.threads)
    n, N = args.n, args.n**2
    print(
        f"# {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, {args.threads} thread(s), "
        f"torch {torch.__version__}, N = {N:,}, load average {os.getloadavg()[0]:.1f}"
    )

    if not args.skip_eigen:
        A = poisson2d(n)
        i = np.arange(1, n + 1) * np.pi / (n + 1)
        exact = np.sort((4 - 2 * np.cos(i)[:, None] - 2 * np.cos(i)[None, :]).ravel())[:6]
        S = A.to_scipy("csc")
        rows = []

        def ref():
            return np.sort(spla.eigsh(S, k=6, sigma=0, which="LM")[0])

        def lob():
            A2 = poisson2d(n)  # fresh pattern: AMG setup included
            return A2.eigsh(k=6, which="SA", method="lobpcg", preconditioner="amg", return_info=True)

        def arp():
            return poisson2d(n).eigsh(k=6, which="SA", method="arpack", return_info=True)

        t_ref, w = best(ref, args.repeat)
        rows.append(("scipy eigsh(sigma=0) [reference]", t_ref, np.abs(w - exact).max() / exact[0], "-"))
        t, ((lam, _), info) = best(lob, args.repeat)
        rows.append(("sla lobpcg + amg", t, np.abs(lam.numpy() - exact).max() / exact[0], info.iterations))
        t, ((lam, _), info) = best(arp, args.repeat)
        rows.append(("sla arpack (shift-invert)", t, np.abs(lam.numpy() - exact).max() / exact[0], "-"))
        print(f"\n## eigsh k=6 smallest, 2D Laplacian, N = {N:,}\n")
        print("| method | time | vs scipy | max rel. error (closed form) | iterations |")
        print("|---|---|---|---|---|")
        for name, t, err, its in rows:
            print(f"| {name} | {fmt(t)} | {t / t_ref:.2f}x | {err:.1e} | {its} |")

    if args.det_sides:
        print("\n## slogdet forward / backward (gradient = A^{-T} on the pattern), 2D Laplacian\n")
        print(
            "| unknowns | matrix (path) | sla forward | sla backward | dense torch slogdet fwd+bwd | max |grad error| |"
        )
        print("|---|---|---|---|---|---|")
        paths = {
            "spd": "CHOLMOD LDL^T + Takahashi",
            "nonsymmetric": "SuperLU, symmetric ordering + Takahashi",
            "unsymmetric pattern": "SuperLU, COLAMD + column solves",
        }
        for side, kind in [(s, k) for s in args.det_sides for k in paths]:
            A = poisson2d(side)
            if kind == "nonsymmetric":  # convection-like skew of the values, same (symmetric) pattern
                A = A.with_values(torch.where(A.row < A.col, 0.8 * A.values, A.values))
            elif kind == "unsymmetric pattern":  # drop some upper entries: the pattern loses its symmetry
                keep = ~((A.row < A.col) & ((A.row + A.col) % 7 == 0))
                A = sla.SparseTensor(A.values[keep], A.row[keep], A.col[keep], A.shape)
            path = paths[kind]
            v = A.values.clone().requires_grad_()

            def fwd():
                return sla.slogdet(A.with_values(v))[1]

            t_f, ld = best(fwd, args.repeat)
            t0 = time.perf_counter()
            (g,) = torch.autograd.grad(ld, v)
            t_b = time.perf_counter() - t0

            def dense():
                D = A.to_dense().requires_grad_()
                (gd,) = torch.autograd.grad(torch.linalg.slogdet(D)[1], D)
                return gd

            if side * side <= 10_000:
                t_d, gd = best(dense, 1)
                err = f"{float((g - gd[A.row, A.col]).abs().max()):.1e}"
                td = fmt(t_d)
            else:
                td = err = "-"
            print(f"| {side * side:,} | {kind} ({path}) | {fmt(t_f)} | {fmt(t_b)} | {td} | {err} |")

    if not args.skip_newton:
        from sla.solvers.nonlinear.jacobian import Residual, assemble_jacobian
        from sla.solvers.precond import make_preconditioner

        residual = nlpoisson(n)
        L = poisson2d(n) * float((n + 1) ** 2)
        f = torch.full((N,), 20.0, dtype=torch.float64)
        u0 = torch.zeros(N, dtype=torch.float64)
        rows = []
        amg = make_preconditioner(L, "amg")
        symmetric_lu = dict(
            backend="scipy",
            method="lu",
            options=dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options=dict(SymmetricMode=True)),
        )
        for name, kw in [
            ("newton, sparse Jacobian + LU", dict(linear_solver="sparse", jacobian_pattern=L.pattern)),
            (
                "newton, sparse Jacobian + LU (symmetric ordering)",
                dict(linear_solver="sparse", jacobian_pattern=L.pattern, linear_options=symmetric_lu),
            ),
            ("newton-krylov (JFNK), AMG", dict(linear_solver="gmres", preconditioner=amg)),
        ]:

            def fwd():
                fg = f.clone().requires_grad_()
                u, info = sla.nonlinear_solve(residual, u0, fg, method="newton", rtol=1e-10, return_info=True, **kw)
                return fg, u, info

            t_f, (fg, u, info) = best(fwd, args.repeat)
            t0 = time.perf_counter()
            u.sum().backward()
            t_b = time.perf_counter() - t0
            rows.append(
                (
                    name,
                    t_f,
                    info.iterations,
                    info.linear_iterations,
                    info.residual / info.initial_residual,
                    t_b,
                    float(u.detach().max()),
                )
            )
        res = Residual(residual, u, (f,))
        J = assemble_jacobian(res, u.detach(), L.pattern).to_scipy("csc")
        t_lin, _ = best(lambda: spla.spsolve(J, np.ones(N)), args.repeat)
        print(f"\n## Newton, -div((1+u^2) grad u) = 20, N = {N:,} (scipy spsolve of one Jacobian: {fmt(t_lin)})\n")
        print("| method | forward | Newton steps | GMRES its | ||F||/||F0|| | backward (d sum(u)/df) | max u |")
        print("|---|---|---|---|---|---|---|")
        for name, t_f, steps, lits, rel, t_b, umax in rows:
            print(f"| {name} | {fmt(t_f)} | {steps} | {lits} | {rel:.1e} | {fmt(t_b)} | {umax:.6f} |")


if __name__ == "__main__":
    main()
