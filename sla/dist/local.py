"""A :class:`~sla.dist.DSparseTensor` from each rank's own rows, without a global matrix.

Every rank knows only its rows (global column indices) and the global rows it
owns.  One all-gather of the owned row ids (``n`` integers in total) tells each
rank the owner of its ghost columns; one all-to-all of the ghost lists tells
each owner what to send.  This is what decomposition from a mesh uses (each
rank assembles only its own cells).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..sparse import SparseTensor
from .comm import all_gather_list, comm_device, wait_all
from .halo import HaloPlan

__all__ = ["build_from_local"]


def build_from_local(cls, local: SparseTensor, owned: torch.Tensor, shape, mesh, overlap, timeout):
    """See :meth:`DSparseTensor.from_local`."""
    from .dsparse import _mesh_and_group

    if not dist.is_initialized():
        raise RuntimeError("DSparseTensor.from_local needs torch.distributed: call dist.init_process_group first")
    if not isinstance(local, SparseTensor) or local.batch_shape:
        raise TypeError(f"local must be an unbatched sla.SparseTensor, got {type(local).__name__}")
    shape = tuple(int(s) for s in shape)
    owned = torch.as_tensor(owned, dtype=torch.int64).cpu()
    n = shape[0]
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"shape must be square (n, n), got {shape}")
    if local.shape[0] != owned.numel() or local.shape[1] != n:
        raise ValueError(f"local must be [{owned.numel()}, {n}] (owned rows x global columns), got {local.shape}")
    mesh, group = _mesh_and_group(mesh, local.device.type)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    order = torch.argsort(owned)
    owned = owned[order]
    if owned.numel() > 1 and bool((owned[1:] == owned[:-1]).any()):
        raise ValueError("owned lists a global row twice")
    sizes_t = all_gather_list(torch.tensor([owned.numel()]), [1] * world, group, timeout)
    sizes = [int(s) for s in torch.cat(sizes_t)]
    ids = all_gather_list(owned, sizes, group, timeout)
    owner = torch.full((n,), -1, dtype=torch.int64)
    local_idx = torch.empty(n, dtype=torch.int64)
    for q, g in enumerate(ids):
        if bool((owner[g] >= 0).any()):
            raise ValueError(f"rank {q} owns a global row another rank owns too")
        owner[g] = q
        local_idx[g] = torch.arange(g.numel())
    if bool((owner < 0).any()):
        raise ValueError(f"{int((owner < 0).sum())} global rows are owned by no rank")
    # this rank's rows in increasing global order; columns: owned first, ghosts by (owner, local index)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel())
    loc = local.to("cpu").detach()
    row = inv[loc.row.long()]
    gcol = loc.col.long()
    is_ghost = owner[gcol] != rank
    gc = torch.unique(gcol[is_ghost])
    ghosts = gc[torch.argsort(owner[gc] * (n + 1) + local_idx[gc])]
    recv = {int(q): int(c) for q, c in zip(*torch.unique(owner[ghosts], return_counts=True))}
    gpos = torch.full((n,), -1, dtype=torch.int64)
    gpos[ghosts] = torch.arange(ghosts.numel()) + owned.numel()
    col = torch.where(is_ghost, gpos[gcol], local_idx[gcol])
    send = _send_lists(ghosts, owner, local_idx, world, group, timeout)
    plan = HaloPlan(rank, owned.numel(), ghosts, recv, send)
    dev = local.device
    vals = local.values[..., :]
    mat = SparseTensor(vals, row.to(dev), col.to(dev), (owned.numel(), owned.numel() + ghosts.numel()))
    ov = None
    if overlap is not None:
        ov = _overlap(overlap, owned, owner, local_idx, rank, world, group, timeout, n)
    return cls(mat, plan, owned, sizes, shape, mesh, group, None, "given", ov, timeout)


def _send_lists(ghosts, owner, local_idx, world, group, timeout) -> dict:
    """Tell each owner which of its rows we need (all-to-all of the counts, then of the lists)."""
    dev = comm_device(group)
    need = [local_idx[ghosts[owner[ghosts] == q]] for q in range(world)]
    cnt_in = torch.zeros(world, dtype=torch.int64, device=dev)
    cnt_out = torch.tensor([t.numel() for t in need], dtype=torch.int64, device=dev)
    wait_all([dist.all_to_all_single(cnt_in, cnt_out, group=group, async_op=True)], "from_local setup", timeout)
    got = torch.empty(int(cnt_in.sum()), dtype=torch.int64, device=dev)
    flat = torch.cat(need).to(dev)
    ins, outs = cnt_in.tolist(), cnt_out.tolist()
    wait_all([dist.all_to_all_single(got, flat, ins, outs, group=group, async_op=True)], "from_local setup", timeout)
    got = got.cpu()
    send, start = {}, 0
    for q, c in enumerate(ins):
        if c:
            send[q] = got[start : start + c].sort().values
        start += c
    return send


def _overlap(overlap, owned, owner, local_idx, rank, world, group, timeout, n):
    """The :class:`~sla.dist.schwarz.OverlapBlock` of ``(ext_ids, ext_matrix)``: the rank's extended
    subdomain (global ids, owned rows among them) and the matrix on it, assembled by the rank itself."""
    from .schwarz import OverlapBlock

    if not (isinstance(overlap, tuple) and len(overlap) in (2, 3)):
        raise TypeError("overlap must be (ext_ids, ext_matrix[, layers]) for from_local")
    ext, mat = torch.as_tensor(overlap[0], dtype=torch.int64).cpu(), overlap[1]
    layers = overlap[2] if len(overlap) == 3 else 1
    if not isinstance(mat, SparseTensor) or mat.shape != (ext.numel(), ext.numel()):
        raise ValueError(f"the overlap matrix must be a SparseTensor [{ext.numel()}, {ext.numel()}] on ext_ids")
    mine = owner[ext] == rank
    if int(mine.sum()) != owned.numel():
        raise ValueError("ext_ids must contain every owned row of this rank")
    extra = ext[~mine]
    ghosts = extra[torch.argsort(owner[extra] * (n + 1) + local_idx[extra])]
    recv = {int(q): int(c) for q, c in zip(*torch.unique(owner[ghosts], return_counts=True))}
    send = _send_lists(ghosts, owner, local_idx, world, group, timeout)
    pos = torch.full((n,), -1, dtype=torch.int64)
    pos[owned] = local_idx[owned]
    pos[ghosts] = torch.arange(ghosts.numel()) + owned.numel()
    new = pos[ext].to(mat.device)
    m = ext.numel()
    om = SparseTensor(mat.values.detach(), new[mat.row.long()], new[mat.col.long()], (m, m))
    return OverlapBlock(HaloPlan(rank, owned.numel(), ghosts, recv, send).to(mat.device), om, layers)
