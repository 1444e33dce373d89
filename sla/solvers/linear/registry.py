"""Backend registry: what can solve, where, and which one ``'auto'`` picks.

A backend is one module under :mod:`sla.solvers.backends` that defines
``BACKEND = Backend(...)``.  Registering it is one line in ``_MODULES`` (and,
if it should be picked automatically, one entry in ``_PRIORITY``).  Modules are
imported only when a backend is asked for, and they import their optional
packages only inside ``check`` / ``setup``, so ``import sla`` stays light.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch

from ...config import BackendUnavailableError

__all__ = [
    "Backend",
    "Method",
    "get_backend",
    "get_available_backends",
    "get_backend_methods",
    "select_backend",
    "show_backends",
    "backend_names",
    "is_available",
    "is_scipy_available",
    "is_cudss_available",
    "is_cupy_available",
    "is_eigen_available",
    "is_pytorch_available",
    "priority",
]

ALL_TYPES = ("general", "symmetric", "spd", "hermitian", "hpd")
FLOAT_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)

# name -> module; one line per backend.
_MODULES = {
    "scipy": "sla.solvers.backends.scipy",
    "cudss": "sla.solvers.backends.cudss",
    "cupy": "sla.solvers.backends.cupy",
    "eigen": "sla.solvers.backends.eigen",
    "pytorch": "sla.solvers.backends.torch",
}

# Order in which 'auto' tries backends on each device type.
_PRIORITY = {
    "cpu": ["scipy", "pytorch"],
    "cuda": ["cudss", "pytorch", "cupy"],
}


@dataclass(frozen=True)
class Method:
    """One solver of a backend.

    ``setup(A, cfg, matrix_type) -> state`` does the expensive work (factorise,
    build a preconditioner) for an *unbatched* SparseTensor -- or a batched one
    when the backend sets ``batched=True``.  ``apply(state, b, transpose) ->
    (x, stats)`` solves for ``b`` of shape ``[M, K]`` (``[B, M, K]`` when batched);
    ``transpose=True`` solves with the conjugate transpose ``A^H`` and is what
    the adjoint backward pass calls on the same state.  ``stats`` is a dict
    with optional keys ``iterations``, ``converged``, ``notes``.
    """

    name: str
    kind: str  # 'direct' or 'iterative'
    setup: Callable[..., Any]
    apply: Callable[..., Any]
    matrix_types: tuple = ALL_TYPES
    fallback: str | None = None  # tried when an optimistic choice fails (e.g. cholesky -> lu)


@dataclass(frozen=True)
class Backend:
    name: str
    devices: tuple
    methods: dict
    check: Callable[[], str | None]  # None if usable, else the reason
    extra: str | None = None  # pip extra that provides it
    dtypes: tuple = FLOAT_DTYPES
    batched: bool = False
    # choose(n, dtype, matrix_type, kind) -> method name or None (kind: None, 'direct', 'iterative')
    choose: Callable[..., str | None] = field(default=lambda n, dtype, mtype, kind=None: None)
    description: str = ""

    def unavailable_reason(self) -> str | None:
        return self.check()

    def require(self) -> Backend:
        why = self.check()
        if why is not None:
            hint = f" (pip install 'sla-torch[{self.extra}]')" if self.extra else ""
            raise BackendUnavailableError(f"backend {self.name!r} is not available: {why}{hint}")
        return self

    def method(self, name: str) -> Method:
        if name not in self.methods:
            raise ValueError(f"backend {self.name!r} has no method {name!r}; it offers {sorted(self.methods)}")
        return self.methods[name]


_loaded: dict[str, Backend] = {}


def backend_names() -> list[str]:
    return list(_MODULES)


def get_backend(name: str) -> Backend:
    """The registered backend ``name`` (imported on first use)."""
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; known backends: {backend_names()}")
    if name not in _loaded:
        _loaded[name] = importlib.import_module(_MODULES[name]).BACKEND
    return _loaded[name]


def get_available_backends() -> list[str]:
    """Names of the backends that can run on this machine."""
    return [n for n in _MODULES if get_backend(n).check() is None]


def get_backend_methods(name: str) -> list[str]:
    """Methods offered by backend ``name``."""
    return list(get_backend(name).methods)


def priority(device_type: str) -> list[str]:
    """Backends 'auto' considers on a device type, best first."""
    return list(_PRIORITY.get(device_type, []))


def select_backend(
    device: torch.device | str,
    n: int,
    dtype: torch.dtype = torch.float64,
    matrix_type: str = "general",
    kind: str | None = None,
) -> tuple[str, str]:
    """``(backend, method)`` that ``'auto'`` uses for an ``n x n`` system.

    Walks the device's priority list; each available backend that supports
    the dtype proposes a method for the size and matrix type, or declines.
    """
    dev = torch.device(device).type
    tried = []
    for name in _PRIORITY.get(dev, []):
        b = get_backend(name)
        if dev not in b.devices or dtype not in b.dtypes:
            continue
        why = b.check()
        if why is not None:
            tried.append(f"{name}: {why}")
            continue
        m = b.choose(n, dtype, matrix_type, kind)
        if m is not None:
            return name, m
    raise BackendUnavailableError(
        f"no backend can solve a {matrix_type} {dtype} system of size {n} on {dev}"
        + (f" ({'; '.join(tried)})" if tried else "")
        + f"; registered: {backend_names()}"
    )


def _availability(name: str) -> tuple[bool, str]:
    try:
        b = get_backend(name)
    except Exception as exc:  # an import failure is shown, not hidden
        return False, f"failed to load: {exc}"
    why = b.check()
    return why is None, "" if why is None else why + (f"  -> pip install 'sla-torch[{b.extra}]'" if b.extra else "")


def show_backends(file: TextIO | None = None) -> str:
    """Print and return a table: backend x methods x devices x available (with install hints)."""
    rows = [("backend", "devices", "methods", "available")]
    for name in _MODULES:
        ok, why = _availability(name)
        b = _loaded.get(name)
        rows.append(
            (
                name,
                ",".join(b.devices) if b else "?",
                ",".join(b.methods) if b else "?",
                "yes" if ok else f"no: {why}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    text = "\n".join(lines)
    (file or sys.stdout).write(text + "\n")
    return text


def is_available(name: str) -> bool:
    """True when backend ``name`` can run here."""
    return _availability(name)[0]


def is_scipy_available() -> bool:
    return is_available("scipy")


def is_cudss_available() -> bool:
    """True when the cuDSS backend can run (CUDA device + nvmath-python + libcudss)."""
    return is_available("cudss")


def is_cupy_available() -> bool:
    """True when the CuPy backend can run (CUDA device + cupy)."""
    return is_available("cupy")


def is_eigen_available() -> bool:
    """True when the Eigen backend can be built here (Eigen headers, a C++ compiler, ninja)."""
    return is_available("eigen")


def is_pytorch_available() -> bool:
    """True when the native torch Krylov backend can run (always: it needs only torch)."""
    return is_available("pytorch")
