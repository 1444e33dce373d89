"""Determinants through sparse LU: ``det``, ``slogdet``, with the adjoint.

Forward (per batch member, SciPy SuperLU on the CPU, in double precision)::

    P_r A P_c = L U,  L unit lower   =>   log|det A| = sum log|U_ii|,
    sign(det A) = sign(P_r) sign(P_c) prod U_ii / |U_ii|.

A CUDA matrix makes an explicit round trip to the CPU for the factorisation
(no GPU backend exposes its factors here); the results and the gradients come
back to the matrix's device.

Symmetric positive definite matrices use CHOLMOD's ``L D L^T`` instead (when
scikit-sparse is installed).

Backward: ``log det`` is holomorphic with ``d log det / dA = A^{-T}``, so for
every stored entry ``(r, c)``::

    grad_values[k] = g * conj((A^{-1})[c_k, r_k])

The needed entries of ``A^{-1}`` come from the *same* factors, never from a
dense inverse:

* when the factors have a symmetric structure (``L D L^T``; or SuperLU with
  the symmetric ordering it uses for structurally symmetric patterns, when it
  kept diagonal pivots), the Takahashi / Erisman-Tinney *selected inverse*
  (:func:`_takahashi`) gives ``A^{-1}`` on the filled pattern, which contains
  A's pattern: cost ``sum_j |L_j|^2``;
* otherwise, column solves in blocks (``A Z = E_block``, 32 MiB of
  workspace), keeping only the pattern's entries of each block: ``n``
  substitutions, ``O(n nnz(L + U))``.

``det = sign * exp(logabsdet)``: use :func:`slogdet` when the determinant may
over- or underflow.
"""

from __future__ import annotations

import numpy as np
import torch

from ... import structure
from ...checks import first_order_only
from ...config import SingularMatrixError
from ...sparse import SparseTensor
from ..linear.solve import check_matrix

__all__ = ["det", "slogdet"]

_BLOCK_BYTES = 32 * 2**20  # dense workspace of one block of column solves


def _perm_sign(p: np.ndarray) -> int:
    """Sign of a permutation: (-1)^(n - number of cycles)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = p.size
    if n == 0:
        return 1
    g = sp.csr_array((np.ones(n, dtype=np.int8), p.astype(np.int64), np.arange(n + 1)), shape=(n, n))
    ncyc, _ = connected_components(g, directed=True, connection="weak")
    return -1 if (n - ncyc) % 2 else 1


def _takahashi(L, Ut, d):
    """Selected inverse ``Z = (L D Ut^T)^{-1}`` on the filled pattern (Erisman & Tinney 1975).

    ``L`` and ``Ut`` are unit lower-triangular CSC matrices with the *same*
    sorted structure (``Ut = U~^T`` of an LU factorisation, or ``L`` itself
    for ``L D L^T``).  From ``Z = D^{-1} L^{-1} + (I - U~) Z`` and
    ``Z = U~^{-1} D^{-1} + Z (I - L)``, column by column from the last, with
    ``I`` the below-diagonal structure of column ``j`` (a clique of the
    filled graph, so ``Z[I, I]`` is known)::

        Z[I, j] = -Z[I, I] L[I, j],   Z[j, I] = -U~[j, I] Z[I, I],
        Z[j, j] = 1 / d_j - U~[j, I] Z[I, j].

    Returns ``(keys, Zlow, Zup)``: ``Zlow[p] = Z[row, col]`` and ``Zup[p] =
    Z[col, row]`` for the entry ``p`` of column ``col`` at ``row``, with
    ``keys = col * n + row`` sorted.  Cost ``sum_j |I_j|^2``.
    """
    n = d.size
    indptr, indices = L.indptr, L.indices.astype(np.int64)
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr)) * n + indices
    Zl, Zu = np.zeros_like(L.data), np.zeros_like(L.data)
    tri: dict = {}
    for j in range(n - 1, -1, -1):
        s, e = indptr[j], indptr[j + 1]
        if indices[s] != j:
            raise ValueError("factor without a stored diagonal entry")
        I, lj, uj = indices[s + 1 : e], L.data[s + 1 : e], Ut.data[s + 1 : e]
        if I.size:
            ia, ib = tri.get(I.size) or tri.setdefault(I.size, np.triu_indices(I.size))
            want = I[ia] * n + I[ib]  # column I[a], row I[b] >= I[a]
            pos = np.minimum(np.searchsorted(keys, want), keys.size - 1)
            if not np.array_equal(keys[pos], want):
                raise ValueError("the factor's structure is not closed (not a filled graph)")
            M = np.empty((I.size, I.size), dtype=Zl.dtype)
            M[ib, ia] = Zl[pos]
            M[ia, ib] = Zu[pos]
            zcol = -(M @ lj)
            Zl[s + 1 : e] = zcol
            Zu[s + 1 : e] = -(uj @ M)
            Zl[s] = Zu[s] = 1.0 / d[j] - uj @ zcol
        else:
            Zl[s] = Zu[s] = 1.0 / d[j]
    return keys, Zl, Zu


def _lookup(sel, n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``Z[u, v]`` from :func:`_takahashi`'s output (the entries must lie in the filled pattern)."""
    keys, Zl, Zu = sel
    lower = u >= v
    key = np.where(lower, v * n + u, u * n + v)
    pos = np.minimum(np.searchsorted(keys, key), keys.size - 1)
    if not np.array_equal(keys[pos], key):
        raise ValueError("an entry lies outside the factor's filled pattern")
    return np.where(lower, Zl[pos], Zu[pos])


class _Factor:
    """SuperLU factors of one matrix plus its sign and log-determinant."""

    def __init__(self, values: np.ndarray, pattern):
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla

        n = pattern.shape[0]
        S = sp.csr_array((values, pattern.ccol.cpu().numpy(), pattern.crow.cpu().numpy()), shape=pattern.shape).tocsc()
        self.n = n
        self.lu = None
        if n == 0:
            self.sign, self.logabs = 1.0, 0.0
            return
        opts = dict(permc_spec="COLAMD")
        if pattern.is_structurally_symmetric:  # symmetric ordering, diagonal pivots preferred
            opts = dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options=dict(SymmetricMode=True))
        try:
            self.lu = spla.splu(S, **opts)
        except RuntimeError:  # "Factor is exactly singular"
            self.sign, self.logabs = 0.0, -np.inf
            return
        d = self.lu.U.diagonal()
        ad = np.abs(d)
        if not np.all(ad > 0):
            self.sign, self.logabs = 0.0, -np.inf
            self.lu = None
            return
        self.logabs = float(np.sum(np.log(ad)))
        s = _perm_sign(self.lu.perm_r) * _perm_sign(self.lu.perm_c)
        if np.iscomplexobj(d):
            self.sign = s * np.exp(1j * float(np.sum(np.angle(d))))
        else:
            self.sign = float(s * np.prod(np.sign(d)))

    def inverse_transpose_entries(self, row: np.ndarray, col: np.ndarray, crow: np.ndarray) -> np.ndarray:
        """``(A^{-1})[col_k, row_k]`` for the (row-major sorted) pattern entries."""
        if self.lu is None:
            raise SingularMatrixError("the determinant's gradient needs a non-singular matrix; A is singular")
        sel = self._selected_inverse()
        if sel is not None:  # P_r A P_c = L U  =>  A^{-1}[c, r] = Z[perm_c[c], perm_r[r]]
            return _lookup(sel, self.n, self.lu.perm_c[col].astype(np.int64), self.lu.perm_r[row].astype(np.int64))
        return self._column_solves(row, col, crow)

    def _selected_inverse(self):
        """Takahashi on the LU factors when pivoting kept a symmetric structure (else None)."""
        import scipy.sparse as sp

        lu = self.lu
        if not np.array_equal(lu.perm_r, lu.perm_c):
            return None
        L = sp.csc_matrix(lu.L)
        U = sp.csc_matrix(lu.U)
        d = U.diagonal()
        Ut = sp.csc_matrix(U.T @ sp.diags(1.0 / d))
        L.sort_indices()
        Ut.sort_indices()
        if not (np.array_equal(L.indptr, Ut.indptr) and np.array_equal(L.indices, Ut.indices)):
            return None
        try:
            return _takahashi(L, Ut, d)
        except ValueError:
            return None

    def _column_solves(self, row, col, crow):
        n = self.n
        dtype = self.lu.U.dtype
        bs = int(max(1, min(n, _BLOCK_BYTES // (n * np.dtype(dtype).itemsize))))
        out = np.empty(row.size, dtype=dtype)
        for c0 in range(0, n, bs):
            c1 = min(n, c0 + bs)
            E = np.zeros((n, c1 - c0), dtype=dtype)
            E[np.arange(c0, c1), np.arange(c1 - c0)] = 1
            Z = self.lu.solve(E)  # columns c0..c1 of A^{-1}
            k0, k1 = int(crow[c0]), int(crow[c1])
            out[k0:k1] = Z[col[k0:k1], row[k0:k1] - c0]
        return out


class _NotDefinite(Exception):
    pass


class _SPDFactor:
    """CHOLMOD ``P A P^T = L D L^T`` of a symmetric positive definite matrix.

    The gradient needs ``A^{-1}`` only on A's pattern, which lies inside the
    filled pattern of ``L + L^T``: :func:`_takahashi` computes exactly that.
    """

    def __init__(self, values: np.ndarray, pattern):
        import scipy.sparse as sp
        from sksparse import cholmod

        n = pattern.shape[0]
        S = sp.csr_array((values, pattern.ccol.cpu().numpy(), pattern.crow.cpu().numpy()), shape=pattern.shape)
        try:
            f = cholmod.cholesky(sp.csc_matrix(S.tocsc()), mode="simplicial")
        except cholmod.CholmodNotPositiveDefiniteError as exc:
            raise _NotDefinite(str(exc)) from exc
        L, D = f.L_D()
        d = D.diagonal()
        if not np.all(d > 0):
            raise _NotDefinite("LDL^T pivot not positive")
        self.n, self.sign, self.logabs = n, 1.0, float(np.sum(np.log(d)))
        self.L, self.d, self.perm = sp.csc_matrix(L), d, f.P()

    def inverse_transpose_entries(self, row: np.ndarray, col: np.ndarray, crow: np.ndarray) -> np.ndarray:
        L = self.L
        L.sort_indices()
        sel = _takahashi(L, L, self.d)
        q = np.empty(self.n, dtype=np.int64)
        q[self.perm] = np.arange(self.n)
        return _lookup(sel, self.n, q[col], q[row])  # P A P^T = L D L^T  =>  A^{-1}[c, r] = Z[q[c], q[r]]


def _spd_candidate(A: SparseTensor) -> bool:
    if A.is_complex or not A.pattern.is_structurally_symmetric or not structure.is_symmetric(A):
        return False
    try:
        from sksparse import cholmod  # noqa: F401
    except ImportError:
        return False
    return bool((A.diagonal().detach() > 0).all())


def _factors(A: SparseTensor) -> list:
    """Factors of each batch member, in double precision: CHOLMOD LDL^T for
    symmetric positive definite matrices (scikit-sparse installed), else SuperLU.

    Not cached on the values version: a determinant is a one-shot quantity, and
    the backward pass reuses these factors through the autograd context.
    """
    wide = torch.complex128 if A.is_complex else torch.float64
    vals = A._flat().detach().to("cpu", wide).numpy()
    p = A.pattern.to("cpu")
    spd = _spd_candidate(A)
    out = []
    for b in range(vals.shape[0]):
        fac = None
        if spd:
            try:
                fac = _SPDFactor(vals[b], p)
            except _NotDefinite:
                fac = None
        out.append(fac if fac is not None else _Factor(vals[b], p))
    return out


class _LogDet(torch.autograd.Function):
    """``(sign, log)`` of det for values ``[B, nnz]``.

    Real matrices: ``log = log|det|`` (sign not differentiable).  Complex:
    ``log`` is the complex logarithm of det (holomorphic), and the caller
    derives sign and ``log|det|`` from it with ordinary torch ops.
    """

    @staticmethod
    def forward(ctx, values, A):
        facs = _factors(A)
        ctx.facs = facs
        ctx.pattern = A.pattern
        dev, dt = values.device, values.dtype
        logabs = torch.tensor([f.logabs for f in facs], dtype=torch.float64)
        if values.is_complex():
            phase = torch.tensor([np.angle(f.sign) if f.sign != 0 else 0.0 for f in facs], dtype=torch.float64)
            sign = torch.tensor([complex(f.sign) for f in facs], dtype=torch.complex128)
            log = torch.complex(logabs, phase)
        else:
            sign = torch.tensor([f.sign for f in facs], dtype=torch.float64)
            log = logabs
        sign = sign.to(dev, dt)
        log = log.to(dev, dt)
        ctx.mark_non_differentiable(sign)
        return sign, log

    @staticmethod
    @first_order_only("det / logdet")
    @torch.autograd.function.once_differentiable
    def backward(ctx, gsign, glog):
        p = ctx.pattern.to("cpu")
        row, col, crow = p.row.numpy(), p.col.numpy(), p.crow.numpy().astype(np.int64)
        rows = []
        for f in ctx.facs:
            rows.append(torch.from_numpy(f.inverse_transpose_entries(row, col, crow)))
        inv_t = torch.stack(rows).to(glog.device)
        if glog.is_complex():
            gv = glog.unsqueeze(-1) * inv_t.to(glog.dtype).conj()
        else:
            gv = glog.unsqueeze(-1) * inv_t.to(glog.dtype)
        return gv, None


def slogdet(A: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign and natural log of ``|det A|``, like :func:`torch.linalg.slogdet`.

    Parameters
    ----------
    A : SparseTensor
        ``[*batch, n, n]``, real or complex.  CUDA matrices are factorised on
        the CPU (an explicit round trip; results return to A's device).

    Returns
    -------
    sign : torch.Tensor
        ``[*batch]``; ``0`` for a singular matrix (then ``logabsdet = -inf``);
        for complex matrices a unit-modulus complex number.
    logabsdet : torch.Tensor
        ``[*batch]``, real; differentiable in ``A.values``
        (``d/dA log|det A| = A^{-T}`` on the stored entries).

    Examples
    --------
    >>> import torch, sla
    >>> A = sla.SparseTensor.from_dense(torch.tensor([[0., 2.], [3., 1.]], dtype=torch.float64))
    >>> A.slogdet()
    (tensor(-1., dtype=torch.float64), tensor(1.7918, dtype=torch.float64))
    """
    check_matrix(A, purpose="take a determinant")
    sign, log = _LogDet.apply(A._flat(), A)
    if A.is_complex:
        logabs = log.real
        sign = torch.where(sign == 0, sign, torch.polar(torch.ones_like(logabs), log.imag))
    else:
        logabs = log
    return sign.reshape(A.batch_shape), logabs.reshape(A.batch_shape)


def det(A: SparseTensor) -> torch.Tensor:
    """Determinant ``[*batch]`` through sparse LU (``sign * exp(logabsdet)``).

    Differentiable: ``d det / dA = det(A) A^{-T}`` restricted to the stored
    entries.  Over- and underflows like the true determinant would; use
    :func:`slogdet` for large matrices.

    Examples
    --------
    >>> import torch, sla
    >>> A = sla.SparseTensor.from_dense(torch.tensor([[4., -1.], [-1., 4.]], dtype=torch.float64))
    >>> A.det()
    tensor(15., dtype=torch.float64)
    """
    sign, logabs = slogdet(A)
    return sign * torch.exp(logabs).to(sign.dtype)
