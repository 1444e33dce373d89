"""Assembly: meshes, finite-difference stencils, finite elements and boundary conditions.

Everything here produces :class:`~sla.SparseTensor` operators (and right-hand
sides) from torch tensors, so assembled systems are differentiable w.r.t.
coefficients and node coordinates and run on any device.  ``meshio`` is
imported only by :func:`read_mesh` / :func:`write_mesh`.
"""

from .bc import apply_dirichlet, boundary_dofs, neumann, robin
from .basis import CellBasis, FacetBasis
from .elements import Element, ElementP1, ElementP2, ElementQ1, ElementVector, element_for
from .fem import (
    BilinearForm,
    Field,
    Functional,
    LinearForm,
    assemble,
    ddot,
    div,
    dot,
    eye,
    grad,
    integrate,
    sym_grad,
    trace,
)
from .generators import box, interval, l_shape, rectangle, refine, unit_cube, unit_square
from .mesh import Mesh
from .mesh_io import read_mesh, write_mesh
from .models import advection, diffusion, elasticity, laplace, mass, source
from .quadrature import quadrature
from .stencil import (
    anisotropic,
    convection_diffusion,
    laplacian,
    poisson1d,
    poisson2d,
    poisson3d,
    stencil_operator,
    variable_diffusion,
)

__all__ = [
    "Mesh", "read_mesh", "write_mesh", "rectangle", "unit_square", "box", "unit_cube", "interval", "l_shape", "refine",
    "quadrature", "Element", "ElementP1", "ElementP2", "ElementQ1", "ElementVector", "element_for",
    "CellBasis", "FacetBasis", "BilinearForm", "LinearForm", "Functional", "Field", "assemble", "integrate",
    "dot", "ddot", "grad", "div", "sym_grad", "trace", "eye",
    "stencil_operator", "laplacian", "anisotropic", "variable_diffusion", "convection_diffusion",
    "poisson1d", "poisson2d", "poisson3d",
    "boundary_dofs", "apply_dirichlet", "neumann", "robin",
    "laplace", "diffusion", "mass", "elasticity", "advection", "source",
]
