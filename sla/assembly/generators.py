"""Structured mesh generators and uniform refinement.

Generated meshes carry the facet sets ``xmin, xmax, ymin, ymax[, zmin, zmax]``
(the sides of the box) besides the automatic ``boundary``.

>>> from sla.assembly import unit_square, refine
>>> m = unit_square(4)
>>> m.n_cells, refine(m).n_cells
(32, 128)
"""

from __future__ import annotations

import itertools

import torch

from .mesh import CELL_TYPES, Mesh, find_rows

__all__ = ["rectangle", "unit_square", "box", "unit_cube", "interval", "l_shape", "refine"]


def _check_n(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int (cells per side), got {n!r}")
    return n


def _tag_sides(mesh: Mesh, bounds) -> Mesh:
    names = "xyz"
    for d, (lo, hi) in enumerate(bounds):
        tol = 1e-9 * max(1.0, abs(hi - lo))
        mesh.tag_facets(f"{names[d]}min", lambda x, d=d, lo=lo, tol=tol: (x[:, d] - lo).abs() < tol)
        mesh.tag_facets(f"{names[d]}max", lambda x, d=d, hi=hi, tol=tol: (x[:, d] - hi).abs() < tol)
    return mesh


def _grid_points(axes) -> torch.Tensor:
    grids = torch.meshgrid(*reversed(axes), indexing="ij")  # last axis (x) fastest
    return torch.stack([g.flatten() for g in reversed(grids)], dim=1)


def interval(
    n: int = 10, a: float = 0.0, b: float = 1.0, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> Mesh:
    """``n`` line cells on ``[a, b]``."""
    n = _check_n(n, "n")
    x = torch.linspace(a, b, n + 1, dtype=dtype, device=device)[:, None]
    i = torch.arange(n, device=device)
    return _tag_sides(Mesh(x, torch.stack([i, i + 1], 1), "line"), [(a, b)])


def rectangle(
    x0: float = 0.0,
    x1: float = 1.0,
    y0: float = 0.0,
    y1: float = 1.0,
    nx: int = 8,
    ny: int | None = None,
    cell: str = "tri",
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> Mesh:
    """Structured mesh of ``[x0, x1] x [y0, y1]`` with ``nx x ny`` squares, each split into two
    triangles (``cell='tri'``) or kept as a quad (``cell='quad'``)."""
    nx = _check_n(nx, "nx")
    ny = _check_n(nx if ny is None else ny, "ny")
    if cell not in ("tri", "quad"):
        raise ValueError(f"cell must be 'tri' or 'quad', got {cell!r}")
    ax = [
        torch.linspace(x0, x1, nx + 1, dtype=dtype, device=device),
        torch.linspace(y0, y1, ny + 1, dtype=dtype, device=device),
    ]
    p = _grid_points(ax)
    j, i = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device), indexing="ij")
    v0 = (j * (nx + 1) + i).flatten()
    v1, v2, v3 = v0 + 1, v0 + nx + 2, v0 + nx + 1
    if cell == "quad":
        cells, ctype = torch.stack([v0, v1, v2, v3], 1), "quad"
    else:
        cells = torch.stack([torch.stack([v0, v1, v2], 1), torch.stack([v0, v2, v3], 1)], 1).reshape(-1, 3)
        ctype = "triangle"
    return _tag_sides(Mesh(p, cells, ctype), [(x0, x1), (y0, y1)])


def unit_square(
    n: int = 8, cell: str = "tri", dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> Mesh:
    """``rectangle`` of the unit square with ``n`` cells per side."""
    return rectangle(0.0, 1.0, 0.0, 1.0, n, n, cell, dtype, device)


# Kuhn's six tetrahedra of the unit cube: paths from corner 0 to corner 7 (conforming across cubes)
def _kuhn() -> list[list[int]]:
    out = []
    for perm in itertools.permutations(range(3)):
        c, path = [0, 0, 0], [0]
        for a in perm:
            c[a] = 1
            path.append(c[0] + 2 * c[1] + 4 * c[2])
        out.append(path)
    return out


def box(
    x0: float = 0.0,
    x1: float = 1.0,
    y0: float = 0.0,
    y1: float = 1.0,
    z0: float = 0.0,
    z1: float = 1.0,
    nx: int = 4,
    ny: int | None = None,
    nz: int | None = None,
    cell: str = "tet",
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> Mesh:
    """Structured mesh of a box with ``nx x ny x nz`` cubes, each split into six tetrahedra
    (``cell='tet'``, Kuhn) or kept as a hexahedron (``cell='hex'``)."""
    nx = _check_n(nx, "nx")
    ny = _check_n(nx if ny is None else ny, "ny")
    nz = _check_n(nx if nz is None else nz, "nz")
    if cell not in ("tet", "hex"):
        raise ValueError(f"cell must be 'tet' or 'hex', got {cell!r}")
    ax = [
        torch.linspace(a, b, k + 1, dtype=dtype, device=device)
        for a, b, k in ((x0, x1, nx), (y0, y1, ny), (z0, z1, nz))
    ]
    p = _grid_points(ax)
    k, j, i = torch.meshgrid(*(torch.arange(m, device=device) for m in (nz, ny, nx)), indexing="ij")
    o = ((k * (ny + 1) + j) * (nx + 1) + i).flatten()
    sx, sy, sz = 1, nx + 1, (nx + 1) * (ny + 1)
    corner = [o + (c & 1) * sx + ((c >> 1) & 1) * sy + ((c >> 2) & 1) * sz for c in range(8)]  # bit 0: x, 1: y, 2: z
    if cell == "hex":
        order = [0, 1, 3, 2, 4, 5, 7, 6]  # VTK: bottom face counter-clockwise, then top
        cells, ctype = torch.stack([corner[c] for c in order], 1), "hexahedron"
    else:
        cells = torch.stack([torch.stack([corner[c] for c in path], 1) for path in _kuhn()], 1).reshape(-1, 4)
        cells, ctype = _orient_tets(p, cells), "tetra"
    return _tag_sides(Mesh(p, cells, ctype), [(x0, x1), (y0, y1), (z0, z1)])


def unit_cube(
    n: int = 4, cell: str = "tet", dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> Mesh:
    """``box`` of the unit cube with ``n`` cubes per side."""
    return box(0.0, 1.0, 0.0, 1.0, 0.0, 1.0, n, n, n, cell, dtype, device)


def _orient_tets(p: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    x = p[cells]
    vol = torch.linalg.det(x[:, 1:] - x[:, :1])
    flip = vol < 0
    cells = cells.clone()
    cells[flip, 1], cells[flip, 2] = cells[flip, 2].clone(), cells[flip, 1].clone()
    return cells


def l_shape(n: int = 4, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Mesh:
    """Triangles on the L-shaped domain ``(-1, 1)^2 \\ [0, 1) x (-1, 0]`` (``n`` cells per unit length)."""
    n = _check_n(n, "n")
    sq = rectangle(-1.0, 1.0, -1.0, 1.0, 2 * n, 2 * n, "tri", dtype, device)
    c = sq.points[sq.cells].mean(1)
    keep = ~((c[:, 0] > 0) & (c[:, 1] < 0))
    cells = sq.cells[keep]
    used = torch.unique(cells)
    new = torch.full((sq.n_points,), -1, dtype=torch.int64, device=cells.device)
    new[used] = torch.arange(used.numel(), device=cells.device)
    return _tag_sides(Mesh(sq.points[used], new[cells], "triangle"), [(-1.0, 1.0), (-1.0, 1.0)])


# ------------------------------------------------------------------ refinement
def _lattice_children(cell_type: str):
    """Children of a quad/hex as lists of lattice nodes (kind, local index) on the 3^dim lattice."""
    info = CELL_TYPES[cell_type]
    dim = info["dim"]
    ref = _ref_vertices(cell_type)
    edges = [sorted(e) for e in info["edges"]]
    faces = [sorted(f) for f in info["facets"]] if dim == 3 else None

    def node(p):  # p in {0,1,2}^dim
        verts = [v for v, r in enumerate(ref) if all(p[d] == 1 or 2 * r[d] == p[d] for d in range(dim))]
        if len(verts) == 1:
            return ("v", verts[0])
        if len(verts) == 2:
            return ("e", edges.index(sorted(verts)))
        if len(verts) == 4 and dim == 3:
            return ("f", faces.index(sorted(verts)))
        return ("c", 0)

    children = []
    for base in itertools.product((0, 1), repeat=dim):
        children.append([node([base[d] + r[d] for d in range(dim)]) for r in ref])
    return children


def _ref_vertices(cell_type: str):
    if cell_type == "quad":
        return [(0, 0), (1, 0), (1, 1), (0, 1)]
    return [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]


_TRI_CHILDREN = [[0, 3, 5], [1, 4, 3], [2, 5, 4], [3, 4, 5]]  # 3,4,5 = mids of edges 01, 12, 02
# 4..9 = mids of edges 01, 12, 02, 03, 13, 23; the octahedron is cut along 02-13
_TET_CHILDREN = [
    [0, 4, 6, 7],
    [4, 1, 5, 8],
    [6, 5, 2, 9],
    [7, 8, 9, 3],
    [6, 8, 4, 5],
    [6, 8, 5, 9],
    [6, 8, 9, 7],
    [6, 8, 7, 4],
]


def refine(mesh: Mesh) -> Mesh:
    """Uniform refinement: every cell into 2^dim children; cell and facet sets follow.

    New nodes are midpoints of edges (and centres of quad faces and cells), computed
    from ``mesh.points`` with torch ops (differentiable).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a sla.assembly.Mesh, got {type(mesh).__name__}")
    ct, P, C = mesh.cell_type, mesh.points, mesh.cells
    N = mesh.n_points
    if ct == "line":
        mid = P[C].mean(1)
        m = N + torch.arange(mesh.n_cells, device=C.device)
        cells = torch.stack([torch.stack([C[:, 0], m], 1), torch.stack([m, C[:, 1]], 1)], 1).reshape(-1, 2)
        out = Mesh(torch.cat([P, mid]), cells, ct)
        nchild = 2
        out.facet_sets = dict(mesh.facet_sets)
    else:
        edges, ce = mesh.edges, mesh.cell_edges
        mids = P[edges].mean(1)
        em = N + ce  # global node ids of the edge mids per cell
        pts = [P, mids]
        nxt = N + edges.shape[0]
        if ct in ("triangle", "tetra"):
            local = torch.cat([C, em], 1)
            table = _TRI_CHILDREN if ct == "triangle" else _TET_CHILDREN
            cells = local[:, torch.tensor(table, device=C.device)].reshape(-1, len(table[0]))
            nchild = len(table)
            fm = None
        else:
            fm = None
            parts = {"v": C, "e": em}
            if ct == "hexahedron":
                faces, cf = mesh._entities("facets")
                pts.append(P[faces].mean(1))
                fm = nxt + cf
                parts["f"] = fm
                nxt += faces.shape[0]
            pts.append(P[C].mean(1))
            parts["c"] = (nxt + torch.arange(mesh.n_cells, device=C.device))[:, None]
            children = _lattice_children(ct)
            cells = torch.stack([torch.stack([parts[k][:, i] for k, i in ch], 1) for ch in children], 1)
            cells = cells.reshape(-1, len(children[0]))
            nchild = len(children)
        out = Mesh(torch.cat(pts), cells, ct)
        out.facet_sets = {k: _refine_facets(mesh, v, N) for k, v in mesh.facet_sets.items()}
    out.cell_sets = {
        k: (v[:, None] * nchild + torch.arange(nchild, device=v.device)).flatten() for k, v in mesh.cell_sets.items()
    }
    return out


def _refine_facets(mesh: Mesh, fac: torch.Tensor, N: int) -> torch.Tensor:
    ft = mesh.facet_type
    if ft == "line":
        m = N + mesh.edge_ids(fac)
        return torch.stack([torch.stack([fac[:, 0], m], 1), torch.stack([m, fac[:, 1]], 1)], 1).reshape(-1, 2)
    if ft == "triangle":
        e = [N + mesh.edge_ids(fac[:, [a, b]]) for a, b in ((0, 1), (1, 2), (0, 2))]
        loc = torch.cat([fac, torch.stack(e, 1)], 1)
        return loc[:, torch.tensor(_TRI_CHILDREN, device=fac.device)].reshape(-1, 3)
    # quad faces of hexahedra: edge mids, face centre
    e = torch.stack([N + mesh.edge_ids(fac[:, [a, (a + 1) % 4]]) for a in range(4)], 1)
    c = N + mesh.edges.shape[0] + find_rows(mesh._entities("facets")[0], fac)
    v = fac
    kids = [
        [v[:, 0], e[:, 0], c, e[:, 3]],
        [e[:, 0], v[:, 1], e[:, 1], c],
        [c, e[:, 1], v[:, 2], e[:, 2]],
        [e[:, 3], c, e[:, 2], v[:, 3]],
    ]
    return torch.stack([torch.stack(k, 1) for k in kids], 1).reshape(-1, 4)
