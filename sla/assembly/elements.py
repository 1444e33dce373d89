"""Finite elements on the reference cells: P1/P2 simplices, Q1 quads/hexahedra, vector versions.

An element knows its reference shape functions ``phi(X) -> [..., n]`` and
their reference gradients ``dphi(X) -> [..., n, ref_dim]`` (torch functions
of the reference points ``X [..., ref_dim]``), and how its local degrees of
freedom map to global ones on a mesh (``dofs(mesh) -> [E, n]``).

Local orders: P1/Q1 follow the cell's vertices (meshio/VTK order); P2 lists
the vertices, then the edge midpoints in the order of
``CELL_TYPES[cell]['edges']`` (triangle: 01, 12, 02; tetra: 01, 12, 02, 03,
13, 23).  Vector elements interleave components: global dof ``node * dim + c``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .geometry import REF_VERTICES, barycentric, multilinear
from .mesh import CELL_TYPES, Mesh

__all__ = ["Element", "ElementP1", "ElementP2", "ElementQ1", "ElementVector", "element_for", "REF_VERTICES"]


class Element:
    """Base class: subclasses define ``name``, ``cell_type``, ``degree``, ``n``, ``phi``, ``dphi``."""

    name = "element"
    cell_type = ""
    degree = 1
    n = 0
    ncomp = 1

    @property
    def ref_dim(self) -> int:
        return CELL_TYPES[self.cell_type]["dim"]

    @property
    def key(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cell_type!r})"

    def check_mesh(self, mesh: Mesh) -> None:
        if mesh.cell_type != self.cell_type:
            raise ValueError(f"{self!r} needs a {self.cell_type} mesh, got a {mesh.cell_type} mesh")

    # global numbering (scalar elements number vertices first)
    def dofs(self, mesh: Mesh) -> torch.Tensor:
        self.check_mesh(mesh)
        return mesh.cells

    def ndofs(self, mesh: Mesh) -> int:
        return mesh.n_points

    def dof_points(self, mesh: Mesh) -> torch.Tensor:
        """Coordinates of the (scalar) degrees of freedom ``[ndofs, dim]``."""
        return mesh.points

    def facet_dofs(self, mesh: Mesh, facets: torch.Tensor) -> torch.Tensor:
        """Sorted global dofs on the given facets (node lists ``[F, kf]``)."""
        return torch.unique(facets)


class ElementP1(Element):
    """Piecewise linear Lagrange element on lines, triangles or tetrahedra."""

    degree = 1

    def __init__(self, cell_type: str = "triangle"):
        if cell_type not in ("line", "triangle", "tetra"):
            raise ValueError(f"ElementP1 lives on 'line', 'triangle' or 'tetra', got {cell_type!r}")
        self.cell_type = cell_type
        self.n = CELL_TYPES[cell_type]["nodes"]
        self.name = f"P1-{cell_type}"

    def phi(self, X: torch.Tensor) -> torch.Tensor:
        return barycentric(X)[0]

    def dphi(self, X: torch.Tensor) -> torch.Tensor:
        return barycentric(X)[1].expand(*X.shape[:-1], self.n, X.shape[-1])


class ElementP2(Element):
    """Piecewise quadratic Lagrange element on triangles or tetrahedra (vertex and edge dofs)."""

    degree = 2

    def __init__(self, cell_type: str = "triangle"):
        if cell_type not in ("triangle", "tetra"):
            raise ValueError(f"ElementP2 lives on 'triangle' or 'tetra', got {cell_type!r}")
        self.cell_type = cell_type
        self.edges = torch.tensor(CELL_TYPES[cell_type]["edges"])
        nv = CELL_TYPES[cell_type]["nodes"]
        self.n = nv + self.edges.shape[0]
        self.name = f"P2-{cell_type}"

    def phi(self, X: torch.Tensor) -> torch.Tensor:
        lam, _ = barycentric(X)
        a, b = self.edges[:, 0], self.edges[:, 1]
        return torch.cat([lam * (2 * lam - 1), 4 * lam[..., a] * lam[..., b]], -1)

    def dphi(self, X: torch.Tensor) -> torch.Tensor:
        lam, dl = barycentric(X)
        a, b = self.edges[:, 0], self.edges[:, 1]
        dv = (4 * lam - 1)[..., None] * dl
        de = 4 * (lam[..., a, None] * dl[b] + lam[..., b, None] * dl[a])
        return torch.cat([dv, de], -2)

    def dofs(self, mesh: Mesh) -> torch.Tensor:
        self.check_mesh(mesh)
        return torch.cat([mesh.cells, mesh.n_points + mesh.cell_edges], 1)

    def ndofs(self, mesh: Mesh) -> int:
        return mesh.n_points + mesh.edges.shape[0]

    def dof_points(self, mesh: Mesh) -> torch.Tensor:
        return torch.cat([mesh.points, mesh.points[mesh.edges].mean(1)])

    def facet_dofs(self, mesh: Mesh, facets: torch.Tensor) -> torch.Tensor:
        k = facets.shape[1]
        pairs = torch.cat([facets[:, [a, b]] for a in range(k) for b in range(a + 1, k)]) if k > 1 else facets[:, :0]
        e = mesh.edge_ids(pairs) if pairs.shape[1] else pairs[:, 0]
        return torch.cat([torch.unique(facets), mesh.n_points + torch.unique(e)])


class ElementQ1(Element):
    """Multilinear element on quadrilaterals or hexahedra (reference [0, 1]^d)."""

    degree = 1

    def __init__(self, cell_type: str = "quad"):
        if cell_type not in ("quad", "hexahedron"):
            raise ValueError(f"ElementQ1 lives on 'quad' or 'hexahedron', got {cell_type!r}")
        self.cell_type = cell_type
        self.ref = torch.tensor(REF_VERTICES[cell_type], dtype=torch.float64)
        self.n = self.ref.shape[0]
        self.name = f"Q1-{cell_type}"

    def phi(self, X: torch.Tensor) -> torch.Tensor:
        return multilinear(X, self.ref)[0]

    def dphi(self, X: torch.Tensor) -> torch.Tensor:
        return multilinear(X, self.ref)[1]


class ElementVector(Element):
    """``dim`` copies of a scalar element (displacements); dofs interleaved ``node * dim + c``."""

    def __init__(self, base: Element, dim: int | None = None):
        if not isinstance(base, Element) or isinstance(base, ElementVector):
            raise TypeError(f"base must be a scalar Element, got {base!r}")
        self.base = base
        self.cell_type = base.cell_type
        self.degree = base.degree
        self.ncomp = int(dim or base.ref_dim)
        self.n = base.n * self.ncomp
        self.name = f"{base.name}^{self.ncomp}"

    def __repr__(self) -> str:
        return f"ElementVector({self.base!r}, {self.ncomp})"

    def phi(self, X: torch.Tensor) -> torch.Tensor:
        return self.base.phi(X)

    def dphi(self, X: torch.Tensor) -> torch.Tensor:
        return self.base.dphi(X)

    def dofs(self, mesh: Mesh) -> torch.Tensor:
        d = self.base.dofs(mesh)
        c = torch.arange(self.ncomp, device=d.device)
        return (d[:, :, None] * self.ncomp + c).reshape(d.shape[0], -1)

    def ndofs(self, mesh: Mesh) -> int:
        return self.base.ndofs(mesh) * self.ncomp

    def dof_points(self, mesh: Mesh) -> torch.Tensor:
        return self.base.dof_points(mesh)

    def facet_dofs(self, mesh: Mesh, facets: torch.Tensor, components: Sequence[int] | None = None) -> torch.Tensor:
        base = self.base.facet_dofs(mesh, facets)
        comps = range(self.ncomp) if components is None else components
        return torch.cat([base * self.ncomp + c for c in comps]).sort().values


def element_for(cell_type: str, degree: int = 1) -> Element:
    """The Lagrange element of ``degree`` on ``cell_type`` (P1/P2 simplices, Q1 quads/hexes)."""
    if cell_type in ("quad", "hexahedron"):
        if degree != 1:
            raise ValueError(f"only Q1 is available on {cell_type} cells, got degree {degree}")
        return ElementQ1(cell_type)
    if degree == 1:
        return ElementP1(cell_type)
    if degree == 2:
        return ElementP2(cell_type)
    raise ValueError(f"degree must be 1 or 2 on {cell_type} cells, got {degree}")
