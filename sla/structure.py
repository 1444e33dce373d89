"""Cheap, honest structure detection: symmetry, Hermitian-ness, definiteness.

* Symmetry compares the values with their image under the pattern's cached
  transpose permutation on the CPU, and with the mirror entries found by
  :meth:`~sla.Pattern.find` on GPUs (O(nnz), no dense work).
* Definiteness is exact: a Hermitian matrix with a positive diagonal is
  positive definite when it is irreducibly diagonally dominant (the 5-point
  Laplacian is); otherwise a Cholesky-type factorisation decides.  A
  Gershgorin-only test would wrongly reject the plain Laplacian.

Results are cached on the pattern's numeric cache (keyed on the values themselves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .grid import read_stencil, stencil_symmetric
from .kernels import all_
from .numeric_cache import hand_over, scope_wants
from .reductions import abs_max

if TYPE_CHECKING:  # annotations only: sparse.py imports this module
    from .sparse import SparseTensor

__all__ = [
    "is_symmetric",
    "is_positive_definite",
    "is_dominant_definite",
    "detect_matrix_type",
    "guess_matrix_type",
    "symmetric_members",
    "positive_definite_members",
    "connected_components",
]

_DENSE_LIMIT = 1500
_CHUNK = 1 << 20  # entries per pass of a chunked scan (1M: its temporaries stay small next to a 1M-unknown solve)


def _default_rtol(dtype: torch.dtype) -> float:
    return 100 * torch.finfo(dtype).eps


def is_symmetric(A: SparseTensor, conjugate: bool = False, rtol: float | None = None) -> bool:
    """``A == A^T`` (or ``A^H``) entrywise up to ``rtol * max|A|``, every batch member."""
    M, N = A.pattern.shape
    if M != N:
        return False
    if conjugate and not A.is_complex:
        conjugate = False
    rtol = _default_rtol(A.dtype) if rtol is None else rtol
    v = A.values.detach()

    def build():
        if A.nnz == 0:
            return True
        scale = abs_max(v, -1, keepdim=True)
        p = A.pattern
        if p.device.type != "cpu" and "transpose" not in p._memo:
            grid = p.cache.get("grid")
            if grid is not None and (p.nnz >= _STENCIL_MIN or scope_wants("stencil")):
                found = _symmetric_by_stencil(p, v, tuple(grid), conjugate, rtol * scale)
                if found is not None:
                    return found
            return _symmetric_by_search(p, v, conjugate, rtol * scale)
        if p.is_structurally_symmetric:
            _, perm = p.transpose()
            vt = v[..., perm]
            if conjugate:
                vt.conj_physical_()
            if torch.equal(v, vt):  # exact symmetry: the common case, one pass
                return True
            diff = vt.sub_(v).abs_() if not vt.is_complex() else vt.sub_(v).abs()  # one temporary, not three
        else:
            At = A.detach().H() if conjugate else A.detach().T()
            diff = (A.detach() - At).values.abs()
        return bool((diff <= rtol * scale).all())

    return A.pattern.numeric(A.values, ("symmetric", conjugate, rtol), build)


def _symmetric_by_search(p, v, conjugate: bool, tol: torch.Tensor) -> bool:
    """Symmetry without the transpose permutation: the mirror ``(j, i)`` of each entry ``(i, j)`` is
    found by :meth:`~sla.Pattern.find` (a binary search inside row ``j``), a chunk of entries at a
    time.  Used on GPUs, where the permutation (kept on the pattern) and its sort would cost ~5x
    the matrix's index storage; the temporaries here are a few index arrays (int32 below 2^30
    entries) of a chunk (a 16th of the entries, at least 1M: the bytes of a 32nd in int64)."""
    # entries at their mirror, a count (no any/all kernels on a GPU); a NaN is at no mirror
    good = torch.zeros((), dtype=torch.int64, device=v.device)
    for lo, hi, rows in p.row_chunks(max(_CHUNK, -(-p.nnz // 16)), dtype=p.index_dtype):
        pos = p.find(p.ccol[lo:hi], rows, dtype=p.index_dtype)
        vt = torch.where(pos >= 0, v[..., pos.clamp(min=0)], 0)  # a missing mirror is a zero (stored zeros may face it)
        vt = vt.conj() if conjugate else vt
        good += ((v[..., lo:hi] - vt).abs() <= tol).sum()
    return int(good) == v.numel()  # one host synchronisation


_STENCIL_MIN = 1 << 26
"""GPU matrices on a recorded grid are checked on their stencil arrays (:func:`_symmetric_by_stencil`)
when the solve builds geometric multigrid (which takes the arrays over: no second reading) or from
this many entries (13M unknowns of a 5-point matrix).  H200, 5-point 16M: 22.3 ms against the
search's 27.6-28.1 (type detection in all); 1M: 4.5 against 7.9-9.1, but there the stencil's kernels
(~30 ms on a process's first use) would be loaded by solvers that never need them (AMG)."""


def _symmetric_by_stencil(p, v, grid: tuple, conjugate: bool, tol: torch.Tensor) -> bool | None:
    """Symmetry of a matrix on the grid ``grid`` from its stencil arrays (:func:`sla.grid.read_stencil`,
    then shifted comparisons): no search, one values-sized temporary at a time (an unbatched matrix's is
    handed to the solve's GMG setup when it asked: :func:`sla.numeric_cache.hand_over`).  ``None`` when the matrix is no
    compact stencil on that grid (the caller searches instead)."""
    flat, tol = v.reshape(-1, p.nnz), tol.reshape(-1, 1)
    good = torch.ones((), dtype=torch.bool, device=v.device)
    for b in range(flat.shape[0]):
        try:
            offs, S = read_stencil(p, flat[b], grid)
        except ValueError:  # couplings further apart, or across the grid's edge
            return None
        good = good & stencil_symmetric(offs, S, tol[b if tol.shape[0] > 1 else 0], conjugate)
        if flat.shape[0] == 1:  # to a GMG setup in the same solve, if it asked (a batch's would add up)
            hand_over("stencil", flat[b], grid, (offs, S))
        del S
    return bool(good)


def _positive_diagonal(A) -> bool:
    d = A.diagonal().detach()
    if A.is_complex:
        if bool((d.imag.abs() > _default_rtol(A.dtype) * d.abs().clamp_min(1e-300)).any()):
            return False
        d = d.real
    return bool(all_(d > 0))


def _irreducibly_dominant(A) -> bool:
    """Every row weakly diagonally dominant, and every row joined to a strictly dominant one through
    non-zero couplings (an irreducibly dominant block each).  In chunks of rows: no nnz-sized
    temporaries (they were ~4x the matrix's values, and set the peak of a GPU solve's type check)."""
    p = A.pattern
    B = A.batch_size
    v = A.values.detach().reshape(B, A.nnz)
    d = A.diagonal().detach().abs().reshape(B, -1)
    offsum = torch.zeros_like(d)
    for lo, hi, rows in p.row_chunks(_CHUNK, dtype=p.index_dtype):
        a = v[:, lo:hi].abs()
        offsum.index_add_(1, rows, a.masked_fill_(rows == p.ccol[lo:hi], 0))
    tol = _default_rtol(A.dtype) * d
    if bool((d + tol < offsum).any()):
        return False
    strict = d > offsum + tol
    return all(_reaches_all(p, v[b], strict[b]) for b in range(B))


_REACH_STEPS = 512  # sparse products a GPU spends on the reach before it asks SciPy for components


def _reaches_all(p, v: torch.Tensor, strict: torch.Tensor) -> bool:
    """Whether every row is joined to a ``strict`` one through the non-zero entries ``v`` (A is
    Hermitian here, so its graph is undirected).  A stored zero is no coupling: a singular block tied
    to a dominant row only by stored zeros is not certified.  On GPUs the strict rows spread by sparse
    products (one per graph step: a few dozen on a mesh with Dirichlet rows; no trip to the host, no
    SciPy import); on the CPU, or when that has not settled after :data:`_REACH_STEPS`, by SciPy's
    connected components of the non-zero graph."""
    if bool(strict.all()):
        return True
    if not bool(strict.any()):
        return False
    if p.device.type != "cpu":
        reached = _reach_by_products(p, v, strict)
        if reached is not None:
            return reached
    import scipy.sparse as sp
    import scipy.sparse.csgraph as csgraph

    nz = (v != 0).cpu().numpy()
    q = p.to("cpu")
    rows = q.rows().numpy()[nz]
    g = sp.csr_array((np.ones(rows.size, dtype=np.int8), (rows, q.ccol.numpy()[nz])), shape=q.shape)
    ncomp, labels = csgraph.connected_components(g, directed=False)
    hit = np.zeros(ncomp, dtype=bool)
    hit[labels[strict.cpu().numpy()]] = True
    return bool(hit.all())


def _reach_by_products(p, v: torch.Tensor, strict: torch.Tensor, steps: int = _REACH_STEPS) -> bool | None:
    """:func:`_reaches_all` by sparse products from the ``strict`` rows; ``None`` when it has not
    settled after ``steps`` of them (a long chain)."""
    from .products import csr_matmul

    W = p.csr((v != 0).to(torch.float32))  # 4 bytes an entry while it runs
    x = strict.to(torch.float32).unsqueeze(1)
    count = int(strict.sum())
    for step in range(1, steps + 1):
        x = ((csr_matmul(W, x) > 0) | (x > 0)).to(torch.float32)
        if step % 8 == 0 or step == steps:  # one host look every 8 steps
            now = int(x.sum())
            if now == x.shape[0]:
                return True
            if now == count:
                return False
            count = now
    return None


def _factor_is_pd(A) -> bool:
    n = A.pattern.shape[0]
    if n <= _DENSE_LIMIT:
        dense = A.detach().to_dense().reshape(-1, n, n)
        return bool((torch.linalg.cholesky_ex(dense).info == 0).all())
    import scipy.sparse.linalg as spla

    for b in range(A.batch_size):
        Ab = A.detach().values.reshape(A.batch_size, A.nnz)[b]
        S = type(A)._make(Ab, A.pattern).to_scipy("csc")
        try:
            lu = spla.splu(S, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))
        except RuntimeError:  # exactly singular
            return False
        if not np.array_equal(lu.perm_r, lu.perm_c):
            return False
        if not bool(np.all(lu.U.diagonal().real > 0)):
            return False
    return True


def is_dominant_definite(A: SparseTensor) -> bool:
    """A cheap, exact *certificate* of positive definiteness: Hermitian, positive diagonal and
    irreducibly diagonally dominant (O(nnz)).  ``False`` means "not certified", not "indefinite"."""
    if not is_symmetric(A, conjugate=True):
        return False
    return A.pattern.numeric(A.values, ("dominant",), lambda: _positive_diagonal(A) and _irreducibly_dominant(A))


def is_positive_definite(A: SparseTensor) -> bool:
    """Exact positive-definiteness test (Hermitian, and a Cholesky-type factorisation succeeds)."""
    if not is_symmetric(A, conjugate=True):
        return False

    def build():  # the cheap certificate first (shared with solver selection), then a factorisation
        return is_dominant_definite(A) or (_positive_diagonal(A) and _factor_is_pd(A))

    return A.pattern.numeric(A.values, ("pd",), build)


def detect_matrix_type(A: SparseTensor) -> str:
    """Exact type: 'general', 'symmetric', 'spd', 'hermitian' or 'hpd'."""
    if A.is_complex:
        if is_symmetric(A, conjugate=True):
            return "hpd" if is_positive_definite(A) else "hermitian"
        return "symmetric" if is_symmetric(A) else "general"
    if is_symmetric(A):
        return "spd" if is_positive_definite(A) else "symmetric"
    return "general"


def guess_matrix_type(A: SparseTensor) -> str:
    """Cheap optimistic type for solver selection: a Hermitian matrix with a positive
    diagonal is guessed definite (solvers try Cholesky and fall back on failure)."""
    herm = is_symmetric(A, conjugate=True)
    if herm and _positive_diagonal(A):
        return "hpd" if A.is_complex else "spd"
    if herm:
        return "hermitian" if A.is_complex else "symmetric"
    return "symmetric" if (A.is_complex and is_symmetric(A)) else "general"


# ------------------------------------------------------------ per batch member
def _members(A: SparseTensor):
    """Each batch member of ``A`` as an unbatched tensor on the shared pattern (detached)."""
    flat = A.values.detach().reshape(A.batch_size, A.nnz)
    return [type(A)._make(flat[b], A.pattern) for b in range(A.batch_size)]


def symmetric_members(A: SparseTensor, conjugate: bool = False, rtol: float | None = None) -> torch.Tensor:
    """``A_b == A_b^T`` (or ``A_b^H``) for every batch member: a bool tensor ``[*batch]`` (on the CPU).

    Each member is compared with its own scale ``rtol * max|A_b|``.
    """
    M, N = A.pattern.shape
    if M != N:
        return torch.zeros(A.batch_shape, dtype=torch.bool)
    if conjugate and not A.is_complex:
        conjugate = False
    rtol = _default_rtol(A.dtype) if rtol is None else rtol
    v = A.values.detach().reshape(A.batch_size, A.nnz)
    if A.nnz == 0:
        return torch.ones(A.batch_shape, dtype=torch.bool)
    scale = abs_max(v, -1, keepdim=True)
    if A.pattern.is_structurally_symmetric:
        vt = v[:, A.pattern.transpose()[1]]
        diff = (v - (vt.conj() if conjugate else vt)).abs()
    else:
        Ad = A.detach()
        diff = (Ad - (Ad.H() if conjugate else Ad.T())).values.abs().reshape(A.batch_size, -1)
    return (diff <= rtol * scale).all(-1).cpu().reshape(A.batch_shape)


def _pd_by_eigenvalue(A: SparseTensor) -> bool:
    n = A.pattern.shape[0]
    if n > _DENSE_LIMIT:  # the exact factorisation test gives the same answer without n^3 work
        return _factor_is_pd(A)
    return bool((torch.linalg.eigvalsh(A.detach().to_dense()) > 0).all())


_PD_METHODS = ("auto", "gershgorin", "cholesky", "eigenvalue")


def positive_definite_members(A: SparseTensor, method: str = "auto") -> torch.Tensor:
    """Positive definiteness of every batch member: a bool tensor ``[*batch]`` (on the CPU).

    ``method``: ``'auto'`` (exact: a diagonal-dominance certificate, else a
    Cholesky-type factorisation), ``'cholesky'`` (the factorisation only),
    ``'eigenvalue'`` (smallest eigenvalue > 0, dense up to 1500 rows, else the
    factorisation) or ``'gershgorin'`` (the certificate only: ``False`` means
    "not certified", as with the seed project's Gershgorin test).
    """
    if method not in _PD_METHODS:
        raise ValueError(f"method must be one of {_PD_METHODS}, got {method!r}")
    M, N = A.pattern.shape
    out = torch.zeros(A.batch_size, dtype=torch.bool)
    if M != N:
        return out.reshape(A.batch_shape)
    herm = symmetric_members(A, conjugate=True).reshape(-1)
    for b, Ab in enumerate(_members(A)):
        if not herm[b]:
            continue
        if method == "auto":
            ok = is_positive_definite(Ab)
        elif method == "gershgorin":
            ok = is_dominant_definite(Ab)
        elif method == "cholesky":
            ok = _positive_diagonal(Ab) and _factor_is_pd(Ab)
        else:
            ok = _pd_by_eigenvalue(Ab)
        out[b] = ok
    return out.reshape(A.batch_shape)


# ------------------------------------------------------------------- graph
def connected_components(A: SparseTensor) -> tuple[torch.Tensor, int]:
    """Weakly connected components of the graph of a square matrix's pattern.

    Returns ``(labels, count)``: ``labels`` int64 ``[N]`` on ``A.device``,
    numbered ``0 .. count-1`` in order of each component's smallest node.
    Stored zeros count as edges (the pattern decides).  Cached on the pattern.
    """
    M, N = A.pattern.shape
    if M != N:
        raise ValueError(f"connected components need a square matrix, got shape {tuple(A.shape)}")
    ncomp, labels = A.pattern.memo("components", lambda: _components(A.pattern))
    return torch.from_numpy(labels.astype(np.int64)).to(A.device), int(ncomp)


def _components(pattern):
    import scipy.sparse as sp
    import scipy.sparse.csgraph as csgraph

    p = pattern.to("cpu")
    g = sp.csr_array((np.ones(p.nnz, dtype=np.int8), p.ccol.numpy(), p.crow.numpy()), shape=p.shape)
    return csgraph.connected_components(g, directed=True, connection="weak")
