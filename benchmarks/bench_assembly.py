"""Laplacian assembly on ~1M-cell meshes: sla.assembly vs scikit-fem, same CPU, one run.

Cases (``--case``): ``p1-tri`` (default, 999,698 triangles), ``p2-tri``, ``p1-tet``, ``q1-hex``;
both libraries use the same mesh arrays and the same quadrature.

Measures, for each library in its own subprocess (so peak memory is its own):

* first assembly: basis (geometry) + sparsity pattern + element matrices + scatter,
  on a fresh mesh object (no caches);
* re-assembly with a new per-cell coefficient ``k`` on the same mesh/basis
  (``int k grad u . grad v``): sla reuses the cached pattern and scatter map
  (first call: one streamed pass over blocks of cells; second call: also
  builds the cached coefficient -> values map; later calls: one sparse
  mat-vec), scikit-fem re-runs ``asm`` on its basis;
* peak resident memory of the worker above its baseline after building the mesh.

Both libraries run single-threaded (torch.set_num_threads(1), OMP/MKL/OpenBLAS
threads = 1).  Times are the best of ``--repeat`` runs.  The script checks that
both matrices agree before reporting.

    python benchmarks/bench_assembly.py            # P1, 1M triangles (n = 707)
    python benchmarks/bench_assembly.py --case p1-tet
    python benchmarks/bench_assembly.py --n 300    # quick
    python benchmarks/bench_assembly.py --n 2237 --device cuda   # 10M triangles, sla alone on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# case -> (sla generator, sla element, scikit-fem mesh, element, node order of skfem's cell, default n)
CASES = {
    "p1-tri": ("unit_square(n)", "ElementP1()", "MeshTri", "ElementTriP1", None, 707),
    "p2-tri": ("unit_square(n)", "ElementP2()", "MeshTri", "ElementTriP2", None, 300),
    "p1-tet": ("unit_cube(n)", "ElementP1('tetra')", "MeshTet", "ElementTetP1", None, 55),
    "q1-hex": (
        "unit_cube(n, 'hex')",
        "ElementQ1('hexahedron')",
        "MeshHex",
        "ElementHex1",
        [0, 4, 3, 1, 7, 5, 2, 6],
        100,
    ),
}


def worker(lib: str, case: str, n: int, repeat: int, device: str = "cpu") -> dict:
    import numpy as np
    import scipy.sparse  # noqa: F401  (both libraries use it; keep its import out of the timings)
    import torch

    torch.set_num_threads(1)
    import sla.assembly as asm
    from sla.assembly import BilinearForm, CellBasis, Mesh, assemble, dot, grad, laplace

    gen, el, sk_mesh, sk_el, order, _ = CASES[case]
    base = eval(gen, {"unit_square": asm.unit_square, "unit_cube": asm.unit_cube, "n": n})
    element = eval(el, vars(asm))
    P, T = base.points.to(device), base.cells.to(device)
    intorder = 2 * element.degree  # the same quadrature for both libraries
    E = T.shape[0]
    rng = np.random.default_rng(0)
    out = {"lib": lib, "cells": E, "nodes": P.shape[0]}
    first, again = [], []
    if lib == "sla":
        rss0 = _rss_mb()
        mesh = basis = A = None
        for _ in range(repeat):
            del mesh, basis, A  # one generation alive at a time (peak memory)
            _sync(device)
            t = time.perf_counter()
            mesh = Mesh(P, T, base.cell_type)
            basis = CellBasis(mesh, element, intorder)
            A = assemble(laplace, basis)
            _sync(device)
            first.append(time.perf_counter() - t)
        for _ in range(repeat + 2):  # 1st: one streamed pass; 2nd: also builds the coefficient map
            k = torch.from_numpy(rng.random(E) + 0.5).to(device)
            _sync(device)
            t = time.perf_counter()
            A = assemble(laplace, basis, k=k)
            _sync(device)
            again.append(time.perf_counter() - t)
        out["again_first"], out["again_second"] = again.pop(0), again.pop(0)
        Ak = A.to_scipy()
        # the same operator written as a user form (the general, streamed path)
        user = BilinearForm(lambda u, v, w: w.k * dot(grad(u), grad(v)))
        times = []
        for _ in range(repeat):
            _sync(device)
            t = time.perf_counter()
            Au = assemble(user, basis, k=k)
            _sync(device)
            times.append(time.perf_counter() - t)
        out["user"] = min(times)
        if float((Au.values - A.values).abs().max()) > 1e-12 * float(A.values.abs().max()):
            raise SystemExit("the user form disagrees with the ready-made one")
    else:
        import skfem
        from skfem.helpers import dot, grad
        from skfem.models.poisson import laplace as sk_laplace

        @skfem.BilinearForm
        def sk_diffusion(u, v, w):
            return w.k * dot(grad(u), grad(v))

        p, t_ = P.numpy().T.copy(), (T.numpy() if order is None else T.numpy()[:, order]).T.copy()
        rss0 = _rss_mb()
        mesh = basis = A = None
        for _ in range(repeat):
            del mesh, basis, A
            t = time.perf_counter()
            mesh = getattr(skfem, sk_mesh)(p, t_)
            basis = skfem.Basis(mesh, getattr(skfem, sk_el)(), intorder=intorder)
            A = skfem.asm(sk_laplace, basis)
            first.append(time.perf_counter() - t)
        nq = basis.X.shape[1]
        for _ in range(repeat + 2):
            k = rng.random(E) + 0.5
            t = time.perf_counter()
            A = skfem.asm(sk_diffusion, basis, k=np.repeat(k[:, None], nq, 1))
            again.append(time.perf_counter() - t)
        out["again_first"], out["again_second"] = again.pop(0), again.pop(0)
        out["user"] = min(again)  # scikit-fem's asm always runs a user-written form
        Ak = A.tocsr()
    out.update(first=min(first), again=min(again), peak_mb=_peak_mb() - rss0)
    # numbering-independent fingerprints of the last matrix (same seed, same k) for the cross-check
    out["check"] = [float(Ak.diagonal().sum()), float((Ak.data**2).sum())]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=sorted(CASES), default="p1-tri")
    ap.add_argument("--n", type=int, default=None, help="cells per side (default: about 1M cells; p2-tri: 180k)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--worker", choices=["sla", "skfem"])
    ap.add_argument("--device", default="cpu", help="sla only on this device (e.g. cuda); no scikit-fem comparison")
    args = ap.parse_args()
    args.n = args.n or CASES[args.case][-1]
    if args.worker:
        print(json.dumps(worker(args.worker, args.case, args.n, args.repeat, args.device)))
        return
    if args.device != "cpu":
        s = worker("sla", args.case, args.n, args.repeat, args.device)
        print(
            f"sla on {args.device}: {s['cells']:,} triangles; first assembly {s['first']:.3f} s, "
            f"re-assembly 1st {s['again_first']:.3f} s, 2nd {s['again_second']:.3f} s, later {s['again']:.4f} s"
        )
        return
    env = dict(os.environ, **THREADS)
    res = {}
    for lib in ("skfem", "sla"):
        r = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                lib,
                "--case",
                args.case,
                "--n",
                str(args.n),
                "--repeat",
                str(args.repeat),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        res[lib] = json.loads(r.stdout.strip().splitlines()[-1])
    s, k = res["sla"], res["skfem"]
    rel = max(abs(a - b) / abs(b) for a, b in zip(s["check"], k["check"]))
    if rel > 1e-10:
        raise SystemExit(f"matrices differ: relative fingerprint mismatch {rel:.2e}")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{args.case} Laplacian, {s['cells']:,} cells, {s['nodes']:,} nodes; {cpu}; 1 thread; best of {args.repeat}")
    print("| step | scikit-fem | sla | speed-up |")
    print("|---|---|---|---|")
    print(
        f"| first assembly (basis + pattern + matrix) | {k['first']:.3f} s | {s['first']:.3f} s | {k['first'] / s['first']:.1f}x |"
    )
    rows = [
        ("1st re-assembly, new per-cell coefficient (sla: one streamed pass)", "again_first"),
        ("2nd re-assembly (sla: also builds its cached coefficient map)", "again_second"),
        (f"later re-assemblies (best of {args.repeat})", "again"),
        ("re-assembly with the form written by the user (sla: general streamed path)", "user"),
    ]
    for label, key in rows:
        print(f"| {label} | {k[key]:.3f} s | {s[key]:.3f} s | {k[key] / s[key]:.1f}x |")
    print(f"| peak memory above baseline | {k['peak_mb']:.0f} MiB | {s['peak_mb']:.0f} MiB | |")
    print(f"(matrices agree: trace and Frobenius norm within {rel:.1e})")


if __name__ == "__main__":
    main()
