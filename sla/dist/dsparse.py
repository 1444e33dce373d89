"""DSparseTensor: a square sparse matrix distributed by rows over ``torch.distributed``.

Each rank holds the rows it owns as a local SparseTensor whose columns are its
owned entries followed by *ghost* entries owned by neighbours; ``D @ x`` is one
halo exchange (only the boundary values, only with neighbours) plus one local
product.  Vectors are ``DTensor[Shard(0)]`` (:mod:`sla.dist.dtensor`) on a
``DeviceMesh``, or plain tensors holding this rank's owned rows.

Krylov solves reuse :mod:`sla.solvers.krylov` unchanged: the operator is the
halo product and the inner product all-reduces the local sums.  Solves are
differentiable in ``b`` and in the local values (the adjoint solve of
:class:`sla.solvers.linear.adjoint.LinearSolve` runs distributed with ``A^H``).
``D.eigsh(k=)`` is the single-process LOBPCG on row-sharded blocks
(:mod:`sla.dist.eigsh`).

>>> # every rank, after dist.init_process_group("gloo"):
>>> # mesh = init_device_mesh("cpu", (dist.get_world_size(),))
>>> # D = DSparseTensor.partition(A, mesh, partition_method="metis")
>>> # with SolverConfig(method="cg", rtol=1e-10):
>>> #     x_dt = sla.solve(D, D.scatter(b))
>>> # x = x_dt.full_tensor()
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..sparse import SparseTensor
from .comm import DEFAULT_TIMEOUT, all_gather_list, broadcast
from .eigsh import DistEigsh
from .halo import HaloPlan, build_plan, exchange
from .ops import DistOps
from .partition import Partition, partition
from .solve import DistSolve

__all__ = ["DSparseTensor", "DSparseMatrix"]


def _mesh_and_group(where, device_type: str):
    """``(mesh or None, group or None)`` from a DeviceMesh, a ProcessGroup or ``None`` (the world)."""
    from torch.distributed.device_mesh import DeviceMesh

    if isinstance(where, DeviceMesh):
        if where.ndim != 1:
            raise ValueError(f"mesh must be 1-D (one axis of ranks), got a {where.ndim}-D DeviceMesh")
        return where, where.get_group()
    if where is None or isinstance(where, dist.ProcessGroup):
        return None, where
    raise TypeError(f"mesh must be a DeviceMesh, a ProcessGroup or None, got {type(where).__name__}")


class DSparseTensor(DistSolve, DistEigsh, DistOps):
    """This rank's rows of a distributed ``n x n`` matrix (see the module docstring).

    Build with :meth:`partition` (a global matrix on every rank), :meth:`from_local`
    (each rank's own rows, e.g. assembled from its own cells) or :meth:`load`.
    """

    def __init__(
        self,
        local: SparseTensor,
        plan: HaloPlan,
        owned: torch.Tensor,
        sizes: list[int],
        shape: tuple,
        mesh=None,
        group=None,
        part: Partition | None = None,
        method: str = "given",
        overlap=None,
        timeout: float | None = None,
    ):
        self.local = local
        self.plan = plan.to(local.device)
        self.owned = owned.cpu()
        self.sizes = list(sizes)
        self.shape = tuple(shape)
        self._mesh, self.group = mesh, group
        self.part = part
        self.method = method
        self.overlap = overlap
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self._prec = {}
        self._cache = {}

    # ------------------------------------------------------------ building
    @classmethod
    def partition(
        cls,
        A: SparseTensor,
        mesh=None,
        partition_method: str | None = None,
        *,
        method: str | None = None,
        coords: torch.Tensor | None = None,
        overlap: int = 2,
        timeout: float | None = None,
    ) -> DSparseTensor:
        """Distribute ``A`` (the same global matrix on every rank; collective).

        Parameters
        ----------
        A : SparseTensor
            Square, unbatched (batched matrices: :class:`~sla.dist.DSparseBatch`).
        mesh : DeviceMesh or ProcessGroup, optional
            1-D mesh of the ranks (default: every rank of the world group).
        partition_method : {'metis', 'contiguous', 'rcb'}
            Row ownership (default ``'metis'``; ``'rcb'`` needs ``coords`` ``[n, d]``).
            ``method=`` is the older spelling.
        overlap : int
            Layers of neighbouring rows each rank keeps for the Schwarz preconditioner
            (0: none, the ``'schwarz'`` preconditioner is then unavailable).
        timeout : float, optional
            Seconds a collective waits for the other ranks before raising.
        """
        if not dist.is_initialized():
            raise RuntimeError("DSparseTensor.partition needs torch.distributed: call dist.init_process_group first")
        if not isinstance(A, SparseTensor):
            raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
        if A.batch_shape:
            raise ValueError(
                f"DSparseTensor holds one matrix, got batch shape {A.batch_shape} (use DSparseBatch.partition)"
            )
        if partition_method is not None and method is not None and partition_method != method:
            raise ValueError(f"partition_method={partition_method!r} and method={method!r} disagree; give one")
        pm = partition_method or method or "metis"
        if pm == "simple":  # the seed's name for contiguous blocks
            pm = "contiguous"
        if not isinstance(overlap, int) or overlap < 0:
            raise ValueError(f"overlap must be a non-negative integer number of layers, got {overlap!r}")
        mesh, group = _mesh_and_group(mesh, A.device.type)
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        part = partition(A, world, pm, coords=coords)
        parts = broadcast(part.parts, group, timeout)  # rank 0's partition everywhere (partitioners may differ)
        if not torch.equal(parts, part.parts):
            from .partition import from_parts

            part = from_parts(parts, world, pm, part.edge_cut)
        p = A.pattern.to("cpu")
        plan = build_plan(p.row, p.col, part, rank)
        mine = torch.nonzero(part.parts[p.row] == rank).flatten()
        gcol = p.col[mine]
        ghost_of = torch.full((A.sparse_shape[0],), -1, dtype=torch.int64)
        ghost_of[plan.ghosts] = torch.arange(plan.n_ghost) + plan.n_owned
        owned = part.parts[gcol] == rank
        lcol = torch.where(owned, part.local[gcol], ghost_of[gcol])
        lrow = part.local[p.row[mine]]
        dev = A.device
        local = SparseTensor(
            A.values[..., mine.to(dev)], lrow.to(dev), lcol.to(dev), (plan.n_owned, plan.n_owned + plan.n_ghost)
        )
        ov = None
        if overlap > 0 and world > 1:
            from .schwarz import overlap_block

            ov = overlap_block(A, part, rank, overlap)
        return cls(local, plan, part.owned(rank), part.sizes(), A.shape, mesh, group, part, pm, ov, timeout)

    @classmethod
    def partition_batch(cls, A: SparseTensor, mesh=None, *, axis: int = 0, timeout: float | None = None):
        """Shard a batched ``A`` ``[*batch, n, n]`` along batch axis ``axis`` (a :class:`~sla.dist.DSparseBatch`)."""
        from .batch import DSparseBatch

        return DSparseBatch(A, mesh, axis, timeout)

    @classmethod
    def from_local(
        cls,
        local: SparseTensor,
        owned: torch.Tensor,
        shape: tuple,
        mesh=None,
        *,
        overlap=None,
        timeout: float | None = None,
    ) -> DSparseTensor:
        """Build from each rank's own rows, without a global matrix (collective).

        Parameters
        ----------
        local : SparseTensor
            ``[n_owned, n]`` this rank's rows with *global* column indices.
        owned : torch.Tensor
            ``[n_owned]`` the global rows this rank owns (every global row owned by exactly one rank).
        shape : tuple
            ``(n, n)``.
        overlap : OverlapBlock, optional
            This rank's extended subdomain (see :mod:`sla.dist.schwarz`), if it assembled one.
        """
        from .local import build_from_local

        return build_from_local(cls, local, owned, shape, mesh, overlap, timeout)

    # ------------------------------------------------------------ layout
    @property
    def rank(self) -> int:
        return self.plan.rank

    @property
    def world_size(self) -> int:
        return len(self.sizes)

    @property
    def num_partitions(self) -> int:
        """Number of ranks (the seed's name)."""
        return len(self.sizes)

    @property
    def n_owned(self) -> int:
        return self.plan.n_owned

    @property
    def device(self) -> torch.device:
        return self.local.device

    @property
    def dtype(self) -> torch.dtype:
        return self.local.dtype

    @property
    def mesh(self):
        """The 1-D DeviceMesh of the ranks (built from the group on first use; collective then)."""
        if self._mesh is None:
            from torch.distributed.device_mesh import DeviceMesh

            self._mesh = DeviceMesh.from_group(self.group or dist.group.WORLD, self.device.type)
        return self._mesh

    @property
    def layout_key(self) -> tuple:
        return (
            self.shape,
            tuple(self.sizes),
            self.method,
            id(self.plan.ghosts) if self.part is None else id(self.part),
        )

    @property
    def col_owner(self) -> torch.Tensor:
        """``[n_owned + n_ghost]`` owning rank of each local column."""
        if "col_owner" not in self._cache:
            own = [torch.full((c,), q, dtype=torch.int64) for q, c in sorted(self.plan.recv.items())]
            self._cache["col_owner"] = torch.cat([torch.full((self.n_owned,), self.rank, dtype=torch.int64), *own])
        return self._cache["col_owner"]

    def __repr__(self) -> str:
        return (
            f"DSparseTensor(shape={self.shape}, rank={self.rank}/{self.world_size}, owned={self.n_owned}, "
            f"ghosts={self.plan.n_ghost}, nnz_local={self.local.nnz}, method={self.method})"
        )

    # ------------------------------------------------------------- vectors
    def scatter(self, b: torch.Tensor):
        """This rank's rows of a global vector ``[n]`` / ``[n, K]`` as a ``DTensor[Shard(0)]``."""
        from .dtensor import to_dtensor

        return to_dtensor(self.scatter_local(b), self)

    def scatter_local(self, b: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global vector ``[n]`` / ``[n, K]`` (a plain tensor)."""
        if not isinstance(b, torch.Tensor) or b.ndim not in (1, 2) or b.shape[0] != self.shape[0]:
            raise ValueError(f"b must be a tensor [{self.shape[0]}] or [{self.shape[0]}, K], got {_shape(b)}")
        return b[self.owned.to(b.device)]

    def _all_owned(self) -> torch.Tensor:
        if "all_owned" not in self._cache:
            if self.part is not None:
                self._cache["all_owned"] = self.part.perm
            else:
                ids = all_gather_list(self.owned, self.sizes, self.group, self.timeout)
                self._cache["all_owned"] = torch.cat(ids)
        return self._cache["all_owned"]

    def gather(self, x) -> torch.Tensor:
        """The global vector from every rank's owned rows (collective; every rank gets it)."""
        from .dtensor import local_block

        x, _ = local_block(x, self)
        ordered = torch.cat(all_gather_list(x, self.sizes, self.group, self.timeout))
        out = torch.empty_like(ordered)
        out[self._all_owned().to(x.device)] = ordered
        return out

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, exchange(self.plan, x, self.group, self.timeout)])

    def __matmul__(self, x):
        """``D @ x`` for a ``DTensor[Shard(0)]`` (returns one) or an owned block ``[n_owned(, K)]``."""
        from .dtensor import local_block, to_dtensor

        is_dt = not isinstance(x, torch.Tensor) or hasattr(x, "placements")
        xl, _ = local_block(x, self)
        y = self.apply(xl)
        return to_dtensor(y, self) if is_dt else y

    # ------------------------------------------------------------ storage
    def save(self, directory) -> None:
        """Per-rank ``partition_<rank>.safetensors`` + ``metadata.json`` in ``directory`` (collective, atomic)."""
        from .store import save

        save(self, directory)

    @classmethod
    def load(cls, directory, mesh=None, device=None, timeout: float | None = None) -> DSparseTensor:
        """This rank's piece of a directory written by :meth:`save` on as many ranks (collective)."""
        from .store import load

        return load(cls, directory, mesh, device, timeout)


DSparseMatrix = DSparseTensor


def _shape(b) -> str:
    return str(tuple(b.shape)) if isinstance(b, torch.Tensor) else type(b).__name__
