"""Reference-cell geometry: the P1/Q1 map of a cell, its Jacobian, determinant and inverse.

A mesh cell is the image of a reference cell (``[0, 1]`` / unit simplex /
``[0, 1]^d``, vertices :data:`REF_VERTICES` in meshio/VTK order) under the
linear (simplices) or multilinear (quads, hexahedra) map through its vertices.
This module holds that map and its Jacobian as torch functions (so gradients
reach the node coordinates).  It imports neither the mesh nor the elements:
:class:`~sla.assembly.Mesh` (cell volumes), the elements (P1/Q1 shape functions)
and the bases (quadrature weights, physical gradients) all build on it.

>>> import torch
>>> from sla.assembly.geometry import cell_volumes
>>> points = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
>>> cell_volumes(points, torch.tensor([[0, 1, 2]]), "triangle")
tensor([1.], dtype=torch.float64)
"""

from __future__ import annotations

import torch

from .quadrature import quadrature

__all__ = [
    "REF_VERTICES",
    "AFFINE",
    "barycentric",
    "multilinear",
    "map_shape",
    "map_gradients",
    "jacobian_cf",
    "det_inv",
    "det_inv_cf",
    "cell_volumes",
]

REF_VERTICES: dict[str, list[list[float]]] = {
    "line": [[0.0], [1.0]],
    "triangle": [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
    "tetra": [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    "quad": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
    "hexahedron": [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]],
}
AFFINE = ("line", "triangle", "tetra")  # cells whose map is linear: one Jacobian per cell


def barycentric(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Barycentric coordinates ``[..., d+1]`` of reference points ``X [..., d]`` and their constant
    gradients ``[d+1, d]`` (the P1 shape functions of a simplex)."""
    d = X.shape[-1]
    lam = torch.cat([1 - X.sum(-1, keepdim=True), X], -1)
    dlam = torch.cat([-torch.ones(1, d, dtype=X.dtype, device=X.device), torch.eye(d, dtype=X.dtype, device=X.device)])
    return lam, dlam


def multilinear(X: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q1 shape functions ``[..., n]`` and gradients ``[..., n, d]`` at ``X [..., d]`` for the
    vertices ``ref [n, d]`` of ``[0, 1]^d`` (products of ``x`` or ``1 - x`` per axis)."""
    r = ref.to(X)  # [n, d]
    Xe = X[..., None, :]  # [..., 1, d]
    f = r * Xe + (1 - r) * (1 - Xe)  # [..., n, d]: x or 1 - x per axis
    df = 2 * r - 1  # derivative of each factor
    d = X.shape[-1]
    cols = []
    for k in range(d):
        others = [f[..., j] for j in range(d) if j != k]
        p = others[0] if others else torch.ones_like(f[..., 0])
        for o in others[1:]:
            p = p * o
        cols.append(p * df[:, k])
    return f.prod(-1), torch.stack(cols, -1)


def _check_cell(cell_type: str) -> None:
    if cell_type not in REF_VERTICES:
        raise ValueError(f"cell_type must be one of {sorted(REF_VERTICES)}, got {cell_type!r}")


def map_shape(cell_type: str, X: torch.Tensor) -> torch.Tensor:
    """Shape functions ``[..., k]`` of the map of a ``cell_type`` cell at reference points ``X [..., d]``."""
    _check_cell(cell_type)
    if cell_type in AFFINE:
        return barycentric(X)[0]
    return multilinear(X, torch.tensor(REF_VERTICES[cell_type], dtype=X.dtype, device=X.device))[0]


def map_gradients(cell_type: str, X: torch.Tensor) -> torch.Tensor:
    """Reference gradients ``[..., k, d]`` of the map's shape functions at ``X [..., d]``."""
    _check_cell(cell_type)
    if cell_type in AFFINE:
        _, dlam = barycentric(X)
        return dlam.expand(*X.shape[:-1], *dlam.shape)
    return multilinear(X, torch.tensor(REF_VERTICES[cell_type], dtype=X.dtype, device=X.device))[1]


def jacobian_cf(xt: torch.Tensor, cell_type: str, X: torch.Tensor) -> torch.Tensor:
    """Jacobians ``dx_a / dX_r`` of the cells with vertex coordinates ``xt [d, k, E]`` (component-first,
    cells last: every operation runs over contiguous length-``E`` vectors).

    Returns ``[d, d, E]`` for affine cells (constant over the cell) and ``[d, d, Q, E]`` at the
    ``Q`` reference points ``X [Q, d]`` otherwise.
    """
    if cell_type in AFFINE:
        return xt[:, 1:] - xt[:, :1]  # the P1 gradients are [-1; I]
    d, k, E = xt.shape
    Q = X.shape[0]
    dpsi = map_gradients(cell_type, X)  # [Q, k, d]
    return torch.matmul(dpsi.permute(2, 0, 1).reshape(d * Q, k), xt).reshape(d, d, Q, E)


def det_inv(J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Determinant and inverse of ``[..., d, d]`` matrices, d <= 3, in closed form (differentiable)."""
    d = J.shape[-1]
    if d == 1:
        det = J[..., 0, 0]
        return det, (1 / det)[..., None, None]
    if d == 2:
        a, b, c, e = J[..., 0, 0], J[..., 0, 1], J[..., 1, 0], J[..., 1, 1]
        det = a * e - b * c
        inv = torch.stack([torch.stack([e, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]
        return det, inv
    c0, c1, c2 = J[..., :, 0], J[..., :, 1], J[..., :, 2]
    r0, r1, r2 = torch.linalg.cross(c1, c2), torch.linalg.cross(c2, c0), torch.linalg.cross(c0, c1)
    det = (c0 * r0).sum(-1)
    return det, torch.stack([r0, r1, r2], -2) / det[..., None, None]


def det_inv_cf(J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`det_inv` for component-first ``J [d, d, *batch]``; returns ``inv [d, d, *batch]``."""
    d = J.shape[0]
    if d == 1:
        return J[0, 0], (1 / J[0, 0])[None, None]
    if d == 2:
        a, b, c, e = J[0, 0], J[0, 1], J[1, 0], J[1, 1]
        det = a * e - b * c
        return det, torch.stack([torch.stack([e, -b]), torch.stack([-c, a])]) / det
    m = [[J[i, j] for j in range(3)] for i in range(3)]
    cof = [
        [
            m[(i + 1) % 3][(j + 1) % 3] * m[(i + 2) % 3][(j + 2) % 3]
            - m[(i + 1) % 3][(j + 2) % 3] * m[(i + 2) % 3][(j + 1) % 3]
            for j in range(3)
        ]
        for i in range(3)
    ]
    det = m[0][0] * cof[0][0] + m[0][1] * cof[0][1] + m[0][2] * cof[0][2]
    inv = torch.stack([torch.stack([cof[j][i] for j in range(3)]) for i in range(3)]) / det  # adjugate^T / det
    return det, inv


def cell_volumes(points: torch.Tensor, cells: torch.Tensor, cell_type: str) -> torch.Tensor:
    """Length/area/volume ``[E]`` of each cell: ``sum_q |det J(X_q)| w_q``.

    Exact for affine cells and for multilinear ones (the order-2 Gauss rule integrates ``det J``
    exactly); differentiable in ``points``.

    Parameters
    ----------
    points : torch.Tensor
        ``[N, d]`` node coordinates.
    cells : torch.Tensor
        ``[E, k]`` node indices of ``cell_type`` cells (meshio/VTK order).
    cell_type : str
        ``'line'``, ``'triangle'``, ``'quad'``, ``'tetra'`` or ``'hexahedron'``.

    Returns
    -------
    torch.Tensor
        ``[E]``, dtype and device of ``points``.
    """
    _check_cell(cell_type)
    X, W = quadrature(cell_type, 2, points.dtype, points.device)
    det, _ = det_inv_cf(jacobian_cf(points.T[:, cells.T], cell_type, X))
    if cell_type in AFFINE:
        return det.abs() * W.sum()
    return (det.abs() * W[:, None]).sum(0)
