"""Near-null spaces for smoothed aggregation: rigid-body modes, node amalgamation and
the tentative prolongator fitted to several candidate vectors.

Scalar problems (Poisson, heat) have one near-null vector, the constant.  Vector
problems do not: the near-null space of linear elasticity is spanned by the rigid-body
modes (translations and rotations), and an AMG built on the constant alone needs
hundreds of iterations there.  Smoothed aggregation with candidates ``B`` (Vanek,
Mandel & Brezina 1996; pyamg's ``fit_candidates``) aggregates *nodes* (all dofs of a
node together), orthonormalises ``B`` on every aggregate (``B_a = Q_a R_a``), takes the
block-diagonal ``Q`` as tentative prolongator and the stacked ``R_a`` as the coarse
candidates; a coarse node is an aggregate with its (up to ``k``) coarse dofs.

Everything is vectorised over aggregates (torch on A's device): the aggregates are
padded to the largest one and orthonormalised by a twice-repeated modified
Gram--Schmidt in ``k`` steps; a candidate that is (numerically) dependent on the ones
before it on an aggregate is dropped there, so no coarse dof is void.
"""

from __future__ import annotations

import torch

from ...kernels import repeat_rows

__all__ = ["amalgamate", "fit_candidates", "rigid_body_modes"]


def rigid_body_modes(points: torch.Tensor, ncomp: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rigid-body modes of a vector field with ``ncomp`` components interleaved per node.

    Parameters
    ----------
    points : tensor ``[nodes, dim]``
        Node coordinates (``dim`` 1, 2 or 3).
    ncomp : int, optional
        Components per node (default ``dim``); must equal ``dim`` for the rotations to exist.
    dtype : torch.dtype, optional
        Of the result (default that of ``points``).

    Returns
    -------
    tensor ``[nodes * ncomp, k]``
        ``k = 1`` (1D), 3 (2D: two translations, one rotation), 6 (3D: three translations,
        three rotations); dof ``node * ncomp + c``.  Rotations are about the centroid.

    Examples
    --------
    >>> import torch
    >>> rigid_body_modes(torch.tensor([[0.0, 0.0], [1.0, 0.0]])).shape
    torch.Size([4, 3])
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] not in (1, 2, 3):
        raise ValueError(
            f"points must be a tensor [nodes, dim] with dim 1, 2 or 3, got {getattr(points, 'shape', points)}"
        )
    nodes, dim = points.shape
    ncomp = dim if ncomp is None else ncomp
    if ncomp != dim:
        raise ValueError(f"rigid-body modes need one component per coordinate: ncomp={ncomp}, points of dim {dim}")
    x = points.to(dtype or points.dtype)
    x = x - x.mean(0)
    rot = {1: [], 2: [(0, 1)], 3: [(1, 2), (2, 0), (0, 1)]}[dim]
    B = x.new_zeros(nodes, dim, dim + len(rot))
    for c in range(dim):
        B[:, c, c] = 1
    for j, (a, b) in enumerate(rot):  # rotation in the (a, b) plane: u_a = -x_b, u_b = x_a
        B[:, a, dim + j] = -x[:, b]
        B[:, b, dim + j] = x[:, a]
    return B.reshape(nodes * dim, -1)


def amalgamate(crow: torch.Tensor, col: torch.Tensor, node: torch.Tensor, nnodes: int):
    """The node graph (CSR arrays, no self loops) of a dof graph whose dof ``i`` sits on node ``node[i]``."""
    n = crow.numel() - 1
    idt = torch.int32 if max(n, nnodes, col.numel()) < 2**31 - 1 else torch.int64  # the index work's dtype
    node = node.to(idt)
    counts = (crow[1:] - crow[:-1]).to(idt)
    row = repeat_rows(counts, 0, col.numel(), idt)
    r = node[row]
    del row, counts
    c = node[col]
    off = r != c
    # an entry whose pair is its predecessor's is dropped before the sort: where a row's columns ascend
    # and a node's dofs are consecutive (the assembly's numbering), one entry per (row, node) is left
    # to sort, a third of them for 3D elasticity (the sort removes whatever repeats remain)
    off[1:] &= (c[1:] != c[:-1]) | (r[1:] != r[:-1])
    key = r[off].long().mul_(nnodes).add_(c[off])  # node pairs (i, j) as i * nnodes + j
    del r, c, off
    key = torch.unique(key)
    r = torch.div(key, nnodes, rounding_mode="floor")
    c = key.sub_(r * nnodes).to(idt)
    ncrow = torch.zeros(nnodes + 1, dtype=torch.int64, device=col.device)
    torch.cumsum(torch.bincount(r, minlength=nnodes), 0, out=ncrow[1:])
    return ncrow, c


def _orthonormalise(Bp: torch.Tensor, tol: float):
    """Twice-repeated modified Gram--Schmidt on the columns of every ``Bp[a]`` (``[nagg, m, k]``).

    Returns ``Q`` (dropped columns zero), ``R`` (``[nagg, k, k]``, dropped rows zero) and ``keep [nagg, k]``."""
    nagg, _, k = Bp.shape
    Q = Bp.clone()
    R = Bp.new_zeros(nagg, k, k)
    keep = torch.ones(nagg, k, dtype=torch.bool, device=Bp.device)
    norm0 = torch.linalg.vector_norm(Bp, dim=1)  # [nagg, k]
    for j in range(k):
        v = Q[:, :, j]
        for _ in range(2):
            for i in range(j):
                c = (Q[:, :, i].conj() * v).sum(1)
                v = v - c.unsqueeze(1) * Q[:, :, i]
                R[:, i, j] += c
        nv = torch.linalg.vector_norm(v, dim=1)
        ok = nv > tol * norm0[:, j]
        keep[:, j] = ok
        R[:, j, j] = torch.where(ok, nv, torch.zeros_like(nv)).to(R.dtype)
        Q[:, :, j] = torch.where(ok.unsqueeze(1), v / torch.where(ok, nv, torch.ones_like(nv)).unsqueeze(1), 0)
    R = R * keep.unsqueeze(-1)
    return Q, R, keep


def fit_candidates(agg: torch.Tensor, nagg: int, B: torch.Tensor):
    """Tentative prolongator of aggregates ``agg`` (per dof, -1: none) fitted to candidates ``B [n, k]``.

    Returns
    -------
    (row, col, val, ncoarse, Bc, cnode)
        ``T`` as COO sorted by row (``n x ncoarse``), the coarse candidates ``Bc [ncoarse, k]``
        and the node (aggregate) of every coarse dof.
    """
    n, k = B.shape
    dev = B.device
    dofs = torch.nonzero(agg >= 0).flatten()
    a = agg[dofs]
    order = torch.argsort(a, stable=True)
    dofs, a = dofs[order], a[order]
    counts = torch.bincount(a, minlength=nagg)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(a.numel(), device=dev) - start[a]
    m = int(counts.amax()) if a.numel() else 0
    work = torch.complex128 if B.is_complex() else torch.float64
    Bp = torch.zeros(nagg, m, k, dtype=work, device=dev)
    Bp[a, pos] = B[dofs].to(work)
    eps = torch.finfo(B.real.dtype if B.is_complex() else B.dtype).eps
    Q, R, keep = _orthonormalise(Bp, 10 * eps**0.5)
    cidx = (torch.cumsum(keep.flatten().long(), 0) - 1).reshape(nagg, k)
    ncoarse = int(keep.sum())
    # T entries (dof, cidx[a, j]) = Q[a, pos, j] for the kept j: rows grouped by aggregate, j innermost
    sel = keep[a]  # [len(dofs), k]
    rows = dofs.unsqueeze(1).expand(-1, k)[sel]
    cols = cidx[a][sel]
    vals = Q[a, pos][sel].to(B.dtype)
    o = torch.argsort(rows, stable=True)
    Bc = R[keep].to(B.dtype)  # [ncoarse, k]: row j of R_a for every kept j, in coarse-dof order
    cnode = torch.arange(nagg, device=dev).unsqueeze(1).expand(-1, k)[keep]
    return rows[o], cols[o], vals[o], ncoarse, Bc, cnode
