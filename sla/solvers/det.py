"""Determinants through sparse LU: ``det``, ``slogdet``, with the adjoint.

Forward (per batch member, SciPy SuperLU on the CPU, in double precision)::

    P_r A P_c = L U,  L unit lower   =>   log|det A| = sum log|U_ii|,
    sign(det A) = sign(P_r) sign(P_c) prod U_ii / |U_ii|.

A CUDA matrix makes an explicit round trip to the CPU for the factorisation
(no GPU backend exposes its factors here); the results and the gradients come
back to the matrix's device.

Symmetric positive definite matrices use CHOLMOD's ``L D L^T`` instead (when
scikit-sparse is installed) and the Takahashi selected inverse in the backward
pass (see :class:`_SPDFactor`).

Backward: ``log det`` is holomorphic with ``d log det / dA = A^{-T}``, so for
every stored entry ``(r, c)``::

    grad_values[k] = g * conj((A^{-1})[c_k, r_k])

The needed entries of ``A^{-1}`` are read off column solves with the *same*
factors: columns ``r`` in blocks (``A Z = E_block``, 32 MiB of workspace),
and only the entries of the pattern are kept from each block -- never the
dense inverse.  The cost is ``n`` forward/back substitutions,
``O(n nnz(L + U))``, against the factorisation's cost for the forward pass.

``det = sign * exp(logabsdet)``: use :func:`slogdet` when the determinant may
over- or underflow.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import SingularMatrixError
from ..sparse import SparseTensor

__all__ = ["det", "slogdet"]

_BLOCK_BYTES = 32 * 2**20  # dense workspace of one block of column solves


def _check_square(A, name="A") -> SparseTensor:
    if not isinstance(A, SparseTensor):
        raise TypeError(f"{name} must be a sla.SparseTensor, got {type(A).__name__}")
    M, N = A.sparse_shape
    if M != N:
        raise ValueError(f"{name} must be square for a determinant, got shape {tuple(A.shape)}")
    if not bool(torch.isfinite(A.values.detach()).all()):
        raise ValueError(f"{name} has NaN or Inf among its values")
    return A


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
        try:
            self.lu = spla.splu(S, permc_spec="COLAMD")
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
    filled pattern of ``L + L^T``; the Takahashi recurrence (Takahashi, Fagan &
    Chin 1973; Erisman & Tinney 1975) gives ``Z = (L D L^T)^{-1}`` on exactly
    that pattern, column by column from the last::

        Z[I, j] = -Z[I, I] L[I, j],   Z[j, j] = 1 / d_j - L[I, j]^T Z[I, j],

    with ``I`` the below-diagonal structure of column ``j`` (a clique of the
    filled graph, so ``Z[I, I]`` is already known).  Cost ``sum_j |I_j|^2``
    instead of ``n`` triangular solves.
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
        L, d, n = self.L, self.d, self.n
        L.sort_indices()
        indptr, indices, data = L.indptr, L.indices.astype(np.int64), L.data
        keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr)) * n + indices  # (column, row), sorted
        Z = np.zeros_like(data)
        tri: dict = {}
        for j in range(n - 1, -1, -1):
            s, e = indptr[j], indptr[j + 1]
            if indices[s] != j:
                raise SingularMatrixError("CHOLMOD factor without a stored diagonal entry")
            I, lj = indices[s + 1:e], data[s + 1:e]
            if I.size:
                ia, ib = tri.get(I.size) or tri.setdefault(I.size, np.triu_indices(I.size))
                want = I[ia] * n + I[ib]  # Z[I[b], I[a]] lives in column I[a] (I[a] <= I[b])
                pos = np.searchsorted(keys, want)
                M = np.empty((I.size, I.size))
                M[ia, ib] = M[ib, ia] = Z[pos]
                zI = -(M @ lj)
                Z[s + 1:e] = zI
                Z[s] = 1.0 / d[j] - lj @ zI
            else:
                Z[s] = 1.0 / d[j]
        q = np.empty(n, dtype=np.int64)
        q[self.perm] = np.arange(n)
        u, v = q[col], q[row]  # (A^{-1})[c, r] = Z[q[c], q[r]]
        lo, hi = np.minimum(u, v), np.maximum(u, v)
        pos = np.searchsorted(keys, lo * n + hi)
        if not np.array_equal(keys[np.minimum(pos, keys.size - 1)], lo * n + hi):
            raise RuntimeError("Takahashi: an entry of A lies outside the filled pattern")  # cannot happen
        return Z[pos]


def _spd_candidate(A: SparseTensor) -> bool:
    if A.is_complex or not A.pattern.is_structurally_symmetric or not A.is_symmetric():
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
    _check_square(A)
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

