"""Mesh files through meshio (.msh v2/v4, .vtu, .vtk, .xdmf, ...), imported lazily.

Gmsh physical groups become named sets: groups of top-dimensional cells are
``cell_sets``, groups of facet cells are ``facet_sets`` (names from the
file's ``$PhysicalNames``, else ``"tag<N>"``).  Meshes with several
top-dimensional cell types are refused with a clear error.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

import numpy as np
import torch

from .mesh import CELL_TYPES, Mesh

__all__ = ["read_mesh", "write_mesh"]

logger = logging.getLogger("sla")

_TOP = ["hexahedron", "tetra", "quad", "triangle", "line"]


def _meshio():
    try:
        import meshio
    except ImportError as e:  # pragma: no cover - exercised only without meshio
        raise ImportError(
            "reading/writing mesh files needs meshio: pip install meshio (or pip install sla-torch[mesh])"
        ) from e
    return meshio


def read_mesh(path: str | os.PathLike, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Mesh:
    """Read a mesh file into a :class:`Mesh` (one cell type; tags kept)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mesh file {path!r} does not exist")
    meshio = _meshio()
    ext = "".join(pathlib.Path(path).suffixes[-2:])
    known = meshio.extension_to_filetypes
    if ext not in known and os.path.splitext(path)[1] not in known:
        raise ValueError(f"cannot read mesh file {path!r}: unsupported extension; meshio reads {sorted(known)}")
    try:
        m = meshio.read(path)
    except SystemExit as e:  # meshio exits the interpreter when no reader accepts the file
        raise ValueError(f"cannot read mesh file {path!r}: corrupt or not in a format meshio reads") from e
    except meshio.ReadError as e:
        raise ValueError(f"cannot read mesh file {path!r}: {e}") from e
    except ImportError as e:  # e.g. h5py for .xdmf
        raise ImportError(f"reading {path!r} needs an optional package: {e} (pip install it)") from e
    except Exception as e:  # corrupt content makes meshio fail in many ways
        raise ValueError(
            f"cannot read mesh file {path!r}: corrupt or unsupported content ({type(e).__name__}: {e})"
        ) from e
    blocks = [(b.type, np.asarray(b.data)) for b in m.cells]
    types = [t for t, _ in blocks if t in CELL_TYPES]
    if not types:
        raise ValueError(f"mesh file {path!r} has no cells of a supported type {_TOP}; found {[t for t, _ in blocks]}")
    top = next(t for t in _TOP if t in types)
    dim = CELL_TYPES[top]["dim"]
    others = {t for t in types if CELL_TYPES[t]["dim"] == dim and t != top}
    if others:
        raise ValueError(f"mesh file {path!r} mixes cell types {sorted(others | {top})}; sla meshes have one cell type")
    points = np.asarray(m.points, dtype=np.float64)
    if points.shape[1] > dim and np.abs(points[:, dim:]).max() > 0:
        raise ValueError(
            f"mesh file {path!r} holds a {dim}D {top} mesh embedded in {points.shape[1]}D "
            "(nonzero extra coordinates); sla meshes are flat"
        )
    points = points[:, :dim]
    ftype = CELL_TYPES[top]["facet"]
    names = {int(v[0]): k for k, v in (m.field_data or {}).items() if len(v) >= 1}
    phys = (m.cell_data or {}).get("gmsh:physical")
    cells, cell_tags, facets, facet_tags = [], [], [], []
    for i, (t, data) in enumerate(blocks):
        tags = np.asarray(phys[i]) if phys is not None else None
        if t == top:
            cells.append(data)
            cell_tags.append(tags)
        elif t == ftype:
            facets.append(data)
            facet_tags.append(tags)
    C = np.concatenate(cells)
    cell_sets, facet_sets = {}, {}
    if all(t is not None for t in cell_tags):
        allt = np.concatenate(cell_tags)
        for tag in np.unique(allt[allt > 0]):  # physical tag 0: no group
            cell_sets[names.get(int(tag), f"tag{int(tag)}")] = np.nonzero(allt == tag)[0]
    if facets and all(t is not None for t in facet_tags):
        F, allt = np.concatenate(facets), np.concatenate(facet_tags)
        for tag in np.unique(allt[allt > 0]):
            facet_sets[names.get(int(tag), f"tag{int(tag)}")] = F[allt == tag]
    top_blocks = [i for i, (t, _) in enumerate(blocks) if t == top]
    starts = np.cumsum([0] + [len(blocks[i][1]) for i in top_blocks])
    for name, per_block in (m.cell_sets or {}).items():  # explicit cell sets (xdmf, meshio-written vtu)
        parts = [
            np.asarray(per_block[i]) + starts[j]
            for j, i in enumerate(top_blocks)
            if i < len(per_block) and per_block[i] is not None and len(per_block[i])
        ]
        if parts and not name.startswith("gmsh:"):
            cell_sets.setdefault(name, np.concatenate(parts))
    try:
        mesh = Mesh(
            torch.tensor(points, dtype=dtype, device=device),
            torch.tensor(C.astype(np.int64), device=device),
            top,
            cell_sets={k: torch.tensor(v.astype(np.int64)) for k, v in cell_sets.items()},
            facet_sets={k: torch.tensor(v.astype(np.int64)) for k, v in facet_sets.items()},
        )
    except (ValueError, IndexError, TypeError) as e:
        raise ValueError(f"mesh file {path!r} is inconsistent: {e}") from e
    return mesh


def write_mesh(
    path: str | os.PathLike,
    mesh: Mesh,
    point_data: dict | None = None,
    cell_data: dict | None = None,
    **kwargs: Any,
) -> None:
    """Write a :class:`Mesh` (with point/cell fields) through meshio; the format follows the extension.

    Cell sets and facet sets are written as Gmsh physical groups for ``.msh`` files
    (``file_format='gmsh22'`` by default) and dropped for formats without them.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a sla.assembly.Mesh, got {type(mesh).__name__}")
    path = os.fspath(path)
    meshio = _meshio()
    pts = mesh.points.detach().cpu().numpy()
    if pts.shape[1] < 3:
        pts = np.concatenate([pts, np.zeros((pts.shape[0], 3 - pts.shape[1]))], 1)
    C = mesh.cells.cpu().numpy()

    def arr(name, v, n, what):
        a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        if a.shape[0] != n:
            raise ValueError(f"{what}[{name!r}] must have {n} rows, got shape {a.shape}")
        return a

    pdata = {k: arr(k, v, mesh.n_points, "point_data") for k, v in (point_data or {}).items()}
    cdata = {k: [arr(k, v, mesh.n_cells, "cell_data")] for k, v in (cell_data or {}).items()}
    cells = [(mesh.cell_type, C)]
    field_data = {}
    ext = os.path.splitext(path)[1].lower()
    if ext == ".msh" and (mesh.cell_sets or mesh.facet_sets):
        kwargs.setdefault("file_format", "gmsh22")
        tag, ctags = 1, np.zeros(mesh.n_cells, dtype=np.int64)
        for name, idx in mesh.cell_sets.items():
            ctags[idx.cpu().numpy()] = tag
            field_data[name] = np.array([tag, CELL_TYPES[mesh.cell_type]["dim"]])
            tag += 1
        fblocks, ftags = [], []
        if cdata and mesh.facet_sets:  # meshio's gmsh22 writer cannot combine both
            logger.warning("write_mesh(%r): cell_data given, facet sets %s not written", path, sorted(mesh.facet_sets))
        for name, fac in ({} if cdata else mesh.facet_sets).items():
            fblocks.append(fac.cpu().numpy())
            ftags.append(np.full(fac.shape[0], tag))
            field_data[name] = np.array([tag, CELL_TYPES[mesh.cell_type]["dim"] - 1])
            tag += 1
        phys = [ctags]
        for f, t in zip(fblocks, ftags):
            cells.append((mesh.facet_type, f))
            phys.append(t)
        cdata["gmsh:physical"] = phys
        cdata["gmsh:geometrical"] = phys
    elif ext == ".msh":
        kwargs.setdefault("file_format", "gmsh22")
    out = meshio.Mesh(pts, cells, point_data=pdata, cell_data=cdata, field_data=field_data)
    try:
        meshio.write(path, out, **kwargs)
    except ImportError as e:
        raise ImportError(f"writing {path!r} needs an optional package: {e} (pip install it)") from e
    except (meshio.WriteError, meshio.ReadError, KeyError, ValueError) as e:
        raise ValueError(f"cannot write mesh file {path!r}: {e}") from e
