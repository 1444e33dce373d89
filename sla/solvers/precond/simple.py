"""Preconditioners for the Krylov methods of :mod:`sla.solvers.krylov.methods`.

A preconditioner is a callable ``M(r) -> z`` on ``[B, n, K]`` blocks that
approximates ``A^{-1} r`` for each batch member, plus ``adjoint()`` giving the
preconditioner of ``A^H`` (used by the backward pass).  Build one with
:func:`make_preconditioner`:

==================  ==========================================================
``'none'``          identity
``'jacobi'``        ``z = D^{-1} r``
``'block_jacobi'``  exact inverses of the diagonal blocks of size ``block_size``
``'chebyshev'``     Chebyshev polynomial in ``D^{-1} A`` of degree ``degree``
                    (symmetric positive definite A)
``'amg'``           smoothed-aggregation algebraic multigrid V-cycle
                    (:mod:`sla.solvers.precond.amg`; aggregation by pyamg on the CPU,
                    everything else in torch on A's device)
``'gmg'``           geometric multigrid for structured grids
                    (:mod:`sla.solvers.precond.gmg`; needs ``A.pattern.cache["grid"]``)
==================  ==========================================================

Every preconditioner here is symmetric positive definite when A is (so it
can precondition CG and MINRES), and runs on A's device without host syncs.

Examples
--------
>>> import torch
>>> from sla.gallery import poisson2d
>>> from sla.solvers.precond.simple import make_preconditioner
>>> A = poisson2d(32)
>>> M = make_preconditioner(A, "gmg")
>>> z = M(torch.ones(1, A.shape[0], 1, dtype=A.dtype))   # [B, n, K] -> [B, n, K]
>>> z.shape
torch.Size([1, 1024, 1])
>>> [lv.n for lv in M.levels]
[1024, 256]
"""

from __future__ import annotations

import torch

from ...config import SingularMatrixError
from ...products import spmm_nograd
from ...sparse import SparseTensor

__all__ = [
    "PRECONDITIONERS",
    "Preconditioner",
    "chebyshev_apply",
    "diagonal_inverse",
    "gershgorin_upper",
    "make_preconditioner",
]


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


# ---------------------------------------------------------------- helpers
def _flat(A: SparseTensor) -> torch.Tensor:
    return A._flat().detach()


def diagonal_inverse(A: SparseTensor, name: str = "jacobi") -> torch.Tensor:
    """``1 / diag(A)`` as ``[B, n, 1]``; raises if a diagonal entry is zero."""
    d = A.detach().diagonal().reshape(A.batch_size, -1)
    if bool((d == 0).any()):
        i = int(torch.nonzero((d == 0).any(0))[0])
        raise SingularMatrixError(f"preconditioner {name!r} needs a non-zero diagonal, but A[{i}, {i}] = 0")
    return (1.0 / d).unsqueeze(-1)


def gershgorin_upper(A: SparseTensor) -> torch.Tensor:
    """Upper bound of ``|lambda(D^{-1} A)|`` per batch member, ``[B, 1, 1]`` (row sums of ``|D^{-1} A|``)."""
    p = A.pattern
    v = _flat(A).abs()
    d = A.detach().diagonal().reshape(A.batch_size, -1).abs()
    rows = torch.zeros_like(d).index_add_(1, p.row, v)
    return (rows / d).amax(1).reshape(-1, 1, 1).to(v.dtype)


def chebyshev_apply(matvec, dinv, b, x, lo, hi, degree):
    """``degree`` steps of Chebyshev iteration on ``D^{-1} A x = D^{-1} b`` over ``[lo, hi]``.

    ``x=None`` starts from zero (saves a matvec).  Saad, *Iterative Methods*,
    Alg. 12.1.  The result is ``x + p(D^{-1}A) D^{-1} (b - A x)`` with ``p`` a
    polynomial that is positive on ``(0, hi]``: symmetric positive definite
    for SPD A, usable as a CG preconditioner or a multigrid smoother.
    """
    theta = (hi + lo) / 2
    delta = (hi - lo) / 2
    sigma = theta / delta
    rho = 1.0 / sigma
    res = dinv * (b if x is None else b - matvec(x))
    d = res / theta
    x = d if x is None else x + d
    for _ in range(degree - 1):
        res = dinv * (b - matvec(x))
        rho_new = 1.0 / (2 * sigma - rho)
        d = (rho_new * rho) * d + (2 * rho_new / delta) * res
        x = x + d
        rho = rho_new
    return x


def _matvec(A: SparseTensor):
    p, v = A.pattern, _flat(A)
    return lambda x: spmm_nograd(p, v, x)


# -------------------------------------------------------- simple ones
class Jacobi(Preconditioner):
    name = "jacobi"

    def __init__(self, A: SparseTensor):
        super().__init__(A)
        self.dinv = diagonal_inverse(A, "jacobi")

    def __call__(self, r):
        return self.dinv * r

    def adjoint(self):
        out = Jacobi.__new__(Jacobi)
        out.A, out.dinv = None, self.dinv.conj()
        return out


class BlockJacobi(Preconditioner):
    """Exact inverses of the ``block_size x block_size`` diagonal blocks (contiguous unknowns)."""

    name = "block_jacobi"

    def __init__(self, A: SparseTensor, block_size: int = 4):
        super().__init__(A)
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        n = A.sparse_shape[0]
        bs = min(block_size, n)
        nb = -(-n // bs)
        p, v = A.pattern, _flat(A)
        keep = (p.row // bs) == (p.col // bs)
        r, c = p.row[keep], p.col[keep]
        blocks = v.new_zeros(A.batch_size, nb * bs * bs)
        blocks[:, (r // bs) * bs * bs + (r % bs) * bs + (c % bs)] = v[:, keep]
        blocks = blocks.reshape(A.batch_size, nb, bs, bs)
        pad = torch.arange(n, nb * bs, device=v.device) - (nb - 1) * bs  # identity on the padding
        blocks[:, nb - 1, pad, pad] = 1
        inv, info = torch.linalg.inv_ex(blocks)
        if bool((info != 0).any()) or not bool(torch.isfinite(inv).all()):
            bad = int(torch.nonzero((info != 0).any(0) | ~torch.isfinite(inv).all(-1).all(-1).any(0))[0])
            raise SingularMatrixError(
                f"block_jacobi: diagonal block {bad} (rows {bad * bs}..{min(n, bad * bs + bs) - 1}) "
                "is singular; try another block_size or preconditioner"
            )
        self.inv, self.n, self.bs = inv, n, bs

    def __call__(self, r):
        B, n, K = r.shape
        nb = self.inv.shape[1]
        rp = torch.nn.functional.pad(r, (0, 0, 0, nb * self.bs - n)).reshape(B, nb, self.bs, K)
        z = torch.matmul(self.inv if self.inv.shape[0] == B else self.inv.expand(B, -1, -1, -1), rp)
        return z.reshape(B, nb * self.bs, K)[:, :n]

    def adjoint(self):
        out = BlockJacobi.__new__(BlockJacobi)
        out.A, out.n, out.bs = None, self.n, self.bs
        out.inv = self.inv.mH
        return out


class Chebyshev(Preconditioner):
    """Chebyshev polynomial preconditioner ``p(D^{-1} A) D^{-1}`` on ``[hi / ratio, hi]``.

    ``hi`` is the Gershgorin bound of ``D^{-1} A`` (a true upper bound, so the
    polynomial stays positive on the spectrum).  For Hermitian positive
    definite A.
    """

    name = "chebyshev"

    def __init__(self, A: SparseTensor, degree: int = 4, ratio: float = 30.0):
        super().__init__(A)
        if not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree must be a positive integer, got {degree!r}")
        if not ratio > 1:
            raise ValueError(f"ratio must be > 1, got {ratio!r}")
        self.dinv = diagonal_inverse(A, "chebyshev")
        self.hi = gershgorin_upper(A)
        self.lo = self.hi / ratio
        self.degree, self.ratio = degree, ratio
        self.mv = _matvec(A)

    def __call__(self, r):
        return chebyshev_apply(self.mv, self.dinv, r, None, self.lo, self.hi, self.degree)

    def adjoint(self):
        return Chebyshev(self.A.H(), self.degree, self.ratio)


def _amg(A, **opts):
    from .amg import SmoothedAggregation

    return SmoothedAggregation(A, **opts)


def _gmg(A, **opts):
    from .gmg import GeometricMultigrid

    return GeometricMultigrid(A, **opts)


PRECONDITIONERS = {
    "none": Preconditioner,
    "jacobi": Jacobi,
    "block_jacobi": BlockJacobi,
    "chebyshev": Chebyshev,
    "amg": _amg,
    "gmg": _gmg,
}


def make_preconditioner(A: SparseTensor, name: str = "jacobi", **options) -> Preconditioner:
    """Build preconditioner ``name`` for ``A`` (``[*batch, n, n]``, values detached).

    Parameters
    ----------
    A : SparseTensor
        The matrix (batched matrices get one preconditioner per member, applied together).
    name : str
        One of :data:`PRECONDITIONERS`: ``'none'``, ``'jacobi'``, ``'block_jacobi'``
        (option ``block_size``), ``'chebyshev'`` (``degree``, ``ratio``), ``'amg'``
        (see :class:`sla.solvers.precond.amg.SmoothedAggregation`), ``'gmg'``
        (see :class:`sla.solvers.precond.gmg.GeometricMultigrid`).
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
    if name not in PRECONDITIONERS:
        raise ValueError(f"unknown preconditioner {name!r}; known: {sorted(PRECONDITIONERS)}")
    A = A.detach()
    if name == "none":
        if options:
            raise TypeError(f"preconditioner 'none' takes no options, got {sorted(options)}")
        return Preconditioner(A)
    return PRECONDITIONERS[name](A, **options)
