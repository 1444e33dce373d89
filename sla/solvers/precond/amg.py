"""Smoothed-aggregation AMG: the setup of a hierarchy for the cycle of
:class:`sla.solvers.precond.multigrid.Multigrid`.

Smoothed aggregation (Vanek, Mandel & Brezina 1996; pyamg's
``smoothed_aggregation_solver`` is the reference):

1. strength graph: the off-diagonal pattern (``theta=0``, the default) or the
   entries with ``|a_ij| >= theta sqrt(|a_ii a_jj|)``;
2. aggregates: pyamg's ``standard_aggregation`` on the CPU or the parallel aggregation in
   torch (``'mis2'``: distance-2 independent-set aggregates on the finest level and on every
   level of a vector problem, distance-1 ones on the coarse levels of a scalar problem; see
   :mod:`sla.solvers.precond.aggregate`); structural, so cached on the pattern when ``theta == 0``;
3. tentative prolongator ``T`` (one 1 per row, constant near-null space);
4. smoothed prolongator ``P = (I - w D^{-1} A) T`` with ``w = 4 / (3 rho)``,
   ``rho`` the Lanczos estimate of ``rho(D^{-1} A)`` (Hermitian A; the Gershgorin bound
   otherwise or when smaller);
5. Galerkin coarse operator ``A_c = P^H A P`` (torch sparse products on A's device),
   without the couplings the product cancels (:data:`DROP_RTOL`).

The smoother on every level is a Chebyshev polynomial on ``[hi / ratio, hi]``, ``hi`` the
Lanczos estimate times :data:`~sla.solvers.precond.chebyshev.LANCZOS_SAFETY` capped by
Gershgorin (:meth:`~sla.solvers.precond.multigrid.Mat.bound`).
"""

from __future__ import annotations

import logging

import torch

from ...products import csr_matmul
from ...reductions import abs_max
from ...sparse import SparseTensor
from .._optional import installed
from .aggregate import aggregate
from .multigrid import (
    MIXED_MIN,
    Level,
    Mat,
    Multigrid,
    cast_csr,
    check_cycle,
    coarse_dtype_for,
    entry_blocks,
    galerkin,
)
from .nullspace import amalgamate, fit_candidates, rigid_body_modes

__all__ = ["DROP_RTOL", "VECTOR_THETA", "SmoothedAggregation", "Tentative", "prolongation_for"]


# strength threshold with several candidates, by dofs per node: 2D P2 elasticity (130K) coarsens too
# fast on every coupling (53 CG iterations; 34 at 0.08); 3D P1 elasticity (15K) does best at 0
# (24 iterations, operator complexity 1.4; 16 at 0.08 but complexity 2.5 and twice the time)
VECTOR_THETA = {2: 0.08}

log = logging.getLogger("sla")

DROP_RTOL = 1e-13
"""Off-diagonal entries of a coarse operator with ``|a_ij| <= DROP_RTOL sqrt(|a_ii a_jj|)`` are dropped:
the Galerkin product of a structured mesh cancels many couplings exactly (P1 triangles: a third of the
entries at 160K), and as stored entries they would join the strength graph (theta = 0 reads the pattern)
and make the aggregates too large -- 1.6x the V-cycle iterations of pyamg, whose SciPy products drop them."""


def _level(C: Mat, hermitian: bool, **kw) -> Level:
    """The level of operator C, its Chebyshev bound from Lanczos (capped by Gershgorin)."""
    return Level(C, hi=C.bound(hermitian), **kw)


def _transfer_level(C: Mat, hermitian: bool, P, R, csr) -> Level:
    """The level of C with its transfers: ``P`` a matrix, or ``(T, w)`` for an implicit one (:func:`_sa_level`)."""
    if isinstance(P, tuple):
        return _level(C, hermitian, R=R, csr=csr, smoothed=P)
    return _level(C, hermitian, P=P, R=R, csr=csr)


def _blocks(nnz: int):
    """``(lo, hi)``: eight blocks of entries (at least :data:`PRODUCT_CHUNK` each) for scans over A's entries."""
    return entry_blocks(nnz, PRODUCT_CHUNK)


def _couplings(C: Mat, tol: float, strict: bool) -> torch.Tensor:
    """The mask of C's diagonal and of its entries with ``|a_ij|^2 > tol^2 |a_ii a_jj|`` (``>=`` unless
    ``strict``), by blocks of entries: the temporaries stay small (whole-array ones were four of C's
    values, the setup's peak memory on a vector problem)."""
    d = C.diag().abs()
    keep = torch.empty(C.col.numel(), dtype=torch.bool, device=C.val.device)
    for lo, hi in _blocks(C.col.numel()):
        r, c = C.rows(lo, hi), C.col[lo:hi]
        bound = d[r].mul_(d[c]).mul_(tol**2)
        a2 = C.val[lo:hi].abs().square_()
        torch.logical_or(a2 > bound if strict else a2 >= bound, r == c, out=keep[lo:hi])
    return keep


def _drop_cancelled(Ac: Mat) -> Mat:
    """The coarse operator without the couplings its product cancelled (see :data:`DROP_RTOL`)."""
    return Ac.select(_couplings(Ac, DROP_RTOL, strict=True))


def _diagonal_fits(d: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Whether every ``|d_i|`` and ``1 / |d_i|`` is inside ``dtype``'s range with a margin (a 0-dim bool)."""
    big, tiny = torch.finfo(dtype).max / 8, torch.finfo(dtype).tiny * 8
    a = d.abs()
    lo, hi = torch.aminmax(a)
    return (hi < big) & (lo > tiny) & (lo > 1 / big) & (hi < 1 / tiny)


def _fits(hierarchies, dtype: torch.dtype) -> bool:
    """Whether every coarse operator, transfer and inverse diagonal fits ``dtype``'s range (one host look)."""
    big = torch.finfo(dtype).max / 8
    looks = []
    for levels in hierarchies:
        for k, lv in enumerate(levels):
            mats = [lv.P, lv.R] if k == 0 else [lv.A, lv.P, lv.R]
            looks += [abs_max(M.values()) < big for M in mats if M is not None and M.values().numel()]
            looks.append(_diagonal_fits(lv.dinv, dtype))  # an inverse diagonal that would overflow or underflow
    return bool(torch.stack(looks).all())


# ------------------------------------------------------ smoothed aggregation
def _has_pyamg() -> bool:
    return installed("pyamg")


def _strength(C: Mat, theta: float):
    """CSR arrays of the strength graph: the pattern itself (``theta = 0``) or its entries with
    ``|a_ij|^2 >= theta^2 |a_ii a_jj|``.  Self loops are harmless to both aggregations."""
    if theta == 0:
        return C.crow, C.col
    keep = _couplings(C, theta, strict=False)
    n = C.shape[0]
    counts = torch.zeros(n, dtype=torch.int64, device=C.val.device)
    for lo, hi in _blocks(C.col.numel()):  # kept entries per row (no row array of A's size)
        counts += torch.bincount(C.rows(lo, hi)[keep[lo:hi]], minlength=n)
    scrow = torch.zeros(n + 1, dtype=torch.int64, device=C.val.device)
    torch.cumsum(counts, 0, out=scrow[1:])
    return scrow, C.col[keep]


def _tentative(agg: torch.Tensor, nagg: int, dtype, cand: torch.Tensor | None = None) -> Mat:
    """T (n x nagg, one entry per aggregated row: the candidate vector, default 1).  Lean: int32 row
    starts, no row array, and the ones of the constant candidate a broadcast view (no storage)."""
    n = agg.numel()
    dev = agg.device
    has = agg >= 0
    idt = torch.int32 if n < 2**31 - 1 else torch.int64
    crow = torch.zeros(n + 1, dtype=idt, device=dev)
    torch.cumsum(has, 0, dtype=idt, out=crow[1:])
    nodes = None if bool(has.all()) else torch.nonzero(has).flatten()
    del has
    col = agg if nodes is None else agg[nodes]
    if cand is None:
        val = torch.ones(1, dtype=dtype, device=dev).expand(col.numel())
    else:
        val = cand if nodes is None else cand[nodes]
    return Mat(crow, col, val, (n, nagg))


def _transpose(C: Mat, val: torch.Tensor) -> Mat:
    """The transpose of C's pattern carrying ``val``: a counting sort of the entries by column, a
    block of C's entries at a time (a stable sort of the block; its entries go after those of the
    earlier blocks in their columns, so a column's entries keep C's row order).  Beside the result's
    arrays only a block's temporaries are made: a sort of all the entries at once took about five
    times the result's index bytes (its indices, keys and workspace), the setup's peak on a GPU."""
    M, N = C.shape
    dev = val.device
    nnz = C.col.numel()
    tcrow = torch.zeros(N + 1, dtype=torch.int64, device=dev)
    torch.cumsum(torch.bincount(C.col, minlength=N), 0, out=tcrow[1:])
    tcol = torch.empty(nnz, dtype=C.col.dtype, device=dev)
    tval = torch.empty(nnz, dtype=val.dtype, device=dev)
    fill = tcrow[:-1].clone()  # the next free position of every column
    for lo, hi in _blocks(nnz):
        key, idx = torch.sort(C.col[lo:hi], stable=True)
        rank = torch.arange(hi - lo, device=dev, dtype=torch.int32)
        rank -= torch.searchsorted(key, key, out_int32=True)  # position within its column in the block
        dest = fill[key] + rank
        del rank
        tcol[dest] = C.rows(lo, hi)[idx]
        tval[dest] = val[lo:hi][idx]
        del dest, idx
        fill += torch.bincount(key, minlength=N)
    return Mat(tcrow, tcol, tval, (N, M))


PRODUCT_CHUNK = 1 << 18
PRODUCT_ROWS = 1.0
"""Products ``s_ik t_kj`` per row block of the smoothed prolongator (:func:`_smoothed`): a block
holds ``max(PRODUCT_CHUNK, PRODUCT_ROWS * n)`` of them, so its temporaries (about 60 bytes per product) stay
near 60 bytes per unknown, below the setup's peak (the Galerkin product's), while the number of
blocks (host synchronisations and kernel launches on a GPU) stays near ``nnz(A) / n``."""


def _smoothed(C: Mat, T: Mat, w: float, chunk: int | None = None, dtype: torch.dtype | None = None) -> Mat:
    """``P = (I - w D^{-1} A) T`` by blocks of rows of A, without a sparse-sparse product.

    ``T`` is thin (one entry per row for one candidate, up to ``k`` with ``k`` candidates): every
    product ``s_ik t_kj`` of a block is formed, the products of one ``(i, j)`` are summed in the order
    of ``k`` (as a row-by-row SpGEMM does) and exact zeros are dropped.  Neither the ``nnz(A)``-sized
    ``S`` nor the product's buffers (cuSPARSE's SpGEMM) exist: a block holds about ``chunk``
    products (default: see :data:`PRODUCT_CHUNK`).  Columns come out ascending within each row, indices int32.

    The products are summed in A's precision; each block's values are stored in ``dtype`` (default
    A's): with single-precision coarse levels the blocks and their concatenation, which set the
    setup's peak memory, take two thirds of the bytes.
    """
    n, nc = C.shape[0], T.shape[1]
    dev = C.val.device
    dtype = C.val.dtype if dtype is None else dtype
    d = C.diag()
    nnz = C.col.numel()
    tcount = T.crow[1:] - T.crow[:-1]
    kmax = max(int(tcount.max()), 1) if n else 1
    full = kmax == 1 and T.col.numel() == n  # one entry in every row of T: the products are A's entries
    if full:
        del tcount
    products = max(PRODUCT_CHUNK, int(PRODUCT_ROWS * n)) if chunk is None else int(chunk)
    step = max(1, products // kmax)  # entries of A per block
    marks = torch.arange(step, max(nnz, step), step, device=dev)
    cuts = torch.searchsorted(C.crow, marks.to(C.crow.dtype), right=True) - 1
    bounds = sorted({0, n, *(int(c) for c in torch.unique(cuts).tolist() if 0 < int(c) < n)})
    ends = C.crow[bounds].tolist()
    # index work in int32 where every index fits (A's and T's entries, a block's products): half the
    # bytes of the block's temporaries, which set the setup's peak memory
    idt = torch.int32 if max(nnz, T.col.numel(), products) < 2**31 - 1 else torch.int64
    cdt = torch.int32 if nc < 2**31 - 1 else torch.int64
    # P's row starts, written block by block (P has at most nnz(A) * kmax entries)
    crow = torch.zeros(n + 1, dtype=torch.int32 if nnz * kmax < 2**31 - 1 else torch.int64, device=dev)
    cols, vals = [], []
    for r0, r1, lo, hi in zip(bounds[:-1], bounds[1:], ends[:-1], ends[1:]):
        counts_a = (C.crow[r0 + 1 : r1 + 1] - C.crow[r0:r1]).to(idt)
        rows = torch.repeat_interleave(torch.arange(r0, r1, device=dev, dtype=idt), counts_a, output_size=hi - lo)
        del counts_a
        k = C.col[lo:hi].to(idt)  # a view when C's columns are int32
        s = torch.div(C.val[lo:hi], d[rows]).mul_(-w)
        s = torch.where(rows == k, s + 1, s)  # the identity
        if full:  # T's entry of row k is entry k
            e, tp = None, k
        elif kmax == 1:  # the entries of A whose column has an entry in T
            e = torch.nonzero(tcount[k]).flatten().to(idt)
            tp = T.crow[k[e]].to(idt)
        else:
            c = tcount[k].to(idt)
            e = torch.repeat_interleave(torch.arange(hi - lo, device=dev, dtype=idt), c, output_size=int(c.sum()))
            first = (torch.cumsum(c, 0, dtype=idt) - c)[e]  # position of the product within its entry's row of T
            tp = T.crow[k].to(idt)[e] + (torch.arange(e.numel(), device=dev, dtype=idt) - first)
            del c, first
        v = (s if e is None else s[e]) * T.val[tp]
        key = T.col[tp].long()
        del tp, s, k
        key += (rows if e is None else rows[e]).sub_(r0).long().mul_(nc)
        del e, rows
        key, inv = torch.unique(key, sorted=True, return_inverse=True)
        pv = v.new_zeros(key.numel()).index_add_(0, inv, v)
        del v, inv
        nz = pv != 0
        key, pv = key[nz], pv[nz]
        counts = torch.bincount(torch.div(key, nc, rounding_mode="floor"), minlength=r1 - r0)
        torch.cumsum(counts, 0, out=counts)
        crow[r0 + 1 : r1 + 1] = counts.add_(crow[r0])
        cols.append((key % nc).to(cdt))
        vals.append(pv.to(dtype))
        del key, pv, counts
    col = torch.cat(cols) if cols else torch.zeros(0, dtype=cdt, device=dev)
    del cols
    val = torch.cat(vals) if vals else C.val.new_zeros(0, dtype=dtype)
    return Mat(crow, col, val, (n, nc))


def _improved_candidate(C: Mat, d: torch.Tensor, rho: float, sweeps: int) -> torch.Tensor | None:
    """The constant vector after ``sweeps`` damped-Jacobi sweeps on ``A x = 0`` (pyamg's improve_candidates)."""
    if sweeps <= 0:
        return None
    A = C.csr64()
    x = torch.ones(C.shape[0], 1, dtype=C.val.dtype, device=C.val.device)
    dinv = (1.0 / d).unsqueeze(-1) * (4.0 / (3.0 * rho))
    for _ in range(sweeps):
        x = x - dinv * csr_matmul(A, x)
    x = x[:, 0]
    return x / x.abs().amax()


def _coo_tentative(rows, cols, vals, shape) -> Mat:
    """T (COO sorted by row, columns ascending within a row) as a setup matrix."""
    n, nc = shape
    crow = torch.zeros(n + 1, dtype=torch.int64, device=vals.device)
    torch.cumsum(torch.bincount(rows, minlength=n), 0, out=crow[1:])
    return Mat(crow, cols, vals, shape, row=rows)


def _improved(C: Mat, d: torch.Tensor, rho: float, sweeps: int, B: torch.Tensor) -> torch.Tensor:
    """Candidates ``B`` after ``sweeps`` damped-Jacobi sweeps on ``A x = 0``."""
    if sweeps <= 0:
        return B
    A = C.csr64()
    dinv = (1.0 / d).unsqueeze(-1) * (4.0 / (3.0 * rho))
    for _ in range(sweeps):
        B = B - dinv * csr_matmul(A, B)
    return B / B.abs().amax(0)


class Tentative:
    """``T xc`` for a prolongator applied and not stored (:class:`~sla.solvers.precond.multigrid.Level`'s
    ``smoothed``): a gather by aggregate where T has at most one entry per row (one candidate: the
    column of every row, its values only when they are not the constant 1), else T's CSR product."""

    def __init__(self, T: Mat):
        n, nc = T.shape
        self.csr = self.idx = self.val = None
        counts = T.crow[1:] - T.crow[:-1]
        if n and int(counts.max()) > 1:
            self.csr = T.csr32()
            return
        has = counts > 0
        if T.col.numel() == n:  # every row aggregated: the column array is the aggregates themselves
            self.idx = T.col
        else:  # rows without an entry gather the zero appended to xc
            self.idx = torch.full((n,), nc, dtype=T.col.dtype, device=T.col.device).masked_scatter_(has, T.col)
        if T.val.stride() != (0,):  # (the constant candidate is a broadcast 1: see _tentative)
            self.val = T.val if T.col.numel() == n else T.val.new_zeros(n).masked_scatter_(has, T.val)
            self.val = self.val.unsqueeze(-1)

    def __call__(self, xc: torch.Tensor) -> torch.Tensor:
        if self.csr is not None:
            return csr_matmul(self.csr, xc)
        u = torch.cat([xc, xc.new_zeros(1, xc.shape[1])])[self.idx]
        return u if self.val is None else u.mul_(self.val)

    def cast(self, dtype: torch.dtype) -> None:
        self.csr = cast_csr(self.csr, dtype)
        self.val = None if self.val is None else self.val.to(dtype)

    def nbytes(self) -> int:
        if self.csr is not None:
            return sum(
                t.numel() * t.element_size()
                for t in (self.csr.crow_indices(), self.csr.col_indices(), self.csr.values())
            )
        return sum(t.numel() * t.element_size() for t in (self.idx, self.val) if t is not None)


PROLONGATIONS = ("auto", "stored", "implicit")


def prolongation_for(prolongation: str, A: SparseTensor) -> str:
    """The finest level's prolongator, checked: ``'stored'`` (a CSR matrix) or ``'implicit'``
    (``(I - w D^{-1} A) T`` applied: one product with A per cycle instead of P's storage).
    ``'auto'``: implicit on GPUs from :data:`~sla.solvers.precond.multigrid.MIXED_MIN` unknowns
    (where memory is what a solve is short of), stored otherwise."""
    if not isinstance(prolongation, str) or prolongation not in PROLONGATIONS:
        raise ValueError(f"prolongation must be one of {PROLONGATIONS}, got {prolongation!r}")
    if prolongation == "auto":
        return "implicit" if A.device.type == "cuda" and A.shape[-1] >= MIXED_MIN else "stored"
    return prolongation


def _sa_level(
    C: Mat, tentative, omega: float, hermitian: bool, sweeps: int = 0, B=None, dtype=None, implicit: bool = False
):
    """Smoothed prolongator ``P = (I - w D^{-1} A) T``, ``R = P^H`` and ``A_c = R A P``.

    ``tentative`` is ``(agg, nagg)`` (one constant candidate) or, with candidates ``B``, a
    function of the (improved) candidates returning ``(T, extra)``; ``extra`` is returned last.
    ``P`` comes from :func:`_smoothed` (row blocks, no sparse-sparse product) and ``R`` is its
    conjugate transpose (a sort of ``P``'s entries): no matrix of ``A``'s size is made.
    ``P`` and ``R`` are stored in ``dtype`` (default C's: see :func:`_smoothed`); ``A_c`` is the
    Galerkin product of the stored transfers, in C's precision.  With ``implicit`` the first
    value returned is ``(T, w)`` (a :class:`Tentative` and the weight: ``P = (I - w D^{-1} A) T``)
    instead of ``P``, which is dropped once ``A_c`` is made."""
    d = C.diag()
    rho = C.bound(hermitian, safety=1.0)  # the estimate itself, as pyamg's approximate_spectral_radius
    C._row = None  # nnz-sized; the diagonal and the bounds are kept, nothing below needs the rows
    extra = None
    if B is None:
        agg, nagg = tentative
        T = _tentative(agg, nagg, C.val.dtype, _improved_candidate(C, d, rho, sweeps))
    else:
        T, extra = tentative(_improved(C, d, rho, sweeps, B))
    w = omega / rho
    P = _smoothed(C, T, w, dtype=dtype)
    T = Tentative(T) if implicit else None  # (its gather form: no row starts kept)
    R = _transpose(P, P.val.conj_physical() if P.val.is_complex() else P.val)
    low = P.val.dtype
    if low != C.val.dtype:
        # the level keeps its inverse diagonal in the transfers' dtype: the diagonal need not be held
        # in C's through the product (unless it does not fit, which :func:`_fits` then reports), and
        # the product reads P in C's precision: one copy of P at a time
        if bool(_diagonal_fits(d, low)):
            C._diag = d.to(low)
        del d
        P.val = P.val.to(C.val.dtype)
    Ac = galerkin(R, C, P, consume=implicit)
    if implicit:
        return (T, w), R, _drop_cancelled(Ac), extra
    P.val = P.val.to(low)
    return P, R, _drop_cancelled(Ac), extra


def _candidates(A: SparseTensor, near_nullspace, block_size):
    """``(B, node, nnodes)``: candidates ``[n, k]``, node of every dof; ``(None, None, n)`` for the constant."""
    n = A.sparse_shape[0]
    rec = A.pattern.cache.get("dof_points")
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1 or n % block_size):
        raise ValueError(f"block_size must be a positive integer dividing n = {n}, got {block_size!r}")
    if isinstance(near_nullspace, str):
        if near_nullspace not in ("auto", "constant"):
            raise ValueError(f"near_nullspace must be 'auto', 'constant' or a tensor [n, k], got {near_nullspace!r}")
        if near_nullspace == "constant" or rec is None or rec[1] < 2:
            return None, None, n
        points, ncomp = rec
        B = rigid_body_modes(points.to(A.device), ncomp, dtype=A.dtype)
        if B.shape[0] != n:
            raise ValueError(f"the recorded dof points give {B.shape[0]} dofs, A has {n} rows")
        block_size = ncomp if block_size is None else block_size
    else:
        B = near_nullspace
        if not isinstance(B, torch.Tensor) or B.dim() not in (1, 2) or B.shape[0] != n:
            raise ValueError(
                f"near_nullspace must be a tensor [n, k] with n = {n}, got {getattr(B, 'shape', type(B).__name__)}"
            )
        B = B.detach().to(device=A.device, dtype=A.dtype).reshape(n, -1)
        block_size = block_size or (rec[1] if rec is not None and n % rec[1] == 0 else 1)
    node = torch.arange(n, device=A.device) // block_size
    return B, node, n // block_size


def _node_aggregate(C: Mat, theta: float, node, nnodes: int, method: str):
    """Aggregates of the node graph, returned per dof."""
    agg_node, nagg = aggregate(*amalgamate(*_strength(C, theta), node, nnodes), nnodes, method)
    return agg_node[node], nagg


def _fitted(agg, nagg: int):
    """The tentative-prolongator builder of :func:`_sa_level` for candidates on aggregates ``agg``."""

    def build(B):
        rows, cols, vals, nc, Bc, cnode = fit_candidates(agg, nagg, B)
        return _coo_tentative(rows, cols, vals, (agg.numel(), nc)), (Bc, cnode, nagg)

    return build


class SmoothedAggregation(Multigrid):
    """Smoothed-aggregation AMG preconditioner (V-cycle, Chebyshev smoothing).

    Parameters
    ----------
    A : SparseTensor
        Hermitian positive definite works best; ``[*batch, n, n]``.
    theta : float, optional
        Strength threshold (0: every off-diagonal entry is strong; aggregates
        are then structural and cached on the pattern).  Default 0 for scalar problems,
        :data:`VECTOR_THETA` (by dofs per node) with several candidates.
    max_coarse : int
        Coarsest level size (solved with a dense inverse).
    max_levels : int
        Level cap.
    degree : int
        Chebyshev smoother degree (pre and post).
    ratio : float
        Smoother interval ``[rho / ratio, rho]``.
    omega : float
        Prolongator smoothing weight times ``rho(D^{-1}A)``; 4/3 is standard.
    aggregation : str
        ``'standard'`` (pyamg's greedy sweep, serial on the CPU), ``'mis2'`` (parallel, in
        torch on A's device: distance-2 maximal-independent-set aggregates on the finest
        level and on every level of a vector problem; on the coarse levels of a scalar
        problem distance-1 ones, since their Galerkin operators couple aggregates two apart
        and distance-2 aggregates there coarsen too fast) or ``'auto'`` (standard when pyamg
        is installed, on CUDA too: its round trip to the host costs a little more setup than
        mis2 at 16M rows and saves iterations in every solve; mis2 otherwise).  The same
        iterations as standard where the node numbering
        has no structure; fewer aggregates and more iterations on a lexicographically
        numbered grid, where the greedy sweep packs its roots tightly.  Deterministic.
    coarse_dtype : torch.dtype or str
        The dtype of the levels below the fine one (operators, vectors, coarsest inverse), of the
        transfers ``P`` and ``R`` and of the smoother's inverse diagonals; the fine operator and
        the cycle's fine vectors keep A's.  ``'auto'`` (default): single precision for a
        double-precision A on GPUs from :data:`~sla.solvers.precond.multigrid.MIXED_MIN`
        unknowns (the transfers and coarse levels take half the memory and traffic; the coarse
        correction needs no more digits), with every cycle (the K-cycle's coarse Krylov steps run
        in the coarse levels' dtype); A's dtype otherwise.  The products are formed in A's
        precision: each prolongator is rounded as it is made and the coarse operator is the
        Galerkin product of the rounded transfers (then rounded itself); a hierarchy whose entries
        do not fit keeps A's dtype under ``'auto'``.
    coarse_theta : float, optional
        Strength threshold on levels below the finest (default ``theta``).
    improve : int
        Damped-Jacobi sweeps that improve the constant near-null-space candidate
        before building the tentative prolongator (pyamg's ``improve_candidates``).
    hermitian : bool, optional
        Whether A is Hermitian (detected when ``None``); then ``R = P^H`` needs no transpose
        and the preconditioner is its own adjoint.
    cycle : str
        ``'V'``, ``'W'`` (two coarse-grid corrections per level: fewer iterations, more
        work per iteration), ``'K'`` (Krylov-accelerated coarse corrections: iterations that
        hardly grow with the grid; a variable preconditioner, see
        :class:`~sla.solvers.precond.multigrid.Multigrid`) or ``'auto'`` (default): V, and the
        K-cycle when CG, GMRES or FGMRES runs it on the CPU, and on CUDA from 4M rows
        (:data:`~sla.solvers.precond.multigrid.AUTO_FLEXIBLE`; 5-point 16M: V 24 iterations,
        K 11).  With the Lanczos smoother bounds and the cancelled couplings dropped, V needs
        1.1-1.4x W's iterations at half its cost per iteration (CPU, 1 thread: 5-point 250K
        0.53 s vs 0.89 s, P1 triangles 160K 0.62 vs 0.70 s, P1 tetrahedra 69K 0.20 vs 0.24 s;
        GPUs: the coarse levels are launch-bound).
    near_nullspace : {'auto', 'constant'} or tensor ``[n, k]``
        The near-null-space candidates ``B`` (pyamg's ``B``).  ``'constant'``: the
        constant vector (scalar problems).  A tensor: its columns (e.g.
        :func:`~sla.solvers.precond.nullspace.rigid_body_modes`); nodes of ``block_size``
        consecutive dofs are aggregated together.  ``'auto'`` (default): the rigid-body
        modes when the assembly recorded the dof coordinates of a vector element on the
        pattern (``A.pattern.cache['dof_points'] = (points, ncomp)``, set by
        :func:`sla.assembly.assemble` for ``ElementVector`` bases), else the constant.
    block_size : int, optional
        Dofs per node for a tensor ``near_nullspace`` (default: the recorded ``ncomp``,
        else 1).
    prolongation : str
        The finest level's prolongator: ``'stored'`` (a CSR matrix), ``'implicit'`` (``P = (I - w
        D^{-1} A) T`` applied as the tentative ``T`` -- a gather by aggregate for one candidate --
        then one product with the fine ``A``: P's storage, a fifth to two fifths of A's, is saved for
        one fine SpMV per cycle) or ``'auto'`` (default: implicit on GPUs from
        :data:`~sla.solvers.precond.multigrid.MIXED_MIN` unknowns, stored otherwise).  ``R`` is
        stored either way; the coarse levels' prolongators are stored.
    """

    name = "amg"

    def __init__(
        self,
        A: SparseTensor,
        theta: float | None = None,
        max_coarse: int = 500,
        max_levels: int = 25,
        degree: int = 2,
        ratio: float = 10.0,
        omega: float = 4.0 / 3.0,
        hermitian: bool | None = None,
        improve: int = 0,
        aggregation: str = "auto",
        coarse_theta: float | None = None,
        cycle: str = "auto",
        near_nullspace: str | torch.Tensor = "auto",
        block_size: int | None = None,
        coarse_dtype: torch.dtype | str = "auto",
        prolongation: str = "auto",
    ):
        cycle = check_cycle(cycle, auto="V")
        cd = coarse_dtype_for(coarse_dtype, A)
        implicit = prolongation_for(prolongation, A) == "implicit"
        candidates = _candidates(A, near_nullspace, block_size)
        if theta is None:
            theta = 0.0 if candidates[0] is None else VECTOR_THETA.get(A.sparse_shape[0] // candidates[2], 0.0)
        if not theta >= 0:
            raise ValueError(f"theta must be >= 0, got {theta!r}")
        if not isinstance(max_coarse, int) or max_coarse < 1:
            raise ValueError(f"max_coarse must be a positive integer, got {max_coarse!r}")
        p = A.pattern
        vals = A._flat().detach()
        if hermitian is None:
            from ...structure import is_symmetric

            hermitian = is_symmetric(A, conjugate=True)
        if aggregation not in ("auto", "standard", "mis2"):
            raise ValueError(f"aggregation must be 'auto', 'standard' or 'mis2', got {aggregation!r}")
        self.auto_aggregation = aggregation == "auto"
        if aggregation == "auto":
            aggregation = "standard" if _has_pyamg() else "mis2"
        if coarse_theta is None:
            coarse_theta = theta
        if not coarse_theta >= 0:
            raise ValueError(f"coarse_theta must be >= 0, got {coarse_theta!r}")
        # scalar coarse levels of the parallel aggregation: distance-1 aggregates (see above)
        coarse_aggregation = "mis1" if aggregation == "mis2" else aggregation
        # aggregates that depend on the structure alone (theta = 0) are cached on the pattern
        key = ("amg_aggregates", aggregation, max_coarse, max_levels, coarse_theta)
        cached = p.cache.get(key) if theta == 0 else None
        aggs = []
        hierarchies = []
        for bi in range(A.batch_size):
            C = Mat(p.crow, p.ccol, vals[bi], p.shape)  # the pattern's int32 arrays, no copy; rows int32
            fine_csr = p.csr(vals[bi])  # the pattern's own int32 arrays: no copy of the fine matrix
            B, node, nnodes = candidates
            levels = []
            lvl = 0
            while C.shape[0] > max_coarse and lvl < max_levels - 1:
                n = C.shape[0]
                th = theta if lvl == 0 else max(theta, coarse_theta)
                if B is not None:  # vector problem: aggregate nodes, fit the candidates
                    agg, nagg = _node_aggregate(C, th, node, nnodes, aggregation)
                    if nagg == 0 or nagg > 0.8 * nnodes:
                        break
                    P, R, Ac, (B, node, nnodes) = _sa_level(
                        C, _fitted(agg, nagg), omega, hermitian, improve, B=B, dtype=cd, implicit=implicit and lvl == 0
                    )
                    levels.append(_transfer_level(C, hermitian, P, R, fine_csr if lvl == 0 else None))
                    C = Ac
                    lvl += 1
                    continue
                if cached is not None and lvl < len(cached) and cached[lvl] is not None and cached[lvl][0].numel() == n:
                    agg, nagg = cached[lvl]
                elif bi > 0 and lvl < len(aggs) and th == 0:
                    agg, nagg = aggs[lvl]
                else:
                    method = aggregation if lvl == 0 else coarse_aggregation
                    agg, nagg = aggregate(*_strength(C, th), n, method)
                    if nagg > 0.8 * n and th > 0:  # the threshold isolated too many nodes: use every coupling
                        th = 0.0
                        agg, nagg = aggregate(*_strength(C, th), n, method)
                if nagg == 0 or nagg > 0.8 * n:  # coarsening stalled: make this the coarsest level
                    break
                if bi == 0:
                    aggs.append((agg, nagg) if th == 0 else None)
                P, R, Ac, _ = _sa_level(
                    C, (agg, nagg), omega, hermitian, improve, dtype=cd, implicit=implicit and lvl == 0
                )
                levels.append(_transfer_level(C, hermitian, P, R, fine_csr if lvl == 0 else None))
                C = Ac
                lvl += 1
            if C.shape[0] > 5000:
                log.warning(
                    "amg: coarsening stalled at %d unknowns; the coarsest dense inverse will be large", C.shape[0]
                )
            levels.append(_level(C, hermitian, csr=fine_csr if lvl == 0 else None))
            hierarchies.append(levels)
        if theta == 0 and cached is None:
            p.cache[key] = aggs
        if cd != A.dtype and not _fits(hierarchies, cd):
            if coarse_dtype != "auto":
                raise ValueError(
                    f"coarse_dtype={coarse_dtype}: the coarse operators' or transfers' entries do not fit its "
                    f"range (use coarse_dtype='auto' or {A.dtype})"
                )
            cd = A.dtype
        for levels in hierarchies:
            for k, lv in enumerate(levels):
                lv.cast(cd, fine=k == 0)
        self.coarse_dtype = cd
        super().__init__(A, hierarchies, degree=degree, ratio=ratio, cycle=cycle)
        self.options = {
            "theta": theta,
            "max_coarse": max_coarse,
            "max_levels": max_levels,
            "degree": degree,
            "ratio": ratio,
            "omega": omega,
            "improve": improve,
            "aggregation": aggregation,
            "coarse_theta": coarse_theta,
            "cycle": cycle,
            "near_nullspace": near_nullspace,
            "block_size": block_size,
            "coarse_dtype": coarse_dtype,
            "prolongation": prolongation,
        }
        self.candidates = 1 if candidates[0] is None else candidates[0].shape[1]
        self.hermitian = hermitian
        log.debug("%s", self.describe())

    def describe(self) -> str:
        """The cycle and levels, and which aggregation built them (and why, when ``'auto'`` chose)."""
        agg = self.options["aggregation"]
        why = " (aggregation='auto': pyamg is not installed)" if self.auto_aggregation and agg == "mis2" else ""
        mixed = f", coarse levels and transfers in {self.coarse_dtype}" if self.coarse_dtype != self.A.dtype else ""
        implicit = any(h[0].T is not None for h in self.hierarchies)
        lean = ", the finest prolongator applied as (I - w D^-1 A) T (not stored)" if implicit else ""
        return f"{super().describe()}, {'standard (pyamg)' if agg == 'standard' else agg} aggregation{why}{mixed}{lean}"

    def adjoint(self) -> SmoothedAggregation:
        if self.hermitian:
            return self
        return SmoothedAggregation(self.A.H(), hermitian=False, **self.options)
