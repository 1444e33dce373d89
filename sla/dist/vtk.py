"""One ``.vtu`` per rank plus a ``.pvtu`` index, for a solution on a decomposed mesh.

Each rank writes the cells whose first node it owns, with the solution at their
nodes (owned values and the halo's ghost values; nodes eliminated by Dirichlet
conditions, which no rank couples to, take ``dirichlet_value``).  Rank 0 writes
the ``.pvtu`` that ParaView opens.  Every file is written under a temporary
name and renamed (atomic).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .store import _atomic

__all__ = ["write_pvtu"]


def write_pvtu(directory, name: str, mesh, parts: torch.Tensor, D, x, dirichlet_value: float = 0.0) -> str:
    """Write ``directory/name_<rank>.vtu`` on every rank and ``directory/name.pvtu`` (collective).

    Parameters
    ----------
    mesh : sla.assembly.Mesh
        The decomposed mesh.
    parts : torch.Tensor
        ``[n_points]`` owner of every node (from :func:`sla.dist.mesh.assemble_distributed`).
    D : DSparseTensor
        The matrix whose halo plan carries the ghost values.
    x : DTensor or torch.Tensor
        The solution (``Shard(0)`` or this rank's block).

    Returns
    -------
    str
        The path of the ``.pvtu``.
    """
    try:
        import meshio
    except ImportError as exc:
        raise ImportError("write_pvtu needs meshio: pip install meshio") from exc
    from .dtensor import local_block

    xl, _ = local_block(x, D, "x")
    xl = xl.detach().reshape(D.n_owned, -1)[:, 0]
    full = D._full(xl[:, None])[:, 0].cpu()
    n = mesh.points.shape[0]
    val = torch.full((n,), float("nan"), dtype=full.dtype)
    val[torch.cat([D.owned, D.plan.ghosts.cpu()])] = full
    cells = mesh.cells.long()
    mine = cells[parts[cells[:, 0]] == D.rank]
    nodes, inv = torch.unique(mine.flatten(), return_inverse=True)
    u = val[nodes]
    u = torch.where(torch.isnan(u), torch.full_like(u, dirichlet_value), u)
    pts = mesh.points[nodes].double()
    if pts.shape[1] < 3:
        pts = torch.cat([pts, pts.new_zeros(pts.shape[0], 3 - pts.shape[1])], 1)
    ctype = mesh.cell_type or {3: "triangle", 4: "tetra"}[cells.shape[1]]
    m = meshio.Mesh(
        pts.numpy(),
        [(ctype, inv.reshape(mine.shape).numpy())],
        point_data={"u": u.numpy()},
        cell_data={"rank": [torch.full((mine.shape[0],), D.rank, dtype=torch.int64).numpy()]},
    )
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    piece = f"{name}_{D.rank}.vtu"
    _atomic(os.path.join(directory, piece), lambda p: meshio.write(p, m, file_format="vtu"))
    dist.barrier(group=D.group)
    path = os.path.join(directory, f"{name}.pvtu")
    if D.rank == 0:
        pieces = "\n".join(f'    <Piece Source="{name}_{r}.vtu"/>' for r in range(D.world_size))
        xml = f"""<?xml version="1.0"?>
<VTKFile type="PUnstructuredGrid" version="0.1" byte_order="LittleEndian">
  <PUnstructuredGrid GhostLevel="0">
    <PPointData Scalars="u">
      <PDataArray type="Float64" Name="u"/>
    </PPointData>
    <PCellData>
      <PDataArray type="Int64" Name="rank"/>
    </PCellData>
    <PPoints>
      <PDataArray type="Float64" NumberOfComponents="3"/>
    </PPoints>
{pieces}
  </PUnstructuredGrid>
</VTKFile>
"""
        _atomic(path, lambda p: open(p, "w").write(xml))
    dist.barrier(group=D.group)
    return path
