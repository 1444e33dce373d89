"""Density filter of topology optimisation as a sparse operator.

The filtered (physical) density of cell ``e`` is the weighted average
``x_phys[e] = sum_j H[e, j] v_j x[j] / sum_j H[e, j] v_j`` with the cone weights
``H[e, j] = max(0, rmin - |c_e - c_j|)`` of the cell centres ``c`` and cell
volumes ``v`` (Bruns & Tortorelli 2001; the "density filter" of Andreassen et
al. 2011, where all cells have the same volume).  The operator is an ordinary
row-normalised :class:`~sla.SparseTensor`, so ``H @ x`` is differentiable and
its adjoint (the chain rule of the sensitivities) is the transpose, applied by
autograd.

Neighbour pairs are found by a lattice walk when the cell centres sit on a
regular grid (the generated quad/hex meshes: torch only, on the mesh's device),
otherwise by a k-d tree (SciPy, on the CPU).
"""

from __future__ import annotations

import itertools
import math

import torch

from ..assembly import Mesh
from ..sparse import SparseTensor

__all__ = ["density_filter", "cell_centres", "cell_volumes"]


def cell_centres(mesh: Mesh) -> torch.Tensor:
    """Vertex average of each cell ``[E, dim]``."""
    return mesh.points.detach()[mesh.cells].mean(1)


def cell_volumes(mesh: Mesh) -> torch.Tensor:
    """Measure of each cell ``[E]`` (area in 2D), exact for affine simplices and parallelepiped quads/hexes."""
    from ..assembly import CellBasis, element_for

    basis = CellBasis(mesh, element_for(mesh.cell_type, 1), intorder=1)
    return basis.dx.detach().sum(1)


def _lattice(c: torch.Tensor, tol: float = 1e-6):
    """``(index [E, d] on the grid, spacing [d], grid shape)`` when the centres form a complete
    regular grid, else ``None``."""
    E, d = c.shape
    lo = c.min(0).values
    hi = c.max(0).values
    n, h = [], []
    for k in range(d):
        u = torch.unique(torch.round((c[:, k] - lo[k]) / max(float(hi[k] - lo[k]), 1e-300) * 1e6))
        nk = u.numel()
        n.append(nk)
        h.append(float(hi[k] - lo[k]) / (nk - 1) if nk > 1 else 1.0)
    if math.prod(n) != E:
        return None
    h_t = torch.tensor(h, dtype=c.dtype, device=c.device)
    fidx = (c - lo) / h_t
    idx = torch.round(fidx).long()
    if float((fidx - idx).abs().max()) > tol:
        return None
    flat = torch.zeros(E, dtype=torch.long, device=c.device)
    for k in range(d):
        flat = flat * n[k] + idx[:, k]
    if torch.unique(flat).numel() != E:
        return None
    return idx, h, n


def _pairs_lattice(idx, h, n, rmin: float):
    """Neighbour pairs ``(i, j, distance)`` within ``rmin`` of the cells on a regular grid."""
    E, d = idx.shape
    dev = idx.device
    lookup = torch.full((math.prod(n),), -1, dtype=torch.long, device=dev)
    flat = torch.zeros(E, dtype=torch.long, device=dev)
    for k in range(d):
        flat = flat * n[k] + idx[:, k]
    lookup[flat] = torch.arange(E, device=dev)
    reach = [int(math.ceil(rmin / h[k])) for k in range(d)]
    I, J, W = [], [], []
    for off in itertools.product(*[range(-r, r + 1) for r in reach]):
        dist = math.sqrt(sum((o * h[k]) ** 2 for k, o in enumerate(off)))
        if dist >= rmin:
            continue
        nb = idx + torch.tensor(off, device=dev)
        ok = ((nb >= 0) & (nb < torch.tensor(n, device=dev))).all(1)
        nflat = torch.zeros(E, dtype=torch.long, device=dev)
        for k in range(d):
            nflat = nflat * n[k] + nb[:, k].clamp(0, n[k] - 1)
        src = torch.nonzero(ok).flatten()
        I.append(src)
        J.append(lookup[nflat[src]])
        W.append(torch.full((src.numel(),), rmin - dist, dtype=torch.float64, device=dev))
    return torch.cat(I), torch.cat(J), torch.cat(W)


def _pairs_tree(c: torch.Tensor, rmin: float):
    from scipy.spatial import cKDTree

    pts = c.cpu().numpy()
    tree = cKDTree(pts)
    D = tree.sparse_distance_matrix(tree, rmin, output_type="coo_matrix")
    i, j = torch.from_numpy(D.row.astype("int64")), torch.from_numpy(D.col.astype("int64"))
    w = rmin - torch.from_numpy(D.data)
    self_ = torch.arange(len(pts))  # the k-d tree leaves out zero distances: every cell is its own neighbour
    keep = i != j
    i, j, w = (
        torch.cat([i[keep], self_]),
        torch.cat([j[keep], self_]),
        torch.cat([w[keep], torch.full((len(pts),), rmin)]),
    )
    dev = c.device
    return i.to(dev), j.to(dev), w.to(dev)


def density_filter(mesh: Mesh, rmin: float, dtype: torch.dtype | None = None) -> SparseTensor:
    """The row-normalised density filter ``H`` (``E x E``) of radius ``rmin`` on ``mesh``.

    Parameters
    ----------
    mesh : Mesh
        Cells to filter over (any cell type; centres are vertex averages).
    rmin : float
        Filter radius in the mesh's length units, ``> 0``.  A radius below the
        cell size gives the identity (no filtering).
    dtype : torch.dtype, optional
        Of the values (default: the mesh's).

    Returns
    -------
    SparseTensor
        ``H`` with ``H @ x`` the filtered densities (rows sum to 1), on the mesh's device.

    Examples
    --------
    >>> from sla.assembly import rectangle
    >>> H = density_filter(rectangle(0, 4, 0, 2, 4, 2, "quad"), rmin=1.5)
    >>> H.shape, float(H.values.sum())
    (torch.Size([8, 8]), 8.0)
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a sla.assembly.Mesh, got {type(mesh).__name__}")
    if isinstance(rmin, bool) or not isinstance(rmin, (int, float)) or not rmin > 0 or not math.isfinite(rmin):
        raise ValueError(f"rmin (the filter radius) must be a finite number > 0, got {rmin!r}")
    rmin = float(rmin)
    dtype = dtype or mesh.points.dtype
    c = cell_centres(mesh).to(torch.float64)
    lat = _lattice(c)
    i, j, w = _pairs_lattice(*lat, rmin) if lat is not None else _pairs_tree(c, rmin)
    vol = cell_volumes(mesh).to(torch.float64)
    w = w * vol[j]
    rowsum = torch.zeros(c.shape[0], dtype=torch.float64, device=c.device).index_add_(0, i, w)
    w = w / rowsum[i]
    E = c.shape[0]
    return SparseTensor(w.to(dtype), i, j, (E, E))
