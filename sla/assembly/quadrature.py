"""Gauss quadrature on the reference cells.

Reference cells: ``line`` [0, 1]; ``triangle`` (0,0),(1,0),(0,1); ``tetra``
(0,0,0),(1,0,0),(0,1,0),(0,0,1); ``quad`` [0, 1]^2; ``hexahedron`` [0, 1]^3;
``vertex`` (a single point, for facets of 1D meshes).

Lines, quads and hexahedra use tensor Gauss--Legendre rules. Simplices use
the centroid (degree 1), the classical symmetric 3-/4-point rules (degree 2)
Dunavant's 6- and 7-point triangle rules (degrees 3-4 and 5) and, above that,
collapsed (Duffy) Gauss--Jacobi tensor rules, exact for
polynomials of the requested total degree with positive weights
(Karniadakis & Sherwin, *Spectral/hp Element Methods*, sec. 4.1).

>>> from sla.assembly.quadrature import quadrature
>>> X, W = quadrature("triangle", 4)
>>> round(float(W.sum()), 15)
0.5
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = ["quadrature", "REF_VOLUME"]

REF_VOLUME = {"vertex": 1.0, "line": 1.0, "triangle": 0.5, "quad": 1.0, "tetra": 1.0 / 6.0, "hexahedron": 1.0}


def _gauss01(n: int, alpha: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n-point Gauss--Jacobi rule on [0, 1] for the weight (1 - v)^alpha."""
    from scipy.special import roots_jacobi

    t, w = roots_jacobi(n, alpha, 0)
    return (1 + t) / 2, w / 2 ** (alpha + 1)


# (weight of each point, barycentric generator of its orbit); weights sum to 1 over all points
_DUNAVANT = {
    4: [
        (0.223381589678011, (0.445948490915965, 0.445948490915965, 0.108103018168070)),
        (0.109951743655322, (0.091576213509771, 0.091576213509771, 0.816847572980459)),
    ],
    5: [
        (0.225, (1 / 3, 1 / 3, 1 / 3)),
        (0.132394152788506, (0.470142064105115, 0.470142064105115, 0.059715871789770)),
        (0.125939180544827, (0.101286507323456, 0.101286507323456, 0.797426985353087)),
    ],
}


def _symmetric_triangle(orbits) -> tuple[np.ndarray, np.ndarray]:
    pts, wts = [], []
    for w, (a, b, c) in orbits:
        perms = {(a, b, c), (b, c, a), (c, a, b)}
        for p in sorted(perms):
            pts.append(p[1:])
            wts.append(w / 2)  # per-point weights, area 1/2
    return np.array(pts), np.array(wts)


def _npts(degree: int) -> int:
    return max(1, math.ceil((degree + 1) / 2))


@functools.cache
def _rule(cell: str, degree: int) -> tuple[np.ndarray, np.ndarray]:
    if cell == "vertex":
        return np.zeros((1, 0)), np.ones(1)
    if cell in ("line", "quad", "hexahedron"):
        d = {"line": 1, "quad": 2, "hexahedron": 3}[cell]
        x, w = _gauss01(_npts(degree))
        grids = np.meshgrid(*([x] * d), indexing="ij")
        wgrids = np.meshgrid(*([w] * d), indexing="ij")
        X = np.stack([g.ravel() for g in reversed(grids)], 1)  # first coordinate fastest
        return X, np.prod(np.stack([g.ravel() for g in wgrids], 1), 1)
    if cell == "triangle":
        if degree <= 1:
            return np.array([[1 / 3, 1 / 3]]), np.array([0.5])
        if degree == 2:
            return np.array([[1 / 6, 1 / 6], [2 / 3, 1 / 6], [1 / 6, 2 / 3]]), np.full(3, 1 / 6)
        if degree <= 5:  # Dunavant's symmetric rules (positive weights, interior points)
            return _symmetric_triangle(_DUNAVANT[4 if degree <= 4 else 5])
        n = _npts(degree)
        u, wu = _gauss01(n)
        v, wv = _gauss01(n, 1)
        U, V = np.meshgrid(u, v, indexing="ij")
        W = np.outer(wu, wv)
        return np.stack([(U * (1 - V)).ravel(), V.ravel()], 1), W.ravel()
    if cell == "tetra":
        if degree <= 1:
            return np.array([[0.25, 0.25, 0.25]]), np.array([1 / 6])
        if degree == 2:
            a, b = 0.5854101966249685, 0.1381966011250105
            X = np.array([[b, b, b], [a, b, b], [b, a, b], [b, b, a]])
            return X, np.full(4, 1 / 24)
        n = _npts(degree)
        u, wu = _gauss01(n)
        v, wv = _gauss01(n, 1)
        s, ws = _gauss01(n, 2)
        U, V, S = np.meshgrid(u, v, s, indexing="ij")
        W = wu[:, None, None] * wv[None, :, None] * ws[None, None, :]
        X = np.stack([(U * (1 - V) * (1 - S)).ravel(), (V * (1 - S)).ravel(), S.ravel()], 1)
        return X, W.ravel()
    raise ValueError(f"no quadrature for cell type {cell!r}; known: {sorted(REF_VOLUME)}")


def quadrature(
    cell: str, degree: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``[Q, ref_dim]`` and weights ``[Q]`` exact for polynomials of total ``degree``
    (per-axis degree for lines/quads/hexahedra) on the reference ``cell``."""
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree must be a non-negative int, got {degree!r}")
    X, W = _rule(cell, degree)
    return torch.tensor(X, dtype=dtype, device=device), torch.tensor(W, dtype=dtype, device=device)
