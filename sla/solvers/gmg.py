"""Geometric multigrid for matrices on structured grids.

Needs the grid: ``A.pattern.cache["grid"] = (nx, ny[, nz])`` with unknowns
numbered lexicographically, last axis fastest (``sla.gallery.poisson2d/3d``
and ``sla.assembly`` stencils record it).  Each level halves every axis longer
than 3 (coarse point ``I`` sits on fine point ``2I + 1``); transfers are
(bi/tri)linear interpolation and its transpose, applied as strided tensor
operations on the grid (no stored P or R).

Coarse operators are Galerkin products ``A_c = P^T A P`` computed on *stencil
arrays*: the fine matrix is read as ``|O|`` coefficient grids (one per
neighbour offset, compact stencils with offsets in ``{-1, 0, 1}^d``), and the
coarse stencil (at most ``3^d`` offsets) follows from strided slices of those
grids -- no sparse-times-sparse product, so the setup needs only
``O(|O| n)`` extra memory.  Any matrix on the grid works (variable
coefficients, anisotropy, convection), as long as its stencil is compact.
"""

from __future__ import annotations

import itertools

import torch

_CHUNK = 1 << 24  # entries per pass when reading a stencil: bounds the int64 temporaries

from ..sparse import SparseTensor
from .amg import Level, Mat, Multigrid

__all__ = ["GeometricMultigrid", "prolong", "restrict"]


# --------------------------------------------------- transfers on grids
def _prolong_axis(u: torch.Tensor, axis: int, n: int) -> torch.Tensor:
    """Linear interpolation along ``axis`` from ``n // 2`` coarse to ``n`` fine points."""
    u = u.movedim(axis, 0)
    out = u.new_zeros((n,) + u.shape[1:])
    out[1::2] = u
    up = torch.nn.functional.pad(u.movedim(0, -1), (1, 1)).movedim(-1, 0)  # [0, u, 0]
    ne = (n + 1) // 2
    out[0::2] = 0.5 * (up[:ne] + up[1 : ne + 1])
    return out.movedim(0, axis)


def _restrict_axis(f: torch.Tensor, axis: int) -> torch.Tensor:
    """Transpose of :func:`_prolong_axis` (full weighting without the 1/2 scaling)."""
    f = f.movedim(axis, 0)
    n = f.shape[0]
    nc = n // 2
    fe = f[0::2]
    if fe.shape[0] < nc + 1:
        fe = torch.nn.functional.pad(fe.movedim(0, -1), (0, nc + 1 - fe.shape[0])).movedim(-1, 0)
    out = f[1::2][:nc] + 0.5 * (fe[:nc] + fe[1 : nc + 1])
    return out.movedim(0, axis)


def prolong(xc: torch.Tensor, fine: tuple, axes: tuple) -> torch.Tensor:
    """``P xc`` for ``xc`` ``[n_coarse, K]`` on the coarse grid of ``fine`` (coarsened ``axes``)."""
    K = xc.shape[-1]
    coarse = tuple(n // 2 if a in axes else n for a, n in enumerate(fine))
    u = xc.reshape(*coarse, K)
    for a in axes:
        u = _prolong_axis(u, a, fine[a])
    return u.reshape(-1, K)


def restrict(r: torch.Tensor, fine: tuple, axes: tuple) -> torch.Tensor:
    """``P^T r`` for ``r`` ``[n_fine, K]``."""
    K = r.shape[-1]
    u = r.reshape(*fine, K)
    for a in axes:
        u = _restrict_axis(u, a)
    return u.reshape(-1, K)


def _interp_1d(n: int, coarsen: bool, transpose: bool, device):
    """Padded rows of 1-D interpolation (or its transpose): (cols [rows, E], weights, valid)."""
    if not coarsen:
        i = torch.arange(n, device=device).unsqueeze(1)
        return i, torch.ones(n, 1, dtype=torch.float64, device=device), torch.ones(n, 1, dtype=torch.bool, device=device)
    nc = n // 2
    if transpose:  # coarse row I: fine 2I, 2I+1, 2I+2
        I = torch.arange(nc, device=device).unsqueeze(1)
        cols = 2 * I + torch.arange(3, device=device)
        w = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64, device=device).expand(nc, 3)
        return cols, w, cols < n
    i = torch.arange(n, device=device)
    odd = (i % 2) == 1
    left = torch.where(odd, (i - 1) // 2, i // 2 - 1)
    right = torch.where(odd, (i - 1) // 2, i // 2)
    cols = torch.stack([left, right], 1)
    w = torch.where(odd.unsqueeze(1), torch.tensor([1.0, 0.0], dtype=torch.float64, device=device),
                    torch.tensor([0.5, 0.5], dtype=torch.float64, device=device))
    valid = (cols >= 0) & (cols < nc) & (w > 0)
    return cols, w, valid


def _interp_1d_scipy(n: int, coarsen: bool):
    import numpy as np
    import scipy.sparse as sp

    if not coarsen:
        return sp.identity(n, format="csr")
    c, w, v = _interp_1d(n, True, False, "cpu")
    rows = np.repeat(np.arange(n), 2)
    ok = v.numpy().ravel()
    return sp.csr_matrix((w.numpy().ravel()[ok], (rows[ok], c.numpy().ravel()[ok])), shape=(n, n // 2))


def transfer_matrix(dims: tuple, axes: tuple, transpose: bool, dtype, device) -> Mat:
    """P (``transpose=False``) or R = P^T as a CSR matrix: Kronecker product of 1-D factors.

    Structural setup work, built once per pattern with ``scipy.sparse.kron`` on the host.
    """
    import scipy.sparse as sp

    M = sp.csr_matrix([[1.0]])
    for a, n in enumerate(dims):
        M = sp.kron(M, _interp_1d_scipy(n, a in axes), format="csr")
    if transpose:
        M = M.T.tocsr()
    M.sort_indices()
    t = lambda a: torch.from_numpy(a.astype("int64")).to(device)
    return Mat(t(M.indptr), t(M.indices), torch.from_numpy(M.data).to(device=device, dtype=dtype), M.shape)


# ------------------------------------------------- Galerkin on stencils
def _stencil(A: Mat, dims: tuple):
    """(offsets, coefficient grids ``[|O|, *dims]``) of a matrix on the grid.

    Each entry is classified by its linear offset ``col - row`` against the ``3^d``
    compact-stencil offsets (chunked, so the temporaries stay small); couplings that
    would wrap around a grid line show up on the boundary of their grid and are
    rejected there, as are offsets outside the compact stencil.
    """
    d = len(dims)
    strides = [1] * d
    for a in range(d - 2, -1, -1):
        strides[a] = strides[a + 1] * dims[a + 1]
    cand = list(itertools.product((-1, 0, 1), repeat=d))
    lin = torch.tensor([sum(e[a] * strides[a] for a in range(d)) for e in cand], device=A.val.device)
    lin_sorted, order = torch.sort(lin)
    if bool((lin_sorted[1:] == lin_sorted[:-1]).any()):  # an axis of length <= 2: offsets are ambiguous
        return _stencil_exact(A, dims)
    S = A.val.new_zeros(len(cand), A.shape[0])
    for lo in range(0, A.val.numel(), _CHUNK):
        r = A.row[lo: lo + _CHUNK]
        diff = A.col[lo: lo + _CHUNK] - r
        pos = torch.searchsorted(lin_sorted, diff).clamp_(max=len(cand) - 1)
        if not bool((lin_sorted[pos] == diff).all()):
            raise ValueError("gmg needs a compact stencil (neighbour offsets in {-1, 0, 1} per axis); "
                             "this matrix couples points further apart: use preconditioner='amg'")
        S[order[pos], r] = A.val[lo: lo + _CHUNK]
    S = S.reshape(len(cand), *dims)
    for k, e in enumerate(cand):  # wrapped couplings land where the true neighbour is off the grid
        for a in range(d):
            if e[a] != 0 and bool((S[k].narrow(a, dims[a] - 1 if e[a] > 0 else 0, 1) != 0).any()):
                raise ValueError("gmg needs a compact stencil on the recorded grid; this matrix couples points "
                                 f"across the edge of axis {a} (is pattern.cache['grid'] right?): use "
                                 "preconditioner='amg'")
    present = [k for k in range(len(cand)) if bool((S[k] != 0).any())]
    return [cand[k] for k in present], S[present]


def _stencil_exact(A: Mat, dims: tuple):
    """:func:`_stencil` by per-axis offsets (needed when an axis has fewer than 3 points)."""
    d = len(dims)
    strides = [1] * d
    for a in range(d - 2, -1, -1):
        strides[a] = strides[a + 1] * dims[a + 1]
    codes = []
    for lo in range(0, A.val.numel(), _CHUNK):
        rem_r, rem_c = A.row[lo: lo + _CHUNK], A.col[lo: lo + _CHUNK]
        code = torch.zeros_like(rem_r, dtype=torch.int8)
        for a in range(d):
            if a < d - 1:
                qr = torch.div(rem_r, strides[a], rounding_mode="floor")
                qc = torch.div(rem_c, strides[a], rounding_mode="floor")
                diff = qc - qr
                rem_r, rem_c = rem_r - qr * strides[a], rem_c - qc * strides[a]
            else:
                diff = rem_c - rem_r
            if bool((diff.abs() > 1).any()):
                raise ValueError(
                    "gmg needs a compact stencil (neighbour offsets in {-1, 0, 1} per axis); this matrix couples "
                    f"points {int(diff.abs().max())} apart along axis {a}: use preconditioner='amg'")
            code = code * 3 + (diff + 1).to(torch.int8)
        codes.append(code)
    code = torch.cat(codes) if len(codes) != 1 else codes[0]
    del codes
    present = torch.bincount(code.long() if code.numel() < _CHUNK else code.to(torch.int32), minlength=3**d) > 0
    uniq = torch.nonzero(present).flatten()
    lookup = (torch.cumsum(present.long(), 0) - 1).to(torch.int8)
    offs = []
    for c in uniq.tolist():
        o = []
        for _ in range(d):
            o.append(c % 3 - 1)
            c //= 3
        offs.append(tuple(reversed(o)))
    S = A.val.new_zeros(len(offs), A.shape[0])
    for lo in range(0, A.val.numel(), _CHUNK):
        inv = lookup[code[lo: lo + _CHUNK].long()].long()
        S[inv, A.row[lo: lo + _CHUNK]] = A.val[lo: lo + _CHUNK]
    return offs, S.reshape(len(offs), *dims)


def _galerkin_stencil(offs, S, dims, axes):
    """Coarse stencil ``{D: grid}`` of ``P^T A P`` (linear interpolation on ``axes``)."""
    d = len(dims)
    coarse = tuple(n // 2 if a in axes else n for a, n in enumerate(dims))
    w = {-1: 0.5, 0: 1.0, 1: 0.5}
    E = [(-1, 0, 1) if a in axes else (0,) for a in range(d)]
    out: dict = {}
    for k, o in enumerate(offs):
        for e1 in itertools.product(*E):
            # fine rows 2I+1+e1 on coarsened axes (I on the others); rows off the grid are zero
            sl = tuple(slice(1 + e1[a], None, 2) if a in axes else slice(None) for a in range(d))
            block = None
            choices = []
            for a in range(d):
                if a in axes:
                    choices.append([(e2, (o[a] + e1[a] - e2) // 2) for e2 in (-1, 0, 1) if (o[a] + e1[a] - e2) % 2 == 0])
                else:
                    choices.append([(0, o[a])])
            for combo in itertools.product(*choices):
                wt = 1.0
                for a in range(d):
                    if a in axes:
                        wt *= w[e1[a]] * w[combo[a][0]]
                D = tuple(c[1] for c in combo)
                if block is None:
                    block = S[(k,) + sl]
                    pad = []
                    for a in reversed(range(d)):
                        extra = coarse[a] - block.shape[a]
                        pad += [0, extra] if extra > 0 else [0, 0]
                    block = block[tuple(slice(0, c) for c in coarse)]
                    if any(pad):
                        block = torch.nn.functional.pad(block, pad)
                if D in out:
                    out[D].add_(block, alpha=wt)
                else:
                    out[D] = block * wt
    return out, coarse


def _drop_outside(st: dict, dims: tuple) -> None:
    """Zero (in place) the stencil entries that point off the grid: they belong to no coarse unknown."""
    for D, g in st.items():
        for a, Da in enumerate(D):
            if Da > 0:
                g.narrow(a, dims[a] - Da, Da).zero_()
            elif Da < 0:
                g.narrow(a, 0, -Da).zero_()


def _stencil_to_mat(st: dict, dims: tuple) -> Mat:
    """CSR (sorted rows and columns) of a stencil ``{D: grid}``; entries off the grid dropped."""
    d = len(dims)
    keys = sorted(st)
    vals = torch.stack([st[k].reshape(-1) for k in keys], 1)  # [n, |D|]
    dev = vals.device
    n = vals.shape[0]
    strides = [1] * d
    for a in range(d - 2, -1, -1):
        strides[a] = strides[a + 1] * dims[a + 1]
    masks = []
    for k in keys:  # the entry (I, I + D) exists where I + D is on the grid: a product of 1-D masks
        m = torch.ones(dims, dtype=torch.bool, device=dev)
        for a, Da in enumerate(k):
            if Da > 0:
                m.narrow(a, dims[a] - Da, Da).fill_(False)
            elif Da < 0:
                m.narrow(a, 0, -Da).fill_(False)
        masks.append(m.reshape(-1))
    valid = torch.stack(masks, 1)
    lin = torch.tensor([sum(k[a] * strides[a] for a in range(d)) for k in keys], device=dev)
    cols = torch.arange(n, device=dev).unsqueeze(1) + lin
    crow = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    torch.cumsum(valid.sum(1), 0, out=crow[1:])
    return Mat(crow, cols[valid], vals[valid], (n, n))


class GeometricMultigrid(Multigrid):
    """Geometric multigrid V-cycle preconditioner for a matrix on a structured grid.

    Parameters
    ----------
    A : SparseTensor
        ``[*batch, n, n]`` with ``A.pattern.cache["grid"]`` set (or pass ``grid``).
    grid : tuple, optional
        Grid dimensions (product ``n``), lexicographic numbering, last axis fastest.
    max_coarse : int
        Stop coarsening at this many unknowns (dense inverse there).
    max_levels : int
        Level cap.
    degree, ratio : int, float
        Chebyshev smoother degree and interval ``[rho / ratio, rho]``.
    transfers : str
        ``'stencil'`` (strided tensor operations, no storage), ``'csr'`` (stored
        sparse P and R: faster on the CPU) or ``'auto'`` (CSR on the CPU, stencil on GPUs).
    """

    name = "gmg"

    def __init__(self, A: SparseTensor, grid: tuple | None = None, max_coarse: int = 500, max_levels: int = 25,
                 degree: int = 2, ratio: float = 10.0, transfers: str = "auto"):
        if transfers not in ("auto", "csr", "stencil"):
            raise ValueError(f"transfers must be 'auto', 'csr' or 'stencil', got {transfers!r}")
        if transfers == "auto":
            transfers = "csr" if A.device.type == "cpu" else "stencil"
        p = A.pattern
        grid = grid if grid is not None else p.cache.get("grid")
        if grid is None:
            raise ValueError("preconditioner 'gmg' needs a structured grid: A.pattern.cache['grid'] is not set "
                             "(build A with sla.gallery / sla.assembly stencils, pass grid=(nx, ny[, nz]), "
                             "or use preconditioner='amg')")
        grid = tuple(int(g) for g in grid)
        total = 1
        for g in grid:
            total *= g
        if total != p.shape[0]:
            raise ValueError(f"grid {grid} has {total} points but A has {p.shape[0]} rows")
        vals = A._flat().detach()
        hierarchies = []
        crow = p.crow.long()
        for bi in range(A.batch_size):
            C = Mat(crow, p.col, vals[bi], p.shape, row=p.row)
            dims = grid
            levels = []
            fine_csr = torch.sparse_csr_tensor(p.crow, p.ccol, vals[bi], p.shape, check_invariants=False)
            offs = S = None
            while C.shape[0] > max_coarse and len(levels) < max_levels - 1:
                axes = tuple(a for a, n in enumerate(dims) if n >= 4)
                if not axes:
                    break
                if S is None:
                    offs, S = _stencil(C, dims)
                st, coarse = _galerkin_stencil(offs, S, dims, axes)
                _drop_outside(st, coarse)
                Ac = _stencil_to_mat(st, coarse)
                offs = sorted(st)
                S = torch.stack([st[k] for k in offs])
                del st
                if transfers == "csr":
                    key = ("gmg_transfers", dims, axes, C.val.dtype)
                    if key not in p.cache:  # structural: once per pattern
                        p.cache[key] = (transfer_matrix(dims, axes, False, C.val.dtype, C.val.device).csr32(),
                                        transfer_matrix(dims, axes, True, C.val.dtype, C.val.device).csr32())
                    P, R = p.cache[key]
                    lv = Level(C, P=P, R=R, csr=fine_csr if not levels else None)
                else:
                    lv = Level(C, prolong=_Transfer(prolong, dims, axes), restrict=_Transfer(restrict, dims, axes),
                               csr=fine_csr if not levels else None)
                levels.append(lv)
                C, dims = Ac, coarse
            levels.append(Level(C, csr=fine_csr if not levels else None))
            hierarchies.append(levels)
        super().__init__(A, hierarchies, degree=degree, ratio=ratio)
        self.grid = grid


class _Transfer:
    def __init__(self, fn, dims, axes):
        self.fn, self.dims, self.axes = fn, dims, axes

    def __call__(self, x):
        return self.fn(x, self.dims, self.axes)
