"""Host <-> GPU copies of large arrays: pageable, a whole pinned buffer, and sla.staging's stage.

The AMG setup's standard aggregation runs on the host: the strength graph's arrays go down to
it and the aggregates come back (16M unknowns: 64 + 320 MB down, 64 MB up).  Each method runs in
a fresh process (what the first copy of its size costs matters: page-locking fresh host memory
is slower than the copy), three copies in a row:

* ``pageable``  ``t.cpu()`` / ``t.to('cuda')``;
* ``pinned``    a whole page-locked buffer from torch's caching host allocator, then the copy
  (the allocator keeps the buffer: later copies of that size reuse it);
* ``staged``    ``sla.staging.to_host`` / ``to_device`` (two reused 32 MB pinned buffers, the
  bus copy of one block overlapping the host copy of the other).

Usage (on a GPU)::

    PYTHONPATH=. python3 benchmarks/bench_staging.py [--mb 64 320] [--out DIR]

Writes a markdown table to stdout and ``DIR/bench_staging.md``.
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


def case(method: str, direction: str, mb: int) -> str:
    torch.zeros(1, device="cuda")
    n = (mb << 20) // 4
    src = torch.arange(n, dtype=torch.int32, device="cuda" if direction == "down" else "cpu")
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = _copy(method, direction, src)
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
        if int(out[-1]) != n - 1 or int(out[n // 3]) != n // 3:
            raise SystemExit(f"{method} {direction}: wrong copy")
        del out
    return f"| {direction} | {mb} | {method} | {times[0]:.1f} | {times[1]:.1f} | {times[2]:.1f} |"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, nargs="+", default=[64, 320])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_staging.py measures host <-> GPU copies: no CUDA device here")
    if args.case:
        print(case(args.case[0], args.case[1], int(args.case[2])))
        return
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    rows = [
        f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}",
        "",
        "| direction | MB (int32) | method | first copy in the process (ms) | second (ms) | third (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for direction in ("down", "up"):
        for mb in args.mb:
            for method in METHODS:
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--case", method, direction, str(mb)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=300,
                )
                rows.append(out.stdout.strip().splitlines()[-1])
    text = "\n".join(rows) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench_staging.md")
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
