"""Kernel launches and host synchronisations of geometric multigrid CG, counted on any device.

On a GPU a 16M-unknown GMG-CG solve is bound by kernel launches and host round trips as much
as by memory traffic, and those counts are the same on the CPU (the same torch code path),
so this script measures them where no GPU is at hand.  A ``TorchDispatchMode`` counts every
torch op dispatched (each is at least one kernel launch on CUDA) and the ops that make the
host wait for the device:

* ``_local_scalar_dense`` (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``),
* ``nonzero`` / boolean-mask indexing / ``masked_select`` / ``unique`` / ``bincount`` (an output
  size that depends on the data), ``repeat_interleave`` without ``output_size``,
* device-to-host copies (``.cpu()``, ``.tolist()``, ``.numpy()``: counted by patching those
  methods, since on the CPU they are no-ops below the dispatcher),

in three phases: (a) the GMG setup on a new matrix (``GeometricMultigrid(A)``) and the whole
first ``A.solve`` (structure detection and setup included), (b) one V-cycle, (c) one CG
iteration with the V-cycle (the difference of two solves that run 3 and 2 iterations).
``--as-cuda`` takes the code path a CUDA tensor takes (stencil transfers, adaptive looks); the
CUDA graph of the coarse levels is emulated there (its kernels uncounted, its two copies counted;
add one launch for the replay).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/profile_gmg.py --n 1000 --as-cuda
    python benchmarks/profile_gmg.py --n 4000 --device cuda      # on a GPU: also times (ms)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_SYNC = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "bincount",
    "equal",
}


_VIEWS = {
    "slice",
    "select",
    "view",
    "_unsafe_view",
    "alias",
    "permute",
    "unsqueeze",
    "squeeze",
    "expand",
    "as_strided",
    "t",
    "transpose",
    "_reshape_alias",
    "detach",
    "unbind",
    "split",
    "split_with_sizes",
    "diagonal",
    "view_as_real",
    "lift_fresh",
    "sym_size",
    "sym_stride",
    "sym_numel",
    "sym_storage_offset",
    "is_same_size",
    "empty",
    "new_empty",
    "empty_like",
    "empty_strided",
    "new_empty_strided",
}
"""Ops that make a view or an uninitialised allocation (no kernel on a GPU; host dispatch time only)."""


def _bool_index(args) -> bool:
    idx = args[1] if len(args) > 1 else None
    if isinstance(idx, (list, tuple)):
        return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in idx)
    return False


class OpCount(TorchDispatchMode):
    """Counts dispatched ops (kernel launches) and the ones that synchronise the host."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.syncs: collections.Counter = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        if name in _VIEWS:
            self.views += 1
        if name in _SYNC:
            self.syncs[name] += 1
        elif name in ("index", "index_put", "index_put_") and _bool_index(args):
            self.syncs[name + "[bool]"] += 1
        elif name == "repeat_interleave" and kwargs.get("output_size") is None and len(args) < 3:
            self.syncs[name] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting():
    """An :class:`OpCount` with the device-to-host methods counted as synchronisations too."""
    mode = OpCount()
    saved = {m: getattr(torch.Tensor, m) for m in ("cpu", "tolist", "numpy")}

    def wrap(m, f):
        def g(self, *a, **k):
            mode.syncs[m] += 1
            return f(self, *a, **k)

        return g

    for m, f in saved.items():
        setattr(torch.Tensor, m, wrap(m, f))
    try:
        with mode:
            yield mode
    finally:
        for m, f in saved.items():
            setattr(torch.Tensor, m, f)


def _sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def measure(fn, dev):
    """(result, (kernels, all ops), syncs, op counts, sync kinds) of one call."""
    with counting() as c:
        out = fn()
    ops = sum(c.ops.values())
    return out, (ops - c.views, ops), sum(c.syncs.values()), c.ops, c.syncs


def timed(fn, dev, reps=1):
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    _sync(dev)
    return out, (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="grid side (n^2 unknowns, 5-point Laplacian)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--as-cuda", action="store_true", help="the CUDA code path on the CPU (stencil transfers)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=0, help="list the most frequent ops and the sync kinds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import sla
    from sla import gallery
    from sla.solvers import krylov
    from sla.solvers.precond.gmg import GeometricMultigrid

    dev = args.device
    opts = {"transfers": "stencil"} if (args.as_cuda or dev == "cuda") else {}
    check = "adaptive" if (args.as_cuda or dev == "cuda") else 1
    print(f"5-point {args.n}^2 on {dev} ({'CUDA path' if opts else 'CPU path'}), {torch.get_num_threads()} thread(s)")
    rows = []

    def row(label, fn, reps=1):
        out, ops, syncs, top, kinds = measure(fn, dev)
        _, t = timed(fn, dev, reps)
        rows.append(f"| {label} | {ops[0]} | {ops[1]} | {syncs} | {1e3 * t:.1f} |")
        if args.top:
            top = collections.Counter({k: v for k, v in top.items() if k not in _VIEWS})
            print(label, "kernels:", dict(top.most_common(args.top)), "syncs:", dict(kinds))
        return out

    gallery.poisson2d(16, device=dev).solve(torch.ones(256, dtype=torch.float64, device=dev), backend="pytorch")
    A = gallery.poisson2d(args.n, device=dev)
    A.pattern.crow  # noqa: B018
    eager = {"graph": False} if dev == "cuda" else {}
    M = row("GMG setup (new matrix)", lambda: GeometricMultigrid(A, **opts, **eager))
    b = torch.ones(1, A.shape[0], 1, dtype=A.dtype, device=dev)
    r = b.clone()
    row("one V-cycle", lambda: M(r), reps=3)
    G = GeometricMultigrid(A, **opts, **({"graph": True} if dev == "cuda" else {}))
    if dev != "cuda":  # what the graph leaves of a cycle, emulated: the coarse levels uncounted
        _emulate_graph(G)
    G(r), G(r)  # eager, then capture
    row("one V-cycle, coarse levels from a CUDA graph (+1 replay launch)", lambda: G(r), reps=3)
    if dev == "cuda":
        print("graph:", G.graph_status())
    mv = _mv(A)

    def cg(k):
        return lambda: krylov.cg(mv, b, precond=M, rtol=0.0, maxiter=k, check_every=check)

    _, o3, s3, _, _ = measure(cg(3), dev)
    _, o2, s2, _, _ = measure(cg(2), dev)
    _, t3 = timed(cg(3), dev)
    _, t2 = timed(cg(2), dev)
    rows.append(
        f"| one CG iteration (V-cycle included) | {o3[0] - o2[0]} | {o3[1] - o2[1]} | {s3 - s2} | "
        f"{1e3 * (t3 - t2):.1f} |"
    )
    kw = dict(backend="pytorch", method="cg", preconditioner="gmg", rtol=1e-8, options=opts or None)

    def first():
        B = gallery.poisson2d(args.n, device=dev)
        B.pattern.crow  # noqa: B018
        _sync(dev)
        t0 = time.perf_counter()
        with counting() as c:
            x, info = sla.solve(B, b[0, :, 0], return_info=True, **kw)
        _sync(dev)
        return c, time.perf_counter() - t0, info

    c, t, info = first()
    if args.top:
        top = collections.Counter({k: v for k, v in c.ops.items() if k not in _VIEWS})
        print("first solve", "kernels:", dict(top.most_common(args.top)), "syncs:", dict(c.syncs))
    ops = sum(c.ops.values())
    rows.append(
        f"| first solve: detection + setup + {info.iterations} iterations | {ops - c.views} | {ops} | "
        f"{sum(c.syncs.values())} | {1e3 * t:.1f} (counted) |"
    )
    print("| phase | kernels | ops incl. views | host syncs | time (ms) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


def _emulate_graph(M) -> None:
    """On the CPU: the coarse cycle runs outside the counter, and the wrapper's own work (the copy
    into the static input, the copy of the static output) is counted as on a GPU."""
    from torch.utils._python_dispatch import _disable_current_modes

    from sla.solvers.precond.multigrid import Multigrid

    h, c = M.hierarchies[0], M.coarse[0]

    def replayed(b):
        static = b.clone()
        with _disable_current_modes():
            out = Multigrid._cycle(M, h, c, 1, static)
        return out.clone()

    M._graph = {id(h): replayed}


def _mv(A):
    from sla.products import csr_matmul

    C = A.pattern.csr(A._flat()[0])
    return lambda x: csr_matmul(C, x[0]).unsqueeze(0)


if __name__ == "__main__":
    main()
