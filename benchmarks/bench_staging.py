"""Host <-> GPU copies of large arrays: pageable, a whole pinned buffer, and sla.staging's stage.

The AMG setup's standard aggregation runs on the host: the strength graph's arrays go down to
it and the aggregates come back (16M unknowns: 64 + 320 MB down, 64 MB up).  Each method runs in
a fresh process (what the first copy of its size costs matters: page-locking fresh host memory
is slower than the copy): a 1 MB copy (the process's first, which pays one-off costs of its own),
then three copies of the size in a row:

* ``pageable``  ``t.cpu()`` / ``t.to('cuda')``;
* ``pinned``    a whole page-locked buffer from torch's caching host allocator, then the copy
  (the allocator keeps the buffer: later copies of that size reuse it);
* ``staged``    ``sla.staging.to_host`` / ``to_device`` (two reused 32 MB pinned buffers, the
  bus copy of one block overlapping the host copy of the other).

``--setup``: what it does to an AMG-CG solve of a new ``--n``^2 5-point matrix (default 4000: 16M
unknowns; the type detected).  In a fresh process per variant, after a 65K AMG solve: the first
solve of that size, then new matrices with the two copies alternated (``stage``: ``sla.staging``;
``whole pinned``: the graph through one page-locked buffer of its size and the aggregates back by
a pageable copy, as before).

Usage (on a GPU)::

    PYTHONPATH=. python3 benchmarks/bench_staging.py [--mb 64 320] [--setup [--n 4000]] [--out DIR]

Writes markdown tables to stdout and ``DIR/bench_staging.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

METHODS = ("pageable", "pinned", "staged")


def _copy(method: str, direction: str, t: torch.Tensor) -> torch.Tensor:
    from sla import staging

    if method == "staged":
        return staging.to_host(t) if direction == "down" else staging.to_device(t, "cuda")
    if method == "pageable":
        return t.cpu() if direction == "down" else t.to("cuda")
    if direction == "down":
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        return host.copy_(t)
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t)
    return host.to("cuda", non_blocking=True)


def case(method: str, direction: str, mb: float) -> str:
    torch.zeros(1, device="cuda")
    where = "cuda" if direction == "down" else "cpu"
    times = []
    for n in (1 << 18, *[int(mb * (1 << 20)) // 4] * 3):  # a 1 MB copy first: the process's first-copy costs
        src = torch.arange(n, dtype=torch.int32, device=where)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = _copy(method, direction, src)
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
        if int(out[-1]) != n - 1 or int(out[n // 3]) != n // 3:
            raise SystemExit(f"{method} {direction}: wrong copy")
        del out
    return f"| {direction} | {mb:g} | {method} | {times[0]:.1f} | {times[1]:.1f} | {times[2]:.1f} | {times[3]:.1f} |"


def _whole_pinned(t: torch.Tensor):
    t = t.detach().to(torch.int32)
    host = torch.empty(t.shape, dtype=torch.int32, pin_memory=True)
    return host.copy_(t).numpy()


def setup_case(first: str, n: int) -> list[str]:
    """Rows of the ``--setup`` table, this process starting with the ``first`` variant."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_first_solve import _poisson, _solve

    from sla.solvers.precond import aggregate

    variants = {
        "stage": (aggregate._host_int32, aggregate.to_device),
        "whole pinned": (_whole_pinned, lambda t, device: t.to(device)),
    }

    def run(name: str, which: str) -> str:
        aggregate._host_int32, aggregate.to_device = variants[which]
        A = _poisson(n)
        A.pattern.crow  # noqa: B018
        torch.cuda.synchronize()
        t, info = _solve(A, "amg", False)
        return f"| {first} | {name} | {which} | {t:.3f} | {info.setup_time:.3f} |"

    aggregate._host_int32, aggregate.to_device = variants[first]
    _solve(_poisson(256), "amg", False)
    rows = [run("first of its size", first)]
    for _ in range(3):
        rows += [run("new", w) for w in variants]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[64, 320])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--setup", action="store_true", help="also the AMG setup with either copy (16M)")
    ap.add_argument("--n", type=int, default=4000, help="--setup's grid side (n^2 unknowns)")
    ap.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--setup-case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_staging.py measures host <-> GPU copies: no CUDA device here")
    if args.case:
        print(case(args.case[0], args.case[1], float(args.case[2])))
        return
    if args.setup_case:
        print("\n".join(setup_case(args.setup_case, args.n)))
        return
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    rows = [
        f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}",
        "",
        "| direction | MB (int32) | method | the process's first copy (1 MB, ms) | first of the size (ms) | second (ms) | third (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for direction in ("down", "up"):
        for mb in args.mb:
            for method in METHODS:
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--case", method, direction, f"{mb:g}"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=300,
                )
                rows.append(out.stdout.strip().splitlines()[-1])
    if args.setup:
        rows += [
            "",
            f"| process starts with | solve ({args.n}^2 unknowns, AMG-CG, type detected) | copies | time (s) | setup (s) |",
            "|---|---|---|---|---|",
        ]
        for first in ("stage", "whole pinned"):
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--setup-case", first, "--n", str(args.n)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            rows += [line for line in out.stdout.splitlines() if line.startswith("|")]
    text = "\n".join(rows) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench_staging.md")
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
