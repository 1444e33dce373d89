"""Sparse-sparse products of multigrid setup matrices (:class:`~.multigrid.Mat`): the Galerkin
product ``R A P`` in row blocks of torch's sparse product (:func:`galerkin`), and the expand, sort and
compress kernel of the smoothed prolongator's blocks (:func:`block_product`).

The Galerkin product's blocks follow the finest operator's rows on every level of a hierarchy
(:func:`galerkin_chunk`): the memory a block may take is the problem's, and a coarse level's
products, many per row, in blocks sized by its own rows took dozens of blocks, each a few host
synchronisations and two SpGEMMs.
"""

from __future__ import annotations

import torch

from ...kernels import add_at_, all_, repeat_rows, unique_inverse
from ...pattern import csr_tensor
from .multigrid import Mat, entry_blocks

__all__ = [
    "GALERKIN_CHUNK",
    "GALERKIN_MIN",
    "GALERKIN_ROWS",
    "Right",
    "block_product",
    "galerkin",
    "galerkin_chunk",
]


class Right:
    """The right factor ``B`` of a product with what its blocks look up: the entries of every row
    (``count``, ``None`` when every row has exactly one), the most of any row (``kmax``).

    With ``grouped``, where ``B``'s rows come in groups (a tentative prolongator with several
    candidates: a row's entries are its aggregate's consecutive columns, the same for every row of the
    aggregate), also each row's first column (``first``, -1 for an empty row), the group width of
    every first column (``width``) and the values padded to ``kmax`` per row (``pad``): a product then
    sums ``kmax``-wide rows under one key per group, ``kmax`` times fewer keys to sort.  A ``B`` whose
    rows are not so grouped (one host look tells) keeps the general form."""

    __slots__ = ("B", "count", "first", "kmax", "pad", "width")

    def __init__(self, B: Mat, grouped: bool = False):
        n = B.shape[0]
        self.B = B
        count = B.crow[1:] - B.crow[:-1]
        self.kmax = max(int(count.amax()), 1) if n else 1
        full = self.kmax == 1 and B.col.numel() == n
        self.count = None if full else count
        self.first = self.width = self.pad = None
        if grouped and self.kmax > 1:
            self._group(count)

    def _group(self, count: torch.Tensor) -> None:
        B, k = self.B, self.kmax
        n, nc, nnz = B.shape[0], B.shape[1], B.col.numel()
        row = repeat_rows(count, 0, nnz, torch.int64)
        pos = torch.arange(nnz, device=B.col.device) - B.crow[:-1].long()[row]
        first = torch.where(count > 0, B.col[B.crow[:-1].clamp(max=max(nnz - 1, 0)).long()].long(), -1)
        width = torch.zeros(nc, dtype=count.dtype, device=count.device)
        has = count > 0
        width.scatter_(0, first[has], count[has])
        # consecutive columns from the row's first, every row of a group as wide as the group, and
        # no column in two groups
        owner = torch.full((nc,), -1, dtype=torch.int64, device=count.device)
        owner.scatter_(0, B.col.long(), first[row])
        ok = all_(B.col.long() == first[row] + pos) & all_(width[first[has]] == count[has])
        ok &= all_(owner[B.col.long()] == first[row])
        if not bool(ok):
            return
        self.first, self.width = first, width
        self.pad = B.val.new_zeros(n, k)
        self.pad[row, pos] = B.val


def block_product(rows: torch.Tensor, k: torch.Tensor, a: torch.Tensor, right: Right, nrows: int, idt: torch.dtype):
    """``(starts, col, val)``: the rows ``0..nrows-1`` of ``sum_e a_e B[k_e, :]`` placed in row ``rows_e``.

    ``rows`` (block-local, ascending), ``k`` and ``a`` are a block's entries of the left factor;
    ``idt`` is the dtype of the index work (int32 where the block's products fit).  The result is
    CSR-like: ``starts[i]`` is where row ``i + 1`` begins (row 0 at 0), ``col`` ascending within a
    row (int32 where ``nrows * ncols`` fits, else int64), ``val`` in the dtype of ``a * B.val``; the
    products of one entry are summed in the order of ``k`` and exact zeros dropped."""
    if right.first is not None:
        return _grouped_product(rows, k, a, right, nrows)
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


def _grouped_product(rows: torch.Tensor, k: torch.Tensor, a: torch.Tensor, right: Right, nrows: int):
    """:func:`block_product` for a grouped ``B`` (see :class:`Right`): one key ``(row, group)`` per
    entry of the block, its ``kmax``-wide products summed under it, then the groups' columns expanded
    (``width`` of them from the group's first).  The products of one ``(i, j)`` are summed in the order
    of ``k``, as in the general form; exact zeros are dropped."""
    nc = right.B.shape[1]
    kdt = torch.int32 if nrows * nc < 2**31 - 1 else torch.int64
    first = right.first[k]
    e = torch.nonzero(first >= 0).flatten()  # the entries whose row of B holds a group
    key = first[e].to(kdt).add_(rows[e].to(kdt), alpha=nc)
    v = a[e].unsqueeze(1) * right.pad[k[e]]  # [entries, kmax]
    del first
    key, inv = unique_inverse(key)
    pv = add_at_(v.new_zeros(key.numel(), right.kmax), 0, inv, v)
    del v, inv, e
    # each key's row (the keys are sorted: a search and a repeat, as in the general form) and group
    starts = torch.searchsorted(key, torch.arange(1, nrows + 1, device=key.device, dtype=kdt).mul_(nc))
    counts = starts.clone()
    counts[1:] -= starts[:-1]
    q = repeat_rows(counts, 0, key.numel(), kdt)
    group = key.sub_(q.mul(nc))  # the group's first column
    w = right.width[group.long()].to(kdt)
    g = repeat_rows(w, 0, int(w.sum()), torch.int64)  # the key of every entry
    c = torch.arange(g.numel(), device=g.device) - (torch.cumsum(w, 0, dtype=torch.int64) - w)[g]
    col, val, r = group[g].add_(c.to(kdt)), pv[g, c], q[g]
    del g, c, pv, group, w
    nz = val != 0
    col, val, r = col[nz], val[nz], r[nz]
    starts = torch.searchsorted(r, torch.arange(1, nrows + 1, device=r.device, dtype=kdt))
    return starts, col, val


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


def galerkin_chunk(rows: int) -> int:
    """Products per block of the Galerkin product of a hierarchy whose finest operator has ``rows``
    rows (see :data:`GALERKIN_CHUNK`), on every level.  H200, 5-point 16M, the setup on new values:
    0.315-0.362 s against 0.426-0.508 with blocks sized by each level's rows, the same peak
    (``bench_amg_tradeoffs.py --blocks --big``)."""
    return min(GALERKIN_CHUNK, max(GALERKIN_MIN, int(GALERKIN_ROWS * rows)))


def galerkin(R: Mat, A: Mat, P: Mat, chunk: int | None = None, consume: bool = False) -> Mat:
    """``R A P`` with torch sparse products (MKL / cuSPARSE), by blocks of rows of ``R``.

    Each block computes ``(R_rows A) P``; the blocks hold at most ``chunk`` (default
    :func:`galerkin_chunk` of A's rows; a hierarchy passes its finest operator's) products
    ``r_ik a_kj``, so the intermediate stays bounded where ``A P`` would take about as much as
    ``A`` itself.  The entries are those of ``R (A P)`` up to rounding (the sums run in another
    order), in A's precision (transfers stored in another one join A's products in A's).  With
    ``consume`` the caller gives ``P`` up: its arrays are let go (set to ``None``) and freed before
    the blocks are joined."""
    chunk = galerkin_chunk(A.shape[0]) if chunk is None else int(chunk)
    dt = A.val.dtype
    Ac, Pc = A.csr64(), P.csr64(P.val.to(dt))
    if consume:
        P.crow = P.col = P.val = None
    nr = R.shape[0]
    # the products before each row of R: the products of every row, summed over blocks of R's entries
    # (no array of R's size), then their running sum
    work = A.crow[1:] - A.crow[:-1]
    rowsum = torch.zeros(nr, dtype=torch.int64, device=A.val.device)
    for lo, hi in entry_blocks(R.col.numel()):
        add_at_(rowsum, 0, R.rows(lo, hi), work[R.col[lo:hi]].long())
    per_row = torch.zeros(nr + 1, dtype=torch.int64, device=A.val.device)
    torch.cumsum(rowsum, 0, out=per_row[1:])
    del work, rowsum
    total = int(per_row[-1])
    if total <= chunk:
        return Mat.from_torch(R.csr64(R.val.to(dt)) @ (Ac @ Pc))
    # row boundaries where the running work crosses a multiple of chunk (at least one row per block)
    marks = torch.arange(chunk, total, chunk, device=per_row.device)
    cuts = torch.searchsorted(per_row, marks, right=True).clamp_(1, nr - 1) - 1
    bounds = [0, *sorted({c for c in cuts.tolist() if 0 < c < nr}), nr]
    crows, cols, vals = [], [], []
    base = 0
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        s, e = int(R.crow[r0]), int(R.crow[r1])
        Rb = csr_tensor(R.crow[r0 : r1 + 1] - s, R.col[s:e], R.val[s:e].to(dt), (r1 - r0, R.shape[1]))
        Cb = Mat.from_torch((Rb @ Ac) @ Pc)  # int32 indices per block
        del Rb
        crows.append(Cb.crow[1:].long() + base)  # (int64: the running count may pass int32's range)
        base += Cb.col.numel()
        cols.append(Cb.col)
        vals.append(Cb.val)
        del Cb
    del Ac, Pc  # (P's copy in A's precision, and P itself when consumed: gone before the blocks are joined)
    crow = torch.cat([R.crow.new_zeros(1, dtype=torch.int64), *crows])
    return Mat(crow, torch.cat(cols), torch.cat(vals), (nr, P.shape[1]))
