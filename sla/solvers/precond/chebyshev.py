"""Chebyshev iteration on ``D^{-1} A`` (Saad, *Iterative Methods*, Alg. 12.1) and the
Gershgorin bound of its spectrum: the one copy used both by the Chebyshev preconditioner and by
the multigrid smoother (:mod:`sla.solvers.precond.multigrid`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ...kernels import add_at_, all_, any_, norm2, reciprocal
from ...sparse import SparseTensor
from .base import Preconditioner, flat_values, matvec
from .jacobi import diagonal_inverse

__all__ = [
    "LANCZOS_SAFETY",
    "LANCZOS_STEPS",
    "ChebyshevPreconditioner",
    "capped",
    "chebyshev_iteration",
    "gershgorin_bound",
    "lanczos_bound",
    "ritz_estimate",
    "spectral_bound",
]

LANCZOS_STEPS = 15
"""Lanczos steps of :func:`lanczos_bound` (one product with ``A`` each)."""
LANCZOS_SAFETY = 1.1
"""Factor on the largest Ritz value: Lanczos approaches ``rho`` from below, and a Chebyshev
interval that ends short of the spectrum amplifies the modes beyond it."""


_GERSHGORIN_CHUNK = 1 << 20  # entries per block of the Gershgorin row sums


def gershgorin_bound(row, values: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """Upper bound of ``|lambda(D^{-1} A)|``: the largest row sum of ``|D^{-1} A|``.

    Parameters
    ----------
    row : torch.Tensor or callable
        Row index of every stored entry, ``[nnz]``, or ``row(lo, hi)`` giving those of entries
        ``lo:hi`` (the sums run in blocks of entries either way).
    values : torch.Tensor
        The entries, ``[..., nnz]`` (leading axes: batch members).
    diag : torch.Tensor
        The diagonal of A, ``[..., n]``.

    Returns
    -------
    torch.Tensor
        The bound per batch member, ``[...]`` (real).
    """
    nnz = values.shape[-1]
    sums = torch.zeros(
        diag.shape, dtype=values.real.dtype if values.is_complex() else values.dtype, device=values.device
    )
    for lo in range(0, nnz, _GERSHGORIN_CHUNK):  # |a_ij| by blocks: no temporary of the matrix's size
        hi = min(lo + _GERSHGORIN_CHUNK, nnz)
        add_at_(sums, -1, row(lo, hi) if callable(row) else row[lo:hi], values[..., lo:hi].abs())
    return (sums / diag.abs()).amax(-1)


def _start(shape, device, dtype) -> torch.Tensor:
    """A deterministic start vector with no structure (an integer hash of the index), made on ``device``."""
    n = shape[-1]
    i = torch.arange(n, device=device, dtype=torch.int64)
    h = (i * 2654435761 + 12345) & 4294967295  # Knuth's multiplicative hash, mod 2^32 (no remainder kernels)
    v = (h.to(torch.float64) / 4294967296.0 + 0.5).to(dtype)  # in [0.5, 1.5): every entry weighted
    return v.expand(shape).clone()


def lanczos_bound(
    mv: Callable[[torch.Tensor], torch.Tensor],
    diag: torch.Tensor,
    steps: int = LANCZOS_STEPS,
    safety: float = LANCZOS_SAFETY,
) -> torch.Tensor:
    """Estimate of ``rho(D^{-1} A)`` for Hermitian ``A`` with a positive diagonal: ``safety`` times the
    largest Ritz value of ``steps`` Lanczos steps on ``D^{-1/2} A D^{-1/2}`` (similar to ``D^{-1} A``).

    Parameters
    ----------
    mv : callable
        ``x -> A x`` for ``x`` ``[..., n]`` (leading axes: batch members).
    diag : torch.Tensor
        The diagonal of A, ``[..., n]`` (real and positive; see :func:`spectral_bound`).
    steps : int
        Lanczos steps (one product with A each; no host synchronisation until the end).
    safety : float
        Factor on the largest Ritz value, which approaches ``rho`` from below.

    Returns
    -------
    torch.Tensor
        ``[...]`` (real), NaN where the iteration broke down numerically.
    """
    s = reciprocal(diag.real.sqrt()).to(diag.dtype)  # sqrt and a quotient: no rsqrt family
    v = _start(diag.shape, diag.device, diag.dtype)
    v = v / norm2(v).unsqueeze(-1)
    v_old = torch.zeros_like(v)
    beta = torch.zeros(diag.shape[:-1], dtype=diag.real.dtype, device=diag.device)
    m = min(steps, diag.shape[-1])
    ab = torch.zeros((2, m, *diag.shape[:-1]), dtype=beta.dtype, device=diag.device)  # alpha_j, beta_j
    tiny = torch.finfo(beta.dtype).tiny ** 0.5
    for j in range(m):
        w = s * mv(s * v)
        alpha = (v.conj() * w).sum(-1).real
        w = w - alpha.unsqueeze(-1) * v - beta.unsqueeze(-1) * v_old
        beta = norm2(w)
        ab[0, j], ab[1, j] = alpha, beta
        # a breakdown (an invariant subspace: the Ritz values are exact) continues with zeros
        v_old, v = v, torch.where(beta.unsqueeze(-1) > tiny, w / beta.clamp_min(tiny).unsqueeze(-1), 0)
    # the tridiagonal T on the host, with NumPy's LAPACK: one copy, and no first call of torch's
    # (~20 ms in a process) for a matrix of 15 rows (later CPU solves measured no slower; NumPy's
    # inverse of the coarsest level made them slower: its OpenBLAS threads spin beside torch's)
    ab = np.moveaxis(ab.detach().cpu().double().numpy(), 1, -1)
    T = np.zeros((*ab.shape[1:], m))
    k = np.arange(m)
    T[..., k, k] = ab[0]
    T[..., k[1:], k[:-1]] = T[..., k[:-1], k[1:]] = ab[1, ..., :-1]
    bad = ~np.isfinite(T).all((-2, -1))  # products that overflowed or met a NaN: no estimate
    T[bad] = 0.0
    try:
        theta = np.linalg.eigvalsh(T).max(-1)
    except np.linalg.LinAlgError:
        theta = np.full(bad.shape, np.nan)
    theta = torch.from_numpy(np.where(bad, np.nan, theta))
    return (safety * theta).to(diag.device)


def ritz_estimate(
    mv: Callable[[torch.Tensor], torch.Tensor],
    row: torch.Tensor,
    values: torch.Tensor,
    diag: torch.Tensor,
    hermitian: bool,
    steps: int = LANCZOS_STEPS,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(theta, gershgorin)``: the largest Ritz value of :func:`lanczos_bound` (``None`` where
    Lanczos does not apply: A not Hermitian, a diagonal that is not real positive) and the
    Gershgorin bound of :func:`gershgorin_bound`; :func:`capped` makes the bound of the two.

    Parameters are those of :func:`lanczos_bound` and :func:`gershgorin_bound`; ``hermitian``
    says whether A is Hermitian.
    """
    g = gershgorin_bound(row, values, diag)
    off = diag.is_complex() and bool(any_(diag.imag != 0))
    if not hermitian or steps < 1 or off or not bool(all_(diag.real > 0)):
        return None, g
    return lanczos_bound(mv, diag, steps, safety=1.0), g


def capped(theta: torch.Tensor | None, gershgorin: torch.Tensor, safety: float = LANCZOS_SAFETY) -> torch.Tensor:
    """``min(safety theta, gershgorin)``; Gershgorin alone where ``theta`` is ``None`` or not a finite
    positive number (a failed estimate).  Gershgorin is always an upper bound of ``rho(D^{-1} A)``."""
    if theta is None:
        return gershgorin
    ok = torch.isfinite(theta) & (theta > 0)
    st = safety * theta.to(gershgorin.dtype)
    return torch.where(ok & (st < gershgorin), st, gershgorin)  # a minimum, in the solve's kernel families


def spectral_bound(
    mv: Callable[[torch.Tensor], torch.Tensor],
    row: torch.Tensor,
    values: torch.Tensor,
    diag: torch.Tensor,
    hermitian: bool,
    steps: int = LANCZOS_STEPS,
    safety: float = LANCZOS_SAFETY,
) -> torch.Tensor:
    """The upper end of a Chebyshev interval on ``D^{-1} A``: ``safety`` times the Lanczos estimate,
    capped by the Gershgorin bound, which is the fallback (:func:`ritz_estimate`, :func:`capped`).

    Returns ``[...]`` (real), one bound per batch member.
    """
    return capped(*ritz_estimate(mv, row, values, diag, hermitian, steps), safety)


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
    if not isinstance(theta, torch.Tensor) and not isinstance(delta, torch.Tensor):
        return _chebyshev_scalar(residual, dinv, b, x, float(theta), float(delta), degree)
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
        d.mul_(rho_new * rho).addcmul_(dinv * c, residual(b, x))
        x.add_(d)
        rho = rho_new
    return x


def _chebyshev_scalar(residual, dinv, b, x, theta: float, delta: float, degree: int) -> torch.Tensor:
    """:func:`chebyshev_iteration` with one interval for all columns (the multigrid smoother): the
    direction is kept with a pending scale factor, so a step is at most three vector passes besides
    its residual and the last step two (degree 2 from zero: four passes and one residual)."""
    sigma = theta / delta
    rho = 1.0 / sigma
    if x is None:  # x = D^-1 b / theta, and the direction d is x itself (scale 1)
        x = torch.mul(dinv, b).mul_(1.0 / theta)
        d, s = None, 1.0
    else:  # x is the caller's own: updated in place; d = s * (D^-1 r)
        d = residual(b, x).mul_(dinv)
        s = 1.0 / theta
        x.add_(d, alpha=s)
    for k in range(degree - 1):
        rho_new = 1.0 / (2 * sigma - rho)
        c = 2 * rho_new / delta
        a = rho_new * rho * s  # d_new = a d_stored + c D^-1 r
        r = residual(b, x)
        if k == degree - 2:  # the last step: x += d_new, no direction kept
            if d is None:
                x.mul_(1.0 + a)
            else:
                x.add_(d, alpha=a)
            x.addcmul_(dinv, r, value=c)
        else:
            d = (x * a if d is None else d.mul_(a)).addcmul_(dinv, r, value=c)
            x.add_(d)
            s = 1.0
        del r
        rho = rho_new
    return x


class ChebyshevPreconditioner(Preconditioner):
    """Chebyshev polynomial preconditioner ``p(D^{-1} A) D^{-1}`` on ``[hi / ratio, hi]``.

    ``hi`` is :func:`spectral_bound`: the Lanczos estimate of ``rho(D^{-1} A)`` times
    :data:`LANCZOS_SAFETY`, capped by the Gershgorin bound (the fallback where Lanczos does
    not apply), so the interval reaches the top of the spectrum without Gershgorin's
    overestimate.  For Hermitian positive definite A.
    """

    name = "chebyshev"

    def __init__(self, A: SparseTensor, degree: int = 4, ratio: float = 30.0):
        super().__init__(A)
        if not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree must be a positive integer, got {degree!r}")
        if not ratio > 1:
            raise ValueError(f"ratio must be > 1, got {ratio!r}")
        self.dinv = diagonal_inverse(A, "chebyshev")
        from ...structure import is_symmetric

        d = A.detach().diagonal().reshape(A.batch_size, -1)
        mv = matvec(A)
        hermitian = is_symmetric(A, conjugate=True)
        hi = spectral_bound(lambda x: mv(x.unsqueeze(-1)).squeeze(-1), A.pattern.row, flat_values(A), d, hermitian)
        self.hi = hi.reshape(-1, 1, 1)
        self.lo = self.hi / ratio
        self.degree, self.ratio = degree, ratio
        self.residual = lambda b, x: b - mv(x)

    def __call__(self, r):
        return chebyshev_iteration(self.residual, self.dinv, r, None, self.lo, self.hi, self.degree)

    def adjoint(self):
        return ChebyshevPreconditioner(self.A.H(), self.degree, self.ratio)
