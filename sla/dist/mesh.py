"""Decomposition from a mesh: each rank assembles only the cells it needs.

The mesh nodes are partitioned (METIS on the mesh's dual graph via
``pymetis.part_mesh``, or RCB on the coordinates); a rank then assembles the
cells touching its nodes, keeps its own rows (global column numbers) and
builds the :class:`~sla.dist.DSparseTensor` with :meth:`~sla.dist.DSparseTensor.from_local`.
The Schwarz overlap comes from the same local assembly (the cells touching
``overlap`` more layers of nodes): no global matrix is ever formed, and the
overlap costs no communication.

Homogeneous Dirichlet conditions on the boundary nodes are eliminated
symmetrically (identity rows, zero columns), so the operator stays SPD.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..sparse import SparseTensor
from .comm import broadcast

__all__ = ["assemble_distributed", "partition_mesh"]


def partition_mesh(mesh, nparts: int, method: str = "metis") -> torch.Tensor:
    """``[n_points]`` owning part of every mesh node (``'metis'``: dual graph; ``'rcb'``: coordinates)."""
    n = mesh.points.shape[0]
    if method == "rcb" or nparts == 1:
        from .partition import rcb

        return rcb(mesh.points, nparts)
    if method != "metis":
        raise ValueError(f"method must be 'metis' or 'rcb', got {method!r}")
    try:
        import pymetis
    except ImportError as exc:
        raise ImportError("partition_mesh(method='metis') needs pymetis: pip install 'sla-torch[dist]'") from exc
    res = pymetis.part_mesh(nparts, mesh.cells.numpy().astype(np.int64), gtype=pymetis.GType.DUAL)
    parts = torch.as_tensor(np.asarray(res.vertex_part), dtype=torch.int64)
    return parts[:n]


def _grow(cells: torch.Tensor, mark: torch.Tensor, layers: int) -> torch.Tensor:
    """Node mask grown by ``layers`` layers of cells."""
    for _ in range(layers):
        touch = mark[cells].any(1)
        mark = mark.clone()
        mark[cells[touch].flatten()] = True
    return mark


def _restrict(K: SparseTensor, rows: torch.Tensor, cols: torch.Tensor | None, n: int):
    """Entries of ``K`` in ``rows`` (global ids, in that order) and, if given, ``cols``."""
    rpos = torch.full((n,), -1, dtype=torch.int64)
    rpos[rows] = torch.arange(rows.numel())
    keep = rpos[K.row.long()] >= 0
    if cols is not None:
        cpos = torch.full((n,), -1, dtype=torch.int64)
        cpos[cols] = torch.arange(cols.numel())
        keep &= cpos[K.col.long()] >= 0
        c = cpos[K.col.long()[keep]]
        shape = (rows.numel(), cols.numel())
    else:
        c, shape = K.col.long()[keep], (rows.numel(), n)
    return SparseTensor(K.values[keep], rpos[K.row.long()[keep]], c, shape)


def assemble_distributed(
    mesh,
    element,
    form,
    rhs=None,
    where=None,
    overlap: int = 2,
    method: str = "metis",
    dirichlet: bool = True,
    timeout: float | None = None,
    **w,
):
    """The distributed system of ``form`` (and load ``rhs``) on ``mesh``, assembled per rank.

    Parameters
    ----------
    mesh : sla.assembly.Mesh
        The same mesh on every rank (only the cells a rank needs are assembled).
    element : sla.assembly.Element
        Scalar element (one dof per node, e.g. ``ElementP1('tetra')``).
    form, rhs : BilinearForm, LinearForm
        ``sla.assembly.laplace`` and ``sla.assembly.source`` for Poisson.
    where : DeviceMesh or ProcessGroup, optional
    overlap : int
        Schwarz overlap layers (0: none).
    dirichlet : bool
        Zero Dirichlet conditions on every boundary node.
    **w
        Coefficients of the forms (``f=1.0``...).

    Returns
    -------
    D : DSparseTensor
    b : DTensor or None
        The load vector (``Shard(0)``), if ``rhs`` is given.
    parts : torch.Tensor
        ``[n_points]`` owner of every node.
    """
    from ..assembly import CellBasis, Mesh, assemble, boundary_dofs
    from .dsparse import DSparseTensor, _mesh_and_group

    if not dist.is_initialized():
        raise RuntimeError("assemble_distributed needs torch.distributed: call dist.init_process_group first")
    _, group = _mesh_and_group(where, "cpu")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    n = mesh.points.shape[0]
    parts = broadcast(partition_mesh(mesh, world, method), group, timeout)
    cells = mesh.cells.long()
    owned_mask = parts == rank
    ext_mask = _grow(cells, owned_mask, overlap) if (overlap > 0 and world > 1) else owned_mask
    need = ext_mask[cells].any(1)  # cells touching the extended subdomain: its rows are complete
    sub = Mesh(mesh.points, cells[need], mesh.cell_type)
    basis = CellBasis(sub, element)
    K = assemble(form, basis, **w).to("cpu")
    bnd = torch.zeros(n, dtype=torch.bool)
    if dirichlet:
        bnd[boundary_dofs(CellBasis(mesh, element))] = True
        keep = ~(bnd[K.row.long()] | bnd[K.col.long()])
        diag = torch.nonzero(bnd & ext_mask).flatten()
        K = SparseTensor(
            torch.cat([K.values[keep], torch.ones(diag.numel(), dtype=K.dtype)]),
            torch.cat([K.row.long()[keep], diag]),
            torch.cat([K.col.long()[keep], diag]),
            K.shape,
        )
    owned = torch.nonzero(owned_mask).flatten()
    local = _restrict(K, owned, None, n)
    ov = None
    if overlap > 0 and world > 1:
        ext = torch.cat([owned, torch.nonzero(ext_mask & ~owned_mask).flatten()])
        ov = (ext, _restrict(K, ext, ext, n), overlap)
    D = DSparseTensor.from_local(local, owned, (n, n), where, overlap=ov, timeout=timeout)
    b = None
    if rhs is not None:
        F = assemble(rhs, CellBasis(Mesh(mesh.points, cells[owned_mask[cells].any(1)], mesh.cell_type), element), **w)
        F = torch.where(bnd, torch.zeros_like(F), F)
        from .dtensor import to_dtensor

        b = to_dtensor(F[D.owned], D)
    return D, b, parts
