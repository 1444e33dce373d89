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

from ...pattern import csr_tensor
from ...sparse import SparseTensor
from .multigrid import Level, Mat, Multigrid, check_cycle

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
    nc = f.shape[0] // 2
    fe = f[0::2]  # fine points 2I and 2I + 2 feed coarse I with weight 1/2 (2I + 2 may be off the grid)
    out = f[1::2][:nc].clone()
    out.add_(fe[:nc], alpha=0.5)
    m = min(nc, fe.shape[0] - 1)
    out[:m].add_(fe[1 : m + 1], alpha=0.5)
    return out.movedim(0, axis)


def prolong(xc: torch.Tensor, fine: tuple, axes: tuple) -> torch.Tensor:
    """``P xc`` for ``xc`` ``[n_coarse, K]`` on the coarse grid of ``fine`` (coarsened ``axes``)."""
    K = xc.shape[-1]
    coarse = tuple(n // 2 if a in axes else n for a, n in enumerate(fine))
    u = xc.reshape(*coarse, K)
    for a in axes:
        u = _prolong_axis(u, a, fine[a])
    return u.reshape(-1, K)


def prolong_add_(x: torch.Tensor, xc: torch.Tensor, fine: tuple, axes: tuple) -> torch.Tensor:
    """``x += P xc`` in place (``x`` contiguous ``[n_fine, K]``).

    The last coarsened axis is interpolated straight into strided views of ``x``,
    so no fine-grid temporary is made (the V-cycle's peak memory sits here).
    """
    K = xc.shape[-1]
    coarse = tuple(n // 2 if a in axes else n for a, n in enumerate(fine))
    u = xc.reshape(*coarse, K)
    for a in axes[:-1]:
        u = _prolong_axis(u, a, fine[a])
    a = axes[-1]
    n = fine[a]
    xv = x.view(*fine, K).movedim(a, 0)
    u = u.movedim(a, 0)
    xv[1::2].add_(u)
    up = torch.nn.functional.pad(u.movedim(0, -1), (1, 1)).movedim(-1, 0)  # [0, u, 0]
    del u
    ne = (n + 1) // 2
    xv[0::2].add_(up[:ne] + up[1 : ne + 1], alpha=0.5)
    return x


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
        return (
            i,
            torch.ones(n, 1, dtype=torch.float64, device=device),
            torch.ones(n, 1, dtype=torch.bool, device=device),
        )
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
    w = torch.where(
        odd.unsqueeze(1),
        torch.tensor([1.0, 0.0], dtype=torch.float64, device=device),
        torch.tensor([0.5, 0.5], dtype=torch.float64, device=device),
    )
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

    def t(a):
        return torch.from_numpy(a.astype("int64")).to(device)

    return Mat(t(M.indptr), t(M.indices), torch.from_numpy(M.data).to(device=device, dtype=dtype), M.shape)


# ------------------------------------------------- Galerkin on stencils
def _strides(dims: tuple) -> list:
    strides = [1] * len(dims)
    for a in range(len(dims) - 2, -1, -1):
        strides[a] = strides[a + 1] * dims[a + 1]
    return strides


def _offset_codes(rows: torch.Tensor, cols: torch.Tensor, dims: tuple, lin_sorted, order, exact: bool):
    """Index into the ``3^d`` compact offsets (``itertools.product((-1, 0, 1), repeat=d)``) of each entry."""
    d = len(dims)
    if not exact:  # one subtraction: the linear offset identifies the grid offset
        diff = cols - rows
        pos = torch.searchsorted(lin_sorted, diff).clamp_(max=len(lin_sorted) - 1)
        if not bool((lin_sorted[pos] == diff).all()):
            raise ValueError(
                "gmg needs a compact stencil (neighbour offsets in {-1, 0, 1} per axis); "
                "this matrix couples points further apart: use preconditioner='amg'"
            )
        return order[pos]
    strides = _strides(dims)
    code = torch.zeros_like(rows)
    for a in range(d):  # per-axis offsets (needed when an axis has fewer than 3 points)
        if a < d - 1:
            qr = torch.div(rows, strides[a], rounding_mode="floor")
            qc = torch.div(cols, strides[a], rounding_mode="floor")
            diff = qc - qr
            rows, cols = rows - qr * strides[a], cols - qc * strides[a]
        else:
            diff = cols - rows
        if bool((diff.abs() > 1).any()):
            raise ValueError(
                "gmg needs a compact stencil (neighbour offsets in {-1, 0, 1} per axis); this matrix couples "
                f"points {int(diff.abs().max())} apart along axis {a}: use preconditioner='amg'"
            )
        code = code * 3 + (diff + 1)
    return code


def _stencil_chunk(device: torch.device) -> int:
    """Entries per pass when the fine stencil is read from the CSR.  On GPUs each pass costs
    kernel launches and a host synchronisation, so passes are large (4M entries: int64
    temporaries of about 160 MB; 16M unknowns read in 40 ms -> 18 ms on an H200); on the CPU
    1M-entry passes stay in cache and are faster."""
    return 1 << 20 if device.type == "cpu" else 1 << 22


def _stencil(p, val: torch.Tensor, dims: tuple, exact: bool | None = None):
    """(offsets, coefficient grids ``[|O|, *dims]``) of a matrix on the grid, read from its CSR.

    Each entry is classified by its offset against the ``3^d`` compact-stencil offsets
    in two chunked passes over whole rows (int8 codes in between), so the temporaries
    stay a few bytes per entry and only the offsets present get a grid.  Couplings
    that would wrap around a grid line show up on the boundary of their grid and are
    rejected there, as are offsets outside the compact stencil.  ``exact`` forces the
    per-axis classification (automatic when an axis is too short for linear offsets).
    """
    d = len(dims)
    cand = list(itertools.product((-1, 0, 1), repeat=d))
    strides = _strides(dims)
    lin = torch.tensor([sum(e[a] * strides[a] for a in range(d)) for e in cand], device=val.device)
    lin_sorted, order = torch.sort(lin)
    if exact is None:  # an axis of length <= 2 makes linear offsets ambiguous
        exact = bool((lin_sorted[1:] == lin_sorted[:-1]).any())
    codes = torch.empty(p.nnz, dtype=torch.int8, device=val.device)
    count = torch.zeros(len(cand), dtype=torch.int64, device=val.device)
    for lo, hi, rows in p.row_chunks(_stencil_chunk(val.device)):
        c = _offset_codes(rows, p.ccol[lo:hi].long(), dims, lin_sorted, order, exact)
        count += torch.bincount(c, minlength=len(cand))
        codes[lo:hi] = c
    present = count > 0
    lookup = torch.cumsum(present, 0) - 1
    S = val.new_zeros(int(present.sum()), p.shape[0])
    for lo, hi, rows in p.row_chunks(_stencil_chunk(val.device)):
        S[lookup[codes[lo:hi].long()], rows] = val[lo:hi]
    del codes
    offs = [cand[k] for k in torch.nonzero(present).flatten().tolist()]
    S = S.reshape(len(offs), *dims)
    for k, e in enumerate(offs):  # wrapped couplings land where the true neighbour is off the grid
        for a in range(d):
            if e[a] != 0 and bool((S[k].narrow(a, dims[a] - 1 if e[a] > 0 else 0, 1) != 0).any()):
                raise ValueError(
                    "gmg needs a compact stencil on the recorded grid; this matrix couples points "
                    f"across the edge of axis {a} (is pattern.cache['grid'] right?): use "
                    "preconditioner='amg'"
                )
    return offs, S


def _diagonal_and_bound(offs: list, S: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Diagonal of a stencil matrix and the Gershgorin bound of ``D^{-1} A`` (no CSR needed)."""
    centre = (0,) * (S.dim() - 1)
    if centre not in offs:
        raise ValueError("multigrid needs a non-zero diagonal on every level (a zero pivot appeared)")
    diag = S[offs.index(centre)].reshape(-1).clone()  # not a view: S must be free to go
    rowsum = torch.zeros_like(diag).real if diag.is_complex() else torch.zeros_like(diag)
    for k in range(len(offs)):
        rowsum += S[k].reshape(-1).abs()
    return diag, float((rowsum / diag.abs()).amax())


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
                    choices.append(
                        [(e2, (o[a] + e1[a] - e2) // 2) for e2 in (-1, 0, 1) if (o[a] + e1[a] - e2) % 2 == 0]
                    )
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


def _stencil_to_csr(offs: list, S: torch.Tensor, dims: tuple) -> torch.Tensor:
    """Torch CSR (int32 indices, sorted rows and columns) of a stencil; entries off the grid dropped."""
    d = len(dims)
    n = S[0].numel()
    dev = S.device
    strides = _strides(dims)
    itype = torch.int32 if n * len(offs) < 2**31 - 1 else torch.int64
    valid = torch.ones(n, len(offs), dtype=torch.bool, device=dev)
    for j, k in enumerate(offs):  # the entry (I, I + D) exists where I + D is on the grid
        m = valid[:, j].view(dims)
        for a, Da in enumerate(k):
            if Da > 0:
                m.narrow(a, dims[a] - Da, Da).fill_(False)
            elif Da < 0:
                m.narrow(a, 0, -Da).fill_(False)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    torch.cumsum(valid.sum(1), 0, out=crow[1:])
    lin = torch.tensor([sum(k[a] * strides[a] for a in range(d)) for k in offs], device=dev, dtype=itype)
    cols = (torch.arange(n, device=dev, dtype=itype).unsqueeze(1) + lin)[valid]  # offsets sorted: columns sorted
    vals = S.reshape(len(offs), n).T[valid]
    return csr_tensor(crow.to(itype), cols, vals, (n, n))


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
    cycle : str
        ``'V'``, ``'W'`` or ``'auto'`` (default: V; on a structured grid the W-cycle's
        extra coarse work does not pay for the iterations it saves).
    transfers : str
        ``'stencil'`` (strided tensor operations, no storage), ``'csr'`` (stored
        sparse P and R: faster on the CPU) or ``'auto'`` (CSR on the CPU, stencil on GPUs).
    """

    name = "gmg"

    def __init__(
        self,
        A: SparseTensor,
        grid: tuple | None = None,
        max_coarse: int = 500,
        max_levels: int = 25,
        degree: int = 2,
        ratio: float = 10.0,
        transfers: str = "auto",
        cycle: str = "auto",
    ):
        cycle = check_cycle(cycle)
        if transfers not in ("auto", "csr", "stencil"):
            raise ValueError(f"transfers must be 'auto', 'csr' or 'stencil', got {transfers!r}")
        if transfers == "auto":
            transfers = "csr" if A.device.type == "cpu" else "stencil"
        p = A.pattern
        grid = grid if grid is not None else p.cache.get("grid")
        if grid is None:
            raise ValueError(
                "preconditioner 'gmg' needs a structured grid: A.pattern.cache['grid'] is not set "
                "(build A with sla.gallery / sla.assembly stencils, pass grid=(nx, ny[, nz]), "
                "or use preconditioner='amg')"
            )
        grid = tuple(int(g) for g in grid)
        total = 1
        for g in grid:
            total *= g
        if total != p.shape[0]:
            raise ValueError(f"grid {grid} has {total} points but A has {p.shape[0]} rows")
        vals = A._flat().detach()
        hierarchies = []
        for bi in range(A.batch_size):
            # the fine operator is the pattern's own CSR (no copy); every level is read as a stencil
            csr = p.csr(vals[bi])
            offs, S = _stencil(p, vals[bi], grid)
            dims = grid
            levels = []
            while S[0].numel() > max_coarse and len(levels) < max_levels - 1:
                axes = tuple(a for a, n in enumerate(dims) if n >= 4)
                if not axes:
                    break
                diag, hi = _diagonal_and_bound(offs, S)
                st, coarse = _galerkin_stencil(offs, S, dims, axes)
                _drop_outside(st, coarse)
                offs = sorted(st)
                S = torch.stack([st.pop(k) for k in offs])
                if transfers == "csr":
                    key = ("gmg_transfers", dims, axes, vals.dtype)
                    if key not in p.cache:  # structural: once per pattern
                        p.cache[key] = (
                            transfer_matrix(dims, axes, False, vals.dtype, vals.device).csr32(),
                            transfer_matrix(dims, axes, True, vals.dtype, vals.device).csr32(),
                        )
                    P, R = p.cache[key]
                    lv = Level(None, P=P, R=R, csr=csr, diag=diag, hi=hi)
                else:
                    lv = Level(
                        None,
                        prolong=_Transfer(prolong_add_, dims, axes),
                        restrict=_Transfer(restrict, dims, axes),
                        csr=csr,
                        diag=diag,
                        hi=hi,
                    )
                levels.append(lv)
                csr, dims = _stencil_to_csr(offs, S, coarse), coarse
            diag, hi = _diagonal_and_bound(offs, S)
            levels.append(Level(None, csr=csr, diag=diag, hi=hi))
            del S
            hierarchies.append(levels)
        super().__init__(A, hierarchies, degree=degree, ratio=ratio, cycle=cycle)
        self.grid = grid


class _Transfer:
    def __init__(self, fn, dims, axes):
        self.fn, self.dims, self.axes = fn, dims, axes

    def __call__(self, *x):
        return self.fn(*x, self.dims, self.axes)
