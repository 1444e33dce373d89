"""SIMP topology optimisation: wall time per design iteration, sla against the 88-line reference.

One design iteration = filter, SIMP stiffness assembly, state solve, adjoint solve (autograd),
optimality-criteria update.  Modes:

* CPU 2D (default): the half MBB beam on 200 x 100 quads (40,602 unknowns), 100 iterations
  (``tol=1e-12``: no early stop), sla's default solver (CHOLMOD, the factorisation reused by the
  adjoint solve); the reference is a NumPy/SciPy port of the 88-line code (Andreassen et al.
  2011; its hand-derived sensitivities, CHOLMOD on the free dofs when scikit-sparse is
  installed, else SuperLU) run for the same iterations on the same machine
  (``--reference-iters``, default 10: its time per iteration is what is compared).
* GPU 3D (``--device cuda --3d``): the cantilever on 192 x 96 x 64 hexahedra (1.18M cells,
  3.65M unknowns; the counts halve five times), CG preconditioned by geometric multigrid with
  Galerkin coarse operators built element by element (``--precond gmg``, the default in 3D:
  :class:`sla.assembly.galerkin.GridHierarchy`, rebuilt every design iteration) or by
  smoothed-aggregation AMG (``--precond amg``, set up again every iteration).
  ``--variants`` then times one state + adjoint solve on the final design with each of the given
  preconditioners (``direct``, ``amg``, ``gmg:<cycle>:<max_coarse>``), so they are compared on
  the same matrix.

Writes the picture of the final design (``--picture``, default ``topology_<case>.png``) and
prints one table row (markdown).  torch runs on one thread on the CPU.

    python benchmarks/bench_topology.py                       # CPU, 200 x 100, 100 iterations
    python benchmarks/bench_topology.py --nelx 60 --nely 20 --iters 20     # quick
    python benchmarks/bench_topology.py --device cuda --3d                 # the H200 run
    python benchmarks/bench_topology.py --device cuda --3d --iters 20 --variants amg,gmg:V:500,gmg:W:500
    python benchmarks/bench_topology.py --3d --nelx 32 --nely 16 --nelz 16 --iters 20     # CPU, small
"""

from __future__ import annotations

import argparse
import os
import platform
import time

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sla.design import SIMP, cantilever, mbb_beam  # noqa: E402


def picture(case, x, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = case.mesh.points[case.mesh.cells].mean(1).cpu().numpy()
    ix = np.floor(c).astype(int)
    n = ix.max(0) + 1
    grid = np.zeros(tuple(n))
    grid[tuple(ix.T)] = x.detach().cpu().numpy()
    if grid.ndim == 2:
        fig, ax = plt.subplots(figsize=(10, 10 * n[1] / n[0] + 0.8))
        ax.imshow(grid.T, origin="lower", cmap="gray_r", vmin=0, vmax=1, interpolation="none")
        ax.axis("off")
    else:  # 3D: the mid-plane z = nelz / 2 and the mean density through the thickness
        fig, axes = plt.subplots(2, 1, figsize=(10, 2 * 10 * n[1] / n[0] + 1.2))
        for ax, img, sub in zip(axes, (grid[:, :, n[2] // 2], grid.mean(2)), ("mid-plane z", "mean over z")):
            ax.imshow(img.T, origin="lower", cmap="gray_r", vmin=0, vmax=1, interpolation="none")
            ax.set_title(sub, fontsize=9)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def reference_88(nelx: int, nely: int, iters: int, volfrac: float, penal: float, rmin: float) -> float:
    """Seconds per iteration of the 88-line algorithm (NumPy/SciPy port, density filter)."""
    import scipy.sparse as sp

    try:
        from sksparse.cholmod import cholesky as solve_spd
    except ImportError:
        import scipy.sparse.linalg as spla

        def solve_spd(K):
            return spla.splu(K.tocsc()).solve

    nu, E0, Emin = 0.3, 1.0, 1e-9
    A11 = np.array([[12, 3, -6, -3], [3, 12, 3, 0], [-6, 3, 12, -3], [-3, 0, -3, 12]])
    A12 = np.array([[-6, -3, 0, 3], [-3, -6, -3, -6], [0, -3, -6, 3], [3, -6, 3, -6]])
    B11 = np.array([[-4, 3, -2, 9], [3, -4, -9, 4], [-2, -9, -4, -3], [9, 4, -3, -4]])
    B12 = np.array([[2, -3, 4, -9], [-3, 2, 9, -2], [4, 9, 2, 3], [-9, -2, 3, 2]])
    KE = 1 / (1 - nu**2) / 24 * (np.block([[A11, A12], [A12.T, A11]]) + nu * np.block([[B11, B12], [B12.T, B11]]))
    nodenrs = np.arange((1 + nelx) * (1 + nely)).reshape(1 + nely, 1 + nelx, order="F")
    edofVec = (2 * nodenrs[:-1, :-1] + 2).reshape(-1, order="F")
    edofMat = edofVec[:, None] + np.array([0, 1, 2 * nely + 2, 2 * nely + 3, 2 * nely, 2 * nely + 1, -2, -1])
    iK = np.kron(edofMat, np.ones((8, 1), dtype=int)).reshape(-1)
    jK = np.kron(edofMat, np.ones((1, 8), dtype=int)).reshape(-1)
    ndof = 2 * (nelx + 1) * (nely + 1)
    F = np.zeros(ndof)
    F[1] = -1
    free = np.setdiff1d(np.arange(ndof), np.union1d(np.arange(0, 2 * (nely + 1), 2), [ndof - 1]))
    # filter (vectorised construction of the same H as the loops of the paper)
    r = int(np.ceil(rmin)) - 1
    ex, ey = np.meshgrid(np.arange(nelx), np.arange(nely), indexing="ij")
    I, J, S = [], [], []
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            ok = (ex + dx >= 0) & (ex + dx < nelx) & (ey + dy >= 0) & (ey + dy < nely)
            I.append((ex * nely + ey)[ok])
            J.append(((ex + dx) * nely + ey + dy)[ok])
            S.append(np.full(ok.sum(), max(0.0, rmin - np.hypot(dx, dy))))
    H = sp.csr_array((np.concatenate(S), (np.concatenate(I), np.concatenate(J))), shape=(nelx * nely,) * 2)
    Hs = np.asarray(H.sum(1)).ravel()
    x = np.full(nelx * nely, volfrac)
    xPhys = x.copy()
    t0 = time.perf_counter()
    for _ in range(iters):
        sK = (KE.reshape(-1)[:, None] * (Emin + xPhys**penal * (E0 - Emin))).reshape(-1, order="F")
        K = sp.csc_array((sK, (iK, jK)), shape=(ndof, ndof))
        K = ((K + K.T) / 2)[free][:, free].tocsc()
        U = np.zeros(ndof)
        U[free] = solve_spd(K)(F[free])
        Ue = U[edofMat]
        ce = np.sum((Ue @ KE) * Ue, 1)
        dc = H @ ((-penal * (E0 - Emin) * xPhys ** (penal - 1) * ce) / Hs)
        dv = H @ (1 / Hs)
        l1, l2 = 0.0, 1e9
        while (l2 - l1) / (l1 + l2) > 1e-3:
            lmid = 0.5 * (l2 + l1)
            xnew = np.clip(x * np.sqrt(np.maximum(-dc, 0) / dv / lmid), np.maximum(x - 0.2, 0), np.minimum(x + 0.2, 1))
            xPhys = (H @ xnew) / Hs
            l1, l2 = (lmid, l2) if xPhys.sum() > volfrac * nelx * nely else (l1, lmid)
        x = xnew
    return (time.perf_counter() - t0) / iters


def _solver3d(precond: str, cycle: str, max_coarse: int, rtol: float) -> dict:
    """The solver options of the 3D runs: CG with ``precond`` (``gmg`` with a cycle and coarse size)."""
    if precond == "direct":
        return "direct"
    solver = dict(backend="pytorch", method="cg", rtol=rtol, maxiter=2000, on_failure="warn")
    if precond == "gmg":
        from sla.solvers.precond import GMG

        return dict(solver, preconditioner=GMG(cycle=cycle, max_coarse=max_coarse))
    return dict(solver, preconditioner=precond)


def per_first(seconds: list) -> str:
    return f"{seconds[0]:.3f}, median {np.median(seconds):.3f}"


def compare(opt, design, variant: str, rtol) -> None:
    """One state + adjoint solve on ``design`` with preconditioner ``variant`` (``amg``,
    ``gmg:<cycle>:<max_coarse>``): time (setup included) and CG iterations."""
    name, *rest = variant.split(":")
    opt.set_solver(_solver3d(name, rest[0] if rest else "W", int(rest[1]) if len(rest) > 1 else 500, rtol))
    # warm-up (structural setup, kernels) on a nearby design: the timed call must not find its
    # factorisation or hierarchy cached for these very values
    opt.sensitivities((design * 0.999).clamp(0, 1))
    sync = torch.cuda.synchronize if design.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    c, _, _ = opt.sensitivities(design)
    sync()
    dt = time.perf_counter() - t0
    info = opt.last_info
    sizes = opt.hierarchy.sizes if opt.hierarchy is not None else "-"
    cg = "-" if info.iterations is None else info.iterations
    print(
        f"# variant {variant}: state + adjoint {dt:.3f} s, CG iterations {cg}, "
        f"setup {(info.setup_time or 0) + opt.last_setup_time:.3f} s, solve {info.solve_time or 0:.3f} s, compliance {c:.6g}, levels {sizes}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--3d", dest="three_d", action="store_true", help="the 3D cantilever on hexahedra")
    ap.add_argument("--nelx", type=int, default=None)
    ap.add_argument("--nely", type=int, default=None)
    ap.add_argument("--nelz", type=int, default=None)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--volfrac", type=float, default=None)
    ap.add_argument("--rmin", type=float, default=None)
    ap.add_argument("--penal", type=float, default=3.0)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--precond", default="gmg", help="3D: preconditioner of CG (gmg, amg, jacobi, ...)")
    ap.add_argument("--cycle", default="W", choices=["V", "W"], help="3D gmg: multigrid cycle")
    ap.add_argument("--max-coarse", type=int, default=1500, help="3D gmg: dofs of the coarsest level at most")
    ap.add_argument("--rtol", type=float, default=1e-6, help="3D: CG relative tolerance")
    ap.add_argument("--variants", default="", help="3D: preconditioners to compare on the final design")
    ap.add_argument("--reference-iters", type=int, default=10, help="iterations of the 88-line reference (2D; 0: skip)")
    ap.add_argument("--picture", default=None)
    ap.add_argument("--save-design", default=None, help="also save the final densities (torch.save) here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    if a.three_d:
        nelx, nely, nelz = a.nelx or 192, a.nely or 96, a.nelz or 64
        volfrac, rmin = a.volfrac or 0.12, a.rmin if a.rmin is not None else 1.5
        case = cantilever(nelx, nely, nelz, dtype=dtype, device=dev)
        solver = _solver3d(a.precond, a.cycle, a.max_coarse, a.rtol)
        label = f"3D cantilever {nelx}x{nely}x{nelz}"
    else:
        nelx, nely, nelz = a.nelx or 200, a.nely or 100, None
        volfrac = a.volfrac or 0.5
        rmin = a.rmin if a.rmin is not None else 1.5 * nelx / 60  # the 60 x 20 radius, scaled with the mesh
        case = mbb_beam(nelx, nely, dtype=dtype, device=dev)
        solver = None
        label = f"2D MBB beam {nelx}x{nely}"
    t0 = time.perf_counter()
    opt = SIMP(case.mesh, case.fixed, case.load, volfrac=volfrac, penal=a.penal, rmin=rmin, solver=solver)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    its = []

    def progress(it: int, c: float, vol: float, change: float) -> None:
        its.append(opt.last_info.iterations)
        if it % 10 == 0 or it == 1:
            print(
                f"# it {it}: compliance {c:.5g}, CG iterations {its[-1]}, {time.perf_counter() - t0:.1f} s", flush=True
            )

    res = opt.optimize(maxiter=a.iters, tol=1e-12, callback=progress)
    total = time.perf_counter() - t0
    info = opt.last_info
    per = np.array(res.seconds)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {label}: {case.mesh.n_cells:,} cells, {opt.basis.ndofs:,} unknowns, nnz(K) {opt.stiffness_pattern.nnz:,}")
    print(
        f"# device {dev} ({name}), torch threads {torch.get_num_threads()}, {a.dtype}, solver {info.backend}/{info.method}"
        f" precond {info.preconditioner} (last solve: {info.iterations} iterations)"
    )
    print(f"# volfrac {volfrac} penal {a.penal} rmin {rmin:.3g}; setup {setup:.2f} s")
    if opt.hierarchy is not None:
        h = opt.hierarchy
        print(f"# gmg: {h.cycle}-cycle, dofs per level {h.sizes}, Chebyshev degree {h.degree}")
    if its and its[0] is not None:
        print(f"# CG iterations of the state solves: first {its[0]}, median {int(np.median(its))}, max {max(its)}")
        print(f"# per iteration (s): first {per_first(res.seconds)}, max {max(res.seconds):.3f}")
    st, sv = (info.setup_time or 0.0) + opt.last_setup_time, info.solve_time or 0.0
    print(f"# last state solve: setup {st:.3f} s, solve {sv:.3f} s, residual {info.residual}")
    ref = None
    if not a.three_d and a.reference_iters > 0:
        ref = reference_88(nelx, nely, a.reference_iters, volfrac, a.penal, rmin)
    print(
        "| case | cells | unknowns | iterations | total | per iteration (median) | 88-line per iteration | ratio | compliance first → last | volume |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    refs = f"{ref:.3f} s" if ref else "-"
    ratio = f"{np.median(per) / ref:.2f}" if ref else "-"
    print(
        f"| {label} | {case.mesh.n_cells:,} | {opt.basis.ndofs:,} | {res.iterations} | {total:.1f} s | {np.median(per):.3f} s "
        f"| {refs} | {ratio} | {res.compliance[0]:.4g} → {res.compliance[-1]:.4g} | {res.volume[-1]:.4f} |"
    )
    if a.save_design:
        torch.save({"x": res.x.cpu(), "cells": (nelx, nely, nelz), "compliance": res.compliance}, a.save_design)
    for v in filter(None, a.variants.split(",")):
        compare(opt, res.design, v, a.rtol)
    path = a.picture or f"topology_{'cantilever3d' if a.three_d else 'mbb'}.png"
    try:
        picture(case, res.x, path, f"{label}: compliance {res.compliance[-1]:.4g} after {res.iterations} iterations")
        print(f"# picture: {path}")
    except ImportError:
        print("# no picture: matplotlib is not installed (pip install matplotlib)")


if __name__ == "__main__":
    main()
