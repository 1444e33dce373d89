"""Adjoint of a partial Hermitian eigendecomposition (shared by eigsh and svd).

For ``A v_i = lam_i v_i`` (``i < k``, ``V`` orthonormal) and a loss with
gradients ``glam`` and ``gV``, the gradient with respect to a dense ``A`` is
``G = sum_i u_i v_i^H`` with::

    u_i = glam_i v_i + sum_{j != i} v_j (v_j^H gv_i) / (lam_i - lam_j) + w_i,
    (A - lam_i I) w_i = -(I - V V^H) gv_i,   w_i in range(I - V V^H).

The first sum is the part of the eigenvector derivative inside the computed
subspace (closed form); ``w_i`` is the part outside it, found by MINRES on the
shifted operator projected onto the complement of ``V`` (the MINRES of
:mod:`sla.solvers.krylov`; the "adjoint solve
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
import warnings
from collections.abc import Callable

import torch

from ..krylov.minres import minres

__all__ = ["projected_minres", "eig_backward_vectors"]

log = logging.getLogger("sla")


def projected_minres(
    op: Callable[[torch.Tensor], torch.Tensor],
    shifts: torch.Tensor,
    V: torch.Tensor,
    b: torch.Tensor,
    tol: float,
    maxiter: int,
) -> tuple[torch.Tensor, int, float]:
    """Solve ``Q (A - shifts_j) Q x_j = b_j`` column by column with ``Q = I - V V^H``.

    The MINRES of :mod:`sla.solvers.krylov.minres` on the shifted operator wrapped in the
    projection (Hermitian, and non-singular on the range of ``Q`` when the shifts are simple
    eigenvalues), vectorised over the batch and the columns: ``b`` and ``x`` are
    ``[B, n, K]``, ``shifts`` ``[B, K]``.

    Returns
    -------
    (torch.Tensor, int, float)
        ``x`` (in the range of ``Q``), the iterations of the slowest column, and the worst
        relative true residual.
    """
    sig = shifts[:, None, :].to(b.dtype)

    def proj(x: torch.Tensor) -> torch.Tensor:
        return x - V @ (V.mH @ x)

    def shifted(x: torch.Tensor) -> torch.Tensor:
        px = proj(x)
        return proj(op(px) - sig * px)

    b = proj(b)
    res = minres(shifted, b, rtol=tol, maxiter=maxiter)
    bn = torch.linalg.vector_norm(b, dim=1, keepdim=True)
    rel = torch.where(bn > 0, res.residual / torch.where(bn > 0, bn, torch.ones_like(bn)), res.residual)
    its = int(res.iterations.max()) if res.iterations.numel() else 0
    return proj(res.x), its, float(rel.max()) if rel.numel() else 0.0


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
    eps = torch.finfo(lam.dtype).eps
    skip = E.abs() <= 1e3 * eps * scale
    off = ~torch.eye(k, dtype=torch.bool, device=V.device)
    if bool((skip & off).any()):
        # invariant losses have V^H gV Hermitian inside the eigenspace; a loss that is not depends on
        # the arbitrary basis the eigensolver returned: its gradient does not exist (torch gives NaN)
        asym = (M - M.mH).abs()
        if bool((asym[skip & off] > 1e-6 * M.abs().amax().clamp_min(torch.finfo(lam.dtype).tiny)).any()):
            j, i = [int(t) for t in torch.nonzero(skip[0] & off & (asym[0] > 0))[0]] if B else (0, 0)
            raise ValueError(
                f"eigenvector gradient at a repeated eigenvalue (lambda_{j} = {float(lam[0, j]):.6g} and lambda_{i} = "
                f"{float(lam[0, i]):.6g} coincide): the loss depends on the basis chosen inside the eigenspace, "
                "so its gradient is not defined. Use quantities invariant within the eigenspace (the projector "
                "V V^H, sums of |v|^2 over it, eigenvalues), or split the eigenvalues"
            )
    near = (E.abs() <= eps**0.5 * scale) & ~skip & off & (M.abs() > 0)
    if bool(near.any()):
        gap = float((E.abs() / scale)[near].min())
        warnings.warn(
            f"eigenvector gradient at nearly repeated eigenvalues (relative gap {gap:.1e}): "
            "it is proportional to 1 / gap and may be dominated by rounding",
            RuntimeWarning,
            stacklevel=4,
        )
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
