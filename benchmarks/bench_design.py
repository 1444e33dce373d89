"""The inverse-design loop: per-step cost of build matrix + solve + backward, with and without
pattern reuse.

Each step of a gradient-based design loop builds ``A(theta)`` from parameters, solves
``A x = b`` and back-propagates a loss to ``theta``.  Here ``A = D K D`` with ``K`` the 2D
5-point Laplacian on an ``n x n`` grid (``n = 1000``: 1M unknowns) and ``D = diag(exp(theta))``
(SPD for every ``theta``), loss ``sum(x)``, then a normalised gradient step on ``theta``
(so the values, and any factorisation, change every step).  Three ways to build ``A`` in the loop:

* ``fresh indices`` -- ``sla.SparseTensor(values, row.clone(), col.clone(), shape)``: new
  index tensors every step, so a new Pattern and every solver plan on it is rebuilt (this is
  also what rebuilding from the *same* tensors cost before patterns were interned);
* ``same indices`` -- ``sla.SparseTensor(values, row, col, shape)`` with the same, unmodified
  ``row``/``col`` tensors: the intern table returns the existing Pattern;
* ``with_values`` -- ``A0.with_values(values)`` on a pattern built once.

Reported per mode: the median wall time of a step (after one warm-up step) and of its
parts (build, forward solve, backward), and the ratio to ``fresh indices`` in the same run.
torch runs on one thread on the CPU.

    python benchmarks/bench_design.py                    # 1M unknowns, CPU, solver 'auto'
    python benchmarks/bench_design.py --n 300 --steps 5  # quick
    python benchmarks/bench_design.py --device cuda      # the GPU run (cuDSS when installed)
    python benchmarks/bench_design.py --method cholesky  # any sla.solve method / backend
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import torch  # noqa: E402

import sla  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_mode(mode: str, K: sla.SparseTensor, row, col, b, theta, steps: int, solve_kw: dict) -> dict:
    dev = b.device
    shape = tuple(K.shape)
    A0 = sla.SparseTensor(K.values.clone(), row, col, shape) if mode == "with_values" else None
    parts = {"build": [], "solve": [], "backward": [], "step": []}
    info = None
    for it in range(steps + 1):
        theta.grad = None
        _sync(dev)
        t0 = time.perf_counter()
        s = torch.exp(theta)
        values = K.values * s[row] * s[col]
        if mode == "fresh indices":
            A = sla.SparseTensor(values, row.clone(), col.clone(), shape)
        elif mode == "same indices":
            A = sla.SparseTensor(values, row, col, shape)
        else:
            A = A0.with_values(values)
        _sync(dev)
        t1 = time.perf_counter()
        x, info = sla.solve(A, b, return_info=True, **solve_kw)
        loss = x.sum()
        _sync(dev)
        t2 = time.perf_counter()
        loss.backward()
        _sync(dev)
        t3 = time.perf_counter()
        with torch.no_grad():  # a gradient step: new values every step (no factorisation can be reused)
            theta.sub_(0.1 * theta.grad / theta.grad.norm())
        if it > 0:  # the first step is a warm-up (the one-time work of the reusing modes)
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                parts[k].append(v)
        keep = A  # noqa: F841 -- the previous matrix stays alive while the next is built, as in a user loop
    out = {k: statistics.median(v) for k, v in parts.items()}
    out["backend"] = f"{info.backend}/{info.method}" + (f"+{info.preconditioner}" if info.preconditioner else "")
    out["theta_norm"] = float(theta.detach().norm())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="grid side (n^2 unknowns)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--method", default=None)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    K = sla.gallery.poisson2d(a.n).to(device=dev, dtype=dtype)
    row, col = K.row.clone(), K.col.clone()  # the user's index tensors
    b = torch.ones(K.shape[0], dtype=dtype, device=dev)
    solve_kw = {k: v for k, v in (("backend", a.backend), ("method", a.method)) if v is not None}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"# 2D Poisson D K D, {K.shape[0]:,} unknowns, nnz {K.nnz:,}, {a.dtype}, device {dev} ({name}), "
        f"torch threads {torch.get_num_threads()}, median of {a.steps} steps after a warm-up"
    )
    rows = []
    grads = []
    for mode in ("fresh indices", "same indices", "with_values"):
        theta = torch.zeros(K.shape[0], dtype=dtype, device=dev, requires_grad=True)
        r = run_mode(mode, K, row, col, b, theta, a.steps, solve_kw)
        rows.append((mode, r))
        grads.append(r["theta_norm"])
    ref = rows[0][1]["step"]
    print("| build | solver | step (build + solve + backward) | build | solve | backward | vs fresh indices |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in rows:
        print(
            f"| {mode} | {r['backend']} | {r['step']:.3f} s | {r['build'] * 1e3:.1f} ms | {r['solve']:.3f} s "
            f"| {r['backward']:.3f} s | {ref / r['step']:.1f}x faster |"
        )
    spread = (max(grads) - min(grads)) / max(grads)
    print(f"# the design after the loop agrees across modes to {spread:.1e} (relative)")


if __name__ == "__main__":
    main()
