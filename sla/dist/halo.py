"""Halo exchange over ``torch.distributed`` point-to-point messages.

A rank's local matrix has its owned columns first and then *ghost* columns:
entries of vectors owned by neighbours.  A :class:`HaloPlan` says which owned
entries go to which neighbour and how many ghosts come from each; every rank
builds its plan from the global pattern and the partition alone, so the send
order of one rank is, by construction, the receive order of the other (ghosts
sorted by their owner, then by position inside the owner's block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .comm import COUNTS, wait_all
from .partition import Partition


def _coo(indices, values, size):
    return torch.sparse_coo_tensor(indices, values, size, check_invariants=False)


__all__ = ["HaloPlan", "build_plan", "exchange", "exchange_rows", "plan_from_sets", "reverse_exchange"]


@dataclass
class HaloPlan:
    rank: int
    n_owned: int
    ghosts: torch.Tensor  # [n_ghost] global rows of the ghost columns, in receive order
    recv: dict  # neighbour -> number of ghosts it sends us (in ghost order)
    send: dict  # neighbour -> local indices of our owned entries it needs

    @property
    def n_ghost(self) -> int:
        return self.ghosts.numel()

    def to(self, device: str | torch.device) -> HaloPlan:
        return HaloPlan(
            self.rank,
            self.n_owned,
            self.ghosts.to(device),
            dict(self.recv),
            {q: i.to(device) for q, i in self.send.items()},
        )


def build_plan(row: torch.Tensor, col: torch.Tensor, part: Partition, rank: int) -> HaloPlan:
    """The plan of ``rank`` from the global pattern (``row``, ``col`` on the CPU)."""
    parts, local = part.parts, part.local
    mine = parts[row] == rank
    # ghosts: columns of my rows owned by others, sorted by (owner, local index)
    gc = torch.unique(col[mine & (parts[col] != rank)])
    order = torch.argsort(parts[gc] * (part.perm.numel() + 1) + local[gc])
    ghosts = gc[order]
    recv = {int(q): int(c) for q, c in zip(*torch.unique(parts[ghosts], return_counts=True))}
    # what each neighbour q needs from me: my rows that appear as columns of q's rows
    need = (parts[col] == rank) & (parts[row] != rank)
    send = {}
    for q in torch.unique(parts[row[need]]).tolist():
        cols = torch.unique(col[need & (parts[row] == q)])
        send[int(q)] = local[cols].sort().values
    return HaloPlan(rank, part.sizes()[rank], ghosts, recv, send)


def plan_from_sets(ext: torch.Tensor, ext_rank: torch.Tensor, part: Partition, rank: int) -> HaloPlan:
    """A plan whose ghosts are arbitrary non-owned rows (e.g. Schwarz overlap layers).

    ``ext``/``ext_rank`` list pairs (global row, rank that needs it), for every rank,
    rows not owned by that rank; every rank computes the same lists, so send and
    receive orders agree (ghosts sorted by owner, then by local index).
    """
    parts, local = part.parts, part.local
    key = parts * (part.perm.numel() + 1) + local
    mine = ext[ext_rank == rank]
    ghosts = mine[torch.argsort(key[mine])]
    recv = {int(q): int(c) for q, c in zip(*torch.unique(parts[ghosts], return_counts=True))}
    need = parts[ext] == rank
    send = {}
    for q in torch.unique(ext_rank[need]).tolist():
        send[int(q)] = local[ext[need & (ext_rank == q)]].sort().values
    return HaloPlan(rank, part.sizes()[rank], ghosts, recv, send)


def exchange(
    plan: HaloPlan, x: torch.Tensor, group: dist.ProcessGroup | None = None, timeout: float | None = None
) -> torch.Tensor:
    """Ghost values ``[n_ghost, *x.shape[1:]]`` for the owned block ``x`` ``[n_owned, ...]``
    (only the boundary values travel; neighbours only)."""
    COUNTS["halo"] += 1
    ops, bufs = [], {}
    for q, idx in plan.send.items():
        ops.append(dist.P2POp(dist.isend, x[idx].contiguous(), _peer(q, group), group))
    for q, count in plan.recv.items():
        bufs[q] = x.new_empty(count, *x.shape[1:])
        ops.append(dist.P2POp(dist.irecv, bufs[q], _peer(q, group), group))
    if ops:
        wait_all(dist.batch_isend_irecv(ops), "halo exchange", timeout)
    if not bufs:
        return x.new_empty(0, *x.shape[1:])
    return torch.cat([bufs[q] for q in sorted(bufs)])


def reverse_exchange(
    plan: HaloPlan, g: torch.Tensor, group: dist.ProcessGroup | None = None, timeout: float | None = None
) -> torch.Tensor:
    """The transpose of :func:`exchange`: ghost contributions ``g`` ``[n_ghost, ...]`` go
    back to their owners, which sum them into ``[n_owned, ...]``."""
    COUNTS["halo"] += 1
    ops, bufs, start = [], {}, 0
    for q, count in plan.recv.items():  # ghosts q sent us, in ghost order
        ops.append(dist.P2POp(dist.isend, g[start : start + count].contiguous(), _peer(q, group), group))
        start += count
    for q, idx in plan.send.items():
        bufs[q] = g.new_empty(idx.numel(), *g.shape[1:])
        ops.append(dist.P2POp(dist.irecv, bufs[q], _peer(q, group), group))
    if ops:
        wait_all(dist.batch_isend_irecv(ops), "halo exchange", timeout)
    out = g.new_zeros(plan.n_owned, *g.shape[1:])
    for q, idx in plan.send.items():
        out.index_add_(0, idx, bufs[q])
    return out


def exchange_rows(
    plan: HaloPlan, rows: torch.Tensor, group: dist.ProcessGroup | None = None, timeout: float | None = None
) -> torch.Tensor:
    """The ghost rows of a sparse matrix with owned rows ``rows`` (a real COO ``[n_owned, m]``
    torch sparse tensor): a coalesced COO ``[n_ghost, m]`` (two neighbour exchanges)."""
    rows = rows.coalesce()
    idx, val = rows.indices(), rows.values()
    n, m = rows.shape
    counts = torch.bincount(idx[0], minlength=n)
    gcount = exchange(plan, counts[:, None].to(torch.float64), group, timeout)[:, 0].round().long()
    crow = torch.zeros(n + 1, dtype=torch.int64, device=val.device)
    crow[1:] = torch.cumsum(counts, 0)
    packed = torch.stack([idx[1].to(torch.float64), val.to(torch.float64)], 1)  # columns exact below 2**53
    COUNTS["halo"] += 1
    ops, bufs = [], {}
    for q, sel in plan.send.items():
        out = packed[_ranges(crow[sel], counts[sel])]
        ops.append(dist.P2POp(dist.isend, out.contiguous(), _peer(q, group), group))
    start = 0
    for q, c in sorted(plan.recv.items()):
        bufs[q] = packed.new_empty(int(gcount[start : start + c].sum()), 2)
        ops.append(dist.P2POp(dist.irecv, bufs[q], _peer(q, group), group))
        start += c
    if ops:
        wait_all(dist.batch_isend_irecv(ops), "row exchange", timeout)
    got = torch.cat([bufs[q] for q in sorted(bufs)]) if bufs else packed.new_empty(0, 2)
    r = torch.repeat_interleave(torch.arange(plan.n_ghost, device=val.device), gcount)
    return _coo(torch.stack([r, got[:, 0].round().long()]), got[:, 1].to(val.dtype), (plan.n_ghost, m)).coalesce()


def _ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated ``arange(s, s + l)`` for every pair (vectorised)."""
    total = int(lengths.sum())
    first = torch.cumsum(lengths, 0) - lengths
    return torch.repeat_interleave(starts - first, lengths, output_size=total) + torch.arange(
        total, device=starts.device
    )


def _peer(rank_in_group: int, group) -> int:
    return rank_in_group if group is None else dist.get_global_rank(group, rank_in_group)
