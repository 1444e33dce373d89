"""Eigen backend (CPU): ConjugateGradient, BiCGSTAB, SimplicialLDLT and SparseLU.

The C++ source (``eigen_ext.cpp`` next to this file) is compiled on first use
with :func:`torch.utils.cpp_extension.load` (ninja) against Eigen's headers and
cached in torch's extension folder (``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``), so later processes only load it.  Nothing is
compiled at import time.  The first build (about a minute) says so on the ``sla`` logger at
WARNING level; ``python -m sla.build_eigen`` builds it ahead of time.  A build killed mid-way
leaves torch's ``lock`` file behind, on which torch would wait forever: the builder's pid is
recorded beside it, so a later process removes a stale lock and waits for a live build at most
``$SLA_EIGEN_BUILD_TIMEOUT`` seconds (default 600) before a clear error.

Eigen's headers are looked up in ``$EIGEN_INCLUDE_DIR``, the ``cmeel-eigen``
wheel (``pip install 'sla-torch[eigen]'``: ``site-packages/cmeel.prefix/include/eigen3``),
``$CONDA_PREFIX/include/eigen3`` and ``/usr(/local)/include/eigen3`` (Debian's
``libeigen3-dev``).

Methods, float32/float64 only:

* ``cg`` -- ConjugateGradient with Eigen's diagonal (Jacobi) preconditioner, SPD;
* ``bicgstab`` -- BiCGSTAB with the diagonal preconditioner, any square matrix;
  the adjoint pass sets up a second solver on ``A^T`` the first time it is needed;
* ``ldlt`` -- SimplicialLDLT (AMD ordering), symmetric; ``A^T = A``;
* ``lu`` -- SparseLU (COLAMD ordering); the adjoint pass uses ``transpose().solve``
  on the same factors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import site
import socket
import sys
import sysconfig
import threading
import time

import torch

from ...config import SingularMatrixError
from ..linear.registry import Backend, Method

log = logging.getLogger("sla")

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eigen_ext.cpp")
_NAME = "sla_eigen_ext"
_OWNER = "sla_build_owner"  # pid and host of the process compiling, next to torch's lock file
_SYMMETRIC = ("symmetric", "spd")
_DEFINITE = ("spd",)
_lock = threading.Lock()
_module = None
_build_error: str | None = None


# --------------------------------------------------------------- discovery
def _candidates() -> list[str]:
    out = []
    env = os.environ.get("EIGEN_INCLUDE_DIR")
    if env:
        out.append(env)
    roots = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    roots += [site.getusersitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    roots += [p for p in sys.path if p.endswith("site-packages")]
    for r in dict.fromkeys(roots):
        out.append(os.path.join(r, "cmeel.prefix", "include", "eigen3"))
    if os.environ.get("CONDA_PREFIX"):
        out.append(os.path.join(os.environ["CONDA_PREFIX"], "include", "eigen3"))
    out += ["/usr/include/eigen3", "/usr/local/include/eigen3", "/opt/homebrew/include/eigen3"]
    return out


def eigen_include_dir() -> str | None:
    """Folder holding ``Eigen/Sparse``, or None when no Eigen headers are found."""
    for d in _candidates():
        if os.path.isfile(os.path.join(d, "Eigen", "Sparse")):
            return d
    return None


def _compiler() -> str | None:
    cxx = os.environ.get("CXX", "c++")
    return shutil.which(cxx) or shutil.which("g++") or shutil.which("clang++")


def _check() -> str | None:
    """None when headers, a C++ compiler and ninja are present, else what is missing."""
    missing = []
    if not os.path.isfile(_SOURCE):
        missing.append(f"the C++ source {_SOURCE} is missing (a broken install: reinstall sla-torch)")
    if eigen_include_dir() is None:
        missing.append(
            "Eigen headers not found (pip install cmeel-eigen, apt-get install libeigen3-dev, or set EIGEN_INCLUDE_DIR)"
        )
    if _compiler() is None:
        missing.append("no C++ compiler (set CXX or install g++)")
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        missing.append("ninja not found (pip install ninja)")
    if _build_error is not None:
        missing.append(f"the extension failed to compile: {_build_error}")
    return "; ".join(missing) or None


# ----------------------------------------------------------------- compile
def extension():
    """The compiled extension module (built on first call, then loaded from torch's cache)."""
    global _module, _build_error
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        if _build_error is not None:
            raise RuntimeError(f"the Eigen extension failed to compile earlier in this process: {_build_error}")
        why = _check()
        if why is not None:
            raise RuntimeError(f"the Eigen backend cannot be built: {why}")
        from torch.utils.cpp_extension import load

        folder = build_directory()
        _clear_stale_lock(folder, build_timeout())
        if not any(f.endswith((".so", ".pyd")) for f in os.listdir(folder)):
            log.warning(
                "sla: compiling the Eigen extension (first use, about a minute; cached in %s afterwards; "
                "`python -m sla.build_eigen` builds it ahead of time)",
                folder,
            )
        owner = os.path.join(folder, _OWNER)
        try:
            with open(owner, "w") as fh:  # who builds: a later process can tell a stale lock from a live build
                fh.write(f"{os.getpid()} {socket.gethostname()}")
            _module = load(
                name=_NAME,
                sources=[_SOURCE],
                extra_include_paths=[eigen_include_dir()],
                extra_cflags=["-O3", "-DNDEBUG", "-DEIGEN_NO_DEBUG", "-std=c++17", "-Wno-deprecated-declarations"],
                build_directory=folder,
                verbose=False,
            )
        except Exception as exc:
            text = str(exc).strip().splitlines()
            errors = [ln for ln in text if "error" in ln.lower()]
            _build_error = " | ".join((errors or text)[-5:])[:2000]
            raise RuntimeError(f"compiling {_SOURCE} against Eigen at {eigen_include_dir()} failed: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.remove(owner)
        return _module


def build_directory() -> str:
    """torch's extension folder for the Eigen extension (created if missing)."""
    from torch.utils.cpp_extension import _get_build_directory

    return _get_build_directory(_NAME, verbose=False)


def build_timeout() -> float:
    """Seconds to wait for another process's build (``$SLA_EIGEN_BUILD_TIMEOUT``, default 600)."""
    raw = os.environ.get("SLA_EIGEN_BUILD_TIMEOUT", "600")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"SLA_EIGEN_BUILD_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"SLA_EIGEN_BUILD_TIMEOUT must be positive, got {raw!r}")
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _clear_stale_lock(folder: str, timeout: float, poll: float = 0.5) -> None:
    """Make sure torch's ``lock`` file in ``folder`` belongs to a live build, waiting for it up to ``timeout``.

    torch's extension loader waits forever while ``lock`` exists; a build killed mid-way leaves it
    behind.  The builder's pid (written next to it by :func:`extension`) tells: a dead builder on this
    host, or a lock with no builder recorded that is older than ``timeout``, is stale and removed.
    """
    lock = os.path.join(folder, "lock")
    t0 = time.monotonic()
    while os.path.exists(lock):
        owner = _read_owner(os.path.join(folder, _OWNER))
        try:
            age = time.time() - os.path.getmtime(lock)
        except OSError:  # removed meanwhile
            return
        host = socket.gethostname()
        dead = owner is not None and owner[1] == host and not _alive(owner[0])
        if dead or (owner is None and age > timeout):
            who = f"pid {owner[0]}, no longer running" if dead else f"no builder recorded, {age:.0f} s old"
            log.warning("sla: removing a stale lock of an interrupted Eigen build (%s): %s", who, lock)
            with contextlib.suppress(OSError):
                os.remove(lock)
            return
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(
                f"timed out after {timeout:.0f} s waiting for another process's Eigen build "
                f"({'pid ' + str(owner[0]) if owner else 'builder unknown'}) to release {lock}; if no build is "
                "running, delete that file (or raise SLA_EIGEN_BUILD_TIMEOUT)"
            )
        time.sleep(poll)


def _read_owner(path: str) -> tuple[int, str] | None:
    try:
        with open(path) as fh:
            pid, host = fh.read().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def is_built() -> bool:
    """True once the extension is compiled and loaded in this process."""
    return _module is not None


# ------------------------------------------------------------------- state
class _State:
    def __init__(self, A, cfg, mtype, method: str):
        if A.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"the eigen backend supports float32 and float64, got {A.dtype}")
        if method in ("cg", "bicgstab") and cfg.preconditioner not in (None, "auto", "jacobi"):
            raise ValueError(
                f"eigen/{method} uses Eigen's diagonal (Jacobi) preconditioner; "
                f"got preconditioner={cfg.preconditioner!r}"
            )
        ext = extension()
        p = A.pattern
        if p.index_dtype != torch.int32:
            raise ValueError(f"the eigen backend needs int32 indices; this matrix has {p.nnz} entries")
        self.dtype = A.dtype
        self.method = method
        self.n = p.shape[0]
        crow, col = p.crow.contiguous(), p.ccol.contiguous()
        values = A.values.detach().contiguous()
        rtol, atol = cfg.tolerances(A.dtype) if method in ("cg", "bicgstab") else (0.0, 0.0)
        maxiter = cfg.maxiter if cfg.maxiter is not None else 10 * max(self.n, 1)
        cls = ext.StateFloat if A.dtype == torch.float32 else ext.StateDouble
        try:
            self.state = cls(
                method,
                self.n,
                p.nnz,
                crow.data_ptr(),
                col.data_ptr(),
                values.data_ptr(),
                float(rtol),
                float(atol),
                int(maxiter),
            )
        except ValueError as exc:
            if str(exc).startswith("singular:"):
                raise SingularMatrixError(f"eigen/{method}: {str(exc)[len('singular: ') :]}") from exc
            raise

    def apply(self, b: torch.Tensor, transpose: bool = False):
        if b.dtype != self.dtype or b.device.type != "cpu":
            raise TypeError(f"the eigen backend needs a CPU {self.dtype} right-hand side, got {b.dtype} on {b.device}")
        K = b.shape[1]
        bt = b.detach().t().contiguous()  # [K, n] row-major = [n, K] column-major
        xt = torch.empty_like(bt)
        iters, ok, err = self.state.solve(bt.data_ptr(), xt.data_ptr(), K, bool(transpose))
        x = xt.t().contiguous()
        if self.method in ("ldlt", "lu"):
            if not bool(torch.isfinite(x).all()):
                raise SingularMatrixError(f"eigen/{self.method} produced a non-finite solution (singular matrix)")
            return x, {}
        return x, {"iterations": int(iters), "converged": bool(ok), "preconditioner": "jacobi"}


def _method(name, kind, types):
    return Method(
        name,
        kind,
        setup=lambda A, cfg, mtype: _State(A, cfg, mtype, name),
        apply=lambda st, b, transpose=False: st.apply(b, transpose),
        matrix_types=types,
    )


def _choose(n, dtype, mtype, kind=None):
    if dtype not in (torch.float32, torch.float64):
        return None
    if kind == "iterative":
        return "cg" if mtype in _DEFINITE else "bicgstab"
    return "ldlt" if mtype in _SYMMETRIC else "lu"


BACKEND = Backend(
    name="eigen",
    devices=("cpu",),
    check=_check,
    extra="eigen",
    dtypes=(torch.float32, torch.float64),
    choose=_choose,
    description="Eigen (C++, compiled on first use): CG, BiCGSTAB, SimplicialLDLT, SparseLU",
    methods={
        "cg": _method("cg", "iterative", _DEFINITE),
        "bicgstab": _method("bicgstab", "iterative", ("general",) + _SYMMETRIC),
        "ldlt": _method("ldlt", "direct", _SYMMETRIC),
        "lu": _method("lu", "direct", ("general",) + _SYMMETRIC),
    },
)
