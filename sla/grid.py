"""Matrices on structured grids read as *stencil arrays*.

A matrix whose rows couple each grid point only to neighbours at offsets in ``{-1, 0, 1}^d``
(unknowns numbered lexicographically, last axis fastest; ``pattern.cache["grid"]`` records the
grid) is held as ``|O|`` coefficient grids ``S [|O|, *dims]``, one per offset present
(:func:`read_stencil`).  The type checks read a grid matrix's symmetry from them
(:func:`stencil_symmetric`: shifted comparisons, no search); geometric multigrid's setup forms its
coarse levels on them (:mod:`sla.solvers.precond.grid_stencil`).
"""

from __future__ import annotations

import itertools

import torch

from .kernels import all_, any_, repeat_rows

__all__ = ["read_stencil", "stencil_symmetric", "strides", "valid_mask"]


def strides(dims: tuple) -> list:
    """Lexicographic strides of a grid (last axis fastest)."""
    s = [1] * len(dims)
    for a in range(len(dims) - 2, -1, -1):
        s[a] = s[a + 1] * dims[a + 1]
    return s


def _compact_error(detail: str) -> ValueError:
    return ValueError(
        f"gmg needs a compact stencil (neighbour offsets in {{-1, 0, 1}} per axis); {detail}: use preconditioner='amg'"
    )


def _offset_codes(rows, cols, dims, lin_sorted, order, exact: bool, bad: list):
    """Index into the ``3^d`` compact offsets of each entry; entries outside them set a flag in ``bad``
    (a device tensor, looked at once by the caller)."""
    if not exact:  # one subtraction: the linear offset identifies the grid offset
        diff = cols - rows
        pos = torch.searchsorted(lin_sorted, diff).clamp_(max=len(lin_sorted) - 1)
        bad.append((lin_sorted[pos] != diff).any())
        return order[pos]
    st = strides(dims)
    code = torch.zeros_like(rows)
    for a in range(len(dims)):  # per-axis offsets (needed when an axis has fewer than 3 points)
        if a < len(dims) - 1:
            qr = torch.div(rows, st[a], rounding_mode="floor")
            qc = torch.div(cols, st[a], rounding_mode="floor")
            diff = qc - qr
            rows, cols = rows - qr * st[a], cols - qc * st[a]
        else:
            diff = cols - rows
        far = diff.abs() > 1
        bad.append(far.any())
        code = code * 3 + (diff.clamp(-1, 1) + 1)
    return code


def _chunk(device: torch.device, nnz: int) -> int:
    """Entries per pass when the stencil is read from the CSR.  On GPUs each pass costs kernel
    launches, so passes are large: a sixteenth of the entries, from 1M to 8M (the int64 temporaries
    are about 40 bytes an entry: 16M unknowns 12 bytes per unknown; 1M, 40 -- one pass there was 210
    and set the peak of a type check); on the CPU 1M-entry passes stay in cache and are faster."""
    return 1 << 20 if device.type == "cpu" else min(max(nnz // 16, 1 << 20), 1 << 23)


def _row_blocks(p, chunk: int) -> list:
    """``[(r0, r1, lo, hi)]``: blocks of whole rows with about ``chunk`` entries; their entry ranges
    are read with one host look for all blocks (``Pattern.row_chunks`` looks twice per block)."""
    M = p.shape[0]
    step = max(1, (chunk * M) // max(p.nnz, 1))
    starts = list(range(0, M, step)) + [M]
    ends = p.crow[torch.tensor(starts, device=p.crow.device)].tolist()
    return [(r0, r1, lo, hi) for r0, r1, lo, hi in zip(starts[:-1], starts[1:], ends[:-1], ends[1:]) if hi > lo]


def _rows(p, r0: int, r1: int, lo: int, hi: int) -> torch.Tensor:
    """The int64 row of entries ``lo:hi`` (rows ``r0:r1``)."""
    counts = p.crow[r0 + 1 : r1 + 1] - p.crow[r0:r1]
    return repeat_rows(counts, r0, hi - lo, torch.int64)


def read_stencil(p, val: torch.Tensor, dims: tuple, exact: bool | None = None):
    """(offsets, coefficient grids ``[|O|, *dims]``) of a matrix on the grid, read from its CSR.

    Each entry is classified by its offset against the ``3^d`` compact-stencil offsets
    in two chunked passes over whole rows (int8 codes in between), so the temporaries
    stay a few bytes per entry and only the offsets present get a grid.  Couplings
    that would wrap around a grid line show up on the boundary of their grid and are
    rejected there, as are offsets outside the compact stencil.  ``exact`` forces the
    per-axis classification (automatic when an axis is too short for linear offsets).
    """
    d, dev = len(dims), val.device
    cand = list(itertools.product((-1, 0, 1), repeat=d))
    st = strides(dims)
    lin = [sum(e[a] * st[a] for a in range(d)) for e in cand]
    if exact is None:  # an axis of length <= 2 makes linear offsets ambiguous
        exact = len(set(lin)) < len(lin)
    order_h = sorted(range(len(cand)), key=lambda k: lin[k])
    lin_sorted = torch.tensor([lin[k] for k in order_h], device=dev)
    order = torch.tensor(order_h, device=dev)
    codes = torch.empty(p.nnz, dtype=torch.int8, device=dev)
    present = torch.zeros(len(cand), dtype=torch.bool, device=dev)
    bad: list = []
    blocks = _row_blocks(p, _chunk(dev, p.nnz))
    for r0, r1, lo, hi in blocks:  # the rows are made again in the second pass: kept, they would cost 8 B/entry
        c = _offset_codes(_rows(p, r0, r1, lo, hi), p.ccol[lo:hi].long(), dims, lin_sorted, order, exact, bad)
        present.index_fill_(0, c, True)
        codes[lo:hi] = c
    flags = torch.cat([torch.stack(bad).view(-1) if bad else present.new_zeros(1), present]).tolist()
    if any(flags[: len(flags) - len(cand)]):
        raise _compact_error("this matrix couples points further apart")
    keep = [k for k, f in enumerate(flags[len(flags) - len(cand) :]) if f]
    lookup_h = [0] * len(cand)
    for i, k in enumerate(keep):
        lookup_h[k] = i
    lookup = torch.tensor(lookup_h, device=dev)
    S = val.new_zeros(len(keep), p.shape[0])
    for r0, r1, lo, hi in blocks:
        S[lookup[codes[lo:hi].long()], _rows(p, r0, r1, lo, hi)] = val[lo:hi]
    del codes, blocks
    offs = [cand[k] for k in keep]
    S = S.reshape(len(offs), *dims)
    # wrapped couplings land where the true neighbour is off the grid (the grid's edge rows)
    edge = [
        any_(S[k].narrow(a, dims[a] - 1 if e[a] > 0 else 0, 1).ne(0))
        for k, e in enumerate(offs)
        for a in range(d)
        if e[a] != 0
    ]
    if edge and any(torch.stack(edge).tolist()):
        raise ValueError(
            "gmg needs a compact stencil on the recorded grid; this matrix couples points across the edge "
            "of the grid (is pattern.cache['grid'] right?): use preconditioner='amg'"
        )
    return offs, S


def valid_mask(offs: list, dims: tuple, device) -> torch.Tensor:
    """``[|O|, *dims]`` bool: where entry ``(I, I + D)`` has its column ``I + D`` on the grid
    (a broadcast of one 1-D mask per axis)."""
    mask = None
    for a, n in enumerate(dims):
        D = torch.tensor([o[a] for o in offs], device=device).unsqueeze(1)
        i = torch.arange(n, device=device) + D  # [|O|, n]
        m = ((i >= 0) & (i < n)).view(len(offs), *[n if b == a else 1 for b in range(len(dims))])
        mask = m if mask is None else mask & m
    return mask


def stencil_symmetric(offs: list, S: torch.Tensor, tol: torch.Tensor | float, conjugate: bool = False) -> torch.Tensor:
    """Whether the matrix of the stencil ``(offs, S)`` (from :func:`read_stencil`) is symmetric
    (``conjugate``: Hermitian) to ``tol``: a 0-d bool tensor (no host look).

    Entry ``(I, I + D)`` is ``S[D][I]`` and its mirror ``(I + D, I)`` is ``S[-D][I + D]``: one
    comparison of two shifted grids per pair of opposite offsets (an absent offset reads as zero).
    Entries pointing off the grid are zero (:func:`read_stencil` rejects the others)."""
    good = torch.ones((), dtype=torch.bool, device=S.device)
    for k, o in enumerate(offs):
        m = tuple(-e for e in o)
        if m < o:  # each pair once; the centre with itself (the diagonal's imaginary part)
            continue
        src = tuple(slice(0, n - 1) if e > 0 else slice(1, n) if e < 0 else slice(None) for e, n in zip(o, S.shape[1:]))
        dst = tuple(slice(1, n) if e > 0 else slice(0, n - 1) if e < 0 else slice(None) for e, n in zip(o, S.shape[1:]))
        a = S[k][src]
        b = S[offs.index(m)][dst] if m in offs else torch.zeros((), dtype=S.dtype, device=S.device)
        b = b.conj() if conjugate else b
        good = good & all_((a - b).abs() <= tol)
    return good
