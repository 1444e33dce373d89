"""The preconditioner protocol of the Krylov methods in :mod:`sla.solvers.krylov`.

A preconditioner is a callable ``M(r) -> z`` on ``[B, n, K]`` blocks that
approximates ``A^{-1} r`` for each batch member, plus ``adjoint()`` giving the
preconditioner of ``A^H`` (used by the backward pass).  Build one with
:func:`sla.solvers.precond.make_preconditioner`.
"""

from __future__ import annotations

import torch

from ...products import spmm_nograd
from ...sparse import SparseTensor

__all__ = ["Preconditioner", "flat_values", "matvec"]


class Preconditioner:
    """``M(r)`` for ``r`` ``[B, n, K]``; ``adjoint()`` preconditions ``A^H`` instead."""

    name = "none"

    def __init__(self, A: SparseTensor | None = None):
        self.A = A

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        return r

    def adjoint(self) -> Preconditioner:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def flat_values(A: SparseTensor) -> torch.Tensor:
    """A's values as ``[B, nnz]``, detached."""
    return A._flat().detach()


def matvec(A: SparseTensor):
    """``x -> A x`` on ``[B, n, K]`` blocks (no autograd)."""
    p, v = A.pattern, flat_values(A)
    return lambda x: spmm_nograd(p, v, x)
