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


class TwoLevelSchwarz:
    """The two-level preconditioner of a DSparseTensor ``D`` (see the module docstring).

    Parameters
    ----------
    D : DSparseTensor
        Built with ``overlap >= 1`` layers.
    local : str
        Approximate inverse of each extended subdomain matrix (``'amg'``, ``'jacobi'``, ...).
    coarse : bool
        Add the Nicolaides coarse space.
    **options
        Passed to the local preconditioner.
    """

    def __init__(self, D, local: str = "amg", coarse: bool = True, **options):
        if D.overlap is None:
            raise ValueError("the Schwarz preconditioner needs overlap layers: DSparseTensor.partition(..., overlap=2)")
        self.D, self.block = D, D.overlap
        self.local = make_preconditioner(self.block.matrix.detach(), local, **options)
        self.n = D.n_owned
        self.coarse = coarse
        if coarse:
            loc = D.local.detach()
            owner = D.col_owner.to(loc.device)
            nparts = D.world_size
            AZ = torch.zeros(self.n, nparts, dtype=loc.dtype, device=loc.device)
            AZ.index_put_((loc.row.long(), owner[loc.col.long()]), loc.values, accumulate=True)
            E = torch.zeros(nparts, nparts, dtype=loc.dtype, device=loc.device)
            E[D.rank] = AZ.sum(0)
            all_reduce(E, group=D.group, timeout=D.timeout)
            empty = torch.tensor([s == 0 for s in D.sizes], device=E.device)
            E = E + torch.diag(empty.to(E.dtype))  # a rank owning nothing has no coarse function
            self.AZ, self.Einv = AZ, torch.linalg.pinv(E)

    def _coarse(self, c_local: torch.Tensor) -> torch.Tensor:
        """``E^+ c`` for this rank's contribution ``c_local`` ``[nparts, K]`` summed over ranks."""
        all_reduce(c_local, group=self.D.group, timeout=self.D.timeout)
        return self.Einv.to(c_local.dtype) @ c_local

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
        rank, nparts = self.D.rank, self.D.world_size
        c = r.new_zeros(nparts, r.shape[1])
        c[rank] = r.sum(0)
        y = self._coarse(c)  # Q r = Z y
        s = r - self.AZ.to(r.dtype) @ y  # (I - A Q) r
        t = self.one_level(s)
        u = t - (self._coarse_of(t))[rank]  # (I - Q A) t, with Z^T A t ~ (A Z)^T t
        return (u + y[rank])[None]

    def _coarse_of(self, t: torch.Tensor) -> torch.Tensor:
        return self._coarse(self.AZ.to(t.dtype).mT @ t)

    def adjoint(self) -> TwoLevelSchwarz:
        """Preconditioner for ``A^H`` (the same one: Schwarz here is built for Hermitian ``A``)."""
        return self
