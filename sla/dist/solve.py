"""Products and Krylov solves of a :class:`~sla.dist.DSparseTensor` (mixed into it).

Per Krylov iteration: one halo exchange (the product) plus the method's
all-reduces (inner products asked together share one): CG 2, MINRES 2,
BiCGStab 3 (and two products), GMRES/FGMRES 2 (classical Gram-Schmidt twice,
the norm with the second pass); nothing else; the
``'schwarz'`` preconditioner adds its own two overlap exchanges and two small
all-reduces.  Convergence is decided on all-reduced numbers, so every rank
stops at the same iteration and reports the same :class:`~sla.config.SolveInfo`
(a failure raises on every rank).
"""

from __future__ import annotations

import math
import time
import warnings

import torch
import torch.distributed as dist

from ..config import SolveInfo, SolverConfig
from ..solvers.krylov import ReducedDot, krylov_solve, local_dot
from ..solvers.krylov.cg import is_variable
from ..solvers.linear.adjoint import LinearSolve
from ..solvers.precond import make_preconditioner
from ..solvers.precond.options import resolve
from ..sparse import SparseTensor
from .comm import all_reduce
from .halo import exchange, reverse_exchange

__all__ = ["DistSolve"]

_METHODS = ("cg", "bicgstab", "gmres", "fgmres", "minres")


class _Halo(torch.autograd.Function):
    """Ghost values of an owned block; the backward sends ghost gradients back to their owners."""

    @staticmethod
    def forward(ctx, x, D):
        ctx.D = D
        return exchange(D.plan, x, D.group, D.timeout)

    @staticmethod
    def backward(ctx, g):
        D = ctx.D
        return reverse_exchange(D.plan, g.contiguous(), D.group, D.timeout), None


class DistSolve:
    """Mixin: ``matvec``/``apply`` products, ``dot`` and ``sla.solve(D, b)``."""

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of every rank's ``t`` (partial sums over its owned rows; one all-reduce, ``t`` kept)."""
        return all_reduce(t.clone(), group=self.group, timeout=self.timeout)

    def dot(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Global inner product of distributed blocks ``[B, n_owned, K]`` (one all-reduce)."""
        return self.reduce(local_dot(u, v))

    @property
    def inner(self) -> ReducedDot:
        """The Krylov methods' inner product: products asked together share one all-reduce."""
        return ReducedDot(self.reduce)

    def matvec(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``A x`` (or ``A^H x``) for owned blocks ``x`` ``[n_owned, ...]`` (no autograd)."""
        vals = self.local.values.detach()
        p = self.local.pattern
        x2 = x.reshape(x.shape[0], _cols(x))
        if not transpose:
            y = p.csr(vals) @ self._full(x2)
        else:
            pt, perm = p.transpose()
            y_all = pt.csr(vals[perm].conj()) @ x2  # [n_owned + n_ghost, K]
            y = y_all[: self.n_owned] + reverse_exchange(self.plan, y_all[self.n_owned :], self.group, self.timeout)
        return y.reshape(self.n_owned, *x.shape[1:])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for an owned block, differentiable in ``x`` and in the local values."""
        if x.dtype != self.dtype or x.device != self.device:
            raise TypeError(f"x ({x.dtype}, {x.device}) must match the matrix ({self.dtype}, {self.device})")
        if not (torch.is_grad_enabled() and (x.requires_grad or self.local.values.requires_grad)):
            return self.matvec(x)
        return self.local @ torch.cat([x, _Halo.apply(x, self)])

    # ---------------------------------------------------------------- solve
    def _owned_block(self) -> SparseTensor:
        loc = self.local.detach()
        keep = torch.nonzero(loc.col < self.n_owned).flatten()
        return SparseTensor(loc.values[keep], loc.row[keep], loc.col[keep], (self.n_owned,) * 2)

    def _preconditioner(self, pc, transpose: bool, options: dict):
        name, opts = ("jacobi", {}) if pc == "auto" else resolve(pc, options)
        key = (name, tuple(sorted(opts.items())), transpose, self.local.values._version)
        if key not in self._prec:
            from ..config import _stack

            token = _stack.set(())  # a `with SolverConfig(method='cg')` around the solve is not for the coarse LU
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
                    self._prec[key] = self._build_preconditioner(name, opts, transpose)
            finally:
                _stack.reset(token)
        return self._prec[key]

    def _build_preconditioner(self, name: str, opts: dict, transpose: bool):
        if name == "none":
            M = None
        elif self.n_owned == 0 and (name != "schwarz" or self.overlap is None) and name != "distributed_amg":
            M = _NoRows()  # a rank that owns no rows: its block preconditioner maps [1, 0, K] to itself
        elif name == "distributed_amg":
            from .amg import DistributedAMG

            M = DistributedAMG(self, **opts)
        elif name == "schwarz":
            from .schwarz import TwoLevelSchwarz

            M = TwoLevelSchwarz(self, **opts) if self.overlap is not None else None
            if M is None:  # one rank (or overlap=0): the local preconditioner is the whole story
                M = make_preconditioner(self._owned_block(), opts.get("local", "amg"))
        else:
            M = make_preconditioner(self._owned_block(), name, **opts)  # block Jacobi with `name` inside
        M = M.adjoint() if (transpose and M is not None) else M
        if M is None:
            return None
        # every rank must run the same Krylov variant (their collectives differ): a variable preconditioner
        # on any rank makes it variable on all, and no rank swaps in a per-rank flexible() form
        flag = torch.tensor([1.0 if is_variable(M) else 0.0], dtype=torch.float64, device=self.device)
        variable = bool(all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, timeout=self.timeout) > 0)
        return _Agreed(M, variable)

    def _krylov(self, b: torch.Tensor, cfg: SolverConfig, transpose: bool = False):
        rtol, atol = cfg.tolerances(self.dtype)
        M = self._preconditioner(cfg.preconditioner, transpose, dict(cfg.options or {}))
        b3 = b.reshape(1, b.shape[0], _cols(b))
        res = krylov_solve(
            cfg.method,
            lambda v: self.matvec(v[0], transpose)[None],
            b3,
            precond=M,
            dot=self.inner,
            rtol=rtol,
            atol=atol,
            maxiter=cfg.maxiter,
            restart=cfg.restart,
            check_every=cfg.check_every,
        )
        return res.x.reshape(b.shape), res

    def solve(self, b, **kwargs):
        """``sla.solve(D, b, **kwargs)`` (the seed's method spelling)."""
        from ..solvers.linear.solve import solve

        return solve(self, b, **kwargs)

    def __sla_solve__(self, b, backend=None, method=None, config=None, return_info=False, **options):
        """``sla.solve(D, b)``: distributed Krylov solve; ``b`` a ``DTensor[Shard(0)]`` (the
        result is one) or this rank's block ``[n_owned(, K)]``."""
        from .dtensor import local_block, to_dtensor

        if backend not in (None, "auto", "dist"):
            raise ValueError(f"a DSparseTensor solves with its own distributed Krylov methods, not backend={backend!r}")
        cfg = SolverConfig.resolve(config, method=method, **options)
        if cfg.method == "auto":
            cfg = cfg.replace(method="cg")
        if cfg.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS} for a DSparseTensor, got {cfg.method!r}")
        is_dt = hasattr(b, "placements")
        b, _ = local_block(b, self, "b")
        if b.ndim not in (1, 2):
            raise ValueError(f"b must be [{self.n_owned}] or [{self.n_owned}, K], got {tuple(b.shape)}")
        if b.dtype != self.dtype or b.device != self.device:
            raise TypeError(f"b ({b.dtype}, {b.device}) must match the matrix ({self.dtype}, {self.device})")
        t0 = time.perf_counter()
        values = self.local.values
        if torch.is_grad_enabled() and (values.requires_grad or b.requires_grad):
            op = _DistOp(self, cfg)
            x = LinearSolve.apply(values.reshape(1, -1), b.reshape(1, b.shape[0], _cols(b)), op).reshape(b.shape)
            res = op.result
        else:
            x, res = self._krylov(b, cfg)
        with torch.no_grad():
            r = b - self.matvec(x.detach())
            r3, b3 = r.reshape(1, r.shape[0], _cols(r)), b.reshape(1, b.shape[0], _cols(b))
            nums = torch.stack([local_dot(r3, r3).real.sum(), local_dot(b3, b3).real.sum()])
            rn, bn = all_reduce(nums, group=self.group, timeout=self.timeout).sqrt().tolist()
        pc = cfg.preconditioner
        info = SolveInfo(
            backend="dist",
            method=cfg.method,
            matrix_type=cfg.matrix_type,
            preconditioner="jacobi" if pc == "auto" else resolve(pc)[0],
            notes=["auto: block Jacobi, 'jacobi' on each rank's block"] if pc == "auto" else [],
            iterations=res.stats()["iterations"],
            converged=res.stats()["converged"],
            residual=rn / bn if bn > 0 else rn,
            solve_time=time.perf_counter() - t0,
        )
        info.fail(cfg)
        if is_dt:
            x = to_dtensor(x, self)
        return (x, info) if return_info else x


class _Agreed:
    """A block preconditioner as the distributed Krylov methods see it: ``variable`` agreed by all ranks
    and no ``flexible()`` form (an ``'auto'`` multigrid's K-cycle twin is a per-rank choice); every
    other attribute is the wrapped preconditioner's."""

    def __init__(self, M, variable: bool) -> None:
        self.M, self.variable = M, variable

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        return self.M(r)

    def __getattr__(self, name: str):
        if name in ("flexible", "M") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.M, name)


class _NoRows:
    """The block preconditioner of a rank that owns no rows (the identity on empty blocks)."""

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        return r

    def adjoint(self) -> _NoRows:
        return self


def _cols(x: torch.Tensor) -> int:
    """Columns of a block ``[n_owned(, ...)]`` (explicit: a rank may own no rows, so no ``-1``)."""
    return math.prod(x.shape[1:])


class _DistOp:
    """The distributed Krylov solve as a solver state for the one adjoint,
    :class:`sla.solvers.linear.adjoint.LinearSolve`: backward solves with ``A^H`` on every rank."""

    def __init__(self, D, cfg: SolverConfig):
        self.D, self.cfg = D, cfg
        self.pattern = D.local.pattern
        self.result = None  # the KrylovResult of the last solve

    def solve(self, b: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``[1, n_owned, K]`` blocks."""
        x, self.result = self.D._krylov(b[0], self.cfg, transpose)
        return x[None]

    def columns(self, x: torch.Tensor) -> torch.Tensor:
        """Owned entries followed by the ghosts (one halo exchange)."""
        return self.D._full(x[0])[None]
