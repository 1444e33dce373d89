"""Two-level overlapping Schwarz preconditioner for :class:`~sla.dist.DSparseTensor`.

One level: every rank owns an *extended* subdomain, its rows plus ``overlap``
layers of neighbouring rows (taken from the global pattern at partition time,
so no communication is needed to build it), and approximately inverts the
matrix restricted to it (``local``: a smoothed-aggregation AMG cycle by
default, any :func:`~sla.solvers.precond.make_preconditioner` name).  The
corrections are added back on the owners (symmetric additive Schwarz, so CG may
use it).

Coarse level (Nicolaides): one constant per subdomain, ``Z[:, p] = 1`` on the
rows rank ``p`` owns.  ``A Z`` is local (a row's entry ``a_ij`` lands in the
column of ``j``'s owner), ``E = Z^T A Z`` is ``nparts x nparts`` (one
all-reduce at build time).  The two levels are combined multiplicatively
(the "balancing" form ``P = Q + (I - Q A) M (I - A Q)`` with
``Q = Z E^+ Z^T``), which needs no extra matrix products: ``A Q r`` is
``(A Z) E^+ Z^T r``.  Per application: two overlap exchanges (forward and
reverse) and two all-reduces of ``nparts`` numbers.

Without overlap a coarse space does not help (the subdomain problems then see
homogeneous Dirichlet data at the cut); overlap of a few layers plus the coarse
space keeps the iteration count nearly flat as ranks are added.
"""

from __future__ import annotations

import numpy as np
import torch

from ..solvers.precond import make_preconditioner
from ..sparse import SparseTensor
from .comm import all_reduce
from .halo import HaloPlan, exchange, plan_from_sets, reverse_exchange
from .partition import Partition


def _coo(indices, values, size):
    return torch.sparse_coo_tensor(indices, values, size, check_invariants=False)


__all__ = ["OverlapBlock", "TwoLevelSchwarz", "overlap_block"]


class OverlapBlock:
    """This rank's extended subdomain: its exchange plan and matrix (local numbering: owned, then overlap)."""

    def __init__(self, plan: HaloPlan, matrix: SparseTensor, layers: int):
        self.plan, self.matrix, self.layers = plan, matrix, layers

    def map_values(self, fn) -> OverlapBlock:
        """The same block with ``fn`` applied to the stored values (for ``D * s``, ``D.abs()``...)."""
        return OverlapBlock(self.plan, self.matrix.with_values(fn(self.matrix.values)), self.layers)

    def to(self, device) -> OverlapBlock:
        return OverlapBlock(self.plan.to(device), self.matrix.to(device), self.layers)


def overlap_block(A: SparseTensor, part: Partition, rank: int, layers: int) -> OverlapBlock:
    """``rank``'s extended subdomain of the global ``A``: its rows grown by ``layers`` graph layers."""
    import scipy.sparse as sp

    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"overlap must be a positive integer number of layers, got {layers!r}")
    p = A.pattern.to("cpu")
    n, nparts = p.shape[0], part.nparts
    S = sp.csr_array((np.ones(p.nnz, dtype=np.int8), p.ccol.numpy(), p.crow.numpy()), shape=p.shape)
    S = ((S + S.T + sp.eye_array(n, dtype=np.int8, format="csr")) != 0).astype(np.int8)
    M = sp.csr_array((np.ones(n, dtype=np.int8), (np.arange(n), part.parts.numpy())), shape=(n, nparts))
    for _ in range(layers):
        M = ((S @ M) != 0).astype(np.int8)
    M = M.tocoo()
    ext, ext_rank = torch.from_numpy(M.row.astype(np.int64)), torch.from_numpy(M.col.astype(np.int64))
    other = part.parts[ext] != ext_rank
    plan = plan_from_sets(ext[other], ext_rank[other], part, rank)
    nodes = torch.cat([part.owned(rank), plan.ghosts])
    pos = torch.full((n,), -1, dtype=torch.int64)
    pos[nodes] = torch.arange(nodes.numel())
    keep = torch.nonzero((pos[p.row] >= 0) & (pos[p.col] >= 0)).flatten()
    m = nodes.numel()
    vals = A.values.detach()[..., keep.to(A.device)]
    mat = SparseTensor(vals, pos[p.row[keep]].to(A.device), pos[p.col[keep]].to(A.device), (m, m))
    return OverlapBlock(plan.to(A.device), mat, layers)


def _aggregates(B: SparseTensor, size: int) -> tuple[torch.Tensor, int]:
    """Aggregates of the graph of ``B`` grown (aggregating aggregates) to about ``size`` nodes each.

    On the CPU pyamg's standard aggregation (MIS(2) in torch without pyamg); on a GPU the
    torch MIS(2) aggregation, on the device.  Returns ``agg`` on ``B``'s device.
    """
    from ..solvers.precond.aggregate import aggregate

    n, dev = B.shape[0], B.device
    method = "mis2" if dev.type != "cpu" or not _has_pyamg() else "standard"
    agg, nagg = torch.arange(n, device=dev), n
    p = B.pattern
    row, col = p.row.long(), p.col.long()
    while n and n / nagg < size and nagg > 1:
        off = row != col
        r, c = agg[row[off]], agg[col[off]]
        keep = r != c
        key = torch.unique(r[keep] * nagg + c[keep])
        r, c = key // nagg, key % nagg
        crow = torch.zeros(nagg + 1, dtype=torch.int64, device=dev)
        crow[1:] = torch.cumsum(torch.bincount(r, minlength=nagg), 0)
        a, m = aggregate(crow, c, nagg, method)
        a = torch.as_tensor(a, dtype=torch.int64).to(dev)
        lone = a < 0  # left out: each its own aggregate
        a[lone] = torch.arange(int(lone.sum()), device=dev) + int(m)
        m = int(m) + int(lone.sum())
        if m >= nagg:  # no progress (isolated nodes)
            break
        agg, nagg = a[agg], m
    return agg, nagg


def _has_pyamg() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyamg") is not None


class TwoLevelSchwarz:
    """The two-level preconditioner of a DSparseTensor ``D`` (see the module docstring).

    Parameters
    ----------
    D : DSparseTensor
        Built with ``overlap >= 1`` layers.
    local : str
        Approximate inverse of each extended subdomain matrix (``'amg'``, ``'jacobi'``, ...).
    coarse : bool
        Add the coarse space.
    coarse_size : int
        Rows per coarse function: each rank aggregates its own rows (smoothed-aggregation
        aggregates, aggregated again until about this size); 0 gives one function per rank
        (Nicolaides).  The coarse matrix has ``~n / coarse_size`` rows, factored on every rank.
    **options
        Passed to the local preconditioner.
    """

    def __init__(self, D, local: str = "amg", coarse: bool = True, coarse_size: int = 64, **options):
        from .comm import all_gather_list

        if D.overlap is None:
            raise ValueError("the Schwarz preconditioner needs overlap layers: DSparseTensor.partition(..., overlap=2)")
        if not isinstance(coarse_size, int) or coarse_size < 0:
            raise ValueError(f"coarse_size must be a non-negative integer, got {coarse_size!r}")
        self.D, self.block = D, D.overlap
        self.local = make_preconditioner(self.block.matrix.detach(), local, **options)
        self.n = D.n_owned
        self.coarse = coarse
        if not coarse:
            return
        loc = D.local.detach()
        dev = loc.device
        if coarse_size == 0 or self.n == 0:
            agg, nagg = torch.zeros(self.n, dtype=torch.int64, device=D.device), min(self.n, 1)
        else:
            agg, nagg = _aggregates(D._owned_block(), coarse_size)
        counts = [int(c) for c in torch.cat(all_gather_list(torch.tensor([nagg]), [1] * D.world_size, D.group))]
        offset = sum(counts[: D.rank])
        self.nc = sum(counts)
        gagg = (agg + offset).to(dev)
        ghost_agg = exchange(D.plan, gagg.double()[:, None], D.group, D.timeout)[:, 0].round().long()
        col_agg = torch.cat([gagg, ghost_agg])
        # A Z: row i, column agg(j), value a_ij (local rows), as a CSR [n_owned, nc]
        key = loc.row.long() * self.nc + col_agg[loc.col.long()]
        uk, inv = torch.unique(key, return_inverse=True)
        v = torch.zeros(uk.numel(), dtype=loc.dtype, device=dev).index_add_(0, inv, loc.values)
        self.AZ = _coo(torch.stack([uk // self.nc, uk % self.nc]), v, (self.n, self.nc)).to_sparse_csr()
        self.AZt = _coo(torch.stack([uk % self.nc, uk // self.nc]), v, (self.nc, self.n)).to_sparse_csr()
        self.agg = gagg
        # E = Z^T A Z: my aggregates' rows, gathered on every rank and factored there
        ekey = torch.unique(gagg[uk // self.nc] * self.nc + uk % self.nc, return_inverse=True)
        ev = torch.zeros(ekey[0].numel(), dtype=loc.dtype, device=dev).index_add_(0, ekey[1], v)
        ij = torch.stack([ekey[0] // self.nc, ekey[0] % self.nc], 1)
        sizes = [int(c) for c in torch.cat(all_gather_list(torch.tensor([ev.numel()]), [1] * D.world_size, D.group))]
        ev = torch.cat(all_gather_list(ev, sizes, D.group, D.timeout))
        ij = torch.cat(all_gather_list(ij, sizes, D.group, D.timeout))
        E = SparseTensor(ev, ij[:, 0], ij[:, 1], (self.nc, self.nc))
        self.coarse_lu = E.lu()

    def _coarse(self, c_local: torch.Tensor) -> torch.Tensor:
        """``E^{-1} c`` for this rank's contribution ``c_local`` ``[nc, K]`` summed over ranks."""
        all_reduce(c_local, group=self.D.group, timeout=self.D.timeout)
        return self.coarse_lu.solve(c_local)

    def one_level(self, r: torch.Tensor) -> torch.Tensor:
        """Additive Schwarz on ``r`` ``[n_owned, K]``."""
        plan, grp, to = self.block.plan, self.D.group, self.D.timeout
        r_ext = torch.cat([r, exchange(plan, r, grp, to)])
        z_ext = self.local(r_ext[None])[0]
        return z_ext[: self.n] + reverse_exchange(plan, z_ext[self.n :], grp, to)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """``P r`` for ``r`` ``[1, n_owned, K]``."""
        r = r[0]
        if not self.coarse:
            return self.one_level(r)[None]
        c = r.new_zeros(self.nc, r.shape[1]).index_add_(0, self.agg, r)
        y = self._coarse(c)  # Q r = Z y
        s = r - self.AZ @ y  # (I - A Q) r
        t = self.one_level(s)
        u = t - self._coarse(self.AZt @ t)[self.agg]  # (I - Q A) t, with Z^T A t = (A Z)^T t (A Hermitian)
        return (u + y[self.agg])[None]

    def adjoint(self) -> TwoLevelSchwarz:
        """Preconditioner for ``A^H`` (the same one: Schwarz here is built for Hermitian ``A``)."""
        return self
