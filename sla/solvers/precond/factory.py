"""The registry of preconditioners and :func:`make_preconditioner`.

==================  ==========================================================
``'none'``          identity
``'jacobi'``        ``z = D^{-1} r``
``'block_jacobi'``  exact inverses of the diagonal blocks of size ``block_size``
``'chebyshev'``     Chebyshev polynomial in ``D^{-1} A`` of degree ``degree``
                    (symmetric positive definite A)
``'amg'``           smoothed-aggregation algebraic multigrid cycle
                    (:mod:`sla.solvers.precond.amg`; aggregation by pyamg on the CPU,
                    everything else in torch on A's device)
``'gmg'``           geometric multigrid for structured grids
                    (:mod:`sla.solvers.precond.gmg`; needs ``A.pattern.cache["grid"]``)
==================  ==========================================================

Every preconditioner here is symmetric positive definite when A is (so it
can precondition CG and MINRES), and runs on A's device without host syncs.
Each name has a typed counterpart in :mod:`sla.solvers.precond.options`
(``AMG(cycle='W')``, ``Jacobi()``, ...), accepted wherever the name is.

Examples
--------
>>> import torch
>>> from sla.gallery import poisson2d
>>> from sla.solvers.precond import make_preconditioner
>>> A = poisson2d(32)
>>> M = make_preconditioner(A, "gmg")
>>> z = M(torch.ones(1, A.shape[0], 1, dtype=A.dtype))   # [B, n, K] -> [B, n, K]
>>> z.shape
torch.Size([1, 1024, 1])
>>> [lv.n for lv in M.levels]
[1024, 256]
"""

from __future__ import annotations

from typing import Any

from ...sparse import SparseTensor
from .amg import SmoothedAggregation
from .base import Preconditioner
from .chebyshev import ChebyshevPreconditioner
from .gmg import GeometricMultigrid
from .jacobi import BlockJacobiPreconditioner, JacobiPreconditioner
from .options import PreconditionerSpec, resolve

__all__ = ["PRECONDITIONERS", "make_preconditioner"]

PRECONDITIONERS = {
    "none": Preconditioner,
    "jacobi": JacobiPreconditioner,
    "block_jacobi": BlockJacobiPreconditioner,
    "chebyshev": ChebyshevPreconditioner,
    "amg": SmoothedAggregation,
    "gmg": GeometricMultigrid,
}


def make_preconditioner(A: SparseTensor, name: str | PreconditionerSpec = "jacobi", **options: Any) -> Preconditioner:
    """Build preconditioner ``name`` for ``A`` (``[*batch, n, n]``, values detached).

    Parameters
    ----------
    A : SparseTensor
        The matrix (batched matrices get one preconditioner per member, applied together).
    name : str or PreconditionerSpec
        One of :data:`PRECONDITIONERS`: ``'none'``, ``'jacobi'``, ``'block_jacobi'``
        (option ``block_size``), ``'chebyshev'`` (``degree``, ``ratio``), ``'amg'``
        (see :class:`sla.solvers.precond.amg.SmoothedAggregation`), ``'gmg'``
        (see :class:`sla.solvers.precond.gmg.GeometricMultigrid`); or the typed object
        (``sla.precond.AMG(cycle='W')``, ...), which carries its options.
    **options
        Passed to the preconditioner.

    Returns
    -------
    Preconditioner
        ``M(r)`` for ``r`` ``[B, n, K]`` (B the batch size of A, or 1 to broadcast);
        ``M.adjoint()`` preconditions ``A^H``.
    """
    if not isinstance(A, SparseTensor):
        raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
    if A.sparse_shape[0] != A.sparse_shape[1]:
        raise ValueError(f"A must be square to precondition, got shape {tuple(A.shape)}")
    name, options = resolve(name, options)
    if name not in PRECONDITIONERS:
        raise ValueError(f"unknown preconditioner {name!r}; known: {sorted(PRECONDITIONERS)}")
    A = A.detach()
    if name == "none":
        if options:
            raise TypeError(f"preconditioner 'none' takes no options, got {sorted(options)}")
        return Preconditioner(A)
    return PRECONDITIONERS[name](A, **options)
