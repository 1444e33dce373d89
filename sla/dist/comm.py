"""Collectives with a deadline, and a count of them.

Every collective the distributed code issues goes through here: it is started
asynchronously and waited on with a timeout, so that a rank that raised (and
never joins) makes every other rank raise :class:`DistributedTimeout` instead of
hanging.  :data:`COUNTS` records how many halo exchanges and all-reduces ran
(the Krylov tests assert the count per iteration).
"""

from __future__ import annotations

import datetime
from collections import Counter

import torch
import torch.distributed as dist

__all__ = [
    "COUNTS",
    "DEFAULT_TIMEOUT",
    "DistributedTimeout",
    "all_gather_list",
    "all_reduce",
    "broadcast",
    "comm_device",
    "wait_all",
]

#: collective counters: ``"halo"`` (one neighbour exchange), ``"all_reduce"``, ``"all_gather"``
COUNTS: Counter = Counter()
#: seconds a rank waits for the others in one collective before raising
DEFAULT_TIMEOUT = 300.0


class DistributedTimeout(RuntimeError):
    """A collective did not complete in time: another rank failed or stopped."""


def _delta(timeout: float | None) -> datetime.timedelta:
    return datetime.timedelta(seconds=DEFAULT_TIMEOUT if timeout is None else float(timeout))


def comm_device(group=None) -> torch.device:
    """Where collective buffers must live: the current GPU for NCCL, the CPU otherwise."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast(t: torch.Tensor, group=None, timeout: float | None = None) -> torch.Tensor:
    """Rank 0's ``t`` (of the group) on every rank, on ``t``'s device."""
    buf = t.to(comm_device(group)).contiguous()
    src = dist.get_global_rank(group, 0) if group is not None else 0
    wait_all([dist.broadcast(buf, src=src, group=group, async_op=True)], "broadcast", timeout)
    return buf.to(t.device)


def wait_all(works, what: str, timeout: float | None = None) -> None:
    """Wait for every async ``work`` with one deadline; raise :class:`DistributedTimeout` on expiry."""
    for w in works:
        try:
            ok = w.wait(_delta(timeout))
        except RuntimeError as exc:  # gloo raises on timeout / on a peer that went away
            raise DistributedTimeout(
                f"rank {dist.get_rank()}: {what} did not complete ({exc}); another rank probably raised or stopped"
            ) from exc
        if ok is False:
            raise DistributedTimeout(f"rank {dist.get_rank()}: {what} timed out after {_delta(timeout)}")


def all_reduce(t: torch.Tensor, op=dist.ReduceOp.SUM, group=None, timeout: float | None = None) -> torch.Tensor:
    """In-place all-reduce of ``t`` with a deadline (returns ``t``)."""
    COUNTS["all_reduce"] += 1
    wait_all([dist.all_reduce(t, op=op, group=group, async_op=True)], "all_reduce", timeout)
    return t


def all_gather_list(t: torch.Tensor, sizes: list[int], group=None, timeout: float | None = None) -> list[torch.Tensor]:
    """Every rank's ``t`` (first dims ``sizes[r]``; padded internally to the largest)."""
    COUNTS["all_gather"] += 1
    pad = max(sizes) if sizes else 0
    buf = t.new_zeros(pad, *t.shape[1:], device=comm_device(group))
    buf[: t.shape[0]] = t
    chunks = [torch.empty_like(buf) for _ in sizes]
    wait_all([dist.all_gather(chunks, buf.contiguous(), group=group, async_op=True)], "all_gather", timeout)
    return [c[:s].to(t.device) for c, s in zip(chunks, sizes)]
