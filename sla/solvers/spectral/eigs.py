"""Eigenpairs of general square matrices: ``eigs`` (ARPACK or dense), complex output.

The eigenvalues are differentiable through the left eigenvectors::

    d lam / dA[r, c] = conj(w[r]) v[c] / (w^H v),     A^H w = conj(lam) w,

which the backward pass finds by inverse iteration with the conjugate
transpose of a sparse LU of ``A - lam I`` (CPU).  Eigenvectors carry no
gradient (asking for one raises).
"""

from __future__ import annotations

import numpy as np
import torch

from ...checks import first_order_only
from ...config import ConvergenceError, rtol_alias
from ...sparse import SparseTensor
from .eigsh import DENSE_MAX, _check, _select

__all__ = ["eigs"]

_WHICH_G = ("LM", "SM", "LR", "SR", "LI", "SI")


class _EigsAdjoint(torch.autograd.Function):
    """Eigenvalues of a general matrix; gradient through left eigenvectors."""

    @staticmethod
    def forward(ctx, values, lam, V, A):
        ctx.set_materialize_grads(False)
        ctx.A = A
        ctx.save_for_backward(lam, V)
        return lam.clone(), V.clone()

    @staticmethod
    @first_order_only("eigs")
    @torch.autograd.function.once_differentiable
    def backward(ctx, glam, gV):
        if gV is not None and bool((gV != 0).any()):
            raise NotImplementedError("eigs differentiates its eigenvalues only, not its eigenvectors")
        lam, V = ctx.saved_tensors
        A = ctx.A
        if glam is None:
            return None, None, None, None
        W = _left_vectors(A, lam, V)  # [B, n, k]
        p = A.pattern
        wv = (W.conj() * V).sum(1)  # w^H v  [B, k]
        dlam = W[:, p.row, :].conj() * V[:, p.col, :] / wv[:, None, :]  # d lam / d A[r, c]
        gv = (glam[:, None, :] * dlam.conj()).sum(-1)
        if not A.is_complex:
            gv = gv.real
        return gv.to(A.dtype), None, None, None


def _left_vectors(A: SparseTensor, lam: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Left eigenvectors by inverse iteration with ``(A - lam I)^H`` (sparse LU, CPU)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    B, n, k = V.shape
    vals = A._flat().detach().cpu().numpy()
    p = A.pattern.to("cpu")
    out = np.empty((B, n, k), dtype=np.complex128)
    rng = np.random.default_rng(0)
    for b in range(B):
        S = sp.csc_array((vals[b], (p.row.numpy(), p.col.numpy())), shape=p.shape).astype(np.complex128)
        for i in range(k):
            mu = complex(lam[b, i])
            shift = mu + 1e2 * np.finfo(float).eps * max(1.0, abs(mu))
            lu = spla.splu((S - shift * sp.eye_array(n, format="csc")).tocsc())
            w = rng.standard_normal(n) + 0j
            for _ in range(2):
                w = lu.solve(w, trans="H")
                w /= np.linalg.norm(w)
            out[b, :, i] = w
    return torch.from_numpy(out).to(V.device)


def eigs(
    A: SparseTensor,
    k: int = 6,
    which: str = "LM",
    sigma: complex | None = None,
    return_eigenvectors: bool = True,
    method: str = "auto",
    *,
    rtol: float | None = None,
    maxiter: int | None = None,
    tol: float | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``k`` eigenpairs of a general square matrix (complex output).

    ``method``: ``'arpack'`` (CPU) or ``'dense'`` (``torch.linalg.eig``, any
    device; ``'auto'`` for ``n <= 200``).  Eigenvalues are differentiable in
    ``A.values``; eigenvectors are returned without a gradient path (asking
    for one raises).  Eigenvalues are sorted by real part, then imaginary part.
    ``rtol`` and ``maxiter`` control ARPACK (``tol`` is accepted as an alias of ``rtol``,
    as in :func:`eigsh`).

    Examples
    --------
    >>> import torch, sla
    >>> A = sla.SparseTensor.from_dense(torch.tensor([[0., -1.], [1., 0.]], dtype=torch.float64))
    >>> A.eigs(k=2, return_eigenvectors=False)
    tensor([0.-1.j, 0.+1.j], dtype=torch.complex128)
    """
    import scipy.sparse.linalg as spla

    n, k = _check(A, k, which, _WHICH_G, "eigs")
    tol = rtol_alias(rtol, tol, "eigs")
    cdtype = torch.complex128 if A.dtype in (torch.float64, torch.complex128) else torch.complex64
    if method == "auto":
        method = "dense" if n <= DENSE_MAX or k >= n - 1 else "arpack"
    if method == "dense":
        D = A.detach().to_dense().reshape(A.batch_size, n, n)
        lam, V = torch.linalg.eig(D)
        idx = _select(lam, k, which, sigma)
        lam, V = lam.gather(-1, idx), V.gather(-1, idx[:, None, :].expand(-1, n, -1))
    elif method == "arpack":
        if A.device.type != "cpu":
            raise ValueError("method 'arpack' runs on the CPU; use method='dense' for small matrices, or A.cpu()")
        if k >= n - 1:
            raise ValueError(f"ARPACK eigs needs k < n - 1, got k={k}, n={n}; use method='dense'")
        rng = np.random.default_rng(0)
        flat = A._flat().detach()
        ls, vs = [], []
        for b in range(A.batch_size):
            S = SparseTensor._make(flat[b], A.pattern).to_scipy("csc")
            try:
                w, v = spla.eigs(
                    S,
                    k=k,
                    which=which,
                    sigma=sigma,
                    tol=tol or 0.0,
                    maxiter=maxiter,
                    v0=rng.standard_normal(n).astype(S.dtype),
                )
            except spla.ArpackNoConvergence as exc:
                raise ConvergenceError(f"ARPACK did not converge ({exc}); raise maxiter or loosen tol") from exc
            ls.append(w)
            vs.append(v)
        lam = torch.from_numpy(np.stack(ls)).to(cdtype)
        V = torch.from_numpy(np.stack(vs)).to(cdtype)
    else:
        raise ValueError(f"method must be 'auto', 'arpack' or 'dense', got {method!r}")
    order = torch.argsort(lam.imag, dim=-1, stable=True)  # lexicographic: real part, then imaginary
    order = order.gather(-1, torch.argsort(lam.real.gather(-1, order), dim=-1, stable=True))
    lam, V = lam.gather(-1, order), V.gather(-1, order[:, None, :].expand(-1, n, -1))
    V = V / torch.linalg.vector_norm(V, dim=1, keepdim=True)
    if A.values.requires_grad:
        lam, V = _EigsAdjoint.apply(A._flat(), lam, V, A.detach())
    lam = lam.reshape(*A.batch_shape, k)
    V = V.reshape(*A.batch_shape, n, k)
    return (lam, V) if return_eigenvectors else lam
