"""Assembly: meshes, finite-difference stencils, finite elements and boundary conditions.

Everything here produces :class:`~sla.SparseTensor` operators (and right-hand
sides) from torch tensors, so assembled systems are differentiable w.r.t.
coefficients and node coordinates and run on any device.  ``meshio`` is
imported only by :func:`read_mesh` / :func:`write_mesh`.

>>> import math, torch, sla
>>> from sla.assembly import (CellBasis, ElementP2, apply_dirichlet, assemble, boundary_dofs,
...                           laplace, source, unit_square)
>>> basis = CellBasis(unit_square(8), ElementP2())
>>> k = torch.ones(basis.n_elements, dtype=torch.float64, requires_grad=True)  # per-cell conductivity
>>> A = assemble(laplace, basis, k=k)
>>> def rhs(x):
...     return 2 * math.pi**2 * torch.sin(math.pi * x[..., 0]) * torch.sin(math.pi * x[..., 1])
>>> f = assemble(source, basis, f=rhs)
>>> u = sla.solve(*apply_dirichlet(A, f, boundary_dofs(basis)))
>>> round(float(u.detach().max()), 4)  # exact: sin(pi x) sin(pi y), maximum 1
1.0002
>>> u.sum().backward(); k.grad.shape
torch.Size([128])
"""

from .basis import CellBasis, FacetBasis
from .bc import apply_dirichlet, boundary_dofs, neumann, robin
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
from .flow import flow_system
from .generators import box, interval, l_shape, rectangle, refine, unit_cube, unit_square
from .gmsh_meshes import dfg_channel
from .mesh import Mesh
from .mesh_io import read_mesh, write_mesh
from .mixed import TaylorHood
from .models import advection, diffusion, elasticity, laplace, mass, source
from .quadrature import quadrature
from .stencil import (
    anisotropic,
    convection_diffusion,
    laplacian,
    poisson1d_system,
    poisson2d_system,
    poisson3d_system,
    stencil_operator,
    variable_diffusion,
)

__all__ = [
    "Mesh",
    "read_mesh",
    "write_mesh",
    "rectangle",
    "unit_square",
    "box",
    "unit_cube",
    "interval",
    "l_shape",
    "refine",
    "dfg_channel",
    "quadrature",
    "Element",
    "ElementP1",
    "ElementP2",
    "ElementQ1",
    "ElementVector",
    "TaylorHood",
    "flow_system",
    "element_for",
    "CellBasis",
    "FacetBasis",
    "BilinearForm",
    "LinearForm",
    "Functional",
    "Field",
    "assemble",
    "integrate",
    "dot",
    "ddot",
    "grad",
    "div",
    "sym_grad",
    "trace",
    "eye",
    "stencil_operator",
    "laplacian",
    "anisotropic",
    "variable_diffusion",
    "convection_diffusion",
    "poisson1d_system",
    "poisson2d_system",
    "poisson3d_system",
    "boundary_dofs",
    "apply_dirichlet",
    "neumann",
    "robin",
    "laplace",
    "diffusion",
    "mass",
    "elasticity",
    "advection",
    "source",
]
