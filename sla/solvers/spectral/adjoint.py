"""Adjoint of a partial Hermitian eigendecomposition (shared by eigsh and svd).

For ``A v_i = lam_i v_i`` (``i < k``, ``V`` orthonormal) and a loss with
gradients ``glam`` and ``gV``, the gradient with respect to a dense ``A`` is
``G = sum_i u_i v_i^H`` with::

    u_i = glam_i v_i + sum_{j != i} v_j (v_j^H gv_i) / (lam_i - lam_j) + w_i,
    (A - lam_i I) w_i = -(I - V V^H) gv_i,   w_i in range(I - V V^H).

The first sum is the part of the eigenvector derivative inside the computed
subspace (closed form); ``w_i`` is the part outside it, found by MINRES on the
shifted operator projected onto the complement of ``V`` (the "adjoint solve
with the shifted, projected operator"; it is non-singular there when
``lam_i`` is simple).  Pairs with ``lam_i == lam_j`` (to rounding) inside the
computed set are skipped: that rotation is a gauge freedom, so only losses
that do not depend on the basis chosen inside a degenerate eigenspace (for
example functions of its projector) have meaningful eigenvector gradients.  The gradient of a stored entry
``(r, c)`` of a sparse matrix is then ``sum_i u_i[r] conj(v_i[c])`` -- O(nnz k), never dense.
The derivation holds for any perturbation ``dA`` (V is an orthonormal
eigenbasis of A), so each stored value is an independent variable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

__all__ = ["projected_minres", "eig_backward_vectors"]

log = logging.getLogger("sla")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.conj() * b).sum(1, keepdim=True).real


def projected_minres(
    op: Callable[[torch.Tensor], torch.Tensor],
    shifts: torch.Tensor,
    V: torch.Tensor,
    b: torch.Tensor,
    tol: float,
    maxiter: int,
):
    """Solve ``Q (A - shifts_j) Q x_j = b_j`` column by column with ``Q = I - V V^H``.

    MINRES (Paige & Saunders 1975, the recurrences of ``scipy.sparse.linalg.minres``
    without a preconditioner), vectorised over the batch and the columns:
    ``b`` and ``x`` are ``[B, n, K]``, ``shifts`` ``[B, K]``.  Returns
    ``(x, iterations, worst relative residual estimate)``.
    """
    tiny = torch.finfo(b.real.dtype).tiny
    sig = shifts[:, None, :].to(b.dtype)

    def proj(x):
        return x - V @ (V.mH @ x)

    def A(x):
        px = proj(x)
        return proj(op(px) - sig * px)

    def safe_div(a, c):
        return torch.where(c.abs() > tiny, a / torch.where(c.abs() > tiny, c, torch.ones_like(c)), torch.zeros_like(a))

    b = proj(b)
    x = torch.zeros_like(b)
    beta1 = _dot(b, b).sqrt()
    r1 = b.clone()
    r2 = b.clone()
    y = b.clone()
    oldb = torch.zeros_like(beta1)
    beta = beta1.clone()
    dbar = torch.zeros_like(beta1)
    epsln = torch.zeros_like(beta1)
    phibar = beta1.clone()
    cs = -torch.ones_like(beta1)
    sn = torch.zeros_like(beta1)
    w = torch.zeros_like(b)
    w2 = torch.zeros_like(b)
    it, rel = 0, 0.0
    for it in range(1, maxiter + 1):
        v = y * safe_div(torch.ones_like(beta), beta).to(b.dtype)
        y = A(v)
        if it >= 2:
            y = y - (safe_div(beta, oldb)).to(b.dtype) * r1
        alfa = _dot(v, y)
        y = y - safe_div(alfa, beta).to(b.dtype) * r2
        r1, r2 = r2, y
        oldb, beta = beta, _dot(y, y).sqrt()
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        gamma = torch.sqrt(gbar**2 + beta**2).clamp_min(tiny)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = sn * phibar
        w1, w2 = w2, w
        w = (v - oldeps.to(b.dtype) * w1 - delta.to(b.dtype) * w2) / gamma.to(b.dtype)
        x = x + phi.to(b.dtype) * w
        rel = float(safe_div(phibar, beta1).max()) if beta1.numel() else 0.0
        if rel <= tol:
            break
    return proj(x), it, rel


def eig_backward_vectors(
    op: Callable[[torch.Tensor], torch.Tensor],
    lam: torch.Tensor,
    V: torch.Tensor,
    glam: torch.Tensor | None,
    gV: torch.Tensor | None,
    tol: float | None = None,
    maxiter: int | None = None,
) -> torch.Tensor:
    """The vectors ``u_i`` ``[B, n, k]`` of the module docstring (``G = U V^H``)."""
    B, n, k = V.shape
    U = torch.zeros_like(V)
    if glam is not None:
        U = U + V * glam[:, None, :].to(V.dtype)
    if gV is None:
        return U
    M = V.mH @ gV  # M[j, i] = v_j^H gv_i
    E = lam[:, None, :] - lam[:, :, None]  # E[j, i] = lam_i - lam_j
    # degenerate pairs (and i == j): the rotation inside an eigenspace is a gauge freedom, and a
    # loss that is well defined there (e.g. a function of the eigenspace's projector) has no
    # component along it -- drop those terms instead of dividing by ~0
    scale = lam.abs().amax(-1, keepdim=True)[:, :, None].clamp_min(torch.finfo(lam.dtype).tiny)
    skip = E.abs() <= 1e3 * torch.finfo(lam.dtype).eps * scale
    F = torch.where(skip, torch.zeros_like(M), M / torch.where(skip, torch.ones_like(E), E).to(M.dtype))
    U = U + V @ F
    rhs = -(gV - V @ M)
    if bool((torch.linalg.vector_norm(rhs, dim=1) > 0).any()):
        single = V.dtype in (torch.float32, torch.complex64)
        tol = (1e-6 if single else 1e-11) if tol is None else tol
        maxiter = maxiter or max(200, min(10 * n, 20000))
        W, its, rel = projected_minres(op, lam, V, rhs, tol, maxiter)
        if rel > max(tol * 1e3, 1e-6):
            log.warning("eigenvector adjoint: MINRES stopped at relative residual %.1e after %d iterations", rel, its)
        U = U + W
    return U
