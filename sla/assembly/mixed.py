"""Mixed (blocked) finite element spaces: Taylor--Hood P2/P1 on triangles and tetrahedra.

:class:`TaylorHood` is vector P2 velocity plus scalar P1 pressure on one mesh.
Its global numbering puts every velocity dof first, interleaved by component
(``node * dim + c``, nodes = mesh vertices then edge midpoints, as
:class:`~sla.assembly.ElementVector` numbers them), then the pressure dofs
(one per vertex)::

    offsets = (0, n_u, n_u + n_p)      # velocity rows [0, n_u), pressure rows [n_u, n)

The local dofs of a cell are the velocity dofs (``a * dim + c``) followed by
the pressure dofs of its vertices.  The space plays the role of an element for
:func:`~sla.assembly.plan.scatter_plan` (``key``, ``dofs``, ``ndofs``), so the
whole block system -- velocity, divergence, gradient and (stored, zero)
pressure blocks -- lives on one cached :class:`~sla.Pattern`: every
re-assembly (each Newton step, each time step, any coefficient) reuses it and
every solver cache keyed on it.  :meth:`TaylorHood.block` takes a block out of
an assembled matrix by a cached gather of its values (no index work after the
first call).

>>> import torch
>>> from sla.assembly import unit_square
>>> from sla.assembly.mixed import TaylorHood
>>> V = TaylorHood(unit_square(2))
>>> V.offsets, V.n_local
((0, 50, 59), 15)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..pattern import Pattern
from ..sparse import SparseTensor
from .basis import CellBasis
from .elements import ElementP1, ElementP2, ElementVector
from .mesh import Mesh
from .plan import scatter_plan

__all__ = ["TaylorHood", "BLOCKS", "locate", "check_flow_mesh"]

#: block names -> (row block, column block); 0 = velocity, 1 = pressure
BLOCKS = {"uu": (0, 0), "up": (0, 1), "pu": (1, 0), "pp": (1, 1)}


def check_flow_mesh(mesh: Mesh) -> None:
    """A mesh a flow solver can run on: triangles/tetrahedra, every vertex used, no degenerate cell."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a sla.assembly.Mesh, got {type(mesh).__name__}")
    if mesh.cell_type not in ("triangle", "tetra"):
        raise ValueError(f"Taylor-Hood P2/P1 needs a 'triangle' or 'tetra' mesh, got a {mesh.cell_type!r} mesh")
    if mesh.dim != (2 if mesh.cell_type == "triangle" else 3):
        raise ValueError(f"a {mesh.cell_type} flow mesh must have {mesh.dim}-dimensional points matching its cells")
    if mesh.n_cells == 0:
        raise ValueError("mesh has no cells")
    used = torch.zeros(mesh.n_points, dtype=torch.bool, device=mesh.cells.device)
    used[mesh.cells.reshape(-1)] = True
    if not bool(used.all()):
        k = int((~used).sum())
        raise ValueError(f"mesh has {k} point(s) no cell uses (their pressure dofs would be singular); remove them")
    vol = mesh.cell_volumes().detach()
    if not bool(torch.isfinite(mesh.points.detach()).all()):
        raise ValueError("mesh points contain NaN or Inf")
    bad = vol.abs() <= 1e-14 * float(vol.abs().max())
    if bool(bad.any()):
        raise ValueError(
            f"mesh has {int(bad.sum())} degenerate cell(s) (zero volume), e.g. cell {int(bad.nonzero()[0])}"
        )


class TaylorHood:
    """Vector P2 velocity + P1 pressure on ``mesh`` (triangles or tetrahedra).

    Parameters
    ----------
    mesh : Mesh
        A ``'triangle'`` (2D) or ``'tetra'`` (3D) mesh; validated (no unused points,
        no degenerate cells).
    intorder : int, optional
        Quadrature degree of the flow forms (default 4: exact for the P2 mass and the
        Oseen term with an affine map up to one degree short; plenty for Taylor--Hood).

    Attributes
    ----------
    velocity : ElementVector  (P2^dim)
    pressure : ElementP1
    n_u, n_p, n : int   velocity, pressure and total dof counts
    offsets : tuple     ``(0, n_u, n)``
    ubasis, pbasis : CellBasis   scalar P2 and P1 on the same quadrature
    """

    def __init__(self, mesh: Mesh, intorder: int = 4) -> None:
        check_flow_mesh(mesh)
        ct = mesh.cell_type
        self.mesh, self.dim = mesh, mesh.dim
        self.p2 = ElementP2(ct)
        self.velocity = ElementVector(self.p2, self.dim)
        self.pressure = ElementP1(ct)
        self.n_u = self.velocity.ndofs(mesh)
        self.n_p = self.pressure.ndofs(mesh)
        self.n = self.n_u + self.n_p
        self.offsets = (0, self.n_u, self.n)
        self.n_local_u = self.velocity.n
        self.n_local = self.velocity.n + self.pressure.n
        self.ubasis = CellBasis(mesh, self.p2, intorder)
        self.pbasis = CellBasis(mesh, self.pressure, intorder)
        self.name = f"TH-P2P1-{ct}"
        self._kernel_cache: dict = {}  # reference-element integrals of the flow kernel, per dtype and device

    # -- the element protocol of scatter_plan ------------------------------------------------
    @property
    def key(self) -> str:
        return self.name

    def dofs(self, mesh: Mesh | None = None) -> torch.Tensor:
        """Global dofs of each cell ``[E, n_local]`` (velocity then pressure)."""
        m = self.mesh
        return torch.cat([self.velocity.dofs(m), self.n_u + self.pressure.dofs(m)], 1)

    def ndofs(self, mesh: Mesh | None = None) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"TaylorHood({self.mesh.cell_type!r}, n_u={self.n_u}, n_p={self.n_p})"

    # -- structure ------------------------------------------------------------------------------
    @property
    def plan(self) -> dict:
        """The cached scatter plan of the whole block system (pattern + element -> nonzero index)."""
        return scatter_plan(self.mesh, self)

    @property
    def pattern(self) -> Pattern:
        return self.plan["pattern"]

    def _block_index(self, name: str) -> tuple[torch.Tensor, Pattern]:
        if name not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {name!r}")

        def build():
            p = self.pattern
            row, col = p.row, p.col
            r, c = BLOCKS[name]
            lo_r, hi_r = self.offsets[r], self.offsets[r + 1]
            lo_c, hi_c = self.offsets[c], self.offsets[c + 1]
            keep = (row >= lo_r) & (row < hi_r) & (col >= lo_c) & (col < hi_c)
            pos = keep.nonzero().flatten()
            sub = Pattern(row[pos] - lo_r, col[pos] - lo_c, (hi_r - lo_r, hi_c - lo_c))
            return pos, sub

        return self.mesh.memo(("mixed-block", self.key, name), build)

    def block(self, A: SparseTensor, name: str) -> SparseTensor:
        """Block ``'uu'``, ``'up'`` (gradient), ``'pu'`` (divergence) or ``'pp'`` of an assembled system."""
        if not isinstance(A, SparseTensor):
            raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
        mine = self.pattern.to(A.device)
        if A.pattern is not mine and not A.pattern.same_as(mine):
            raise ValueError(
                f"A must live on this space's pattern (assemble it with flow_system); got shape "
                f"{tuple(A.sparse_shape)} with {A.pattern.nnz} stored entries, "
                f"expected ({self.n}, {self.n}) with {mine.nnz}"
            )
        pos, sub = self._block_index(name)
        pos = pos.to(A.device)
        return SparseTensor._make(A.values[..., pos], sub.to(A.device))

    # -- vectors ----------------------------------------------------------------------------------
    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u [n_nodes, dim], p [n_p])`` views of a system vector ``[n]``."""
        if not isinstance(x, torch.Tensor) or x.shape[-1:] != (self.n,):
            raise ValueError(f"x must be a system vector of shape [{self.n}], got {getattr(x, 'shape', type(x))}")
        return x[..., : self.n_u].reshape(*x.shape[:-1], -1, self.dim), x[..., self.n_u :]

    def velocity_points(self) -> torch.Tensor:
        """Coordinates of the P2 velocity nodes ``[n_nodes, dim]`` (vertices, then edge midpoints)."""
        return self.p2.dof_points(self.mesh)

    def facet_velocity_dofs(self, tags: Sequence[str], components: Sequence[int] | None = None) -> torch.Tensor:
        """Global velocity dofs on the named facet sets (a missing tag is a ``ValueError`` naming it)."""
        for t in tags:
            if t not in self.mesh.facet_sets and t != "boundary":
                raise ValueError(
                    f"boundary tag {t!r} is not on the mesh; its facet sets are {sorted(self.mesh.facet_sets)}"
                )
        m = self.mesh
        fac = [m.boundary_facets if t == "boundary" and t not in m.facet_sets else m.facet_sets[t] for t in tags]
        return self.velocity.facet_dofs(m, torch.cat(fac), components)

    def evaluate(self, x: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``[k, dim]`` and pressure ``[k]`` of the state ``x`` at arbitrary ``points [k, dim]``
        (differentiable w.r.t. ``x`` and, with fixed ``points``, the mesh node coordinates)."""
        u, p = self.split(x)
        cell, X = locate(self.mesh, points)
        P = self.mesh.points
        if torch.is_grad_enabled() and P.requires_grad:  # the reference coordinates move with the nodes
            C = self.mesh.cells[cell]
            x0 = P[C[:, 0]]
            T = (P[C[:, 1:]] - x0[:, None, :]).transpose(1, 2)  # [k, d, d]: columns x_i - x_0
            X = torch.linalg.solve(T, (points.to(P.dtype) - x0)[..., None])[..., 0]
        phi2 = self.p2.phi(X)  # [k, n2]
        phi1 = self.pressure.phi(X)  # [k, 3]
        d2 = self.p2.dofs(self.mesh)[cell]
        d1 = self.mesh.cells[cell]
        return (phi2[..., None] * u[d2]).sum(1), (phi1 * p[d1]).sum(1)

    def pressure_mean(self, p: torch.Tensor) -> torch.Tensor:
        """``int p dx / |Omega|`` of a P1 pressure ``[n_p]`` (differentiable)."""
        w = self._p_weights()
        return (w * p).sum(-1) / w.sum()

    def _p_weights(self) -> torch.Tensor:
        b = self.pbasis
        return torch.zeros(self.n_p, dtype=b.dx.dtype, device=b.dx.device).index_add(
            0, b.dofs.reshape(-1), (b.phi * b.dx[..., None]).sum(1).reshape(-1)
        )


def locate(mesh: Mesh, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cell [k], reference coordinates [k, dim])`` of query points in a simplex mesh (a point
    outside every cell is a ``ValueError``).  Brute force over the cells in blocks of points:
    meant for probes and centrelines, not for millions of points."""
    P, C = mesh.points.detach(), mesh.cells
    x0 = P[C[:, 0]]  # [E, d]
    T = (P[C[:, 1:]] - x0[:, None, :]).transpose(1, 2)  # [E, d, d]: columns x_i - x_0
    Tinv = torch.linalg.inv(T)
    cells, refs = [], []
    for lo in range(0, points.shape[0], 64):
        q = points[lo : lo + 64].to(P.dtype)
        X = torch.einsum("eij,kej->kei", Tinv, q[:, None, :] - x0[None])  # [k, E, d]
        lam_min = torch.minimum(X.min(-1).values, 1 - X.sum(-1))
        best = lam_min.argmax(1)
        if bool((lam_min.gather(1, best[:, None]) < -1e-10).any()):
            raise ValueError("a query point lies outside the mesh")
        cells.append(best)
        refs.append(X[torch.arange(q.shape[0]), best])
    return torch.cat(cells), torch.cat(refs)
