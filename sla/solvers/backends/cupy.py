"""CuPy backend (CUDA): ``cupyx.scipy.sparse.linalg`` -- SuperLU (``splu``), CG, GMRES, MINRES.

Tensors cross to CuPy and back through DLPack (no copies): the CSR matrix
wraps the pattern's int32 ``crow``/``ccol`` and the values in place.  ``lu``
factorises on the host (CuPy's ``splu`` runs SuperLU through SciPy) and solves
the triangular systems on the GPU with cuSPARSE; ``trans='H'`` gives the adjoint
solve with the same factors.  The Krylov methods keep the CSR matrix and a
Jacobi preconditioner; the adjoint uses ``A^H`` (built once, only for a
non-Hermitian matrix).  Any CuPy wheel works (``cupy-cuda12x``, ``cupy-cuda13x``).
"""

from __future__ import annotations

import functools

import torch

from ..._optional import installed
from ...config import SingularMatrixError
from ..linear.registry import Backend, Method
from ._krylov_adapter import KrylovAdapter, krylov_method

_SYMMETRIC = ("symmetric", "spd", "hermitian", "hpd")
_DEFINITE = ("spd", "hpd")


@functools.lru_cache(maxsize=1)
def _check() -> str | None:
    if not installed("cupy"):
        return "cupy is not installed (any wheel: cupy-cuda12x or cupy-cuda13x)"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"cupy could not start ({type(exc).__name__}: {exc})"
    return None


def _cp(t: torch.Tensor):
    import cupy

    return cupy.from_dlpack(t.detach().resolve_conj().contiguous())


def _torch(a) -> torch.Tensor:
    return torch.from_dlpack(a)


def _csr(A):
    import cupyx.scipy.sparse as csp

    p = A.pattern
    M = csp.csr_matrix((_cp(A.values), _cp(p.ccol), _cp(p.crow)), shape=p.shape)
    M.has_sorted_indices = True
    M.has_canonical_format = True
    return M


def _adjoint_same(A, mtype: str) -> bool:
    return mtype in ("hermitian", "hpd") or (not A.is_complex and mtype in _SYMMETRIC)


# ------------------------------------------------------------------ SuperLU
class _LU:
    def __init__(self, A, cfg, mtype):
        import cupyx.scipy.sparse.linalg as cla

        self.device = A.device
        with torch.cuda.device(A.device):
            S = _csr(A).tocsc()
            opts = dict(cfg.options or {})
            if mtype in _SYMMETRIC and not opts:
                opts = dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options=dict(SymmetricMode=True))
            try:
                self.lu = cla.splu(S, **opts)
            except RuntimeError as exc:
                raise SingularMatrixError(f"cupy splu: {exc} (the matrix is singular)") from exc

    def apply(self, b, transpose=False):
        with torch.cuda.device(self.device):
            x = self.lu.solve(_cp(b), trans="H" if transpose else "N")
        return _torch(x).reshape(b.shape), {}


# --------------------------------------------------------------- iterative
class _Krylov(KrylovAdapter):
    backend = "cupy"

    def __init__(self, A, cfg, mtype, method):
        self.device = A.device
        with torch.cuda.device(A.device):
            M = _csr(A)
            self.setup(M, M if _adjoint_same(A, mtype) else None, _cp(A.diagonal()), cfg, method, A.dtype)

    def linalg(self):
        import cupyx.scipy.sparse.linalg as cla

        return cla

    def scope(self):
        return torch.cuda.device(self.device)

    def to_array(self, b):
        return _cp(b)

    def from_columns(self, cols, like):
        return torch.stack([_torch(c) for c in cols], dim=1).to(like.dtype)

    def solve_column(self, A, M, b):
        """One right-hand side.  CuPy's stopping tests use the preconditioned residual, so
        the true residual is checked and the solve restarted from the last iterate (at
        most 4 passes).  CuPy's GMRES breaks down with NaN when the Krylov space becomes
        invariant (an exact solution); shorter cycles avoid that."""
        import cupy
        import numpy

        bn = float(cupy.linalg.norm(b))
        if bn == 0.0:
            return cupy.zeros_like(b), 0, True
        target = max(self.rtol * bn, self.atol)
        restart = min(self.restart or 30, max(b.shape[0] - 1, 1))
        x, iters = None, 0
        for _ in range(6):
            count, cb = self.counter()
            kw = dict(x0=x, maxiter=self.maxiter, M=M, callback=cb)
            if self.method == "minres":
                kw["tol"] = self.rtol
            else:
                kw.update(rtol=self.rtol, atol=self.atol)
            if self.method == "gmres":
                kw.update(restart=restart, callback_type="pr_norm")
            try:
                xn, info = self.fn(A, b, **kw)
                finite = bool(cupy.isfinite(xn).all())
            except numpy.linalg.LinAlgError:
                finite = False
            if not finite:
                if self.method != "gmres" or restart == 1:
                    break
                restart = max(1, restart // 2)
                continue
            if info < 0:
                raise ValueError(f"cupy {self.method} failed with illegal input (info={info})")
            x, iters = xn, iters + count[0]
            if float(cupy.linalg.norm(b - A @ x)) <= target:
                return x, iters, True
        return (cupy.zeros_like(b) if x is None else x), iters, False


def _krylov(method, types):
    return krylov_method(_Krylov, method, types)


def _choose(n, dtype, mtype, kind=None):
    if kind == "direct":
        return "lu"
    if mtype in _DEFINITE:
        return "cg"
    hermitian = mtype == "hermitian" or (mtype == "symmetric" and not dtype.is_complex)
    return "minres" if hermitian else "gmres"


BACKEND = Backend(
    name="cupy",
    devices=("cuda",),
    check=_check,
    extra="cupy",
    choose=_choose,
    description="CuPy cupyx.scipy.sparse.linalg: splu, CG, GMRES, MINRES (zero-copy via DLPack)",
    methods={
        "lu": Method(
            "lu",
            "direct",
            lambda A, cfg, mtype: _LU(A, cfg, mtype),
            lambda st, b, transpose=False: st.apply(b, transpose),
        ),
        "cg": _krylov("cg", _DEFINITE),
        "gmres": _krylov("gmres", ("general",) + _SYMMETRIC),
        "minres": _krylov("minres", _SYMMETRIC),
    },
)
