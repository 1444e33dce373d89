"""SciPy backend (CPU): SuperLU, CHOLMOD (scikit-sparse), UMFPACK, Krylov methods.

Direct methods factor once in ``setup``; the adjoint solve reuses the factors
(``trans='H'`` for SuperLU, the same factor for Hermitian CHOLMOD).  CHOLMOD's symbolic
analysis is kept on the pattern, so new values on it are a numeric factorisation only.
Iterative methods keep the CSR matrix and a Jacobi preconditioner.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._optional import installed
from ...config import BackendUnavailableError, NotPositiveDefiniteError, SingularMatrixError
from ..linear.registry import Backend, Method
from ._krylov_adapter import KrylovAdapter, krylov_method

_SYMMETRIC = ("symmetric", "spd", "hermitian", "hpd")
_DEFINITE = ("spd", "hpd")


_has = installed


def has_cholmod() -> bool:
    return _has("sksparse.cholmod")


def has_umfpack() -> bool:
    return _has("scikits.umfpack")


def _check():
    return None if _has("scipy.sparse.linalg") else "scipy is not installed (pip install scipy)"


def _csc(A, mtype="general"):
    """CSC matrix of A; for a symmetric (Hermitian) A the CSR arrays already are
    the CSC arrays of A^T = A (of conj(A)), so no conversion is needed."""
    import scipy.sparse as sp

    symmetric = mtype in ("symmetric", "spd") and not A.is_complex
    hermitian = mtype in ("hermitian", "hpd") and A.is_complex
    if not (symmetric or hermitian):
        return A.to_scipy("csc")
    p = A.pattern.to("cpu")
    data = A.values.detach().cpu()
    data = data.conj() if hermitian else data
    return sp.csc_matrix((data.resolve_conj().numpy(), p.ccol.numpy(), p.crow.numpy()), shape=p.shape)


def _np(b: torch.Tensor) -> np.ndarray:
    return b.detach().cpu().resolve_conj().numpy()


def _back(x: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(like.dtype).reshape(like.shape)


# ------------------------------------------------------- condition estimate
class _Factored:
    """A factorisation (anything with ``solve(b, trans=...)``) and the reciprocal condition
    number estimated from it."""

    def __init__(self, lu, S, estimate: bool = True):
        self.lu = lu
        self.rcond = _rcond_1norm(S, lu) if estimate else None

    def solve(self, b, trans="N"):
        return self.lu.solve(b, trans=trans)


def _rcond_1norm(S, lu) -> float:
    """``1 / (||A||_1 ||A^{-1}||_1)`` with ``||A^{-1}||_1`` from Hager's / Higham's estimator
    (``scipy.sparse.linalg.onenormest``, one column: a few solves with the factors, as LAPACK's
    ``*gecon`` does), so no inverse is formed."""
    import scipy.sparse.linalg as spla

    n = S.shape[0]
    if n == 0:
        return 1.0
    anorm = float(abs(S).sum(axis=0).max())
    if anorm == 0 or not np.isfinite(anorm):
        return 0.0
    dt = S.dtype  # the factors solve in their own precision
    inv = spla.LinearOperator(
        S.shape,
        matvec=lambda v: lu.solve(np.asarray(v, dtype=dt).ravel()),
        rmatvec=lambda v: lu.solve(np.asarray(v, dtype=dt).ravel(), trans="H" if np.iscomplexobj(v) else "T"),
        dtype=dt,
    )
    with np.errstate(all="ignore"):
        est = float(spla.onenormest(inv, t=1)) if n > 1 else float(abs(inv.matvec(np.ones(1, dt))[0]))
    if not np.isfinite(est) or est == 0:
        return 0.0
    return 1.0 / (anorm * est)


def _rcond_option(cfg) -> tuple[dict, bool]:
    """The backend options without ``rcond`` (``options={'rcond': False}`` skips the estimate)."""
    opts = dict(cfg.options or {})
    return opts, bool(opts.pop("rcond", True))


# ----------------------------------------------------------------- SuperLU
def _lu_setup(A, cfg, mtype):
    import scipy.sparse.linalg as spla

    S = _csc(A, mtype)
    opts, estimate = _rcond_option(cfg)
    if mtype in _SYMMETRIC and not opts:
        # symmetric structure: minimum degree on A^T + A and a diagonal-preferring pivot
        opts = dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options=dict(SymmetricMode=True))
    try:
        lu = spla.splu(S, **opts)
    except RuntimeError as exc:
        raise SingularMatrixError(f"SuperLU: {exc} (the matrix is singular)") from exc
    return _Factored(lu, S, estimate)


def _lu_apply(lu, b, transpose=False):
    x = lu.solve(_np(b), trans="H" if transpose else "N")
    return _back(x, b), {"rcond": lu.rcond}


# ----------------------------------------------------------------- CHOLMOD
def _cholmod(A, mtype, mode):
    try:
        from sksparse import cholmod
    except ImportError as exc:
        raise BackendUnavailableError(
            "method 'cholesky'/'ldlt' of the scipy backend needs CHOLMOD: "
            "apt-get install libsuitesparse-dev && pip install 'scikit-sparse==0.4.16' (the 'cholmod' extra)"
        ) from exc
    S = _csc(A, mtype)
    if S.dtype == np.float32:
        S = S.astype(np.float64)
    elif S.dtype == np.complex64:
        S = S.astype(np.complex128)
    try:
        f = _symbolic(cholmod, A.pattern, S, mode).cholesky(S)  # a new numeric factor on the cached analysis
        if mode != "simplicial":
            # CHOLMOD may choose a simplicial LDL^T, which succeeds on indefinite
            # matrices: definiteness is D > 0.
            d = f.D()
            if not np.all(d.real > 0):
                raise NotPositiveDefiniteError(
                    f"CHOLMOD: the matrix is not positive definite ({int(np.sum(d.real <= 0))} non-positive pivots)"
                )
        else:
            d = f.D()
        # CHOLMOD's own estimate (cholmod_rcond): (min / max of diag L)^2 = min / max of D
        ad = np.abs(d.real) if d.size else np.ones(1)
        return _Cholmod(f, float(ad.min() / ad.max()) if ad.max() > 0 else 0.0)
    except cholmod.CholmodNotPositiveDefiniteError as exc:
        if mode == "simplicial":
            raise SingularMatrixError(f"CHOLMOD LDL^T hit a zero pivot: {exc}") from exc
        raise NotPositiveDefiniteError(f"CHOLMOD: the matrix is not positive definite ({exc})") from exc


def _symbolic(cholmod, pattern, S, mode: str):
    """CHOLMOD's symbolic analysis (fill-reducing ordering, elimination tree, supernodes) of ``S``,
    kept on ``pattern``: it depends on the structure only, so every later set of values on the
    same pattern (``A.with_values(v)``, a SparseTensor rebuilt from the same indices) costs a
    numeric factorisation only.  The cached object is analysed, never factored: each
    factorisation is a copy of it (``Factor.cholesky``), so earlier factors stay valid."""
    key = ("cholmod_symbolic", mode, S.dtype.kind == "c")
    sym = pattern.cache.get(key)
    if sym is None:
        sym = cholmod.analyze(S, mode=mode)
        pattern.cache[key] = sym
    return sym


class _Cholmod:
    """A CHOLMOD factor and its reciprocal condition estimate."""

    def __init__(self, f, rcond: float):
        self.f, self.rcond = f, rcond

    def __call__(self, b):
        return self.f(b)


def _chol_setup(A, cfg, mtype):
    return _cholmod(A, mtype, "auto")


def _ldlt_setup(A, cfg, mtype):
    if mtype not in _SYMMETRIC or (A.is_complex and mtype == "symmetric"):
        raise ValueError(
            f"method 'ldlt' needs a real symmetric or complex Hermitian matrix, got a {A.dtype} {mtype!r} matrix"
        )
    return _cholmod(A, mtype, "simplicial")


def _chol_apply(f, b, transpose=False):
    # Hermitian: A^H = A, the same factor serves the adjoint solve.
    x = f(_np(b).astype(np.complex128 if b.is_complex() else np.float64))
    if not np.all(np.isfinite(x)):
        raise SingularMatrixError("CHOLMOD produced a non-finite solution (singular matrix)")
    return _back(x, b), {"rcond": f.rcond}


# ----------------------------------------------------------------- UMFPACK
def _umf_setup(A, cfg, mtype):
    try:
        import scikits.umfpack as um
    except ImportError as exc:
        raise BackendUnavailableError("method 'umfpack' needs scikit-umfpack: pip install scikit-umfpack") from exc
    S = _csc(A)
    if S.dtype in (np.float32, np.complex64):
        S = S.astype(np.complex128 if np.iscomplexobj(S.data) else np.float64)
    _, estimate = _rcond_option(cfg)
    try:
        return _Factored(um.splu(S), S, estimate)
    except RuntimeError as exc:
        raise SingularMatrixError(f"UMFPACK: {exc}") from exc


def _umf_apply(lu, b, transpose=False):
    rhs = _np(b)
    rhs = rhs.astype(np.complex128 if b.is_complex() else np.float64)
    x = lu.solve(rhs, trans="H" if transpose else "N")
    return _back(x, b), {"rcond": lu.rcond}


# --------------------------------------------------------------- iterative
class _Krylov(KrylovAdapter):
    backend = "scipy"

    def __init__(self, A, cfg, mtype, method):
        S = A.to_scipy("csr")
        self.real_embedding = method == "minres" and A.is_complex
        if self.real_embedding:
            # SciPy's MINRES is real-only in practice: solve the real symmetric
            # embedding [[Re, -Im], [Im, Re]] of the Hermitian matrix instead.
            import scipy.sparse as sp

            R, I = S.real, S.imag
            S = sp.block_array([[R, -I], [I, R]], format="csr")
        AH = S if mtype in _SYMMETRIC and (mtype in ("hermitian", "hpd") or not A.is_complex) else None
        self.notes: list = []
        self.setup(S, AH, S.diagonal(), cfg, method, A.dtype)

    def linalg(self):
        import scipy.sparse.linalg as spla

        return spla

    def to_array(self, b):
        return _np(b)

    def from_columns(self, cols, like):
        return _back(np.stack(cols, 1), like)

    def solve_column(self, A, M, bk):
        count, counting = self.counter()
        last = [None]  # the last finite iterate: a breakdown into NaN (rtol=0 past convergence) keeps it

        def cb(xk=None):
            counting()
            if self.method != "gmres" and xk is not None and np.all(np.isfinite(xk)):
                last[0] = np.array(xk, copy=True)

        kw = dict(rtol=self.rtol, atol=self.atol, maxiter=self.maxiter, M=M, callback=cb)
        if self.method == "gmres":
            kw.update(restart=self.restart, callback_type="pr_norm")
        if self.method == "minres":
            kw.pop("atol")
        target = max(self.rtol * np.linalg.norm(bk), self.atol)
        # SciPy stops on its own residual estimate (MINRES: a backward-error bound);
        # correct with the residual equation until the true residual meets the tolerance.
        x = np.zeros_like(bk)
        r = bk
        breakdowns = 0
        for _ in range(4):
            with np.errstate(invalid="ignore", divide="ignore"):
                d, info = self.fn(A, r, **kw)
            if not np.all(np.isfinite(d)) and last[0] is not None:
                self.notes.append(f"scipy {self.method} broke down (non-finite iterate); the last finite one is kept")
                x = x + last[0]
                return x, count[0], False
            if info < 0:
                # a breakdown (BiCGStab: rho or omega ~ 0, info -10/-11), not bad input: restart from the
                # true residual (a new shadow vector); a second one in a row hands the column to GMRES
                breakdowns += 1
                if breakdowns > 1 or not np.all(np.isfinite(d)):
                    return self._fallback(A, M, bk, x, count)
            x = x + d
            r = bk - A @ x
            if info > 0 or (info == 0 and np.linalg.norm(r) <= target):
                break
        return x, count[0], info == 0 and np.linalg.norm(r) <= 10 * target

    def _fallback(self, A, M, bk, x, count):
        """GMRES on the residual equation after repeated breakdowns of the method."""
        import scipy.sparse.linalg as spla

        self.notes.append(f"scipy {self.method} broke down; the column was finished with gmres")
        target = max(self.rtol * np.linalg.norm(bk), self.atol)
        r = bk - A @ x
        d, info = spla.gmres(
            A,
            r,
            rtol=self.rtol * np.linalg.norm(bk) / max(np.linalg.norm(r), 1e-300),
            atol=self.atol,
            maxiter=self.maxiter,
            M=M,
            restart=self.restart,
        )
        x = x + d
        return x, count[0], info == 0 and np.linalg.norm(bk - A @ x) <= 10 * target

    def apply(self, b, transpose=False):
        if self.real_embedding and b.is_complex():
            n = b.shape[0]
            xr, stats = self.apply(torch.cat([b.real, b.imag]), transpose)
            return torch.complex(xr[:n], xr[n:]), stats
        self.notes = []
        x, stats = super().apply(b, transpose)
        if self.notes:
            stats["notes"] = sorted(set(self.notes))
        if not stats["converged"]:
            stats["reason"] = (
                "SciPy's method stopped without reaching the tolerance (iteration budget spent, breakdown, "
                "or an estimate the true residual did not confirm -- the attainable accuracy)"
            )
        return x, stats


def _krylov(method, types):
    return krylov_method(_Krylov, method, types)


def _choose(n, dtype, mtype, kind=None):
    if kind == "iterative":
        return "cg" if mtype in _DEFINITE else "minres" if mtype in ("symmetric", "hermitian") else "gmres"
    if mtype in _DEFINITE and has_cholmod():
        return "cholesky"
    return "lu"


BACKEND = Backend(
    name="scipy",
    devices=("cpu",),
    check=_check,
    extra=None,
    choose=_choose,
    description="SciPy: SuperLU, CHOLMOD/UMFPACK when installed, Krylov methods",
    methods={
        "lu": Method("lu", "direct", _lu_setup, _lu_apply),
        "cholesky": Method("cholesky", "direct", _chol_setup, _chol_apply, matrix_types=_DEFINITE, fallback="lu"),
        "ldlt": Method("ldlt", "direct", _ldlt_setup, _chol_apply, matrix_types=_SYMMETRIC, fallback="lu"),
        "umfpack": Method("umfpack", "direct", _umf_setup, _umf_apply),
        "cg": _krylov("cg", _DEFINITE),
        "bicgstab": _krylov("bicgstab", ("general",) + _SYMMETRIC),
        "gmres": _krylov("gmres", ("general",) + _SYMMETRIC),
        "minres": _krylov("minres", _SYMMETRIC),
    },
)
