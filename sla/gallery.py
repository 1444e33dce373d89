"""Model matrices used by docstrings, tests and benchmarks (like pyamg.gallery).

Only what the solver layers need; meshes and FEM live in :mod:`sla.assembly`.
"""

from __future__ import annotations

import torch

from .sparse import SparseTensor

__all__ = ["poisson1d", "poisson2d", "poisson3d"]


def _laplacian(dims: tuple[int, ...], dtype, device) -> SparseTensor:
    n = 1
    for d in dims:
        n *= d
    idx = torch.arange(n, device=device).reshape(dims)
    rows = [idx.flatten()]
    cols = [idx.flatten()]
    vals = [torch.full((n,), 2.0 * len(dims), dtype=dtype, device=device)]
    for axis in range(len(dims)):
        a = idx.narrow(axis, 1, dims[axis] - 1).flatten()
        b = idx.narrow(axis, 0, dims[axis] - 1).flatten()
        rows += [a, b]
        cols += [b, a]
        vals += [torch.full((a.numel(),), -1.0, dtype=dtype, device=device)] * 2
    A = SparseTensor(torch.cat(vals), torch.cat(rows), torch.cat(cols), (n, n))
    # structured-grid metadata for geometric multigrid: unknowns are numbered
    # lexicographically on this grid (last axis fastest)
    A.pattern.cache["grid"] = tuple(dims)
    return A


def poisson1d(n: int, dtype=torch.float64, device="cpu") -> SparseTensor:
    """Tridiagonal [-1, 2, -1] of size n (Dirichlet, unscaled)."""
    return _laplacian((n,), dtype, device)


def poisson2d(n: int, m: int | None = None, dtype=torch.float64, device="cpu") -> SparseTensor:
    """5-point Laplacian on an n x m interior grid (Dirichlet, unscaled: diagonal 4)."""
    return _laplacian((n, m or n), dtype, device)


def poisson3d(n: int, dtype=torch.float64, device="cpu") -> SparseTensor:
    """7-point Laplacian on an n^3 interior grid (Dirichlet, unscaled: diagonal 6)."""
    return _laplacian((n, n, n), dtype, device)
