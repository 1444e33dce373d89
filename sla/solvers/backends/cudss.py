"""cuDSS backend (CUDA): sparse Cholesky, LDL^T and LU through nvmath-python.

cuDSS works in three phases: *analysis* (reordering + symbolic factorisation,
by far the slowest, and structural), *factorisation* (numeric) and *solve*.
This backend keeps the analysis on the :class:`~sla.Pattern` (``pattern.cache``),
so a later solve with new values on the same pattern only refactorises:

1. ``setup`` looks up the pattern's :class:`_Plan` for (dtype, cuDSS matrix type,
   batch size) -- building it (analysis) only the first time -- and factorises
   the values into it;
2. ``apply`` solves all right-hand sides in one cuDSS call (and all batch members:
   a batch of matrices on one pattern is one cuDSS batch);
3. the adjoint (``transpose=True``) reuses the factors when ``A^H = A`` (real
   symmetric, Hermitian) or ``A^H = conj(A)`` (complex symmetric); for a general
   matrix it factorises ``A^H`` once per values version on a second plan.

A plan holds the factors of the values it factorised last.  Each state
remembers its own values, and refactorises when another state used the plan in
between (e.g. the backward pass of an older solve), so cached states stay right.

The cuDSS multithreading layer (``$CUDSS_MTLAYER``, ``$CUDSS_THREADING_LIB`` or the
pip package's ``libcudss_mtlayer_gomp.so.0``) cuts the analysis time about 4x; it
is used whenever found.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import itertools
import logging
import os

import numpy as np
import torch

from ..._optional import installed
from ...config import NotPositiveDefiniteError, SingularMatrixError
from ...pattern import csr_tensor
from ..linear.registry import Backend, Method

_log = logging.getLogger("sla")

_SYMMETRIC = ("symmetric", "spd", "hermitian", "hpd")
_DEFINITE = ("spd", "hpd")

# Above this many unknowns 'auto' prefers the preconditioned Krylov backend ('pytorch',
# when available).  Measured on an H100 (benchmarks/README.md, "GPU direct solvers"),
# 2D Poisson: a later solve (new values, cached plan) is faster with cuDSS up to ~3M
# unknowns (1M: 29 vs 61 ms; 4M: 112 vs 90 ms), forward + backward up to ~8M; the
# first solve (planning) always loses to multigrid-CG.  2M keeps 'auto' on the side
# of the measured later-solve crossover.
AUTO_MAX_N = 2_000_000

_token = itertools.count(1)


# ------------------------------------------------------------ availability
def mtlayer_path() -> str | None:
    """Path of cuDSS's multithreading layer, or None.

    ``$CUDSS_MTLAYER`` or ``$CUDSS_THREADING_LIB`` when they name a file, else the
    library shipped by the pip package (``nvidia/cu12/lib``, ``nvidia/cu13/lib`` or
    ``nvidia/cudss/lib`` in site-packages).
    """
    for var in ("CUDSS_MTLAYER", "CUDSS_THREADING_LIB"):
        p = os.environ.get(var)
        if p and os.path.isfile(p):
            return p
    return _packaged_mtlayer()


@functools.lru_cache(maxsize=1)
def _packaged_mtlayer() -> str | None:
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    for root in list(spec.submodule_search_locations or []) if spec else []:
        hits = sorted(glob.glob(os.path.join(root, "*", "lib", "libcudss_mtlayer_gomp.so*")))
        if hits:
            return hits[0]
    return None


@functools.lru_cache(maxsize=1)
def _check() -> str | None:
    if not installed("nvmath"):
        return "nvmath-python (with the cuDSS library) is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        from nvmath.bindings import cudss

        version = (cudss.get_property(0), cudss.get_property(1))
    except Exception as exc:  # a missing libcudss.so shows up here
        return f"the cuDSS library could not be loaded ({type(exc).__name__}: {exc})"
    _log.debug("cuDSS %s.%s found", *version)
    return None


def _host_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _thread_ready(device: torch.device) -> None:
    """Make nvmath-python usable in this thread (autograd runs backward in its own thread).

    cuda.core needs ``Device.set_current()`` once per thread, and nvmath-python 1.0
    creates its per-thread scratch arrays only in the thread that imported it.
    """
    from cuda.core import Device

    Device(device.index if device.index is not None else torch.cuda.current_device()).set_current()
    try:
        from nvmath.sparse._internal import cudss_config_ifc, cudss_data_ifc
    except ImportError:  # a later nvmath-python with another layout
        return
    for m in (cudss_config_ifc, cudss_data_ifc):
        if not hasattr(m._tls, "size_written"):
            m._tls.size_written = np.empty((1,), dtype=np.uint64)


# ------------------------------------------------------------------- plans
_CTYPE = {"general": "GENERAL", "symmetric": "SYMMETRIC", "hermitian": "HERMITIAN", "spd": "SPD", "hpd": "HPD"}


def _cudss_type(method: str, mtype: str, complex_: bool) -> str:
    if method == "lu":
        return "GENERAL"
    if method == "cholesky":
        return "HPD" if complex_ else "SPD"
    # ldlt: real symmetric, complex Hermitian, or complex symmetric
    if mtype in ("hermitian", "hpd") or (not complex_ and mtype in _SYMMETRIC):
        return "HERMITIAN" if complex_ else "SYMMETRIC"
    return "SYMMETRIC"


_VTYPE = {torch.float32: "R_32F", torch.float64: "R_64F", torch.complex64: "C_32F", torch.complex128: "C_64F"}


class _Plan:
    """One cuDSS analysis of a pattern (for a dtype, matrix type and batch size).

    Holds a values buffer that the cuDSS matrix points to; factorising copies
    new values into it (the structure, hence the analysis, stays valid).
    """

    def __init__(self, pattern, dtype: torch.dtype, ctype: str, batch: int, values: torch.Tensor):
        import nvmath.sparse.advanced as nva
        from nvmath.bindings import cudss

        if pattern.index_dtype != torch.int32:
            raise ValueError(f"cuDSS needs 32-bit indices; this pattern has nnz={pattern.nnz} (>= 2**31)")
        n = pattern.shape[0]
        self.n, self.batch, self.dtype = n, batch, dtype
        self.owner = 0
        self.values = values.detach().to(dtype).reshape(batch, pattern.nnz).clone()
        crow, ccol = pattern.crow, pattern.ccol
        a = [csr_tensor(crow, ccol, self.values[i], (n, n)) for i in range(batch)]
        if batch == 1:
            a = a[0]
            b = torch.zeros(n, 1, dtype=dtype, device=values.device)
        else:
            b = torch.zeros(batch, n, 1, dtype=dtype, device=values.device)
        _thread_ready(values.device)
        self.mtlayer = mtlayer_path()
        opts = nva.DirectSolverOptions(
            sparse_system_type=getattr(cudss.MatrixType, ctype),
            multithreading_lib=self.mtlayer,
            logger=logging.getLogger("sla.cudss"),
        )
        self._keep = (a, b, crow, ccol)
        self.solver = nva.DirectSolver(a, b, options=opts)
        if self.mtlayer:  # explicit: torch.set_num_threads(1) would otherwise leave the planner one thread
            self.solver.plan_config.host_nthreads = _host_threads()
        self.vtype = getattr(cudss.DataType, _VTYPE[dtype])
        self.multi_rhs = True
        self._info = np.zeros(1, dtype=cudss.get_data_param_dtype(cudss.DataParam.INFO))
        self._written = np.zeros(1, dtype=np.uint64)
        self.solver.plan()

    def factor(self, values2d: torch.Tensor, owner: int) -> int:
        """Numeric factorisation of ``values2d`` (``[batch, nnz]``); returns cuDSS's info.

        Calls the cuDSS bindings directly (thread-safe, no per-call stream/event objects).
        """
        from nvmath.bindings import cudss

        s = self.solver
        self.values.copy_(values2d)
        stream = torch.cuda.current_stream(self.values.device)
        cudss.set_stream(s.handle, stream.cuda_stream)
        cudss.execute(s.handle, cudss.Phase.FACTORIZATION, s.config_ptr, s.data_ptr, s.a_ptr, s.x_ptr, s.b_ptr)
        stream.synchronize()  # INFO is final once the factorisation ran
        cudss.data_get(
            s.handle,
            s.data_ptr,
            cudss.DataParam.INFO,
            self._info.ctypes.data,
            self._info.itemsize,
            self._written.ctypes.data,
        )
        self.owner = owner
        return int(self._info[0])

    def _dense(self, t: torch.Tensor):
        """cuDSS dense matrix of ``t`` (``[B, n, K]``, each sample column-major); returns (ptr, keep-alive)."""
        from nvmath.bindings import cudss

        B, n, K = t.shape
        if B == 1:
            return cudss.matrix_create_dn(n, K, n, t.data_ptr(), self.vtype, cudss.Layout.COL_MAJOR), None
        rows = np.full(B, n, dtype=np.int32)
        cols = np.full(B, K, dtype=np.int32)
        ptrs = torch.tensor([t[i].data_ptr() for i in range(B)], dtype=torch.int64, device=t.device)
        m = cudss.matrix_create_batch_dn(
            B,
            rows.ctypes.data,
            cols.ctypes.data,
            rows.ctypes.data,
            ptrs.data_ptr(),
            cudss.DataType.R_32I,
            self.vtype,
            cudss.Layout.COL_MAJOR,
        )
        return m, (rows, cols, ptrs)

    def _solve(self, b: torch.Tensor) -> torch.Tensor:
        from nvmath.bindings import cudss

        s = self.solver
        bc = b.resolve_conj().transpose(-1, -2).contiguous().transpose(-1, -2)  # column-major samples
        x = torch.empty_like(bc)
        cudss.set_stream(s.handle, torch.cuda.current_stream(b.device).cuda_stream)
        bm, keep_b = self._dense(bc)
        xm, keep_x = self._dense(x)
        try:
            cudss.execute(s.handle, cudss.Phase.SOLVE, s.config_ptr, s.data_ptr, s.a_ptr, xm, bm)
        finally:
            cudss.matrix_destroy(bm)
            cudss.matrix_destroy(xm)
        del keep_b, keep_x
        return x

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """Solve for ``b`` ``[batch, n, K]`` with the factors held now."""
        if self.multi_rhs or b.shape[-1] == 1:
            try:
                return self._solve(b)
            except Exception as exc:  # cuDSS that cannot change the RHS count after analysis
                if b.shape[-1] == 1:
                    raise
                _log.info("cuDSS multi-RHS solve failed (%s); solving column by column", exc)
                self.multi_rhs = False
        return torch.cat([self._solve(b[..., k : k + 1]) for k in range(b.shape[-1])], dim=-1)

    def __del__(self):
        try:
            self.solver.free()
        except Exception:  # interpreter shutdown or a CUDA context already gone
            pass


def _plan(pattern, values: torch.Tensor, ctype: str, batch: int, side: str) -> tuple[_Plan, bool]:
    key = ("cudss", side, values.dtype, ctype, batch, str(values.device))
    plan = pattern.cache.get(key)
    if plan is not None:
        return plan, False
    plan = _Plan(pattern, values.dtype, ctype, batch, values)
    pattern.cache[key] = plan
    if pattern.shape[0] == pattern.shape[1]:
        # keep the (int32) transpose permutation: the structure check of every later values
        # version becomes one gather (a factorisation dwarfs its 4 bytes per entry)
        pattern.transpose()
    return plan, True


# ------------------------------------------------------------------- state
class _State:
    """Factors of one values version (and, lazily, of its conjugate transpose)."""

    def __init__(self, A, cfg, mtype: str, method: str):
        self.method, self.mtype = method, mtype
        self.pattern = A.pattern
        self.batch = A.batch_size
        self.values = A._flat().detach().clone()
        cx = A.is_complex
        self.ctype = _cudss_type(method, mtype, cx)
        if mtype == "general":
            self.adjoint = "factor"
        elif cx and mtype == "symmetric":
            self.adjoint = "conj"
        else:
            self.adjoint = "same"
        self.token = next(_token)
        with torch.cuda.device(A.device):
            self.plan, fresh = _plan(self.pattern, self.values, self.ctype, self.batch, "A")
            self.planned_now = fresh
            self._factor(self.plan, self.values)
        self.plan_h = None
        self.values_h = None

    def _factor(self, plan: _Plan, values: torch.Tensor) -> None:
        info = plan.factor(values, self.token)
        if info != 0:
            plan.owner = 0
            if self.method == "cholesky":
                raise NotPositiveDefiniteError(f"cuDSS Cholesky: the matrix is not positive definite (info={info})")
            raise SingularMatrixError(
                f"cuDSS {self.method}: zero pivot during factorisation (info={info}); A is singular"
            )

    def _ready(self, plan: _Plan, values: torch.Tensor) -> _Plan:
        if plan.owner != self.token:
            self._factor(plan, values)
        return plan

    def apply(self, b: torch.Tensor, transpose: bool = False):
        with torch.cuda.device(b.device):
            if not transpose or self.adjoint == "same":
                return self._ready(self.plan, self.values).solve(b), {}
            if self.adjoint == "conj":  # A^H = conj(A): x = conj(A^{-1} conj(b))
                return self._ready(self.plan, self.values).solve(b.conj()).conj(), {}
            if self.plan_h is None:
                pt, perm = self.pattern.transpose()
                self.values_h = self.values[:, perm].conj().resolve_conj()
                self.plan_h, _ = _plan(pt, self.values_h, self.ctype, self.batch, "AH")
            return self._ready(self.plan_h, self.values_h).solve(b), {"notes": ["adjoint: factorised A^H"]}


def _setup(method):
    def setup(A, cfg, mtype):
        if method == "ldlt" and mtype not in _SYMMETRIC:
            raise ValueError(f"method 'ldlt' needs a symmetric or Hermitian matrix, got a {mtype!r} matrix")
        return _State(A, cfg, mtype, method)

    return setup


def _apply(state: _State, b: torch.Tensor, transpose: bool = False):
    squeeze = b.dim() == 2
    x, stats = state.apply(b.unsqueeze(0) if squeeze else b, transpose)
    return (x[0] if squeeze else x), stats


def _others_take_large(n: int, dtype: torch.dtype, mtype: str) -> bool:
    """True when an available Krylov backend on CUDA ('pytorch') accepts this system."""
    from ..linear import registry

    if "pytorch" not in registry.backend_names():
        return False
    b = registry.get_backend("pytorch")
    return b.check() is None and dtype in b.dtypes and b.choose(n, dtype, mtype, "iterative") is not None


def _choose(n, dtype, mtype, kind=None):
    if kind == "iterative":
        return None
    if kind is None and n > AUTO_MAX_N and _others_take_large(n, dtype, mtype):
        return None
    if mtype in _DEFINITE:
        return "cholesky"
    if mtype in _SYMMETRIC:
        return "ldlt"
    return "lu"


BACKEND = Backend(
    name="cudss",
    devices=("cuda",),
    check=_check,
    extra="cuda",
    batched=True,
    choose=_choose,
    description="NVIDIA cuDSS (nvmath-python): Cholesky, LDL^T, LU; analysis cached per pattern",
    methods={
        "cholesky": Method("cholesky", "direct", _setup("cholesky"), _apply, matrix_types=_DEFINITE, fallback="ldlt"),
        "ldlt": Method("ldlt", "direct", _setup("ldlt"), _apply, matrix_types=_SYMMETRIC, fallback="lu"),
        "lu": Method("lu", "direct", _setup("lu"), _apply),
    },
)
