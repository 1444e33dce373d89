"""The transfers of smoothed aggregation in their setup form and the applied one: the tentative
prolongator ``T``, the smoothed ``P = (I - w D^{-1} A) T`` by row blocks of ``A`` (no sparse-sparse
product), ``R = P^H`` by a blocked counting sort, and :class:`Tentative`, ``T`` applied for a
prolongator that is not stored (``prolongation='implicit'``)."""

from __future__ import annotations

import torch

from ...kernels import all_, count_, repeat_rows
from ...products import csr_matmul
from ...sparse import SparseTensor
from .multigrid import MIXED_MIN, Mat, cast_csr, entry_blocks
from .spgemm import Right, block_product

__all__ = ["PROLONGATIONS", "PRODUCT_CHUNK", "PRODUCT_ROWS", "Tentative", "product_chunk", "prolongation_for"]


def _blocks(nnz: int):
    """``(lo, hi)``: eight blocks of entries (at least :data:`PRODUCT_CHUNK` each) for scans over A's entries."""
    return entry_blocks(nnz, PRODUCT_CHUNK)


def _tentative(agg: torch.Tensor, nagg: int, dtype, cand: torch.Tensor | None = None) -> Mat:
    """T (n x nagg, one entry per aggregated row: the candidate vector, default 1).  Lean: int32 row
    starts, no row array, and the ones of the constant candidate a broadcast view (no storage)."""
    n = agg.numel()
    dev = agg.device
    has = agg >= 0
    idt = torch.int32 if n < 2**31 - 1 else torch.int64
    crow = torch.zeros(n + 1, dtype=idt, device=dev)
    torch.cumsum(has, 0, dtype=idt, out=crow[1:])
    nodes = None if bool(all_(has)) else torch.nonzero(has).flatten()
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
    torch.cumsum(count_(tcrow.new_zeros(N), C.col), 0, out=tcrow[1:])
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
        count_(fill, key)
    return Mat(tcrow, tcol, tval, (N, M))


PRODUCT_CHUNK = 1 << 18
PRODUCT_ROWS = 1.0
"""Products ``s_ik t_kj`` per row block of the smoothed prolongator (:func:`_smoothed`): a block
holds ``max(PRODUCT_CHUNK, PRODUCT_ROWS * n)`` of them for an ``n``-row operator, the level's own
(:func:`product_chunk`), so its temporaries (about 60 bytes per product) stay near 60 bytes per
unknown, below the setup's peak (the Galerkin product's), while the number of blocks (host
synchronisations and kernel launches on a GPU) stays near ``nnz(A) / n``.  Sized by a hierarchy's
finest rows instead, the coarse levels' blocks raised the setup's peak (see ``amg._sa_level``)."""


PRODUCT_FINE = 0.125
"""And at least this many products per row of the hierarchy's finest operator: a coarse level has
many entries per row, so blocks of its own rows alone came to dozens."""


def product_chunk(rows: int, fine: int = 0) -> int:
    """Products per block of :func:`_smoothed` for an operator of ``rows`` rows in a hierarchy whose
    finest has ``fine`` (see :data:`PRODUCT_ROWS` and :data:`PRODUCT_FINE`)."""
    return max(PRODUCT_CHUNK, int(PRODUCT_ROWS * rows), int(PRODUCT_FINE * fine))


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
    right = Right(T, grouped=True)  # (a tentative prolongator's rows come by aggregate)
    products = product_chunk(n) if chunk is None else int(chunk)
    step = max(1, products // right.kmax)  # entries of A per block
    marks = torch.arange(step, max(nnz, step), step, device=dev)
    cuts = torch.searchsorted(C.crow, marks.to(C.crow.dtype), right=True) - 1
    bounds = sorted({0, n, *(c for c in cuts.tolist() if 0 < c < n)})
    ends = C.crow[bounds].tolist()
    # index work in int32 where every index fits (A's and T's entries, a block's products): half the
    # bytes of the block's temporaries, which set the setup's peak memory
    idt = torch.int32 if max(nnz, T.col.numel(), products) < 2**31 - 1 else torch.int64
    cdt = torch.int32 if nc < 2**31 - 1 else torch.int64
    # P's row starts, written block by block (P has at most nnz(A) * kmax entries)
    crow = torch.zeros(n + 1, dtype=torch.int32 if nnz * right.kmax < 2**31 - 1 else torch.int64, device=dev)
    cols, vals = [], []
    for r0, r1, lo, hi in zip(bounds[:-1], bounds[1:], ends[:-1], ends[1:]):
        counts_a = (C.crow[r0 + 1 : r1 + 1] - C.crow[r0:r1]).to(idt)
        rows = repeat_rows(counts_a, r0, hi - lo, idt)
        del counts_a
        k = C.col[lo:hi].to(idt)  # a view when C's columns are int32
        s = torch.div(C.val[lo:hi], d[rows]).mul_(-w)
        s = torch.where(rows == k, s + 1, s)  # the identity
        starts, col, pv = block_product(rows.sub_(r0), k, s, right, r1 - r0, idt)
        del rows, k, s
        crow[r0 + 1 : r1 + 1] = starts + crow[r0]
        cols.append(col.to(cdt))
        vals.append(pv.to(dtype))
        del starts, col, pv
    col = torch.cat(cols) if cols else torch.zeros(0, dtype=cdt, device=dev)
    del cols
    val = torch.cat(vals) if vals else C.val.new_zeros(0, dtype=dtype)
    return Mat(crow, col, val, (n, nc))


def _coo_tentative(rows, cols, vals, shape) -> Mat:
    """T (COO sorted by row, columns ascending within a row) as a setup matrix."""
    n, nc = shape
    crow = torch.zeros(n + 1, dtype=torch.int64, device=vals.device)
    torch.cumsum(count_(crow.new_zeros(n), rows), 0, out=crow[1:])
    return Mat(crow, cols, vals, shape, row=rows)


class Tentative:
    """``T xc`` for a prolongator applied and not stored (:class:`~sla.solvers.precond.multigrid.Level`'s
    ``smoothed``): a gather by aggregate where T has at most one entry per row (one candidate: the
    column of every row, its values only when they are not the constant 1), else T's CSR product."""

    def __init__(self, T: Mat):
        n, nc = T.shape
        self.csr = self.idx = self.val = None
        counts = T.crow[1:] - T.crow[:-1]
        if n and int(counts.amax()) > 1:
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
