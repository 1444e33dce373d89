"""Build the Eigen backend's C++ extension ahead of time: ``python -m sla.build_eigen``.

The Eigen backend compiles on first use (about a minute) and caches the result in torch's
extension folder; run this once after installing (in a Dockerfile, a CI setup step, ...) so
that no solve waits for the compiler.  It also recovers from a build that was killed
mid-way (a stale ``lock`` file).  Exit status 0 when the extension is ready, 1 (with the
reason) when it cannot be built.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Build (or load) the extension; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m sla.build_eigen", description=__doc__.splitlines()[0])
    ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    log = logging.getLogger("sla")
    from sla.solvers.backends import eigen

    t0 = time.perf_counter()
    try:
        ext = eigen.extension()
    except (RuntimeError, ValueError) as exc:
        log.error("sla.build_eigen: the Eigen extension cannot be built: %s", exc)
        return 1
    log.info(
        "sla.build_eigen: ready in %.1f s: %s (in %s)", time.perf_counter() - t0, ext.__file__, eigen.build_directory()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
