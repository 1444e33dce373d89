"""Sparse-sparse products of multigrid setup matrices (:class:`~.multigrid.Mat`) by expand, sort
and compress, a block of rows at a time: :func:`matmul` and the Galerkin product :func:`galerkin`.

Every product ``a_ik b_kj`` of a block is formed, the products of one ``(i, j)`` are found by a sort
of their keys ``i * ncols + j`` and summed, and exact zeros are dropped.  The kernels are the ones
the setup runs anyway (gathers, products, a sort, a scatter-add, searches): no sparse library is
called on GPUs, where cuSPARSE's SpGEMM loaded kernels of its own on its first call in a process
(83-110 ms on an H200).  On the CPU the Galerkin product stays torch's (MKL), which is faster there
(``benchmarks/bench_galerkin.py`` compares the two).  The smoothed prolongator's product
(:func:`~.transfers._smoothed`) is a :func:`block_product` on every device.
"""

from __future__ import annotations

import torch

from ...kernels import add_at_, repeat_rows, unique_inverse
from .multigrid import Mat, entry_blocks

__all__ = [
    "ESC_DEVICES",
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
    CSR-like: ``starts[i]`` is where row ``i + 1`` begins (row 0 at 0), ``col`` int64 ascending within
    a row, ``val`` in the dtype of ``a * B.val``; the products of one entry are summed in the order of
    ``k`` and exact zeros dropped."""
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
    key = B.col[tp].long()
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
"""Products per block of each of the Galerkin product's two products at most (:func:`galerkin`):
bounds its temporaries (about 40 bytes a product) and the ``R_rows A`` intermediate.  A block holds
``min(GALERKIN_CHUNK, max(GALERKIN_MIN, GALERKIN_ROWS * n))`` products for an ``n``-row fine
operator: an eighth of a product per unknown keeps the temporaries near 5 bytes per unknown,
while every block costs host synchronisations."""

GALERKIN_MIN = 1 << 19

GALERKIN_ROWS = 0.5


ESC_DEVICES = ("cuda",)
"""Device types whose Galerkin products are :func:`matmul`'s; elsewhere torch's sparse product (MKL on
the CPU), 6-18 times faster there than the expand-sort-compress in torch's CPU sort (2-core CPU,
``bench_galerkin.py --device cpu --levels``: 5-point 1000^2's finest level 1.74 s against 0.32 s)."""


def galerkin(R: Mat, A: Mat, P: Mat, chunk: int | None = None, consume: bool = False) -> Mat:
    """``R A P`` by blocks of rows of ``R``, each ``(R_rows A) P``, so that ``A P`` is never whole.

    The blocks hold at most ``chunk`` products ``r_ik a_kj`` (default: see :data:`GALERKIN_CHUNK`).
    On the device types of :data:`ESC_DEVICES` both products are :func:`matmul`'s (in blocks of
    ``chunk`` products too: ``R_rows A`` is never whole either); elsewhere torch's sparse product.
    The entries are those of ``R (A P)`` up to rounding (the sums run in another order), in A's
    precision (transfers stored in another one join A's products in A's).  With ``consume`` the
    caller gives ``P`` up: its arrays are let go (set to ``None``) once the products are made."""
    chunk = min(GALERKIN_CHUNK, max(GALERKIN_MIN, int(GALERKIN_ROWS * A.shape[0]))) if chunk is None else int(chunk)
    dt = A.val.dtype
    Rw = R if R.val.dtype == dt else Mat(R.crow, R.col, R.val.to(dt), R.shape)
    Pw = P if P.val.dtype == dt else Mat(P.crow, P.col, P.val.to(dt), P.shape)
    Aw = Right(A)
    bounds = _cuts(_row_work(Rw, Aw), chunk)
    if A.val.device.type in ESC_DEVICES:
        Pw = Right(Pw)
    else:
        Aw, Pw = A.csr64(), Pw.csr64()
    nr = R.shape[0]
    crows, cols, vals = [], [], []
    base = 0
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        s, e = int(Rw.crow[r0]), int(Rw.crow[r1])
        Rb = Mat(Rw.crow[r0 : r1 + 1] - s, Rw.col[s:e], Rw.val[s:e], (r1 - r0, R.shape[1]))
        if isinstance(Pw, Right):
            Cb = matmul(matmul(Rb, Aw, chunk), Pw, chunk)
        else:
            Cb = Mat.from_torch((Rb.csr64() @ Aw) @ Pw)
        del Rb
        crows.append(Cb.crow[1:] + base)
        base += Cb.col.numel()
        cols.append(Cb.col)
        vals.append(Cb.val)
        del Cb
    del Aw, Pw, Rw  # (P's copy in A's precision: gone before the blocks are joined)
    if consume:
        P.crow = P.col = P.val = None
    crow = torch.cat([R.crow.new_zeros(1, dtype=torch.int64), *crows])
    return Mat(crow, torch.cat(cols), torch.cat(vals), (nr, P.shape[1]))
