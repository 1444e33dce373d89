"""Unstructured meshes of one cell type: points, cells, named cell and facet sets.

A :class:`Mesh` holds ``points`` ``[N, dim]`` (a float tensor; it may require
grad -- assembled operators are then differentiable w.r.t. node coordinates),
``cells`` ``[E, k]`` (int64 node indices, meshio/VTK node order) of one of the
cell types ``line``, ``triangle``, ``quad``, ``tetra``, ``hexahedron``, and named
tags: ``cell_sets`` (name -> cell indices) and ``facet_sets`` (name -> facet
node lists ``[F, kf]``, e.g. Gmsh physical groups of boundary lines/faces).

Boundary facets are found automatically (facets owned by one cell only) and
are available as the facet set ``"boundary"``.  Structured generators
(:func:`unit_square`, :func:`unit_cube`, ...) and uniform refinement live in
:mod:`sla.assembly.generators`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch

from . import geometry

__all__ = ["Mesh", "CELL_TYPES"]

# cell type -> (topological dim, nodes per cell, facet type, local facets, local edges)
CELL_TYPES: dict[str, dict[str, Any]] = {
    "line": dict(dim=1, nodes=2, facet="vertex", facets=[[0], [1]], edges=[[0, 1]]),
    "triangle": dict(dim=2, nodes=3, facet="line", facets=[[0, 1], [1, 2], [2, 0]], edges=[[0, 1], [1, 2], [0, 2]]),
    "quad": dict(
        dim=2, nodes=4, facet="line", facets=[[0, 1], [1, 2], [2, 3], [3, 0]], edges=[[0, 1], [1, 2], [2, 3], [3, 0]]
    ),
    "tetra": dict(
        dim=3,
        nodes=4,
        facet="triangle",
        facets=[[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]],
        edges=[[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]],
    ),
    "hexahedron": dict(
        dim=3,
        nodes=8,
        facet="quad",
        facets=[[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]],
        edges=[[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]],
    ),
}


def _as_cells(cells, k: int, n_points: int, name: str) -> torch.Tensor:
    cells = torch.as_tensor(cells)
    if cells.dtype.is_floating_point or cells.dtype.is_complex or cells.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {cells.dtype}")
    cells = cells.to(torch.int64)
    if cells.dim() != 2 or cells.shape[1] != k:
        raise ValueError(f"{name} must have shape [count, {k}], got {tuple(cells.shape)}")
    if cells.numel() and (int(cells.min()) < 0 or int(cells.max()) >= n_points):
        raise IndexError(
            f"{name} refers to node {int(cells.min()) if int(cells.min()) < 0 else int(cells.max())}, "
            f"but the mesh has {n_points} points"
        )
    return cells


def _row_keys(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of a node table: ``(unique_rows, inverse)``, rows in lexicographic order.

    Rows are packed into one int64 key when they fit (a 1D unique is far faster than
    ``torch.unique(dim=0)``); otherwise the row-wise unique runs.
    """
    if rows.shape[0] == 0:
        return rows, torch.zeros(0, dtype=torch.int64, device=rows.device)
    base = int(rows.max()) + 1
    k = rows.shape[1]
    if base**k >= 2**62:
        return torch.unique(rows, dim=0, return_inverse=True)
    key = rows[:, 0].clone()
    for j in range(1, k):
        key = key * base + rows[:, j]
    uniq, inv = torch.unique(key, return_inverse=True)
    cols = []
    for _ in range(k):
        cols.append(uniq % base)
        uniq = torch.div(uniq, base, rounding_mode="floor")
    return torch.stack(cols[::-1], 1), inv


def find_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Index in ``table`` (unique, node-sorted rows) of each row of ``rows`` (any node order); -1 if absent."""
    if rows.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=table.device)
    srt = rows.sort(dim=-1).values
    both, inv = _row_keys(torch.cat([table, srt]))
    lookup = torch.full((both.shape[0],), -1, dtype=torch.int64, device=table.device)
    lookup[inv[: table.shape[0]]] = torch.arange(table.shape[0], device=table.device)
    return lookup[inv[table.shape[0] :]]


class Mesh:
    """A mesh of one cell type with named cell and facet sets.

    Parameters
    ----------
    points : tensor ``[N, dim]``
        Node coordinates (float; kept as given, so it may require grad).
    cells : int tensor ``[E, k]``
        Node indices per cell in meshio/VTK order.
    cell_type : str, optional
        ``'line'``, ``'triangle'``, ``'quad'``, ``'tetra'`` or ``'hexahedron'``;
        inferred from ``k`` and ``dim`` when omitted (4 nodes: quad in 2D, tetra in 3D).
    cell_sets : mapping name -> int tensor of cell indices, optional
    facet_sets : mapping name -> int tensor ``[F, kf]`` of facet node lists, optional

    Examples
    --------
    >>> import torch
    >>> from sla.assembly import Mesh
    >>> m = Mesh(torch.tensor([[0., 0.], [1., 0.], [0., 1.]]), torch.tensor([[0, 1, 2]]))
    >>> m.cell_type, m.boundary_facets.shape
    ('triangle', torch.Size([3, 2]))
    """

    def __init__(
        self,
        points: torch.Tensor,
        cells: torch.Tensor,
        cell_type: str | None = None,
        cell_sets: dict[str, torch.Tensor] | None = None,
        facet_sets: dict[str, torch.Tensor] | None = None,
    ) -> None:
        points = torch.as_tensor(points)
        if not points.dtype.is_floating_point:
            points = points.to(torch.get_default_dtype())
        if points.dim() != 2 or points.shape[1] not in (1, 2, 3):
            raise ValueError(f"points must have shape [N, dim] with dim 1, 2 or 3, got {tuple(points.shape)}")
        cells = torch.as_tensor(cells)
        if cells.dim() != 2:
            raise ValueError(f"cells must have shape [E, nodes_per_cell], got {tuple(cells.shape)}")
        dim = points.shape[1]
        if cell_type is None:
            cell_type = {2: "line", 3: "triangle", 4: "quad" if dim == 2 else "tetra", 8: "hexahedron"}.get(
                cells.shape[1]
            )
            if cell_type is None:
                raise ValueError(f"cannot infer the cell type of cells with {cells.shape[1]} nodes; pass cell_type")
        if cell_type not in CELL_TYPES:
            raise ValueError(f"cell_type must be one of {sorted(CELL_TYPES)}, got {cell_type!r}")
        info = CELL_TYPES[cell_type]
        if info["dim"] != dim:
            raise ValueError(f"{cell_type} cells need points of dimension {info['dim']}, got points [N, {dim}]")
        self.points = points
        self.cells = _as_cells(cells, info["nodes"], points.shape[0], "cells").to(points.device)
        self.cell_type = cell_type
        self._cache: dict[Any, Any] = {}
        self.cell_sets: dict[str, torch.Tensor] = {}
        for name, idx in (cell_sets or {}).items():
            idx = torch.as_tensor(idx, device=points.device).to(torch.int64).flatten()
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n_cells):
                raise IndexError(f"cell_sets[{name!r}] has indices outside [0, {self.n_cells})")
            self.cell_sets[str(name)] = idx
        kf = len(info["facets"][0])
        self.facet_sets: dict[str, torch.Tensor] = {}
        for name, fac in (facet_sets or {}).items():
            self.facet_sets[str(name)] = _as_cells(fac, kf, points.shape[0], f"facet_sets[{name!r}]").to(points.device)

    # ----------------------------------------------------------- basics
    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def n_points(self) -> int:
        return self.points.shape[0]

    @property
    def n_cells(self) -> int:
        return self.cells.shape[0]

    @property
    def facet_type(self) -> str:
        return CELL_TYPES[self.cell_type]["facet"]

    def __repr__(self) -> str:
        tags = list(self.cell_sets) + list(self.facet_sets)
        return (
            f"Mesh({self.cell_type}, points={self.n_points}, cells={self.n_cells}, dim={self.dim}"
            + (f", sets={tags}" if tags else "")
            + ")"
        )

    def memo(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """Structural quantity computed once per mesh (topology never changes)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def with_points(self, points: torch.Tensor) -> Mesh:
        """The same topology (and cached structure) with new node coordinates."""
        points = torch.as_tensor(points)
        if points.shape != self.points.shape:
            raise ValueError(f"points must have shape {tuple(self.points.shape)}, got {tuple(points.shape)}")
        m = Mesh.__new__(Mesh)
        m.points, m.cells, m.cell_type = points, self.cells.to(points.device), self.cell_type
        m.cell_sets, m.facet_sets = dict(self.cell_sets), dict(self.facet_sets)
        m._cache = self._cache if points.device == self.points.device else {}
        return m

    def to(self, device: str | torch.device) -> Mesh:
        return self.with_points(self.points.to(device))

    # --------------------------------------------------------- topology
    def _local(self, what: str) -> torch.Tensor:
        return torch.tensor(CELL_TYPES[self.cell_type][what], dtype=torch.int64, device=self.cells.device)

    def _entities(self, what: str):
        """``(unique sorted node tuples [U, k], cell -> entity [E, nloc])``."""

        def build():
            loc = self._local(what)
            nodes = self.cells[:, loc]  # [E, nloc, k]
            srt = nodes.sort(dim=-1).values.reshape(-1, loc.shape[1])
            uniq, inv = _row_keys(srt)
            return uniq, inv.reshape(self.n_cells, loc.shape[0])

        return self.memo(("entities", what), build)

    @property
    def edges(self) -> torch.Tensor:
        """Unique edges ``[n_edges, 2]`` (sorted node pairs)."""
        return self._entities("edges")[0]

    @property
    def cell_edges(self) -> torch.Tensor:
        """Edge index of each local edge of each cell ``[E, edges_per_cell]``."""
        return self._entities("edges")[1]

    @property
    def cell_facets(self) -> torch.Tensor:
        """Facet index of each local facet of each cell ``[E, facets_per_cell]``."""
        return self._entities("facets")[1]

    def _facet_owner(self):
        """For each unique facet: (count of cells, first owning cell, its local facet index)."""

        def build():
            uniq, cf = self._entities("facets")
            E, nf = cf.shape
            flat = cf.flatten()
            count = torch.bincount(flat, minlength=uniq.shape[0])
            # first owner: scatter the smallest flat position per facet
            pos = torch.full((uniq.shape[0],), E * nf, dtype=torch.int64, device=flat.device)
            pos = pos.scatter_reduce(0, flat, torch.arange(E * nf, device=flat.device), reduce="amin")
            return count, pos // nf, pos % nf

        return self.memo("facet_owner", build)

    @property
    def boundary_facets(self) -> torch.Tensor:
        """Node lists ``[F, kf]`` of the facets that belong to one cell only (oriented as in their cell)."""
        cells, local = self.facet_cells("boundary")
        return self.cells[cells[:, None], self._local("facets")[local]]

    @property
    def boundary_nodes(self) -> torch.Tensor:
        """Sorted indices of the nodes on the boundary."""
        return self.memo("boundary_nodes", lambda: torch.unique(self.boundary_facets))

    def facet_cells(self, name: str | torch.Tensor = "boundary") -> tuple[torch.Tensor, torch.Tensor]:
        """``(cell index, local facet index)`` of each facet of a facet set.

        ``name`` is ``"boundary"`` (all boundary facets), the name of a facet set,
        or a node-list tensor ``[F, kf]``.  Interior facets map to their first cell.
        """
        count, owner, local = self._facet_owner()
        if isinstance(name, str) and name == "boundary" and "boundary" not in self.facet_sets:
            ids = torch.nonzero(count == 1).flatten()
            return owner[ids], local[ids]
        ids = self.facet_ids(name)
        return owner[ids], local[ids]

    def facet_ids(self, name: str | torch.Tensor) -> torch.Tensor:
        """Indices into the unique facets of the facets of a set (by name or node lists)."""
        if isinstance(name, str):
            if name not in self.facet_sets:
                if name == "boundary":
                    return torch.nonzero(self._facet_owner()[0] == 1).flatten()
                raise KeyError(f"unknown facet set {name!r}; this mesh has {sorted(self.facet_sets) + ['boundary']}")
            nodes = self.facet_sets[name]
        else:
            kf = len(CELL_TYPES[self.cell_type]["facets"][0])
            nodes = _as_cells(name, kf, self.n_points, "facets")
        ids = find_rows(self._entities("facets")[0], nodes)
        if bool((ids < 0).any()):
            raise ValueError("facet set contains node lists that are not facets of any cell of this mesh")
        return ids

    def edge_ids(self, pairs: torch.Tensor) -> torch.Tensor:
        """Edge index of each node pair ``[P, 2]`` (-1 where the pair is not an edge)."""
        return find_rows(self.edges, pairs)

    def nodes_of(self, name: str | torch.Tensor) -> torch.Tensor:
        """Sorted node indices of a facet set (``'boundary'`` or a name) or of a cell set."""
        if isinstance(name, str) and name in self.cell_sets:
            return torch.unique(self.cells[self.cell_sets[name]])
        if isinstance(name, str) and name == "boundary" and "boundary" not in self.facet_sets:
            return self.boundary_nodes
        if isinstance(name, str):
            if name not in self.facet_sets:
                raise KeyError(
                    f"unknown set {name!r}; facet sets {sorted(self.facet_sets)}, cell sets {sorted(self.cell_sets)}"
                )
            return torch.unique(self.facet_sets[name])
        return torch.unique(torch.as_tensor(name))

    # ---------------------------------------------------------- geometry
    def cell_volumes(self) -> torch.Tensor:
        """Length/area/volume ``[E]`` of each cell (exact, differentiable in the points)."""
        return geometry.cell_volumes(self.points, self.cells, self.cell_type)

    def tag_facets(self, name: str, where: Callable[[torch.Tensor], torch.Tensor]) -> Mesh:
        """Add the boundary facets whose midpoints satisfy ``where(x) -> bool [F]`` as a facet set (in place)."""
        fac = self.boundary_facets
        mid = self.points.detach()[fac].mean(1)
        mask = torch.as_tensor(where(mid), device=fac.device).to(torch.bool)
        if mask.shape != (fac.shape[0],):
            raise ValueError(f"where(x) must return a bool tensor of shape [{fac.shape[0]}], got {tuple(mask.shape)}")
        self.facet_sets[name] = fac[mask]
        return self

    def tag_cells(self, name: str, where: Callable[[torch.Tensor], torch.Tensor]) -> Mesh:
        """Add the cells whose centroids satisfy ``where(x) -> bool [E]`` as a cell set (in place)."""
        mid = self.points.detach()[self.cells].mean(1)
        mask = torch.as_tensor(where(mid), device=mid.device).to(torch.bool)
        if mask.shape != (self.n_cells,):
            raise ValueError(f"where(x) must return a bool tensor of shape [{self.n_cells}], got {tuple(mask.shape)}")
        self.cell_sets[name] = torch.nonzero(mask).flatten()
        return self
