"""Benchmark load cases of topology optimisation on regular quad/hex meshes (unit cells).

* :func:`mbb_beam`: the half MBB beam of Andreassen et al. (2011): symmetry
  (``u_x = 0``) on the left edge, roller (``u_y = 0``) at the bottom-right
  corner, a unit downward load at the top-left corner.
* :func:`cantilever`: clamped left edge, a unit downward load at the middle of
  the right edge (2D), or in 3D a unit downward load spread along the bottom
  edge of the free end face ``x = nelx`` (Liu & Tovar 2014's cantilever).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..assembly import Mesh, box, rectangle

__all__ = ["TopologyCase", "mbb_beam", "cantilever"]


@dataclass
class TopologyCase:
    """A mesh with its constrained dofs and nodal load (dofs ``node * dim + component``)."""

    mesh: Mesh
    fixed: torch.Tensor
    load: torch.Tensor
    name: str = ""


def _check_cells(**n: int) -> tuple[int, ...]:
    out = []
    for name, v in n.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer (cells), got {v!r}")
        out.append(v)
    return tuple(out)


def _near(P: torch.Tensor, **coords: float) -> torch.Tensor:
    axes = {"x": 0, "y": 1, "z": 2}
    m = torch.ones(P.shape[0], dtype=torch.bool, device=P.device)
    for k, v in coords.items():
        m &= (P[:, axes[k]] - v).abs() < 1e-9
    return torch.nonzero(m).flatten()


def mbb_beam(
    nelx: int = 60, nely: int = 20, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> TopologyCase:
    """The half MBB beam on ``nelx x nely`` unit quads."""
    nelx, nely = _check_cells(nelx=nelx, nely=nely)
    mesh = rectangle(0.0, nelx, 0.0, nely, nelx, nely, "quad", dtype, device)
    P = mesh.points
    left = _near(P, x=0.0)
    corner = _near(P, x=float(nelx), y=0.0)
    fixed = torch.cat([2 * left, 2 * corner + 1]).sort().values
    load = torch.zeros(2 * mesh.n_points, dtype=dtype, device=device)
    load[2 * _near(P, x=0.0, y=float(nely)) + 1] = -1.0
    return TopologyCase(mesh, fixed, load, "mbb_beam")


def cantilever(
    nelx: int = 80,
    nely: int = 40,
    nelz: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> TopologyCase:
    """The cantilever on ``nelx x nely`` unit quads, or ``nelx x nely x nelz`` unit hexahedra."""
    if nelz is None:
        nelx, nely = _check_cells(nelx=nelx, nely=nely)
        mesh = rectangle(0.0, nelx, 0.0, nely, nelx, nely, "quad", dtype, device)
        P = mesh.points
        fixed = torch.cat([2 * _near(P, x=0.0) + c for c in (0, 1)]).sort().values
        load = torch.zeros(2 * mesh.n_points, dtype=dtype, device=device)
        tip = _near(P, x=float(nelx), y=nely / 2) if nely % 2 == 0 else _near(P, x=float(nelx), y=float(nely // 2))
        load[2 * tip + 1] = -1.0
        return TopologyCase(mesh, fixed, load, "cantilever")
    nelx, nely, nelz = _check_cells(nelx=nelx, nely=nely, nelz=nelz)
    mesh = box(0.0, nelx, 0.0, nely, 0.0, nelz, nelx, nely, nelz, "hex", dtype, device)
    P = mesh.points
    fixed = torch.cat([3 * _near(P, x=0.0) + c for c in (0, 1, 2)]).sort().values
    load = torch.zeros(3 * mesh.n_points, dtype=dtype, device=device)
    edge = _near(P, x=float(nelx), y=0.0)
    w = torch.full((edge.numel(),), 1.0, dtype=dtype, device=device)
    w[P[edge, 2] < 1e-9] = 0.5  # trapezoidal weights along the edge: the end nodes carry half
    w[(P[edge, 2] - nelz).abs() < 1e-9] = 0.5
    load[3 * edge + 1] = -w / w.sum()
    return TopologyCase(mesh, fixed, load, "cantilever3d")
