"""First solves on a GPU: the process's first AMG solve, and 16M-unknown first solves after it.

Issue "lean GPU AMG": the first AMG solve of a process within 0.2 s of a later one, a 16M AMG
first solve <= 0.6 s and a 16M GMG first solve <= 0.12 s on one H200.  The measurements:

* ``process``  a fresh Python process per case (``cold``: CUDA initialised only; ``spmv``: one
  sparse product run before; ``warmup``: after ``sla.warmup('cuda')``) solves a 65K 5-point system with AMG-CG, then the same on a new
  matrix, then again: the gap of the first to the second is what the process pays once;
  ``cold, jacobi``: the same with Jacobi-CG, which has no setup (what a solve alone pays);
* ``firsts``  in a fresh process, the first call of each kernel family the AMG setup and solve
  touch, timed one by one (CUDA loads a kernel's module on its first launch);
* ``sizes``  after a small AMG and GMG solve, new ``--n``^2 matrices (default 4000: 16M unknowns),
  each solved twice with AMG-CG and GMG-CG (eager), the matrix type detected or declared
  (``matrix_type='spd'``).  The first matrix of its size in the process also grows the device and
  pinned-host memory caches; the later new matrices do not.  Also the type detection of a new
  matrix and the numeric cache's digest of the values (one per solve) at that size and at 1000^2;
* ``trace`` (only with ``--only trace``, ``--pc amg`` or another preconditioner)  in a fresh process
  after one SpMV, the first solve and one on a new matrix with every ATen call synchronised and
  timed: each (operator, dtypes) whose first call exceeds its median by over 1 ms;
* ``vocabulary`` (only with ``--only vocabulary``)  PyTorch's spelling of an operation against the
  one sla's solvers use (:mod:`sla.kernels`), each on its first call in a fresh process that has
  already run the kernel families every solve loads (``BASE``);
* ``blocks`` (only with ``--only blocks``)  the AMG first solve (``matrix_type='spd'``) and its
  peak memory against the setup's block sizes: Galerkin products per row block
  (``GALERKIN_CHUNK``) and prolongator products per fine row (``PRODUCT_ROWS``), at 1000^2 and
  ``--n``^2, each after one solve of its size.

Usage (on a GPU)::

    PYTHONPATH=. python3 benchmarks/bench_first_solve.py                 # all three
    PYTHONPATH=. python3 benchmarks/bench_first_solve.py --only sizes --n 2000 --repeat 3
    PYTHONPATH=. python3 benchmarks/bench_first_solve.py --only blocks
    PYTHONPATH=. python3 benchmarks/bench_first_solve.py --only vocabulary
    PYTHONPATH=. python3 benchmarks/bench_first_solve.py --only process --device cpu   # the CPU's own first calls
    PYTHONPATH=. python3 benchmarks/bench_first_solve.py --only trace --pc jacobi

Writes markdown tables to stdout and ``DIR/bench_first_solve.md`` (``--out DIR``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
DEVICE = "cuda"  # --device: 'process' and 'trace' also run on the CPU


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _poisson(n: int):
    sys.path.insert(0, _HERE)
    from bench_iterative import _poisson2d_sorted

    return _poisson2d_sorted(n, DEVICE)


def _solve(A, pc, spd: bool):
    import sla

    b = torch.ones(A.shape[0], dtype=torch.float64, device=A.device)
    kw = {"matrix_type": "spd"} if spd else {}
    _sync()
    t0 = time.perf_counter()
    _, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner=pc, rtol=1e-8, return_info=True, **kw)
    _sync()
    return time.perf_counter() - t0, info


def process_case(case: str) -> str:
    """One row of the ``process`` table (run in a fresh process by :func:`process_rows`)."""
    torch.zeros(1, device=DEVICE)
    _sync()
    A = _poisson(256)
    if case == "spmv":
        (A @ torch.ones(A.shape[0], dtype=torch.float64, device=DEVICE)).sum().item()
    if case == "warmup":
        import sla

        print(f"sla.warmup: {sla.warmup(DEVICE):.3f} s", file=sys.stderr)
    pc = "jacobi" if case == "cold, jacobi" else "amg"
    first, info = _solve(A, pc, False)
    new, _ = _solve(_poisson(256), pc, False)
    again, _ = _solve(A, pc, False)
    return (
        f"| {case} | {first:.3f} | {new:.3f} | {again:.3f} | {first - new:.3f} | "
        f"{'yes' if 'pyamg' in sys.modules else 'no'} | {info.notes[-1] if pc == 'amg' else 'cg + jacobi'} |"
    )


def process_rows(processes: int = 1) -> list[str]:
    """The ``process`` table: each case in ``processes`` fresh processes (the cases alternated)."""
    rows = [
        "| process | first solve (s) | same on a new matrix (s) | again (s) | gap (s) | pyamg imported | ran |",
        "|---|---|---|---|---|---|---|",
    ]
    for _ in range(processes):
        for case in ("cold", "spmv", "warmup", "cold, jacobi"):
            rows.append(_fresh("--process-case", case).strip().splitlines()[-1])
    return rows


def _fresh(*args: str) -> str:
    """The standard output of this script run with ``args`` in a fresh Python process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(_HERE), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--device", DEVICE, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return out.stdout


def firsts_rows() -> list[str]:
    """In this (fresh) process: each kernel family's first call, then its second."""
    rows = ["| first call | first (ms) | second (ms) |", "|---|---|---|"]

    def timed(f):
        _sync()
        t0 = time.perf_counter()
        f()
        _sync()
        return 1e3 * (time.perf_counter() - t0)

    t0 = time.perf_counter()
    torch.zeros(1, device="cuda")
    _sync()
    rows.append(f"| CUDA context | {1e3 * (time.perf_counter() - t0):.1f} | - |")
    n = 65536
    i = torch.arange(n, device="cuda")
    crow = torch.arange(n + 1, device="cuda", dtype=torch.int32)
    A = torch.sparse_csr_tensor(crow, i.to(torch.int32), torch.ones(n, dtype=torch.float64, device="cuda"), (n, n))
    x = torch.ones(n, dtype=torch.float64, device="cuda")
    cases = {
        "CSR SpMV (cuSPARSE)": lambda: torch.mv(A, x),
        "CSR @ CSR (cuSPARSE SpGEMM)": lambda: A @ A,
        "vector norm": lambda: torch.linalg.vector_norm(x),
        "unique with inverse": lambda: torch.unique(i % 100, return_inverse=True),
        "stable sort": lambda: torch.sort(i.flip(0), stable=True),
        "repeat_interleave": lambda: torch.repeat_interleave(i[:10], i[:10]),
        "host eigvalsh 15x15": lambda: torch.linalg.eigvalsh(torch.eye(15, dtype=torch.float64)),
        "host inverse 300x300": lambda: torch.linalg.inv(2 * torch.eye(300, dtype=torch.float64)),
    }
    for name, f in cases.items():
        rows.append(f"| {name} | {timed(f):.1f} | {timed(f):.1f} |")
    return rows


# (what it computes, PyTorch's spelling, the spelling sla's solvers use): each timed on its first call
# in a fresh process that has already run BASE, the families every solve loads
VOCABULARY = [
    ("2-norm", "torch.linalg.vector_norm(x)", "(x.conj() * x).real.sum().sqrt()"),
    ("1 / x", "1 / x", "torch.div(x.new_ones(()), x)"),
    ("x^2 in place", "y.square_()", "y.mul_(y)"),
    ("a or b", "torch.logical_or(a, c)", "torch.where(a, a, c)"),
    ("min(x, y)", "torch.minimum(x, y)", "torch.where(x < y, x, y)"),
    ("max(x, -y)", "torch.maximum(x, y.neg())", "torch.where(x + y >= 0, x, y.mul(-1))"),
    ("sums at an index", "torch.zeros_like(x).index_add_(0, k, x)", "torch.zeros_like(x).scatter_add_(0, k, x)"),
    ("k mod 2^32", "k % 4294967296", "k & 4294967295"),
    ("coarsest inverse times b, float64", "D @ e", "(D * e.mT).sum(-1, keepdim=True)"),
    ("the same in float32", "D.float() @ e.float()", "(D.float() * e.float().mT).sum(-1, keepdim=True)"),
]
BASE = ["x * y", "x + y", "x - y", "x / y", "x.sum()", "x.amax()", "x.sqrt()", "torch.where(a, x, y)", "x > y",
        "x == y", "x.abs()", "torch.mv(A, x)", "x.addcmul_(y, y)", "x[k]", "torch.gather(x, 0, k)", "k & 7"]  # fmt: skip


def _vocabulary_globals() -> dict:
    n = 1 << 16
    x = torch.rand(n, dtype=torch.float64, device="cuda") + 1
    i = torch.arange(n, device="cuda", dtype=torch.int32)
    A = torch.sparse_csr_tensor(torch.arange(n + 1, device="cuda", dtype=torch.int32), i, x.clone(), (n, n))
    D = torch.rand(278, 278, dtype=torch.float64, device="cuda")
    k = torch.randint(0, n, (n,), device="cuda")
    g = {
        "torch": torch,
        "x": x,
        "y": x.clone(),
        "a": x > 1.5,
        "c": x < 1.2,
        "A": A,
        "D": D,
        "e": D[:, :1].clone(),
        "k": k,
    }
    return g


def vocabulary_case(code: str) -> str:
    """In this fresh process: BASE, then ``code`` twice; prints the two times (ms)."""
    g = _vocabulary_globals()

    def timed(c):
        _sync()
        t0 = time.perf_counter()
        eval(c, g)
        _sync()
        return 1e3 * (time.perf_counter() - t0)

    for c in BASE:
        timed(c)
    return f"{timed(code):.1f} {timed(code):.2f}"


def vocabulary_rows() -> list[str]:
    rows = [
        "| computes | PyTorch's spelling | first call (ms) | sla's spelling | first call (ms) |",
        "|---|---|---|---|---|",
    ]

    def first(code):
        return _fresh("--vocabulary-case", code).split()[-2]

    for what, torch_way, sla_way in VOCABULARY:
        rows.append(f"| {what} | `{torch_way}` | {first(torch_way)} | `{sla_way}` | {first(sla_way)} |")
    return rows


def trace_rows(pc: str) -> list[str]:
    """In this (fresh) process, after one SpMV: every ATen call of the first ``pc``-CG solve and of
    one on a new matrix, each synchronised and timed; the first call of each (operator, dtypes)
    against its median over both solves, where the excess is over 1 ms (CUDA loads a kernel's
    module on its first launch: what only a warm-up would remove)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: dict = {}
    where: dict = {}

    class Timed(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            leaves = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
            key = f"{func.__name__}({','.join(sorted({str(a.dtype).removeprefix('torch.') for a in leaves}))})"
            _sync()
            t0 = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            _sync()
            calls.setdefault(key, []).append(1e3 * (time.perf_counter() - t0))
            if key not in where:
                frames = [f for f in traceback.extract_stack() if f"{os.sep}sla{os.sep}" in f.filename]
                where[key] = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in frames[::-1][:3])
            return out

    torch.zeros(1, device=DEVICE)
    A = _poisson(256)
    (A @ torch.ones(A.shape[0], dtype=torch.float64, device=DEVICE)).sum().item()
    B = _poisson(256)
    _sync()
    with Timed():
        first, _ = _solve(A, pc, False)
        new, _ = _solve(B, pc, False)
    excess = []
    for key, ts in calls.items():
        rest = sorted(ts[1:]) or [0.0]
        extra = ts[0] - rest[len(rest) // 2]
        if extra > 1.0:
            excess.append((extra, key, len(ts)))
    excess.sort(reverse=True)
    rows = [
        f"traced {pc}-CG (65K 5-point): first solve {first:.3f} s, new matrix {new:.3f} s; "
        f"first calls' excess over 1 ms: {sum(e for e, _, _ in excess):.0f} ms in all",
        "",
        "| operator (dtypes) | first call's excess (ms) | calls | first called from |",
        "|---|---|---|---|",
    ]
    rows += [f"| `{key}` | {extra:.1f} | {n} | {where[key]} |" for extra, key, n in excess]
    return rows


def sizes_rows(n: int, repeat: int) -> list[str]:
    import sla
    from sla import gallery

    _solve(_poisson(256), "amg", False)
    _solve(gallery.poisson2d(256, device="cuda"), sla.precond.GMG(graph=False), False)
    rows = [
        f"| solve ({n}^2 = {n * n:,} unknowns) | matrix | type | first (s) | setup (s) | later (s) | iterations |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, build, pc in (
        ("AMG-CG", lambda: _poisson(n), lambda: "amg"),
        ("GMG-CG eager", lambda: gallery.poisson2d(n, device="cuda"), lambda: sla.precond.GMG(graph=False)),
    ):
        for k in range(repeat):
            for spd in (False, True):
                A = build()
                A.pattern.crow  # noqa: B018
                _sync()
                first, info = _solve(A, pc(), spd)
                later, _ = _solve(A, pc(), spd)
                which = "first of its size" if k == 0 and not spd else "new"
                rows.append(
                    f"| {name} | {which} | {'declared' if spd else 'detected'} | {first:.3f} | "
                    f"{info.setup_time:.3f} | {later:.3f} | {info.iterations} |"
                )
                del A
    from sla import structure

    rows += ["", "| type detection of a new matrix (`guess_matrix_type`) | entries | time (ms) |", "|---|---|---|"]
    structure.guess_matrix_type(_poisson(256))
    for m in (1000, n):
        A = _poisson(m)
        _sync()
        t0 = time.perf_counter()
        mtype = structure.guess_matrix_type(A)
        _sync()
        rows.append(f"| 5-point {m}^2 ({mtype}) | {A.nnz:,} | {1e3 * (time.perf_counter() - t0):.1f} |")
        del A
    from sla.numeric_cache import _digest

    rows += ["", "| digest of the values of | values | time (ms) |", "|---|---|---|"]
    for m in (1000, n):
        v = _poisson(m).values
        _digest(v)
        _sync()
        t0 = time.perf_counter()
        for _ in range(5):
            _digest(v)
        _sync()
        rows.append(f"| 5-point {m}^2 | {v.numel():,} | {1e3 * (time.perf_counter() - t0) / 5:.2f} |")
    return rows


def blocks_rows(n: int) -> list[str]:
    from sla.solvers.precond import spgemm, transfers

    rows = [
        "| Galerkin products per block | prolongator products per row | unknowns | first (s) | setup (s) | peak B/unknown |",
        "|---|---|---|---|---|---|",
    ]
    saved = spgemm.GALERKIN_CHUNK, transfers.PRODUCT_ROWS
    try:
        for m in (1000, n):
            _solve(_poisson(m), "amg", True)  # the memory caches hold a solve of this size
            for gc, pr in ((1 << 22, 0.25), (1 << 24, 0.25), (1 << 24, 0.5), (1 << 25, 1.0)):
                spgemm.GALERKIN_CHUNK, transfers.PRODUCT_ROWS = gc, pr
                torch.cuda.empty_cache()
                A = _poisson(m)
                _sync()
                matrix = sum(t.numel() * t.element_size() for t in (A.values, A.pattern.crow, A.pattern.ccol))
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                first, info = _solve(A, "amg", True)
                peak = (torch.cuda.max_memory_allocated() - base + matrix) / A.shape[0]
                rows.append(f"| {gc >> 20}M | {pr:g} | {m * m:,} | {first:.3f} | {info.setup_time:.3f} | {peak:.0f} |")
                del A
    finally:
        spgemm.GALERKIN_CHUNK, transfers.PRODUCT_ROWS = saved
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["process", "firsts", "sizes", "blocks", "vocabulary", "trace"], default=None)
    ap.add_argument("--n", type=int, default=4000, help="grid side of the 'sizes' matrices (n^2 unknowns)")
    ap.add_argument("--repeat", type=int, default=2, help="new matrices per solver in 'sizes'")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--process-case", choices=["cold", "spmv", "warmup", "cold, jacobi"], help=argparse.SUPPRESS)
    ap.add_argument("--vocabulary-case", help=argparse.SUPPRESS)
    ap.add_argument("--pc", default="amg", help="the preconditioner 'trace' traces")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="'cpu': only 'process' and 'trace'")
    ap.add_argument("--processes", type=int, default=1, help="fresh processes per case in 'process'")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu" and not (args.process_case or args.only in ("process", "trace")):
        raise SystemExit("--device cpu measures only --only process and --only trace")
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_first_solve.py measures GPU first solves: no CUDA device here (--device cpu)")
    if args.process_case:
        print(process_case(args.process_case))
        return
    if args.vocabulary_case:
        print(vocabulary_case(args.vocabulary_case))
        return
    if args.only == "firsts":
        tables = [firsts_rows()]
    elif args.only == "blocks":
        tables = [blocks_rows(args.n)]
    elif args.only == "vocabulary":
        tables = [vocabulary_rows()]
    elif args.only == "trace":
        tables = [trace_rows(args.pc)]
    else:
        tables = []
        if args.only in (None, "process"):
            tables.append(process_rows(args.processes))
        if args.only is None:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--only", "firsts", "--out", args.out],
                env=dict(
                    os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(_HERE), os.environ.get("PYTHONPATH", "")])
                ),
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            tables.append([line for line in out.stdout.splitlines() if line.startswith("|")])
        if args.only in (None, "sizes"):
            tables.append(sizes_rows(args.n, args.repeat))
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    card = f"card: {where}, torch {torch.__version__}"
    text = "\n\n".join([card, *("\n".join(t) for t in tables)]) + "\n"
    print(text)
    if args.only != "firsts":
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "bench_first_solve.md")
        with open(path + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
