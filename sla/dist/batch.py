"""Sharding along the batch: :class:`DSparseBatch` (a batched SparseTensor split over the
ranks along one batch axis) and :class:`DSparseTensorList` (a SparseTensorList split
matrix by matrix).  Every product, solve and eigensolve works on the rank's own slice
without communication; only reductions and gathers talk to the other ranks.

>>> # D = DSparseTensor.partition_batch(A, mesh)   # A: [B, n, n] on every rank
>>> # y = D @ x                  # this rank's slice of the batch
>>> # x = D.solve_batch_shard(b)
>>> # A_again = D.full_tensor()
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..sparse import SparseTensor
from .comm import DEFAULT_TIMEOUT, all_gather_list, all_reduce

__all__ = ["DSparseBatch", "DSparseTensorList"]


def _where(mesh):
    from .dsparse import _mesh_and_group

    if not dist.is_initialized():
        raise RuntimeError("batch sharding needs torch.distributed: call dist.init_process_group first")
    _, group = _mesh_and_group(mesh, "cpu")
    return group, dist.get_rank(group), dist.get_world_size(group)


def _chunks(total: int, world: int) -> list[tuple[int, int]]:
    return [(r * total // world, (r + 1) * total // world) for r in range(world)]


class DSparseBatch:
    """This rank's slice ``[start, end)`` of a batched SparseTensor along batch axis ``axis``."""

    def __init__(self, A: SparseTensor, mesh=None, axis: int = 0, timeout: float | None = None):
        if not isinstance(A, SparseTensor):
            raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
        if not A.batch_shape:
            raise ValueError("partition_batch needs a batched SparseTensor [*batch, n, n], got an unbatched one")
        if not isinstance(axis, int) or not 0 <= axis < len(A.batch_shape):
            raise ValueError(f"axis must be a batch axis in [0, {len(A.batch_shape)}), got {axis!r}")
        self.group, self.rank, world = _where(mesh)
        self.axis, self.shape = axis, tuple(A.shape)
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self.bounds = _chunks(A.batch_shape[axis], world)
        self.start, self.end = self.bounds[self.rank]
        self.local = A.with_values(A.values.narrow(axis, self.start, self.end - self.start))

    @property
    def global_size(self) -> int:
        return self.shape[self.axis]

    def _slice(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``x`` itself if it is this rank's slice, its slice if it holds the whole batch."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim <= self.axis:
            raise ValueError(f"{name} must carry the batch axis {self.axis}, got shape {tuple(x.shape)}")
        if x.shape[self.axis] == self.end - self.start and self.global_size != self.end - self.start:
            return x
        if x.shape[self.axis] == self.global_size:
            return x.narrow(self.axis, self.start, self.end - self.start)
        raise ValueError(
            f"{name} must hold the whole batch ({self.global_size}) or this rank's slice "
            f"({self.end - self.start}) along axis {self.axis}, got shape {tuple(x.shape)}"
        )

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of ``A @ x`` (no communication)."""
        return self.local @ self._slice(x, "x")

    def solve_batch_shard(self, b: torch.Tensor, **kwargs) -> torch.Tensor:
        """This rank's slice of ``A^{-1} b`` (the single-process batched solve; no communication)."""
        return self.local.solve(self._slice(b, "b"), **kwargs)

    def eigsh(self, k: int = 6, **kwargs):
        """This rank's slice of the batched eigenpairs (per-rank batched LOBPCG; no communication)."""
        return self.local.eigsh(k=k, **kwargs)

    def gather(self, y: torch.Tensor) -> torch.Tensor:
        """The whole batch of per-rank slices ``y`` (along the batch axis; collective)."""
        y = y.movedim(self.axis, 0).contiguous()
        sizes = [e - s for s, e in self.bounds]
        return torch.cat(all_gather_list(y, sizes, self.group, self.timeout)).movedim(0, self.axis)

    def full_tensor(self) -> SparseTensor:
        """The whole batched SparseTensor on every rank (all-gather of the values)."""
        return self.local.with_values(self.gather(self.local.values.detach()))

    def _reduce(self, t: torch.Tensor, op) -> torch.Tensor:
        return all_reduce(t.clone(), op=op, group=self.group, timeout=self.timeout)

    def sum(self) -> torch.Tensor:
        """Sum of every entry of every matrix (one all-reduce)."""
        return self._reduce(self.local.values.sum(), dist.ReduceOp.SUM)

    def mean(self) -> torch.Tensor:
        """Mean over every entry (implicit zeros included) of every matrix."""
        return self.sum() / float(torch.tensor(self.shape, dtype=torch.float64).prod())

    def max(self) -> torch.Tensor:
        """Largest stored value (one all-reduce)."""
        v = self.local.values
        return self._reduce(v.max() if v.numel() else v.new_tensor(-torch.inf), dist.ReduceOp.MAX)

    def min(self) -> torch.Tensor:
        """Smallest stored value (one all-reduce)."""
        v = self.local.values
        return self._reduce(v.min() if v.numel() else v.new_tensor(torch.inf), dist.ReduceOp.MIN)

    def norm(self, ord="fro") -> torch.Tensor:
        """Frobenius norm of every matrix, ``[*batch]`` (the whole batch; one all-gather)."""
        if ord != "fro":
            raise ValueError(f"a batch-sharded tensor has norm('fro') only, got ord={ord!r}")
        return self.gather(self.local.norm("fro"))

    def __repr__(self) -> str:
        return f"DSparseBatch(shape={self.shape}, axis={self.axis}, rank={self.rank}, slice=[{self.start}, {self.end}))"


class DSparseTensorList:
    """This rank's matrices of a :class:`~sla.SparseTensorList` (contiguous chunks of the list)."""

    def __init__(self, tensors, bounds, group, rank, timeout):
        from ..sparse_list import SparseTensorList

        self.local = SparseTensorList(tensors) if tensors else None
        self.bounds, self.group, self.rank, self.timeout = bounds, group, rank, timeout

    @classmethod
    def partition(cls, tensors, mesh=None, timeout: float | None = None) -> DSparseTensorList:
        """Split a SparseTensorList (the same on every rank) into contiguous chunks, one a rank."""
        group, rank, world = _where(mesh)
        items = list(tensors)
        bounds = _chunks(len(items), world)
        s, e = bounds[rank]
        return cls(items[s:e], bounds, group, rank, DEFAULT_TIMEOUT if timeout is None else timeout)

    def __len__(self) -> int:
        return self.bounds[-1][1]

    def gather(self):
        """The whole SparseTensorList on every rank (collective)."""
        import pickle

        from ..sparse_list import SparseTensorList

        mine = [(t.values.detach().cpu(), t.row.cpu(), t.col.cpu(), t.shape) for t in (self.local or [])]
        blob = torch.frombuffer(bytearray(pickle.dumps(mine)), dtype=torch.uint8)
        sizes = [int(s) for s in torch.cat(all_gather_list(torch.tensor([blob.numel()]), [1] * len(self.bounds)))]
        parts = all_gather_list(blob, sizes, self.group, self.timeout)
        out = []
        for p in parts:
            out += [SparseTensor(v, r, c, s) for v, r, c, s in pickle.loads(p.numpy().tobytes())]
        return SparseTensorList(out)

    def matmul(self, xs):
        """This rank's products (no communication)."""
        return [] if self.local is None else self.local.matmul(xs)

    __matmul__ = matmul

    def __repr__(self) -> str:
        s, e = self.bounds[self.rank]
        return f"DSparseTensorList(len={len(self)}, rank={self.rank}, items=[{s}, {e}))"
