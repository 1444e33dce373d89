"""Chebyshev iteration on ``D^{-1} A`` (Saad, *Iterative Methods*, Alg. 12.1) and the
Gershgorin bound of its spectrum: the one copy used both by the Chebyshev preconditioner and by
the multigrid smoother (:mod:`sla.solvers.precond.multigrid`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...sparse import SparseTensor
from .base import Preconditioner, flat_values, matvec
from .jacobi import diagonal_inverse

__all__ = ["ChebyshevPreconditioner", "chebyshev_iteration", "gershgorin_bound"]


def gershgorin_bound(row: torch.Tensor, values: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """Upper bound of ``|lambda(D^{-1} A)|``: the largest row sum of ``|D^{-1} A|``.

    Parameters
    ----------
    row : torch.Tensor
        Row index of every stored entry, ``[nnz]``.
    values : torch.Tensor
        The entries, ``[..., nnz]`` (leading axes: batch members).
    diag : torch.Tensor
        The diagonal of A, ``[..., n]``.

    Returns
    -------
    torch.Tensor
        The bound per batch member, ``[...]`` (real).
    """
    v = values.abs()
    sums = torch.zeros(diag.shape, dtype=v.dtype, device=v.device).index_add_(-1, row, v)
    return (sums / diag.abs()).amax(-1)


def chebyshev_iteration(
    residual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    dinv: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor | None,
    lo: float | torch.Tensor,
    hi: float | torch.Tensor,
    degree: int,
) -> torch.Tensor:
    """``degree`` steps of Chebyshev iteration on ``D^{-1} A x = D^{-1} b`` over ``[lo, hi]``.

    The result is ``x + p(D^{-1}A) D^{-1} (b - A x)`` with ``p`` a polynomial that
    is positive on ``(0, hi]``: symmetric positive definite for SPD A, usable as a
    CG preconditioner or a multigrid smoother.  Fused: one residual and two vector
    passes per step.

    Parameters
    ----------
    residual : callable
        ``(b, x) -> b - A x`` (a new tensor).
    dinv : torch.Tensor
        ``1 / diag(A)``, broadcastable against ``b``.
    b : torch.Tensor
        Right-hand side (not modified).
    x : torch.Tensor or None
        Start; ``None`` starts from zero (saves a residual).  A given ``x`` is updated in place.
    lo, hi : float or torch.Tensor
        The interval (tensors broadcast per batch member).
    degree : int
        Number of steps.

    Returns
    -------
    torch.Tensor
        The new iterate.
    """
    theta, delta = (hi + lo) / 2, (hi - lo) / 2
    sigma = theta / delta
    rho = 1.0 / sigma
    if x is None:
        d = dinv * b
        d.mul_(1.0 / theta)
        x = d.clone()
    else:  # x is the caller's own: updated in place
        d = residual(b, x).mul_(dinv).mul_(1.0 / theta)
        x.add_(d)
    for _ in range(degree - 1):
        rho_new = 1.0 / (2 * sigma - rho)
        c = 2 * rho_new / delta
        if isinstance(c, torch.Tensor):  # per-member interval
            d.mul_(rho_new * rho).addcmul_(dinv * c, residual(b, x))
        else:
            d.mul_(rho_new * rho).addcmul_(dinv, residual(b, x), value=c)
        x.add_(d)
        rho = rho_new
    return x


class ChebyshevPreconditioner(Preconditioner):
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
        d = A.detach().diagonal().reshape(A.batch_size, -1)
        self.hi = gershgorin_bound(A.pattern.row, flat_values(A), d).reshape(-1, 1, 1)
        self.lo = self.hi / ratio
        self.degree, self.ratio = degree, ratio
        mv = matvec(A)
        self.residual = lambda b, x: b - mv(x)

    def __call__(self, r):
        return chebyshev_iteration(self.residual, self.dinv, r, None, self.lo, self.hi, self.degree)

    def adjoint(self):
        return ChebyshevPreconditioner(self.A.H(), self.degree, self.ratio)
