"""Sparse-sparse products of multigrid setup matrices (:class:`~.multigrid.Mat`) by expand, sort
and compress, a block of rows at a time: :func:`matmul` and the Galerkin product :func:`galerkin`.

Every product ``a_ik b_kj`` of a block is formed, the products of one ``(i, j)`` are found by a sort
of their keys ``i * ncols + j`` and summed, and exact zeros are dropped.  The kernels are the ones
the setup runs anyway (gathers, products, a sort, a scatter-add, searches): no sparse library is
called.  The smoothed prolongator's product (:func:`~.transfers._smoothed`) is a
:func:`block_product` on every device; the Galerkin product is :func:`matmul`'s where it is small
and on a GPU (no first call of cuSPARSE's SpGEMM), torch's elsewhere (see :data:`ESC_MAX`;
``benchmarks/bench_galerkin.py`` compares the two).
"""

from __future__ import annotations

import torch

from ...kernels import add_at_, repeat_rows, unique_inverse
from ...pattern import csr_tensor
from .multigrid import Mat, entry_blocks

__all__ = [
    "ESC_DEVICES",
    "ESC_MAX",
    "GALERKIN_CHUNK",
    "GALERKIN_MIN",
    "GALERKIN_ROWS",
    "Right",
    "block_product",
    "galerkin",
    "matmul",
]


class Right:
    """The right factor ``B`` of a product with what its blocks look up: the entries of every row
    (``count``, ``None`` when every row has exactly one), the most of any row (``kmax``)."""

    __slots__ = ("B", "count", "kmax")

    def __init__(self, B: Mat):
        n = B.shape[0]
        self.B = B
        count = B.crow[1:] - B.crow[:-1]
        self.kmax = max(int(count.amax()), 1) if n else 1
        full = self.kmax == 1 and B.col.numel() == n
        self.count = None if full else count

    def work(self, k: torch.Tensor) -> torch.Tensor:
        """The products of entries with columns ``k`` (int64)."""
        return torch.ones_like(k, dtype=torch.int64) if self.count is None else self.count[k].long()


def block_product(rows: torch.Tensor, k: torch.Tensor, a: torch.Tensor, right: Right, nrows: int, idt: torch.dtype):
    """``(starts, col, val)``: the rows ``0..nrows-1`` of ``sum_e a_e B[k_e, :]`` placed in row ``rows_e``.

    ``rows`` (block-local, ascending), ``k`` and ``a`` are a block's entries of the left factor;
    ``idt`` is the dtype of the index work (int32 where the block's products fit).  The result is
    CSR-like: ``starts[i]`` is where row ``i + 1`` begins (row 0 at 0), ``col`` ascending within a
    row (int32 where ``nrows * ncols`` fits, else int64), ``val`` in the dtype of ``a * B.val``; the
    products of one entry are summed in the order of ``k`` and exact zeros dropped."""
    B = right.B
    nc = B.shape[1]
    dev = a.device
    if right.count is None:  # B's entry of row k is entry k
        e, tp = None, k
    elif right.kmax == 1:  # the entries whose row of B holds an entry
        e = torch.nonzero(right.count[k]).flatten().to(idt)
        tp = B.crow[k[e]].to(idt)
    else:
        c = right.count[k].to(idt)
        e = repeat_rows(c, 0, int(c.sum()), idt)
        first = (torch.cumsum(c, 0, dtype=idt) - c)[e]  # position of the product within its entry's row of B
        tp = B.crow[k].to(idt)[e] + (torch.arange(e.numel(), device=dev, dtype=idt) - first)
        del c, first
    v = (a if e is None else a[e]) * B.val[tp]
    # the keys in int32 where they fit: half a sort's traffic, and the sort kernels the setup's
    # transposes load anyway on a GPU
    key = B.col[tp].to(torch.int32 if nrows * nc < 2**31 - 1 else torch.int64)
    del tp
    key.add_(rows if e is None else rows[e], alpha=nc)
    del e
    key, inv = unique_inverse(key)
    pv = add_at_(v.new_zeros(key.numel()), 0, inv, v)
    del v, inv
    nz = pv != 0
    key, pv = key[nz], pv[nz]
    # the keys are sorted: each row's first product by a search, its row by repeating (a floor
    # division and a bincount would each load a kernel family of their own on a GPU)
    starts = torch.searchsorted(key, torch.arange(1, nrows + 1, device=dev, dtype=key.dtype).mul_(nc))
    counts = starts.clone()
    counts[1:] -= starts[:-1]  # (diff with a prepended zero would concatenate: a kernel of its own)
    q = repeat_rows(counts, 0, key.numel(), key.dtype)
    return starts, key.sub_(q.mul_(nc)), pv  # key mod nc


def _row_work(A: Mat, right: Right) -> torch.Tensor:
    """The products before each row of ``A @ B`` (``[nrows + 1]``, int64, a running sum), summed over
    blocks of A's entries: no array of A's size."""
    n = A.shape[0]
    per_row = torch.zeros(n + 1, dtype=torch.int64, device=A.col.device)
    if right.count is None:
        per_row[1:] = A.crow[1:]
        return per_row
    rowsum = torch.zeros(n, dtype=torch.int64, device=A.col.device)
    for lo, hi in entry_blocks(A.col.numel()):
        add_at_(rowsum, 0, A.rows(lo, hi), right.work(A.col[lo:hi]))
    torch.cumsum(rowsum, 0, out=per_row[1:])
    return per_row


def _cuts(per_row: torch.Tensor, chunk: int) -> list:
    """Row boundaries where the running work crosses a multiple of ``chunk`` (a row per block at least)."""
    n = per_row.numel() - 1
    total = int(per_row[-1])
    if total <= chunk or n <= 1:
        return [0, n]
    marks = torch.arange(chunk, total, chunk, device=per_row.device)
    cuts = torch.searchsorted(per_row, marks, right=True).clamp_(1, n - 1) - 1
    return [0, *sorted({c for c in cuts.tolist() if 0 < c < n}), n]


def matmul(A: Mat, B: Mat | Right, chunk: int, dtype: torch.dtype | None = None) -> Mat:
    """``A @ B`` by blocks of A's rows holding about ``chunk`` products each (a single row may hold
    more); values summed in the dtype of ``A.val * B.val`` and stored in ``dtype`` (default that)."""
    right = B if isinstance(B, Right) else Right(B)
    n, nc = A.shape[0], right.B.shape[1]
    dev = A.col.device
    per_row = _row_work(A, right)
    bounds = _cuts(per_row, chunk)
    # index work in int32 where every index fits (the entries of A and B, a block's products)
    most = max(A.col.numel(), right.B.col.numel(), int((per_row[bounds[1:]] - per_row[bounds[:-1]]).amax()))
    del per_row
    idt = torch.int32 if most < 2**31 - 1 else torch.int64
    ends = A.crow[bounds].tolist()
    crow = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    cols, vals = [], []
    for r0, r1, lo, hi in zip(bounds[:-1], bounds[1:], ends[:-1], ends[1:]):
        rows = repeat_rows((A.crow[r0 + 1 : r1 + 1] - A.crow[r0:r1]).to(idt), 0, hi - lo, idt)
        starts, col, val = block_product(rows, A.col[lo:hi].to(idt), A.val[lo:hi], right, r1 - r0, idt)
        del rows
        crow[r0 + 1 : r1 + 1] = starts + crow[r0]
        cols.append(col.to(torch.int32) if nc < 2**31 - 1 else col)
        vals.append(val if dtype is None else val.to(dtype))
        del starts, col, val
    col = torch.cat(cols) if cols else torch.zeros(0, dtype=torch.int32, device=dev)
    del cols
    val = torch.cat(vals) if vals else A.val.new_zeros(0, dtype=dtype or A.val.dtype)
    return Mat(crow, col, val, (n, nc))


GALERKIN_CHUNK = 1 << 25
"""Products ``r_ik a_kj`` (an upper bound of the entries of ``R_rows A``) per row block of torch's
Galerkin product at most: bounds its intermediate instead of forming the whole ``A P``.  A block
holds ``min(GALERKIN_CHUNK, max(GALERKIN_MIN, GALERKIN_ROWS * n))`` products for an ``n``-row fine
operator (cuSPARSE's SpGEMM buffers grow with them, and every block costs host synchronisations).
H200, 5-point AMG first solve (``matrix_type='spd'``): 1M unknowns, blocks of 4M products 343
bytes/unknown, of 1M 268; 16M, blocks of 4M 0.50 s, of 16M 0.45-0.48 s, of 32M 0.45 s, all at
216-242 bytes/unknown (earlier setup code)."""

GALERKIN_MIN = 1 << 19

GALERKIN_ROWS = 0.5
"""Blocks of ``n / 2`` products: the SpGEMM's workspace, which sets the setup's peak once the rest is
lean, about 18 bytes/unknown instead of 36.  H200, setup on new values (aggregates cached), one
process, blocks of ``n`` against ``n / 2``: P1 tetrahedra 1M 0.184-0.189 s / 0.215-0.216 s, peak
above A 118.8 / 100.2 bytes/unknown (the first solve's peak 315 -> 297 in all); 5-point 16M
0.312-0.334 s / 0.342-0.380 s, 117.4 / 98.4."""

ESC_DEVICES = ("cuda",)
"""Device types whose small Galerkin products (:data:`ESC_MAX`) are :func:`matmul`'s."""

ESC_MAX = 1 << 20
"""On :data:`ESC_DEVICES`, a Galerkin product whose ``R A`` has at most this many products ``r_ik
a_kj`` is :func:`matmul`'s (each of its two products in blocks of this many: temporaries of about
40 MB at most); larger ones are torch's (cuSPARSE's SpGEMM), which is faster there: H200,
``bench_galerkin.py --levels``, each level alone, 5-point 65K's finest level 11.4 ms by blocks of
512K products against 1.3 ms, 1M's 123 ms against 1.9 ms (whose buffers took 512 MB against 71).
A small product costs a few milliseconds either way, but the first SpGEMM of a process loads
cuSPARSE's product kernels: the Galerkin products of a 65K 5-point setup took 0.045-0.065 s in a
process's first setup and 0.003-0.004 s in a later one with torch's, 0.019-0.020 and 0.014-0.018
s with :func:`matmul`'s blocks of 512K products.  On the CPU torch's product (MKL) is 6-18 times
faster than :func:`matmul` at every size (2-core CPU: 5-point 1000^2's finest level 1.74 s
against 0.32 s): it takes them all."""


def galerkin(R: Mat, A: Mat, P: Mat, chunk: int | None = None, consume: bool = False) -> Mat:
    """``R A P``: small products on :data:`ESC_DEVICES` by :func:`matmul` (:data:`ESC_MAX`), others
    by torch's sparse product in blocks of rows of ``R``, each ``(R_rows A) P`` of at most ``chunk``
    products ``r_ik a_kj`` (default: see :data:`GALERKIN_CHUNK`), so that ``A P`` is never whole.

    The entries are those of ``R (A P)`` up to rounding (the sums run in another order), in A's
    precision (transfers stored in another one join A's products in A's).  With ``consume`` the
    caller gives ``P`` up: its arrays are let go (set to ``None``) once the products are made."""
    chunk = min(GALERKIN_CHUNK, max(GALERKIN_MIN, int(GALERKIN_ROWS * A.shape[0]))) if chunk is None else int(chunk)
    dt = A.val.dtype
    Rw = R if R.val.dtype == dt else Mat(R.crow, R.col, R.val.to(dt), R.shape)
    Pw = P if P.val.dtype == dt else Mat(P.crow, P.col, P.val.to(dt), P.shape)
    Aw = Right(A)
    per_row = _row_work(Rw, Aw)
    if A.val.device.type in ESC_DEVICES and int(per_row[-1]) <= ESC_MAX:
        C = matmul(matmul(Rw, Aw, ESC_MAX), Pw, ESC_MAX)
        del Aw, Pw, Rw
        if consume:
            P.crow = P.col = P.val = None
        return C
    bounds = _cuts(per_row, chunk)
    del per_row
    Ac, Pc = A.csr64(), Pw.csr64()
    del Aw, Pw
    nr = R.shape[0]
    crows, cols, vals = [], [], []
    base = 0
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        s, e = int(Rw.crow[r0]), int(Rw.crow[r1])
        Rb = csr_tensor(Rw.crow[r0 : r1 + 1] - s, Rw.col[s:e], Rw.val[s:e], (r1 - r0, R.shape[1]))
        Cb = Mat.from_torch((Rb @ Ac) @ Pc)
        del Rb
        crows.append(Cb.crow[1:] + base)
        base += Cb.col.numel()
        cols.append(Cb.col)
        vals.append(Cb.val)
        del Cb
    del Ac, Pc, Rw  # (P's copy in A's precision: gone before the blocks are joined)
    if consume:
        P.crow = P.col = P.val = None
    crow = torch.cat([R.crow.new_zeros(1, dtype=torch.int64), *crows])
    return Mat(crow, torch.cat(cols), torch.cat(vals), (nr, P.shape[1]))
