"""Model matrices used by docstrings, tests and benchmarks (like pyamg.gallery).

:func:`stencil_operator` builds any constant or per-point stencil on a structured
grid with its COO indices already sorted (no coalescing sort, O(nnz)) and records
the grid for geometric multigrid; the Poisson matrices here and the stencils of
:mod:`sla.assembly.stencil` are built with it.  Meshes and FEM live in :mod:`sla.assembly`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .pattern import Pattern
from .sparse import SparseTensor

__all__ = ["poisson1d", "poisson2d", "poisson3d", "stencil_operator"]


def check_grid_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    """Grid shape as a tuple of 1 to 3 positive ints (interior points per axis), or a clear error."""
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if not 1 <= len(shape) <= 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be 1 to 3 positive ints (interior points per axis), got {shape!r}")
    return shape


def stencil_operator(
    shape: int | Sequence[int],
    offsets: Sequence[Sequence[int]],
    weights: Sequence[float] | torch.Tensor,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> SparseTensor:
    """Matrix of a stencil on a grid: row ``i`` has ``weights[.., s]`` at neighbour ``i + offsets[s]``.

    Parameters
    ----------
    shape : tuple of ints
        Grid (interior points per axis).
    offsets : list of ``ndim``-tuples
        Neighbour offsets; neighbours outside the grid are dropped (Dirichlet).
    weights : sequence of numbers ``[S]`` or tensor ``[S]`` / ``[n, S]`` (per point; differentiable)
    """
    shape = check_grid_shape(shape)
    nd = len(shape)
    offsets = [tuple(int(o) for o in off) for off in offsets]
    if any(len(o) != nd for o in offsets) or len(set(offsets)) != len(offsets):
        raise ValueError(f"offsets must be distinct {nd}-tuples, got {offsets}")
    strides = [1] * nd
    for d in range(nd - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    n = strides[0] * shape[0]
    w = torch.as_tensor(weights, dtype=dtype, device=device) if not isinstance(weights, torch.Tensor) else weights
    if w.shape not in ((len(offsets),), (n, len(offsets))):
        raise ValueError(f"weights must have shape [{len(offsets)}] or [{n}, {len(offsets)}], got {tuple(w.shape)}")
    flat = [sum(o * s for o, s in zip(off, strides)) for off in offsets]
    order = sorted(range(len(offsets)), key=lambda s: flat[s])  # column order within a row
    # valid[i, s]: neighbour s of point i lies inside the grid (checked axis by axis on the grid shape)
    valid = torch.ones(*shape, len(order), dtype=torch.bool, device=device)
    for j, s in enumerate(order):
        for d, o in enumerate(offsets[s]):
            if o:
                sl = [slice(None)] * nd + [j]
                sl[d] = slice(max(shape[d] - o, 0), None) if o > 0 else slice(None, -o)
                valid[tuple(sl)] = False
    p = torch.nonzero(valid.reshape(-1)).flatten()  # row-major over (point, sorted offset): sorted COO
    S = len(order)
    row = torch.div(p, S, rounding_mode="floor")
    slot = p - row * S
    col = row + torch.tensor([flat[s] for s in order], device=device)[slot]
    if w.dim() == 1:
        vals = w[order][slot]
    else:
        vals = w[:, order].reshape(-1)[p]
    A = SparseTensor._make(vals, Pattern(row, col, (n, n)))  # sorted and unique by construction
    A.pattern.cache["grid"] = shape
    return A


def _laplacian(dims: tuple[int, ...], dtype, device) -> SparseTensor:
    nd = len(dims)
    offsets = [tuple(0 for _ in range(nd))]
    for d in range(nd):
        for s in (-1, 1):
            offsets.append(tuple(s if e == d else 0 for e in range(nd)))
    weights = [2.0 * nd] + [-1.0] * (2 * nd)
    return stencil_operator(dims, offsets, weights, dtype=dtype, device=device)


def poisson1d(n: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> SparseTensor:
    """Tridiagonal [-1, 2, -1] of size n (Dirichlet, unscaled)."""
    return _laplacian((n,), dtype, device)


def poisson2d(
    n: int, m: int | None = None, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> SparseTensor:
    """5-point Laplacian on an n x m interior grid (Dirichlet, unscaled: diagonal 4)."""
    return _laplacian((n, m or n), dtype, device)


def poisson3d(n: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> SparseTensor:
    """7-point Laplacian on an n^3 interior grid (Dirichlet, unscaled: diagonal 6)."""
    return _laplacian((n, n, n), dtype, device)
