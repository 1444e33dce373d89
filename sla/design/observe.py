"""Observation operators: a finite-element field evaluated at given points, as a sparse matrix.

``O = point_evaluation(basis, points)`` is the ``[n_points, n_dofs]`` matrix with
``(O @ u)[k] = u_h(points[k])``; inverse problems compare ``O @ u`` with measured
data, and gradients flow through ``O`` like through any :class:`~sla.SparseTensor`.
Points are located by their barycentric coordinates in the cells of a simplicial
mesh (Lagrange elements of any degree on triangles or tetrahedra); a point outside
the mesh is an error, never a silent zero.
"""

from __future__ import annotations

import torch

from ..assembly import CellBasis
from ..sparse import SparseTensor

__all__ = ["point_evaluation"]

_SIMPLICES = ("triangle", "tetra")
_BLOCK = 1 << 22  # point x cell pairs per pass of the location search


def _locate(P: torch.Tensor, cells: torch.Tensor, pts: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cell, reference coordinates)`` of each point (``cell = -1`` when no cell contains it)."""
    d = P.shape[1]
    v0 = P[cells[:, 0]]  # [E, d]
    T = torch.stack([P[cells[:, i + 1]] - v0 for i in range(d)], -1)  # [E, d, d] columns = edges
    Tinv = torch.linalg.inv(T)
    E = cells.shape[0]
    found = torch.full((pts.shape[0],), -1, dtype=torch.long, device=pts.device)
    ref = torch.zeros_like(pts)
    step = max(1, _BLOCK // max(E, 1))
    for lo in range(0, pts.shape[0], step):
        p = pts[lo : lo + step]
        lam = torch.einsum("eij,pej->pei", Tinv, p[:, None, :] - v0[None])  # [p, E, d]
        inside = (lam >= -tol).all(-1) & (lam.sum(-1) <= 1 + tol)
        has = inside.any(1)
        first = torch.argmax(inside.to(torch.int8), 1)
        idx = torch.arange(p.shape[0], device=p.device)
        found[lo : lo + step] = torch.where(has, first, torch.full_like(first, -1))
        ref[lo : lo + step] = lam[idx, first]
    return found, ref


def point_evaluation(basis: CellBasis, points: torch.Tensor, tol: float = 1e-10) -> SparseTensor:
    """The matrix ``O`` ``[n_points, basis.ndofs]`` with ``O @ u = u_h(points)``.

    Parameters
    ----------
    basis : CellBasis
        A scalar Lagrange basis on a triangle or tetrahedron mesh.
    points : torch.Tensor
        ``[n_points, dim]`` coordinates, each inside the mesh (on a boundary counts).
    tol : float
        Slack of the inside test in barycentric coordinates.

    Returns
    -------
    SparseTensor
        ``[n_points, ndofs]``, on the mesh's device and dtype.

    Raises
    ------
    ValueError
        If a point lies outside the mesh (its index and coordinates are named), or the shapes are wrong.

    Examples
    --------
    >>> import torch
    >>> from sla.assembly import CellBasis, ElementP1, unit_square
    >>> basis = CellBasis(unit_square(4), ElementP1())
    >>> O = point_evaluation(basis, torch.tensor([[0.3, 0.6]], dtype=torch.float64))
    >>> x = basis.element.dof_points(basis.mesh)
    >>> round(float(O @ (2 * x[:, 0] + x[:, 1])), 12)  # P1 reproduces linear fields exactly
    1.2
    """
    if not isinstance(basis, CellBasis):
        raise TypeError(f"basis must be a sla.assembly.CellBasis, got {type(basis).__name__}")
    mesh, el = basis.mesh, basis.element
    if mesh.cell_type not in _SIMPLICES or getattr(el, "ncomp", 1) != 1:
        raise ValueError(
            f"point_evaluation needs a scalar element on triangles or tetrahedra, got {el!r} on {mesh.cell_type!r}"
        )
    P = mesh.points.detach()
    points = torch.as_tensor(points, dtype=P.dtype, device=P.device)
    if points.dim() != 2 or points.shape[1] != P.shape[1]:
        raise ValueError(f"points must have shape [n_points, {P.shape[1]}], got {tuple(points.shape)}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points must be finite")
    cell, ref = _locate(P, mesh.cells, points, tol)
    outside = torch.nonzero(cell < 0).flatten()
    if outside.numel():
        k = int(outside[0])
        raise ValueError(
            f"points[{k}] = {points[k].tolist()} lies outside the mesh "
            f"({outside.numel()} of {points.shape[0]} points are outside); observations must be inside the domain"
        )
    phi = el.phi(ref)  # [n_points, n_local] at the reference coordinates (the simplex's own vertex order)
    dofs = basis.dofs[cell]  # [n_points, n_local]
    n_pts, n_loc = phi.shape
    row = torch.arange(n_pts, device=P.device).repeat_interleave(n_loc)
    return SparseTensor(phi.reshape(-1), row, dofs.reshape(-1), (n_pts, basis.ndofs))
