"""Matrices on structured grids as *stencil arrays*, the setup side of geometric multigrid.

A matrix whose rows couple each grid point only to neighbours at offsets in ``{-1, 0, 1}^d``
(unknowns numbered lexicographically, last axis fastest) is held as ``|O|`` coefficient grids
``S [|O|, *dims]``, one per offset present (read from the CSR by :func:`sla.grid.read_stencil`).
Here: the diagonal and Gershgorin bound (:func:`diagonal_and_bound`), the
Galerkin product ``P^T A P`` for (bi/tri)linear interpolation (:func:`galerkin_stencil`) and the
CSR of a stencil (:func:`stencil_to_csr`).

Written for launch-bound devices: every step is a few whole-array operations (one GEMM per
axis for the Galerkin product, one scatter for the CSR) and the checks that need the host's
look are gathered into one synchronisation per call; the error path may look more than once.
"""

from __future__ import annotations

import torch

from ...grid import read_stencil, strides, valid_mask
from ...pattern import csr_tensor

__all__ = ["diagonal_and_bound", "galerkin_stencil", "read_stencil", "stencil_to_csr", "strides", "valid_mask"]


def diagonal_and_bound(offs: list, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal of a stencil matrix and the Gershgorin bound of ``D^{-1} A`` (a 0-d tensor: no
    host look, and no CSR needed)."""
    centre = (0,) * (S.dim() - 1)
    if centre not in offs:
        raise ValueError("multigrid needs a non-zero diagonal on every level (a zero pivot appeared)")
    diag = S[offs.index(centre)].reshape(-1).clone()  # not a view: S must be free to go
    if S.device.type == "cpu":  # a strided reduction over the offsets is slow there
        rowsum = S[0].reshape(-1).abs()
        for k in range(1, len(offs)):
            rowsum += S[k].reshape(-1).abs()
    else:  # one kernel
        rowsum = torch.linalg.vector_norm(S.reshape(len(offs), -1), ord=1, dim=0)
    return diag, (rowsum / diag.abs()).amax()


_W1 = {-1: 0.5, 0: 1.0, 1: 0.5}  # 1-D linear interpolation weights of fine rows 2I+1+e around coarse I


def _axis_weights(offs: list, a: int, end: float | None = None) -> tuple[list, list]:
    """One axis of the Galerkin product as a mixing matrix: coarse offsets and ``W [|O'|, 3 |O|]``.

    Along axis ``a`` the coarse row ``I`` takes fine rows ``2I+1+e1`` (weight ``w(e1)``); an entry
    at offset ``o`` of such a row reaches fine column ``2I+1+e1+o_a = 2J+1+e2`` with weight ``w(e2)``,
    so coarse offset ``D_a = (o_a + e1 - e2) / 2``.  Column ``3 k + e1 + 1`` of ``W`` holds the
    weights of (fine offset ``k``, fine row ``e1``).  ``end``: ``W`` of the last coarse row of an odd
    axis, whose fine point ``2I + 2`` (the axis's last) has weight ``end`` instead of 1/2, as a row
    (``e1 = +1``) and as a column of the same coarse point (``e2 = +1``, ``D_a = 0``); see
    :func:`~sla.solvers.precond.gmg.end_weights`.
    """
    terms: dict = {}
    for k, o in enumerate(offs):
        for e1 in (-1, 0, 1):
            for e2 in (-1, 0, 1):
                s = o[a] + e1 - e2
                if s % 2 == 0:
                    D = o[:a] + (s // 2,) + o[a + 1 :]
                    w1 = end if end is not None and e1 == 1 else _W1[e1]
                    w2 = end if end is not None and e2 == 1 and s == 0 else _W1[e2]
                    terms[D, 3 * k + e1 + 1] = terms.get((D, 3 * k + e1 + 1), 0.0) + w1 * w2
    coarse = sorted({D for D, _ in terms})
    index = {D: i for i, D in enumerate(coarse)}
    W = [[0.0] * (3 * len(offs)) for _ in coarse]
    for (D, c), v in terms.items():
        W[index[D]][c] = v
    return coarse, W


def _axis_step(S: torch.Tensor, W: torch.Tensor, ax: int, m: int, W_end: torch.Tensor | None = None) -> torch.Tensor:
    """``[|O'|, ...]`` stencil grids after coarsening grid axis ``ax`` of ``S`` ``[|O|, ...]`` to ``m``
    rows: row ``I`` mixes fine rows ``2I``, ``2I+1``, ``2I+2`` (zero past the end of ``S``) by ``W``, the
    last row by ``W_end`` when given."""
    d = ax + 1  # tensor dimension of the grid axis
    L = S.shape[d]
    shape = list(S.shape)
    shape[d] = m
    G = S.new_zeros(S.shape[0], 3, *shape[1:])
    for e in range(3):
        cnt = min(m, (L - e + 1) // 2)
        if cnt > 0:
            G[:, e].narrow(d, 0, cnt).copy_(S[(slice(None),) * d + (slice(e, e + 2 * cnt - 1, 2),)])
    out = torch.mm(W, G.view(3 * S.shape[0], -1)).view(W.shape[0], *shape[1:])
    if W_end is not None:  # one hyperplane of the grid
        last = G.narrow(d + 1, m - 1, 1)
        shape[d] = 1
        out.narrow(d, m - 1, 1).copy_(torch.mm(W_end, last.reshape(3 * S.shape[0], -1)).view(W.shape[0], *shape[1:]))
    return out


GALERKIN_CHUNK = {"cpu": 1 << 22, "cuda": 1 << 25}
"""Gathered stencil entries per block (rows of the grid's first axis) of :func:`galerkin_stencil`, per
device type (others: the CUDA value).  On GPUs a block costs about ten launches, so blocks are large
(32M entries: 16 bytes per unknown at 16M, 13 blocks); on the CPU smaller ones stay in cache."""


def galerkin_stencil(offs: list, S: torch.Tensor, dims: tuple, axes: tuple, ends: tuple | None = None):
    """Coarse ``(offsets, grids [|O_c|, *coarse], coarse dims, valid mask)`` of ``P^T A P`` (linear
    interpolation on ``axes``; coarse point ``I`` on fine point ``2I + 1``; the last point of an odd
    axis ``a`` interpolated with weight ``ends[a]``, 1/2 when ``ends`` is ``None``; the mask of
    :func:`valid_mask`, for :func:`stencil_to_csr`).

    ``P`` is a Kronecker product of 1-D interpolations, so the product is taken one axis at a time,
    each step a small dense mixing matrix applied to the stacked fine rows: one GEMM per axis and
    block instead of one tensor operation per pair of offsets.  Blocks of the grid's first axis
    bound the temporaries (the other axes' steps stay inside a block); entries that point off the
    coarse grid belong to no coarse unknown and are zeroed.
    """
    coarse = tuple(n // 2 if a in axes else n for a, n in enumerate(dims))
    steps, cur, widest = [], list(offs), len(offs)
    for a in axes:
        end = 0.5 if ends is None else ends[a]
        W_end = _axis_weights(cur, a, end)[1] if dims[a] % 2 and end != 0.5 else None  # same offsets
        cur, W = _axis_weights(cur, a)
        widest = max(widest, len(cur))
        W_end = None if W_end is None else torch.tensor(W_end, dtype=S.dtype, device=S.device)
        steps.append((a, torch.tensor(W, dtype=S.dtype, device=S.device), W_end))
    out = S.new_empty(len(cur), *coarse)
    per_row = 3 * widest * max(1, S[0].numel() // dims[0]) * (2 if 0 in axes else 1)
    chunk = GALERKIN_CHUNK if isinstance(GALERKIN_CHUNK, int) else GALERKIN_CHUNK.get(S.device.type, 1 << 25)
    rows = max(1, chunk // per_row)
    for i0 in range(0, coarse[0], rows):
        i1 = min(i0 + rows, coarse[0])
        if 0 in axes:  # coarse rows i0..i1 read fine rows 2 i0 .. 2 i1 (inclusive)
            T = S.narrow(1, 2 * i0, min(2 * i1 + 1, dims[0]) - 2 * i0)
        else:
            T = S.narrow(1, i0, i1 - i0)
        for a, W, W_end in steps:  # the last row of axis 0 is in the last block
            T = _axis_step(T, W, a, i1 - i0 if a == 0 else coarse[a], W_end if a or i1 == coarse[0] else None)
        out[:, i0:i1] = T
        del T
    valid = valid_mask(cur, coarse, S.device)
    out.masked_fill_(~valid, 0)
    return cur, out, coarse, valid


CSR_GROUP = 1 << 26
"""Entries (offsets x rows) per scatter of :func:`stencil_to_csr`: bounds its int64 positions."""


def stencil_to_csr(offs: list, S: torch.Tensor, dims: tuple, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Torch CSR (int32 indices, sorted rows and columns) of a stencil; entries off the grid dropped.

    The number of entries is known on the host (a product per offset), so the entries are
    placed by one scatter: no data-dependent shape, no host look.  ``valid``: the stencil's
    :func:`valid_mask` when the caller has it."""
    n, O, dev = S[0].numel(), len(offs), S.device
    nnz = 0
    for o in offs:
        k = 1
        for a, Da in enumerate(o):
            k *= max(dims[a] - abs(Da), 0)
        nnz += k
    itype = torch.int32 if max(n * O, nnz) < 2**31 - 1 else torch.int64
    valid = (valid_mask(offs, dims, dev) if valid is None else valid).reshape(O, n)
    crow = torch.zeros(n + 1, dtype=itype, device=dev)
    torch.cumsum(valid.sum(0, dtype=itype), 0, out=crow[1:])
    # entry (I, offset k) goes to crow[I] + (valid offsets before k in row I); kept in the stencil's
    # own [O, n] layout, so the values scatter straight from S (offsets sorted: columns sorted).
    # Offsets go in groups of at most CSR_GROUP entries (one group up to 16M unknowns), which
    # bounds the int64 positions at the largest grids.
    st = strides(dims)
    lin = torch.tensor([sum(o[a] * st[a] for a in range(len(dims))) for o in offs], device=dev, dtype=itype)
    cols = torch.empty(nnz + 1, dtype=itype, device=dev)
    vals = S.new_empty(nnz + 1)
    S = S.reshape(O, n)
    start = crow[:-1].clone()  # the next free position of every row
    step = max(1, CSR_GROUP // max(n, 1))
    for g0 in range(0, O, step):
        g1 = min(O, g0 + step)
        vg = valid[g0:g1]
        dest = torch.cumsum(vg, 0).sub_(1).add_(start)
        dest.masked_fill_(~vg, nnz)  # entries off the grid go to a spare slot
        cols.scatter_(0, dest.view(-1), (torch.arange(n, device=dev, dtype=itype) + lin[g0:g1].unsqueeze(1)).view(-1))
        vals.scatter_(0, dest.view(-1), S[g0:g1].reshape(-1))
        del dest
        if g1 < O:
            start += vg.sum(0, dtype=itype)
    return csr_tensor(crow, cols[:nnz], vals[:nnz], (n, n))
