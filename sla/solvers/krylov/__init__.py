"""Krylov methods (CG, flexible CG, BiCGStab, GMRES, FGMRES, MINRES) on any operator, preconditioner and
inner product: one implementation for single-process, batched and distributed solves.

The shared machinery (context, verified outer loop, :class:`KrylovResult`, :func:`local_dot`)
lives in :mod:`.base`; each method in its own module."""

from __future__ import annotations

from typing import Any

import torch

from .base import KrylovResult, Op, ReducedDot, local_dot
from .bicgstab import bicgstab
from .cg import cg, fcg
from .gmres import fgmres, gmres
from .minres import minres

METHODS = {"cg": cg, "fcg": fcg, "bicgstab": bicgstab, "gmres": gmres, "fgmres": fgmres, "minres": minres}


def krylov_solve(method: str, matvec: Op, b: torch.Tensor, **kw: Any) -> KrylovResult:
    """Dispatch by name: ``krylov_solve('cg', matvec, b, precond=M, rtol=1e-8)``."""
    if method not in METHODS:
        raise ValueError(f"unknown Krylov method {method!r}; known: {sorted(METHODS)}")
    return METHODS[method](matvec, b, **kw)


__all__ = [
    "METHODS",
    "KrylovResult",
    "ReducedDot",
    "bicgstab",
    "cg",
    "fcg",
    "fgmres",
    "gmres",
    "krylov_solve",
    "local_dot",
    "minres",
]
