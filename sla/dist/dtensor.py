"""``DTensor[Shard(0)]`` vectors of a :class:`~sla.dist.DSparseTensor`.

A plain ``DTensor`` with ``Shard(0)`` rebuilds its global tensor by
concatenating the local blocks in rank order; a graph partition (METIS, RCB)
does not own contiguous ranges of rows, so that order is a permutation of the
user's.  :class:`OwnedShard` is a ``DTensor`` that remembers which global rows
each rank owns: its :meth:`~OwnedShard.full_tensor` puts every entry back at its
global row, and the results of torch operations on it (``b - D @ x``, ``2 * x``,
``x.clone()``...) keep that knowledge.  Everything else is the ordinary
``DTensor`` (``to_local``, autograd, ``redistribute``).
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, Shard
from torch.utils._pytree import tree_leaves, tree_map

__all__ = ["OwnedShard", "to_dtensor", "local_block"]


class OwnedShard(DTensor):
    """``DTensor[Shard(0)]`` over an owner-grouped row order (see the module docstring)."""

    _sla_layout = None  # the DSparseTensor layout (owned rows, sizes, group)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        src = next((a for a in tree_leaves((args, kwargs)) if isinstance(a, OwnedShard)), None)
        out = super().__torch_function__(func, types, args, kwargs)
        if src is None:
            return out

        def retag(t):
            if type(t) is DTensor and t.placements == src.placements and t.shape[:1] == src.shape[:1]:
                t.__class__ = OwnedShard
                t._sla_layout = src._sla_layout
            return t

        return tree_map(retag, out)

    def full_tensor(self, *, grad_placements=None) -> torch.Tensor:
        return self._sla_layout.gather(self.to_local())


def to_dtensor(local: torch.Tensor, layout) -> OwnedShard:
    """Wrap this rank's owned block ``local`` ``[n_owned, ...]`` (differentiable)."""
    n = layout.shape[0]
    dt = DTensor.from_local(
        local, layout.mesh, [Shard(0)], run_check=False, shape=(n, *local.shape[1:]), stride=_stride(n, local)
    )
    dt.__class__ = OwnedShard
    dt._sla_layout = layout
    return dt


def _stride(n: int, local: torch.Tensor) -> tuple:
    shape = (n, *local.shape[1:])
    stride, acc = [], 1
    for s in reversed(shape):
        stride.append(acc)
        acc *= s
    return tuple(reversed(stride))


def local_block(x, layout, name: str = "x") -> tuple[torch.Tensor, bool]:
    """``(owned block, was_dtensor)`` of a ``DTensor[Shard(0)]`` or of a local block tensor."""
    if isinstance(x, DTensor):
        if not (len(x.placements) == 1 and x.placements[0] == Shard(0)):
            raise ValueError(f"{name} must be a DTensor with placements (Shard(0),), got {x.placements}")
        if isinstance(x, OwnedShard) and x._sla_layout is not None and x._sla_layout.layout_key != layout.layout_key:
            raise ValueError(f"{name} was scattered by a differently partitioned DSparseTensor")
        x = x.to_local()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a DTensor or a torch.Tensor, got {type(x).__name__}")
    if x.shape[0] != layout.n_owned:
        raise ValueError(
            f"{name} must hold this rank's {layout.n_owned} owned rows (use D.scatter), got shape {tuple(x.shape)}"
        )
    return x, True
