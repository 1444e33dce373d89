"""DSparseTensor: a square sparse matrix distributed by rows over ``torch.distributed``.

Each rank holds the rows it owns (after METIS reordering) as a local
SparseTensor whose columns are its owned entries followed by *ghost* entries
owned by neighbours; a matrix-vector product is one halo exchange plus one
local product.  Distributed vectors are plain local tensors holding the owned
entries (``D.scatter`` / ``D.gather`` convert from / to global vectors).

Krylov solves reuse :mod:`sla.solvers.krylov` unchanged: the operator is the
halo product and the inner product all-reduces the local sums.  Solves are
differentiable in ``b`` and in the local values (the adjoint solve runs with
``A^H``, whose product sends ghost contributions back to their owners).

>>> # every rank, after dist.init_process_group(...):
>>> # D = DSparseTensor.partition(A)          # same global A on every rank
>>> # x = sla.solve(D, D.scatter(b), method="cg", preconditioner="amg")
>>> # x_global = D.gather(x)
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from ..config import SolveInfo, SolverConfig
from ..solvers.krylov import krylov_solve, local_dot
from ..solvers.linear.adjoint import LinearSolve
from ..solvers.precond import make_preconditioner
from ..solvers.precond.options import resolve
from ..sparse import SparseTensor
from .halo import build_plan, exchange, reverse_exchange
from .partition import partition

__all__ = ["DSparseTensor"]

_METHODS = ("cg", "bicgstab", "gmres", "fgmres", "minres")


class DSparseTensor:
    """This rank's rows of a distributed ``n x n`` matrix (see the module docstring)."""

    def __init__(self, local: SparseTensor, plan, part, shape, group=None):
        self.local = local
        self.plan = plan.to(local.device)
        self.part = part
        self.shape = tuple(shape)
        self.group = group
        self._prec = {}

    # ------------------------------------------------------------ building
    @classmethod
    def partition(cls, A: SparseTensor, group=None, method: str = "metis") -> DSparseTensor:
        """Distribute ``A`` (the same global matrix on every rank; collective)."""
        if not dist.is_initialized():
            raise RuntimeError("DSparseTensor.partition needs torch.distributed: call dist.init_process_group first")
        if not isinstance(A, SparseTensor):
            raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
        if A.batch_shape:
            raise ValueError(f"DSparseTensor holds one matrix, got batch shape {A.batch_shape}")
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        part = partition(A, world, method)
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
        return cls(local, plan, part, A.shape, group)

    @property
    def rank(self) -> int:
        return self.plan.rank

    @property
    def device(self):
        return self.local.device

    @property
    def dtype(self):
        return self.local.dtype

    def __repr__(self) -> str:
        return (
            f"DSparseTensor(shape={self.shape}, rank={self.rank}/{self.part.nparts}, owned={self.plan.n_owned}, "
            f"ghosts={self.plan.n_ghost}, nnz_local={self.local.nnz}, method={self.part.method})"
        )

    # ------------------------------------------------------------- vectors
    def scatter(self, b: torch.Tensor) -> torch.Tensor:
        """This rank's entries of a global vector ``[n]`` / ``[n, K]``."""
        if b.shape[0] != self.shape[0]:
            raise ValueError(f"b must have {self.shape[0]} rows, got shape {tuple(b.shape)}")
        return b[self.part.owned(self.rank).to(b.device)]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The global vector from every rank's owned entries (collective, all ranks get it)."""
        sizes = self.part.sizes()
        pad = max(sizes)
        buf = x.new_zeros(pad, *x.shape[1:])
        buf[: x.shape[0]] = x
        chunks = [torch.empty_like(buf) for _ in sizes]
        dist.all_gather(chunks, buf.contiguous(), group=self.group)
        ordered = torch.cat([c[:s] for c, s in zip(chunks, sizes)])
        out = torch.empty_like(ordered)
        out[self.part.perm.to(x.device)] = ordered
        return out

    def dot(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Global inner product of distributed blocks (one all-reduce)."""
        s = local_dot(u, v)
        dist.all_reduce(s, group=self.group)
        return s

    # ------------------------------------------------------------ products
    def _full(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, exchange(self.plan, x, self.group)])

    def matvec(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``A x`` (or ``A^H x``) for owned blocks ``x`` ``[n_owned, ...]`` (no autograd)."""
        vals = self.local.values.detach()
        p = self.local.pattern
        x2 = x.reshape(x.shape[0], -1)
        if not transpose:
            y = p.csr(vals) @ self._full(x2)
        else:
            pt, perm = p.transpose()
            y_all = pt.csr(vals[perm].conj()) @ x2  # [n_owned + n_ghost, K]
            y = y_all[: self.plan.n_owned] + reverse_exchange(self.plan, y_all[self.plan.n_owned :], self.group)
        return y.reshape(self.plan.n_owned, *x.shape[1:])

    __matmul__ = matvec

    # ---------------------------------------------------------------- solve
    def _owned_block(self) -> SparseTensor:
        loc = self.local.detach()
        keep = torch.nonzero(loc.col < self.plan.n_owned).flatten()
        return SparseTensor(loc.values[keep], loc.row[keep], loc.col[keep], (self.plan.n_owned,) * 2)

    def _preconditioner(self, name: str, transpose: bool, options: dict):
        key = (name, transpose, self.local.values._version)
        if key not in self._prec:
            if name in (None, "none"):
                self._prec[key] = None
            else:
                M = make_preconditioner(self._owned_block(), name, **options)  # block Jacobi with `name` inside
                self._prec[key] = M.adjoint() if transpose else M
        return self._prec[key]

    def _krylov(self, b: torch.Tensor, cfg: SolverConfig, transpose: bool = False):
        rtol, atol = cfg.tolerances(self.dtype)
        pc = "jacobi" if cfg.preconditioner == "auto" else cfg.preconditioner
        M = self._preconditioner(pc, transpose, dict(cfg.options or {}))
        b3 = b.reshape(1, b.shape[0], -1)
        res = krylov_solve(
            cfg.method,
            lambda v: self.matvec(v[0], transpose)[None],
            b3,
            precond=M,
            dot=self.dot,
            rtol=rtol,
            atol=atol,
            maxiter=cfg.maxiter,
            restart=cfg.restart,
            check_every=cfg.check_every,
        )
        return res.x.reshape(b.shape), res

    def __sla_solve__(self, b, backend=None, method=None, config=None, return_info=False, **options):
        """``sla.solve(D, b)``: distributed Krylov solve of owned blocks ``b`` ``[n_owned(, K)]``."""
        if backend not in (None, "auto", "dist"):
            raise ValueError(f"a DSparseTensor solves with its own distributed Krylov methods, not backend={backend!r}")
        cfg = SolverConfig.resolve(config, method=method, **options)
        if cfg.method == "auto":
            cfg = cfg.replace(method="cg")
        if cfg.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS} for a DSparseTensor, got {cfg.method!r}")
        if not isinstance(b, torch.Tensor) or b.shape[0] != self.plan.n_owned:
            raise ValueError(
                f"b must be this rank's block [{self.plan.n_owned}(, K)] (use D.scatter), "
                f"got {getattr(b, 'shape', type(b))}"
            )
        if b.dtype != self.dtype or b.device != self.device:
            raise TypeError(f"b ({b.dtype}, {b.device}) must match the matrix ({self.dtype}, {self.device})")
        t0 = time.perf_counter()
        values = self.local.values
        if values.requires_grad or b.requires_grad:
            op = _DistOp(self, cfg)
            x = LinearSolve.apply(values.reshape(1, -1), b.reshape(1, b.shape[0], -1), op).reshape(b.shape)
            res = op.result
        else:
            x, res = self._krylov(b, cfg)
        with torch.no_grad():
            r = b - self.matvec(x.detach())
            rn = self.dot(r.reshape(1, r.shape[0], -1), r.reshape(1, r.shape[0], -1)).real.sqrt().max()
            bn = self.dot(b.reshape(1, b.shape[0], -1), b.reshape(1, b.shape[0], -1)).real.sqrt().max()
        info = SolveInfo(
            backend="dist",
            method=cfg.method,
            matrix_type=cfg.matrix_type,
            preconditioner="jacobi" if cfg.preconditioner == "auto" else resolve(cfg.preconditioner)[0],
            notes=["auto: block Jacobi, 'jacobi' on each rank's block"] if cfg.preconditioner == "auto" else [],
            iterations=res.stats()["iterations"],
            converged=res.stats()["converged"],
            residual=float(rn / bn) if float(bn) > 0 else float(rn),
            solve_time=time.perf_counter() - t0,
        )
        info.fail(cfg)
        return (x, info) if return_info else x


class _DistOp:
    """The distributed Krylov solve as a solver state for the one adjoint,
    :class:`sla.solvers.linear.adjoint.LinearSolve`: backward solves with ``A^H`` on every rank."""

    def __init__(self, D: DSparseTensor, cfg: SolverConfig):
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
