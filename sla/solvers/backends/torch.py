"""The ``pytorch`` backend: native Krylov methods with multigrid preconditioning.

Runs wherever torch runs (CPU and CUDA), batched: ``[B, n, K]`` systems on one
pattern iterate together.  ``setup`` builds the preconditioner (cached per
values version by :func:`sla.solvers.linear.solve.prepare`; AMG aggregates are
cached on the pattern); ``apply`` runs the Krylov method, and with
``transpose=True`` the same method on ``A^H`` with the adjoint preconditioner
(the same object when A is Hermitian).

``preconditioner='auto'`` is decided by
:func:`sla.solvers.linear.policy.choose_preconditioner`.  Options in ``SolverConfig.options``
go to the preconditioner, the automatically chosen one included (e.g.
``options={'max_coarse': 100}``); a typed choice (``sla.precond.AMG(cycle='W')``) carries its own.
"""

from __future__ import annotations

import inspect
import logging

import torch

from ...products import csr_matmul
from ...sparse import SparseTensor
from .. import krylov
from ..linear.policy import choose_preconditioner
from ..linear.registry import Backend, Method
from ..precond import PRECONDITIONERS, Preconditioner, make_preconditioner
from ..precond.multigrid import Multigrid
from ..precond.options import resolve
from ._krylov_adapter import krylov_method

log = logging.getLogger("sla")

_HERMITIAN = ("hpd", "hermitian")
_SYMMETRIC = ("symmetric", "spd", "hermitian", "hpd")
_DEFINITE = ("spd", "hpd")


def _is_hermitian(A: SparseTensor, mtype: str) -> bool:
    return mtype in _HERMITIAN or (mtype in ("symmetric", "spd") and not A.is_complex)


def _options_of(name: str) -> set[str]:
    """The keyword options preconditioner ``name`` takes."""
    params = inspect.signature(PRECONDITIONERS[name].__init__).parameters
    return {
        k for k, p in params.items() if k not in ("self", "A") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _built(cfg, A: SparseTensor) -> Preconditioner:
    """A preconditioner the caller built: checked against ``A`` (size, device), used as given."""
    M = cfg.preconditioner
    if cfg.options:
        raise ValueError(
            f"options {sorted(cfg.options)} go with a preconditioner name; a built preconditioner "
            f"({type(M).__name__}) carries its own"
        )
    B = getattr(M, "A", None)
    if B is not None and (tuple(B.sparse_shape) != tuple(A.sparse_shape) or B.device != A.device):
        raise ValueError(
            f"the given preconditioner was built for a {tuple(B.sparse_shape)} matrix on {B.device}, "
            f"but A is {tuple(A.sparse_shape)} on {A.device}"
        )
    return M


def _matvec(p, v):
    """``x -> A x`` on ``[B, n, K]`` (torch CSR, int32 indices; no copy for B = 1)."""
    mats = [p.csr(v[i]) for i in range(v.shape[0])]
    if len(mats) == 1:
        M = mats[0]
        return lambda x: csr_matmul(M, x[0]).unsqueeze(0)
    return lambda x: torch.stack([csr_matmul(m, x[i]) for i, m in enumerate(mats)])


class _State:
    def __init__(self, A: SparseTensor, cfg, mtype: str, method: str):
        self.A = A
        self.method = method
        self.mtype = mtype
        self.hermitian = _is_hermitian(A, mtype)
        self.rtol, self.atol = cfg.tolerances(A.dtype)
        self.maxiter = cfg.maxiter
        self.timeout, self.callback = cfg.timeout, cfg.callback
        self.restart = cfg.restart or 50
        if method in ("cg", "minres") and not self.hermitian:
            raise ValueError(
                f"method {method!r} needs a Hermitian matrix, but A is a complex {mtype!r} matrix "
                "(complex symmetric is not Hermitian): use method='gmres' or 'bicgstab'"
            )
        self.notes = []
        if isinstance(cfg.preconditioner, Preconditioner):  # built by the caller for this matrix
            self.M, self.pc_name = _built(cfg, A), cfg.preconditioner.name
        else:
            self.M, self.pc_name = self._make(A, cfg, mtype, method)
        mg = self.pc_name in ("amg", "gmg") or isinstance(self.M, Multigrid)
        # CPU: looking is free. GPU: cheap iterations look every 16; multigrid CG looks when the
        # measured rate says it can be close (H100, 16.8M GMG-CG, cached setup: 90 ms whether it
        # looks after every iteration, every 8th or adaptively -- a multigrid step hides a look)
        if A.device.type == "cpu":
            default = 1
        elif mg:
            default = "adaptive" if method == "cg" else 1
        else:
            default = 16
        self.check_every = cfg.check_every or default
        self.mv = _matvec(A.pattern, A._flat())
        self._adjoint = None

    def _make(self, A, cfg, mtype, method):
        name, opts = resolve(cfg.preconditioner, cfg.options)
        if name == "auto":
            name, why = choose_preconditioner(A, mtype, method)
            self.notes.append(why)
            takes = _options_of(name)
            if set(opts) - takes:
                raise ValueError(
                    f"preconditioner='auto' chose {name!r} ({why}), which does not take the option(s) "
                    f"{sorted(set(opts) - takes)}; name the preconditioner these options are for "
                    "(e.g. preconditioner=sla.precond.AMG(...))"
                )
        if name not in PRECONDITIONERS:
            raise ValueError(
                f"unknown preconditioner {name!r} for the pytorch backend; known: {sorted(PRECONDITIONERS) + ['auto']}"
            )
        if name == "amg":
            opts.setdefault("hermitian", self.hermitian)
        return make_preconditioner(A, name, **opts), name

    def adjoint(self):
        if self._adjoint is None:
            if self.hermitian:
                self._adjoint = (self.mv, self.M)
            else:
                AH = self.A.H()
                self._adjoint = (_matvec(AH.pattern, AH._flat()), self.M.adjoint())
        return self._adjoint

    def apply(self, b: torch.Tensor, transpose: bool = False):
        mv, M = self.adjoint() if transpose else (self.mv, self.M)
        res = krylov.krylov_solve(
            self.method,
            mv,
            b,
            precond=M,
            rtol=self.rtol,
            atol=self.atol,
            maxiter=self.maxiter,
            check_every=self.check_every,
            restart=self.restart,
            timeout=self.timeout,
            callback=self.callback,
        )
        stats = res.stats()
        stats["preconditioner"] = self.pc_name
        stats["notes"] = self.notes + ([self.M.describe()] if hasattr(self.M, "describe") else [])
        return res.x, stats


def _method(name: str, types: tuple) -> Method:
    return krylov_method(_State, name, types)


def _choose(n, dtype, mtype, kind=None):
    if kind == "direct":
        return None
    if mtype in _DEFINITE:
        return "cg"
    if mtype in ("symmetric", "hermitian") and not (mtype == "symmetric" and dtype.is_complex):
        return "minres"
    return "gmres"


_GENERAL = ("general",) + _SYMMETRIC

BACKEND = Backend(
    name="pytorch",
    devices=("cpu", "cuda"),
    check=lambda: None,
    extra=None,
    batched=True,
    choose=_choose,
    description="native torch Krylov methods (CG, BiCGStab, GMRES, FGMRES, MINRES) with Jacobi, "
    "block-Jacobi, Chebyshev, AMG and geometric multigrid preconditioners",
    methods={
        "cg": _method("cg", _DEFINITE),
        "bicgstab": _method("bicgstab", _GENERAL),
        "gmres": _method("gmres", _GENERAL),
        "fgmres": _method("fgmres", _GENERAL),
        "minres": _method("minres", ("symmetric", "hermitian", "spd", "hpd")),
    },
)
