"""GPU numbers of issue #5: eigsh (LOBPCG + multigrid) and Newton at 1M unknowns.

1. ``A.eigsh(k=6, which='SA', method='lobpcg', preconditioner='amg')`` on the
   2D 5-point Laplacian, checked against the closed form
   ``4 - 2 cos(i pi h) - 2 cos(j pi h)``; the time includes the AMG setup.
2. Newton on ``-div((1 + u^2) grad u) = f`` (f = 20, finite differences, the
   residual of ``bench_linalg.py``): Jacobian-free Newton-Krylov, GMRES right-
   preconditioned by geometric multigrid of the Laplacian (built once, reused by
   every Newton step), to ``||F|| <= 1e-10 ||F_0||``; then the backward pass of
   ``u.sum()`` w.r.t. ``f`` (one adjoint solve with the same preconditioner).

    python benchmarks/bench_linalg_gpu.py --n 1000          # on a CUDA machine
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_linalg import nlpoisson  # the same residual as the CPU benchmark (run from this folder's scripts)

import sla
from sla.gallery import poisson2d
from sla.solvers.precond import make_preconditioner


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev):
    _sync(dev)
    t = time.perf_counter()
    out = fn()
    _sync(dev)
    return time.perf_counter() - t, out


def eig(n, dev):
    A = poisson2d(n, device=dev)
    i = np.arange(1, n + 1) * np.pi / (n + 1)
    exact = np.sort((4 - 2 * np.cos(i)[:, None] - 2 * np.cos(i)[None, :]).ravel())[:6]
    t, ((lam, _), info) = timed(
        lambda: A.eigsh(k=6, which="SA", method="lobpcg", preconditioner="amg", return_info=True), dev
    )
    err = float(np.abs(lam.cpu().numpy() - exact).max() / exact[0])
    return t, err, info.iterations


def newton(n, dev):
    h = 1.0 / (n + 1)
    L = poisson2d(n, device=dev) * (1.0 / h**2)  # the Laplacian part of the Jacobian at u = 0
    f = torch.full((n * n,), 20.0, dtype=torch.float64, device=dev, requires_grad=True)
    u0 = torch.zeros(n * n, dtype=torch.float64, device=dev)
    P = make_preconditioner(L.detach(), "gmg")
    t, (u, info) = timed(
        lambda: sla.nonlinear_solve(
            nlpoisson(n), u0, f, method="newton", linear_solver="gmres", preconditioner=P, rtol=1e-10, return_info=True
        ),
        dev,
    )
    tb, _ = timed(lambda: u.sum().backward(), dev)
    return t, tb, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    eig(64, dev), newton(64, dev)  # warm-up: kernels, allocator
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"# {name}, torch {torch.__version__}, N = {args.n**2:,}")
    t, err, its = eig(args.n, dev)
    print(f"| eigsh k=6 SA, LOBPCG + AMG (setup included) | {t:.2f} s | max rel. error {err:.1e} | {its} iterations |")
    t, tb, info = newton(args.n, dev)
    print(
        f"| Newton-Krylov + GMG, nonlinear Poisson | {t:.2f} s | {info.iterations} Newton steps, "
        f"{info.linear_iterations} GMRES iterations, residual {info.residual:.1e} | backward {tb * 1e3:.0f} ms |"
    )


if __name__ == "__main__":
    main()
