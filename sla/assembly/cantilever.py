"""Cantilevers: model elasticity systems for problems, tests and benchmarks (plane stress P2 in 2D,
P1 tetrahedra in 3D).

>>> from sla.assembly.cantilever import cantilever_system, cantilever_system_3d
>>> K, f, basis = cantilever_system(nx=4, ny=1)
>>> tuple(K.shape), tuple(f.shape)
((54, 54), (54,))
>>> tuple(cantilever_system_3d(nx=4, ny=1, nz=1)[0].shape)
(60, 60)
"""

from __future__ import annotations

import torch

from ..sparse import SparseTensor
from .basis import CellBasis
from .bc import apply_dirichlet, boundary_dofs, neumann
from .elements import ElementP1, ElementP2, ElementVector
from .fem import assemble
from .generators import box, rectangle
from .models import elasticity

__all__ = ["cantilever_system", "cantilever_system_3d", "lame", "plane_stress_lame"]


def lame(young: float, poisson: float) -> tuple[float, float]:
    """``(lambda, mu)``: the Lamé parameters for Young's modulus and Poisson's ratio."""
    if not young > 0 or not 0 <= poisson < 0.5:
        raise ValueError(f"need young > 0 and 0 <= poisson < 0.5, got young={young!r}, poisson={poisson!r}")
    return young * poisson / ((1 + poisson) * (1 - 2 * poisson)), young / (2 * (1 + poisson))


def plane_stress_lame(young: float, poisson: float) -> tuple[float, float]:
    """``(lambda*, mu)``: the Lamé parameters of plane stress for Young's modulus and Poisson's ratio."""
    lam, mu = lame(young, poisson)
    return 2 * lam * mu / (lam + 2 * mu), mu


def cantilever_system(
    length: float = 10.0,
    height: float = 1.0,
    young: float = 1000.0,
    poisson: float = 0.3,
    load: float = 1.0,
    nx: int = 40,
    ny: int = 8,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[SparseTensor, torch.Tensor, CellBasis]:
    """``(K, f, basis)``: vector P2 plane-stress elasticity on ``[0, length] x [0, height]``
    (``nx x ny`` squares, two triangles each), clamped at ``x = 0`` (symmetric elimination),
    shear traction ``load / height`` downwards at ``x = length``."""
    lam, mu = plane_stress_lame(young, poisson)
    mesh = rectangle(0, length, 0, height, nx, ny, "tri", dtype=dtype, device=device)
    basis = CellBasis(mesh, ElementVector(ElementP2()))
    K = assemble(elasticity, basis, lam=lam, mu=mu)
    f = neumann(basis, [0.0, -load / height], "xmax")
    K0, f0 = apply_dirichlet(K, f, boundary_dofs(basis, "xmin"))
    return K0, f0, basis


def cantilever_system_3d(
    length: float = 8.0,
    height: float = 1.0,
    width: float = 1.0,
    young: float = 1000.0,
    poisson: float = 0.3,
    load: float = 1.0,
    nx: int = 32,
    ny: int = 4,
    nz: int = 4,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[SparseTensor, torch.Tensor, CellBasis]:
    """``(K, f, basis)``: vector P1 elasticity on ``[0, length] x [0, width] x [0, height]`` (``nx x
    ny x nz`` cubes, six tetrahedra each), clamped at ``x = 0`` (symmetric elimination), a uniform
    traction downwards (``-z``) at ``x = length`` with resultant ``load``.  The assembly records the
    dof points: AMG takes the six rigid-body modes."""
    lam, mu = lame(young, poisson)
    mesh = box(0.0, length, 0.0, width, 0.0, height, nx, ny, nz, "tet", dtype=dtype, device=device)
    basis = CellBasis(mesh, ElementVector(ElementP1("tetra")))
    K = assemble(elasticity, basis, lam=lam, mu=mu)
    f = neumann(basis, [0.0, 0.0, -load / (width * height)], "xmax")
    K0, f0 = apply_dirichlet(K, f, boundary_dofs(basis, "xmin"))
    return K0, f0, basis
