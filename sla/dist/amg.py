"""Distributed smoothed-aggregation multigrid for :class:`~sla.dist.DSparseTensor`.

The finest level stays distributed: every rank aggregates its own rows
(decoupled aggregation, :func:`sla.solvers.precond.aggregate.aggregate`),
smooths the tentative prolongator with one damped-Jacobi step
(``P = (I - w D^-1 A) Z``, local rows; ghost rows of ``P`` come from the
neighbours once, at setup) and contributes its rows of ``P^T A P``.  The
coarse matrix (about ``n / 9`` rows in 2D) is gathered on every rank and
handled there by the single-process AMG hierarchy (or a factorisation when
small): the coarse levels run redundantly, without communication.

One V-cycle: two damped-Jacobi sweeps (one halo exchange: the first starts from
zero), the residual (one), the restriction (one all-reduce of the coarse vector),
the coarse cycle (local), the prolongation (local), two sweeps (two halo
exchanges).  Pre- and post-smoothing mirror each other, so the cycle is
symmetric and CG may use it.  Iteration counts stay close to the
single-process AMG's as ranks are added.
"""

from __future__ import annotations

import torch

from ..solvers.precond import make_preconditioner
from ..sparse import SparseTensor
from .comm import all_gather_list, all_reduce
from .halo import exchange, exchange_rows
from .schwarz import _aggregates


def _coo(indices, values, size):
    return torch.sparse_coo_tensor(indices, values, size, check_invariants=False)


__all__ = ["DistributedAMG"]


class DistributedAMG:
    """Two distributed levels of smoothed aggregation over a gathered single-process hierarchy.

    Parameters
    ----------
    D : DSparseTensor
        A Hermitian positive definite matrix (real).
    aggregate_size : int
        Aggregate the owned rows until aggregates hold about this many rows (one pass gives ~9 in 2D).
    sweeps : int
        Damped-Jacobi sweeps before and after the coarse correction.
    coarse : str
        Preconditioner of the gathered coarse matrix (``'amg'``; ``'lu'`` factors it).
    direct_below : int
        Factor the coarse matrix instead when it has fewer rows.
    """

    def __init__(self, D, aggregate_size: int = 4, sweeps: int = 2, coarse: str = "amg", direct_below: int = 3000):
        if D.dtype.is_complex:
            raise TypeError("preconditioner 'distributed_amg' needs a real matrix, got " + str(D.dtype))
        if not isinstance(sweeps, int) or sweeps < 1:
            raise ValueError(f"sweeps must be a positive integer, got {sweeps!r}")
        self.D, self.sweeps = D, sweeps
        loc = D.local.detach()
        dev, n = loc.device, D.n_owned
        row, col, val = loc.row.long(), loc.col.long(), loc.values
        diag = torch.zeros(n, dtype=val.dtype, device=dev).index_add_(0, row[row == col], val[row == col])
        if bool((diag <= 0).any()):
            raise ValueError("preconditioner 'distributed_amg' needs a positive diagonal (an SPD matrix)")
        self.dinv = (1.0 / diag)[:, None]
        gersh = torch.zeros(n, dtype=val.dtype, device=dev).index_add_(0, row, val.abs()) / diag
        lam = all_reduce(gersh.max() if n else torch.zeros((), dtype=val.dtype, device=dev), _max(), D.group)
        self.omega = float(4.0 / (3.0 * lam))
        # aggregates: local, numbered globally
        if n:
            agg, nagg = _aggregates(D._owned_block(), aggregate_size)
        else:
            agg, nagg = torch.zeros(0, dtype=torch.int64, device=dev), 0
        counts = [int(c) for c in torch.cat(all_gather_list(torch.tensor([nagg]), [1] * D.world_size, D.group))]
        nc = sum(counts)
        gagg = (agg + sum(counts[: D.rank])).to(dev)
        ghost_agg = exchange(D.plan, gagg.double()[:, None], D.group, D.timeout)[:, 0].round().long()
        col_agg = torch.cat([gagg, ghost_agg])
        # P = Z - w D^-1 A Z  (owned rows)
        scale = -self.omega / diag[row]
        pr = torch.cat([torch.arange(n, device=dev), row])
        pc = torch.cat([gagg, col_agg[col]])
        pv = torch.cat([torch.ones(n, dtype=val.dtype, device=dev), scale * val])
        P = _coo(torch.stack([pr, pc]), pv, (n, nc)).coalesce()
        Pg = exchange_rows(D.plan, P, D.group, D.timeout)
        Pfull = _coo(
            torch.cat([P.indices(), Pg.indices() + torch.tensor([[n], [0]], device=dev)], 1),
            torch.cat([P.values(), Pg.values()]),
            (n + D.plan.n_ghost, nc),
        ).coalesce()
        Aloc = _coo(torch.stack([row, col]), val, tuple(loc.shape)).coalesce()
        AP = torch.sparse.mm(Aloc, Pfull)
        Ac = torch.sparse.mm(P.t().coalesce(), AP).coalesce()
        ci, cv = Ac.indices().t().contiguous(), Ac.values()
        sizes = [int(c) for c in torch.cat(all_gather_list(torch.tensor([cv.numel()]), [1] * D.world_size, D.group))]
        ci = torch.cat(all_gather_list(ci, sizes, D.group, D.timeout))
        cv = torch.cat(all_gather_list(cv, sizes, D.group, D.timeout))
        C = _coo(ci.t(), cv, (nc, nc)).coalesce()
        Ac = SparseTensor(C.values(), C.indices()[0], C.indices()[1], (nc, nc))
        self.nc = nc
        self.P, self.Pt = P.to_sparse_csr(), P.t().coalesce().to_sparse_csr()
        if coarse == "lu" or nc < direct_below:
            lu = Ac.lu()
            self.coarse = lambda r: lu.solve(r)
        else:
            M = make_preconditioner(Ac, coarse)
            self.coarse = lambda r: M(r[None])[0]

    def _smooth(self, x: torch.Tensor | None, r: torch.Tensor) -> torch.Tensor:
        if x is None:
            return self.omega * self.dinv * r
        return x + self.omega * self.dinv * (r - self.D.matvec(x))

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """One V-cycle on ``r`` ``[1, n_owned, K]``."""
        r = r[0]
        x = None
        for _ in range(self.sweeps):
            x = self._smooth(x, r)
        res = r - self.D.matvec(x)
        rc = all_reduce(self.Pt @ res, group=self.D.group, timeout=self.D.timeout)
        x = x + self.P @ self.coarse(rc)
        for _ in range(self.sweeps):
            x = self._smooth(x, r)
        return x[None]

    def adjoint(self) -> DistributedAMG:
        """The same cycle (built for Hermitian matrices)."""
        return self


def _max():
    import torch.distributed as dist

    return dist.ReduceOp.MAX
