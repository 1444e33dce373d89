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
The modes take their steps in turn (round robin), so load from other work on the machine
falls on all of them alike.
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


class Loop:
    """One design loop building its matrix in one of the three ways."""

    def __init__(self, mode: str, K: sla.SparseTensor, row, col, b) -> None:
        self.mode, self.K, self.row, self.col, self.b = mode, K, row, col, b
        self.theta = torch.zeros(K.shape[0], dtype=K.dtype, device=b.device, requires_grad=True)
        self.A0 = sla.SparseTensor(K.values.clone(), row, col, tuple(K.shape)) if mode == "with_values" else None
        self.parts = {"build": [], "solve": [], "backward": [], "step": []}
        self.keep = None
        self.info = None

    def step(self, solve_kw: dict, record: bool) -> None:
        dev, theta, row, col = self.b.device, self.theta, self.row, self.col
        shape = tuple(self.K.shape)
        theta.grad = None
        _sync(dev)
        t0 = time.perf_counter()
        s = torch.exp(theta)
        values = self.K.values * s[row] * s[col]
        if self.mode == "fresh indices":
            A = sla.SparseTensor(values, row.clone(), col.clone(), shape)
        elif self.mode == "same indices":
            A = sla.SparseTensor(values, row, col, shape)
        else:
            A = self.A0.with_values(values)
        _sync(dev)
        t1 = time.perf_counter()
        x, self.info = sla.solve(A, self.b, return_info=True, **solve_kw)
        loss = x.sum()
        _sync(dev)
        t2 = time.perf_counter()
        loss.backward()
        _sync(dev)
        t3 = time.perf_counter()
        with torch.no_grad():  # a gradient step: new values every step (no factorisation can be reused)
            theta.sub_(0.1 * theta.grad / theta.grad.norm())
        if record:
            for k, v in zip(self.parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                self.parts[k].append(v)
        self.keep = A  # the previous matrix stays alive while the next is built, as in a user loop

    def result(self) -> dict:
        out = {k: statistics.median(v) for k, v in self.parts.items()}
        info = self.info
        out["backend"] = f"{info.backend}/{info.method}" + (f"+{info.preconditioner}" if info.preconditioner else "")
        out["theta_norm"] = float(self.theta.detach().norm())
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
    loops = [Loop(m, K, row, col, b) for m in ("fresh indices", "same indices", "with_values")]
    for it in range(a.steps + 1):  # round robin: the machine's load falls on every mode alike
        for lp in loops:
            lp.step(solve_kw, record=it > 0)  # the first step is a warm-up (one-time work of the reusing modes)
    rows = [(lp.mode, lp.result()) for lp in loops]
    grads = [r["theta_norm"] for _, r in rows]
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
