"""Multigrid cycles in torch: the V/W cycle shared by algebraic
(:class:`sla.solvers.precond.amg.SmoothedAggregation`) and geometric
(:class:`sla.solvers.precond.gmg.GeometricMultigrid`) multigrid.

A hierarchy is a list of :class:`Level`, each with its operator (torch CSR, int32
indices), inverse diagonal, Chebyshev smoother bound and transfer operators, and
a dense inverse on the coarsest level.  Everything runs on A's device; batched
matrices carry one hierarchy per member, applied together.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...kernels import add_at_, all_, any_, count_, reciprocal, repeat_rows
from ...pattern import csr_tensor
from ...products import csr_add_matmul_, csr_matmul, csr_residual
from ...sparse import SparseTensor
from .base import Preconditioner
from .chebyshev import LANCZOS_SAFETY, capped, chebyshev_iteration, gershgorin_bound, ritz_estimate

__all__ = [
    "AUTO_FLEXIBLE",
    "DENSE_MAX",
    "MIXED_MIN",
    "AutoCycle",
    "Level",
    "Mat",
    "Multigrid",
    "cast_csr",
    "check_cycle",
    "coarse_dtype_for",
    "csr32",
    "entry_blocks",
]


def csr32(crow, col, values, shape) -> torch.Tensor:
    """Torch CSR with int32 indices when they fit (a faster SpMV than int64)."""
    if max(int(crow[-1]) if crow.numel() else 0, *shape) < 2**31 - 1:
        crow, col = crow.to(torch.int32), col.to(torch.int32)
    return csr_tensor(crow, col, values, shape)


def _index_dtype(nnz: int, shape) -> torch.dtype:
    return torch.int32 if max(nnz, *shape) < 2**31 - 1 else torch.int64


class Mat:
    """CSR arrays plus the row of every entry: the setup-time form of a level matrix.

    Indices are int32 whenever ``nnz`` and the shape fit (half the memory of the setup's
    index work; int64 only beyond), so products of these matrices take int32 inputs and
    code that forms linear indices ``row * N + col`` widens them first.
    """

    __slots__ = ("_diag", "_rho", "_row", "col", "crow", "shape", "val")

    def __init__(self, crow, col, val, shape, row=None):
        shape = tuple(int(s) for s in shape)
        dt = _index_dtype(col.numel(), shape)
        self.crow, self.col, self.val, self.shape = crow.to(dt), col.to(dt), val, shape
        self._row = None if row is None else row.to(dt)
        self._diag = None
        self._rho = None

    @property
    def row(self) -> torch.Tensor:
        """Row index of every entry (built on first use, in the dtype of ``col``)."""
        if self._row is None:
            counts = self.crow[1:] - self.crow[:-1]
            self._row = repeat_rows(counts, 0, self.col.numel(), self.col.dtype)
        return self._row

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """The row of entries ``lo:hi``: a slice of :attr:`row` when that is built; else made for these
        entries alone, so a scan in blocks never builds the nnz-sized array.  On a GPU by a search of
        each entry's position in the row starts, which never waits on the device (H200, 5-point 16M:
        the Gershgorin bound's 80 blocks 5.8 ms against 18-23 with a host look each); on the CPU,
        where a host look is free and the search is 20 times slower, by repeating the block's rows."""
        if self._row is not None:
            return self._row[lo:hi]
        if self.crow.device.type != "cpu":
            e = torch.arange(lo, hi, dtype=self.crow.dtype, device=self.crow.device)
            return torch.searchsorted(self.crow, e, right=True, out_int32=self.col.dtype == torch.int32).sub_(1)
        ends = torch.tensor([lo, hi - 1], dtype=self.crow.dtype)
        r0, r1 = (torch.searchsorted(self.crow, ends, right=True) - 1).tolist()  # rows of the first and last entry
        crow = self.crow[r0 : r1 + 2]
        counts = crow[1:].clamp(max=hi) - crow[:-1].clamp(min=lo)
        return repeat_rows(counts, r0, hi - lo, self.col.dtype)

    @classmethod
    def from_torch(cls, C: torch.Tensor) -> Mat:
        # values() of a torch sparse tensor is a view whose base is the whole tensor (its int64
        # index arrays included): a plain tensor on the same storage keeps only the values alive
        v = C.values()
        val = v.new_empty(0).set_(v.untyped_storage(), v.storage_offset(), v.shape, v.stride())
        return cls(C.crow_indices(), C.col_indices(), val, C.shape)

    def csr64(self, val=None) -> torch.Tensor:
        return csr_tensor(self.crow, self.col, self.val if val is None else val, self.shape)

    def csr32(self) -> torch.Tensor:
        return csr32(self.crow, self.col, self.val, self.shape)

    def select(self, keep: torch.Tensor) -> Mat:
        """The entries where ``keep`` is true (a boolean mask over the stored entries)."""
        if bool(all_(keep)):
            return self
        row = self.row[keep]
        crow = torch.zeros(self.shape[0] + 1, dtype=torch.int64, device=self.val.device)
        torch.cumsum(count_(crow.new_zeros(self.shape[0]), row), 0, out=crow[1:])
        return Mat(crow, self.col[keep], self.val[keep], self.shape, row=row)

    def diag(self) -> torch.Tensor:
        """The diagonal (computed once: the level setup and the smoother both need it), by blocks of
        entries (:meth:`rows`: no row array of the matrix's size)."""
        if self._diag is None:
            d = self.val.new_zeros(self.shape[0])
            nnz = self.col.numel()
            for lo in range(0, nnz, DIAG_CHUNK):
                hi = min(lo + DIAG_CHUNK, nnz)
                r = self.rows(lo, hi)
                on = r == self.col[lo:hi]
                add_at_(d, 0, r[on], self.val[lo:hi][on])
            self._diag = d
        return self._diag

    def gershgorin(self, d: torch.Tensor) -> float:
        """Upper bound of the spectral radius of ``D^{-1} A`` (largest row sum of ``|D^{-1} A|``)."""
        return float(gershgorin_bound(self.rows, self.val, d))

    def bound(self, hermitian: bool, safety: float = LANCZOS_SAFETY) -> float:
        """``rho(D^{-1} A)`` estimated by Lanczos (Hermitian A, positive diagonal) times ``safety``,
        capped by the Gershgorin bound, which is the fallback (:func:`~.chebyshev.ritz_estimate`).
        The Lanczos run is made once per matrix."""
        if self._rho is None:
            A = self.csr64()
            self._rho = ritz_estimate(lambda x: torch.mv(A, x), self.rows, self.val, self.diag(), hermitian)
        return float(capped(*self._rho, safety))


def entry_blocks(nnz: int, minimum: int = 1 << 18):
    """``(lo, hi)``: eight blocks of a matrix's entries (at least ``minimum`` each), for scans whose
    temporaries should stay an eighth of an entry-sized array."""
    step = max(minimum, -(-nnz // 8))
    for lo in range(0, nnz, step):
        yield lo, min(lo + step, nnz)


DIAG_CHUNK = 1 << 22
"""Entries per block of :meth:`Mat.diag` (its temporaries: a block's rows and mask)."""

MIXED_MIN = 1_000_000
"""``coarse_dtype='auto'`` takes single precision on GPUs from this many unknowns (where memory
and bandwidth are what a solve is short of; smaller systems keep the exact symmetric cycle)."""

_SINGLE = {torch.float64: torch.float32, torch.complex128: torch.complex64}


def coarse_dtype_for(coarse_dtype, A: SparseTensor) -> torch.dtype:
    """The dtype of a multigrid's coarse levels, transfers and inverse diagonals, checked.

    ``'auto'``: single precision for a double-precision A on GPUs from :data:`MIXED_MIN` unknowns
    (every cycle: the K-cycle's coarse Krylov steps run within the coarse levels, in their dtype);
    A's dtype otherwise.
    """
    dtype = A.dtype
    if isinstance(coarse_dtype, str) and coarse_dtype == "auto":
        mixed = A.device.type == "cuda" and A.shape[-1] >= MIXED_MIN
        return _SINGLE.get(dtype, dtype) if mixed else dtype
    if (
        not isinstance(coarse_dtype, torch.dtype)
        or coarse_dtype.is_complex != dtype.is_complex
        or not (coarse_dtype.is_floating_point or coarse_dtype.is_complex)
    ):
        kind = "a complex dtype" if dtype.is_complex else "a floating dtype"
        raise ValueError(f"coarse_dtype must be 'auto' or {kind} (A is {dtype}), got {coarse_dtype!r}")
    return coarse_dtype


def cast_csr(C: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A torch CSR matrix with its values in ``dtype`` (the same index arrays)."""
    if C is None or C.dtype == dtype:
        return C
    return csr_tensor(C.crow_indices(), C.col_indices(), C.values().to(dtype), tuple(C.shape))


class Level:
    """One level: operator ``A`` (int32 CSR), ``dinv``, Chebyshev bound ``hi``, transfers to the next level."""

    def __init__(
        self, A: Mat | None, P=None, R=None, prolong=None, restrict=None, csr=None, diag=None, hi=None, smoothed=None
    ):
        """``A`` (setup form) may be ``None`` when ``csr``, ``diag`` and ``hi`` are given.

        ``smoothed = (T, w)`` stands for ``P = (I - w D^{-1} A) T``, applied and not stored: ``T(xc)``
        gives ``T xc`` (``T`` also has ``cast(dtype)`` and ``nbytes()``), and a correction costs one
        product with this level's operator instead of P's storage."""
        d = A.diag() if diag is None else diag
        if bool(any_(d == 0)):
            raise ValueError("multigrid needs a non-zero diagonal on every level (a zero pivot appeared)")
        self.A = A.csr32() if csr is None else csr
        self.dinv = reciprocal(d).unsqueeze(-1)
        self.hi = A.gershgorin(d) if hi is None else hi
        self.P = P.csr32() if isinstance(P, Mat) else P
        self.R = R.csr32() if isinstance(R, Mat) else R
        self._prolong, self._restrict = prolong, restrict
        self.T, self.w = smoothed if smoothed is not None else (None, 0.0)

    @property
    def n(self) -> int:
        return self.A.shape[0]

    def mv(self, x):
        return csr_matmul(self.A, x)

    def residual(self, b, x):
        """``b - A x`` (one new vector)."""
        return csr_residual(b, self.A, x)

    def correct(self, x, xc):
        """``x + P xc`` (in place into ``x`` where the transfer allows: x is the cycle's own).  A
        single-precision ``P`` (coarse levels in another dtype) adds its product into ``x``'s dtype."""
        if self._prolong is not None:
            return self._prolong(x, xc)
        if self.T is not None:  # x + T xc - w D^{-1} A (T xc), in x's precision
            u = self.T(xc).to(x.dtype)
            x.add_(u)
            return x.addcmul_(self.dinv, csr_matmul(self.A, u), value=-self.w)
        if self.P.dtype != x.dtype:
            return x.add_(csr_matmul(self.P, xc))
        return csr_add_matmul_(x, self.P, xc)

    def restrict(self, r):
        """``R r``, in ``R``'s dtype (the coarse levels')."""
        if self._restrict is not None:
            return self._restrict(r)
        return csr_matmul(self.R, r if r.dtype == self.R.dtype else r.to(self.R.dtype))

    def cast(self, dtype: torch.dtype, fine: bool) -> None:
        """Stored transfers and the inverse diagonal in ``dtype``, and the operator too unless ``fine``
        (the fine level keeps A's own, the Krylov method's operator)."""
        if not fine:
            self.A = cast_csr(self.A, dtype)
        self.P, self.R = cast_csr(self.P, dtype), cast_csr(self.R, dtype)
        if self.T is not None:
            self.T.cast(dtype)
        self.dinv = self.dinv.to(dtype)

    def nbytes(self) -> int:
        total = 0 if self.T is None else self.T.nbytes()
        for M in (self.A, self.P, self.R):
            if M is not None and not isinstance(M, torch.Tensor):  # a RowBlockedCSR (tensors have nbytes too)
                total += M.nbytes()
            elif M is not None:
                total += sum(t.numel() * t.element_size() for t in (M.crow_indices(), M.col_indices(), M.values()))
        return total + self.dinv.numel() * self.dinv.element_size()


def _chebyshev(lv: Level, b, x, degree: int, ratio: float):
    """The level's Chebyshev smoother on ``[hi / ratio, hi]`` (``x``, the cycle's own, updated in place)."""
    return chebyshev_iteration(lv.residual, lv.dinv, b, x, lv.hi / ratio, lv.hi, degree)


_HOST_INVERSE_MAX = 2000  # coarsest levels up to this size are inverted on the CPU

_ONE_THREAD_MAX = 512
"""Coarsest levels up to this size are inverted in one thread on hosts where torch runs more than
:data:`_ONE_THREAD_FROM` threads: a 225-row inverse took 4-82 ms in torch's 16 threads (an H200's
host, varying from solve to solve) for well under 1 ms of work, where two threads on two cores
were 1 ms faster than one (``bench_coarse_inverse.py``)."""

_ONE_THREAD_FROM = 4


def _dense_inverse(C: torch.Tensor) -> torch.Tensor:
    """The coarsest level's dense inverse (float64 work).  Small ones are inverted on the CPU and
    moved, and densified there too: a GPU inverse would initialise the dense solver library (about
    a second, once per process) and a GPU ``to_dense`` load its kernel family (~60 ms on an H200) for a
    matrix of a few hundred rows.  On the CPU NumPy densifies (torch's ``to_dense`` costs 7-18 ms on
    its first call in a process); a singular or non-finite inverse falls back to the pseudo-inverse.
    Up to :data:`_ONE_THREAD_MAX` rows, on a host of more than :data:`_ONE_THREAD_FROM` threads, the
    inverse runs in one thread (the caller's count restored after it)."""
    if C.device.type != "cpu" and C.shape[0] <= _HOST_INVERSE_MAX:
        return _dense_inverse(C.cpu()).to(C.device)
    threads = torch.get_num_threads()
    if C.shape[0] > _ONE_THREAD_MAX or threads <= _ONE_THREAD_FROM:
        return _invert(C)
    torch.set_num_threads(1)
    try:
        return _invert(C)
    finally:
        torch.set_num_threads(threads)


def _invert(C: torch.Tensor) -> torch.Tensor:
    """The dense inverse of :func:`_dense_inverse` on C's device (on the CPU in the current threads)."""
    work = torch.complex128 if C.is_complex() else torch.float64
    if C.device.type == "cpu":  # densified with NumPy: no first call of torch's to_dense (7-18 ms)
        crow, col = C.crow_indices().numpy(), C.col_indices().numpy()
        Dn = np.zeros(tuple(C.shape), dtype=np.complex128 if C.is_complex() else np.float64)
        Dn[np.repeat(np.arange(C.shape[0]), np.diff(crow)), col] = C.values().detach().to(work).numpy()
        Dw = torch.from_numpy(Dn)
    else:
        Dw = C.detach().to_dense().to(work)
    # torch's LAPACK (NumPy's OpenBLAS would start threads that spin beside torch's)
    inv, info = torch.linalg.inv_ex(Dw)
    if int(info) != 0 or not bool(torch.isfinite(inv).all()):
        inv = torch.linalg.pinv(Dw, hermitian=bool(torch.allclose(Dw, Dw.mH)))
    return inv.to(C.dtype)


def _apply_inverse(cinv: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``cinv @ b`` for the coarsest level.  One column on a GPU is a product and a row sum (a few
    hundred rows): the solve's own kernel families, where ``@`` would start the dense BLAS library
    (cuBLAS, and its single-precision kernels again under float32 coarse levels) on first use."""
    if b.shape[-1] == 1 and b.device.type != "cpu":
        return (cinv * b.mT).sum(-1, keepdim=True)
    return cinv @ b


DENSE_MAX = 8000
"""The cycle ends in a dense inverse of the coarsest level up to this size (Chebyshev sweeps beyond)."""

_CYCLES = {"V": 1, "W": 2, "K": 2}
"""Coarse-grid visits per level: V once, W twice, K up to twice (two flexible Krylov steps)."""

K_THRESHOLD = 0.25
"""K-cycle: the second Krylov step on a coarse level is skipped when the first one already
reduced the coarse residual to this fraction (Notay & Vassilevski 2008, ``t = 0.25``); only on
the device types in :data:`K_SKIP_DEVICES`."""

K_SKIP_DEVICES = ("cpu",)
"""Device types where the K-cycle looks at the coarse residual norm (:data:`K_THRESHOLD`): on the
CPU a look is free; on a GPU it would be a host synchronisation per coarse visit (and would break
a CUDA graph capture), so both Krylov steps always run there."""

K_MIN_ROWS = {"cpu": 0, "cuda": 100_000}
"""K-cycle: coarse levels with fewer rows than this (per device type) take one plain coarse
correction (as in a V-cycle) instead of the two Krylov steps.  Every Krylov level doubles the
visits of all levels below it, and on a GPU a visit of a small level costs its kernel launches
(about 30), not its arithmetic.  5-point AMG-CG with both Krylov steps always (as on a GPU),
iterations / torch ops per cycle: 1M: V 13 / 131, K 10 / 875, K on levels >= 100K rows 10 / 283;
16M: V 24 / 163, K 11 / 1,835, K on levels >= 100K rows 11 / 651 (CPU runs of the same code)."""


AUTO_FLEXIBLE = {"amg": {"cpu": 0, "cuda": 4_000_000}}
"""Where ``cycle='auto'`` runs the K-cycle: by preconditioner name and device type, the fewest rows
from which a flexible Krylov method (CG, GMRES, FGMRES; see :meth:`Multigrid.flexible`) gets it.
Elsewhere, and inside other preconditioners or methods that need a fixed one (MINRES, BiCGStab,
block preconditioners), ``'auto'`` is the fixed cycle its class names.  CPU, 1 thread, AMG-CG: the
K-cycle needs fewer iterations that grow less with the grid at about the V-cycle's cost per
iteration (5-point, CPU seconds of a solve: 1M V 13 iterations / 1.02 s, K 11 / 1.08 s; 4M V 13 /
4.89 s, K 11 / 3.23 s; 16M V 24 / 42.9 s, K 11 / 22.9 s; P1 triangles 160K V 19 / 0.22 s, K 13 /
0.17 s; benchmarks/README.md).  H200 (``bench_multigrid_cycles.py --device cuda``, later solve):
1M V 13 iterations / 20 ms, K 10 / 27 ms; 16M V 24 / 154 ms, K 11 / 118 ms -- the crossover,
interpolated, lies near 5M rows (the K-cycle's extra coarse visits are kernel launches)."""


class AutoCycle(str):
    """The cycle ``'auto'`` resolved to (a ``str`` equal to it), marked as chosen automatically so that
    a :class:`Multigrid` may still run the K-cycle under a flexible Krylov method (:data:`AUTO_FLEXIBLE`)."""

    __slots__ = ()


def check_cycle(cycle, auto: str = "V") -> str:
    """The cycle name; ``'auto'`` resolved to ``auto`` (an :class:`AutoCycle`); a clear error for anything else."""
    if isinstance(cycle, AutoCycle):
        return cycle
    if cycle == "auto":
        return AutoCycle(auto)
    if not isinstance(cycle, str) or cycle not in _CYCLES:
        raise ValueError(
            f"cycle must be one of {sorted(_CYCLES) + ['auto']}, got {cycle!r} "
            "(V, W, or K: the Krylov-accelerated K-cycle; 'auto' picks by device and Krylov method)"
        )
    return cycle


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_i conj(u_i) v_i`` per column of ``[n, K]`` blocks, ``[1, K]``."""
    return torch.linalg.vecdot(u, v, dim=0).unsqueeze(0)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, 0 where ``den`` is 0 (a zero right-hand side on a coarse level)."""
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


class Multigrid(Preconditioner):
    """V(nu, nu), W(nu, nu) or K-cycle over ``hierarchies`` (one list of :class:`Level` per batch member).

    The pre- and post-smoothers are the same Chebyshev polynomial, so the
    V- and W-cycles are symmetric positive definite for SPD A (valid CG preconditioners);
    a W-cycle repeats the coarse-grid correction (itself such a cycle) twice on
    every level, which keeps that symmetry.

    The K-cycle (Notay & Vassilevski, NLAA 15 (2008) 473; Notay, ETNA 37 (2010) 123) solves
    each coarse system that is not the coarsest with two steps of a Krylov method preconditioned
    by the next level's cycle (flexible CG for Hermitian A, GCR otherwise), so the coarse
    corrections stay accurate however many levels there are: the iterations hardly grow with
    the grid.  It is not a fixed linear map (:attr:`variable` is true), so CG switches to the
    flexible (Polak-Ribiere) beta and GMRES to FGMRES with it.
    """

    name = "multigrid"

    def __init__(
        self,
        A: SparseTensor,
        hierarchies,
        degree: int = 2,
        ratio: float = 10.0,
        cycle: str = "V",
        hermitian: bool | None = None,
    ):
        super().__init__(A)
        cycle = check_cycle(cycle)
        self.auto = isinstance(cycle, AutoCycle)  # chosen by 'auto': flexible() may run the K-cycle
        self.cycle = str(cycle)
        self.gamma = _CYCLES[self.cycle]
        self._flexible = None  # the K-cycle twin handed to flexible Krylov methods
        self.ran = None  # the cycle the last flexible Krylov solve ran, when it is not self.cycle
        self.hierarchies = hierarchies
        self.coarse = [_dense_inverse(h[-1].A) if h[-1].n <= DENSE_MAX else None for h in hierarchies]
        self.degree, self.ratio = degree, ratio
        if hermitian is not None or not hasattr(self, "hermitian"):
            self.hermitian = hermitian

    @property
    def variable(self) -> bool:
        """Whether the cycle is a variable (nonlinear) preconditioner: the K-cycle."""
        return self.cycle == "K"

    def flexible(self) -> Multigrid:
        """The preconditioner a flexible Krylov method should run (:func:`sla.solvers.krylov.cg`, gmres
        and fgmres ask for it): with ``cycle='auto'`` where :data:`AUTO_FLEXIBLE` says so, the K-cycle
        on the same hierarchy (made once, sharing every level); else ``self``."""
        least = AUTO_FLEXIBLE.get(self.name, {}).get(self.A.device.type)
        if not self.auto or self.cycle == "K" or least is None or self.A.sparse_shape[0] < least:
            return self
        if self._flexible is None:
            twin = copy.copy(self)
            twin.cycle, twin.gamma, twin.auto, twin._flexible = "K", _CYCLES["K"], False, None
            if getattr(twin, "_graph", None) is not None:  # a captured cycle replays this object's own
                twin._graph = None
            self._flexible = twin
        self.ran = "K"
        return self._flexible

    @property
    def levels(self) -> list:
        return self.hierarchies[0]

    def _is_hermitian(self) -> bool:
        if self.hermitian is None:
            from ...structure import is_symmetric

            self.hermitian = bool(is_symmetric(self.A, conjugate=True))
        return self.hermitian

    def _cycle(self, h, cinv, lvl: int, b: torch.Tensor) -> torch.Tensor:
        if lvl == len(h) - 1:
            return _apply_inverse(cinv, b) if cinv is not None else _chebyshev(h[lvl], b, None, 8, self.ratio)
        lv = h[lvl]
        x = _chebyshev(lv, b, None, self.degree, self.ratio)
        exact = lvl + 2 == len(h) and cinv is not None  # the next level is solved exactly
        if self.cycle == "K" and not exact and h[lvl + 1].n >= K_MIN_ROWS.get(b.device.type, 0):
            x = lv.correct(x, self._krylov(h, cinv, lvl + 1, lv.restrict(lv.residual(b, x))))
        else:
            # W: a second correction, unless the next level is solved exactly (it would add nothing);
            # K below K_MIN_ROWS: one, as in a V-cycle
            for _ in range(1 if exact or self.cycle == "K" else self.gamma):
                x = lv.correct(x, self._cycle(h, cinv, lvl + 1, lv.restrict(lv.residual(b, x))))
        return _chebyshev(lv, b, x, self.degree, self.ratio)

    def _krylov(self, h, cinv, lvl: int, r: torch.Tensor) -> torch.Tensor:
        """Two Krylov steps on level ``lvl``'s system ``A e = r`` preconditioned by its cycle (K-cycle).

        Hermitian A: flexible CG (the A-norm of the error is minimised over ``span{v1, v2}``);
        otherwise GCR (the residual norm).  The second step is skipped on the CPU when the first
        reduced ``||r||`` to :data:`K_THRESHOLD` of its size (:data:`K_SKIP_DEVICES`).
        """
        lv = h[lvl]
        v = self._cycle(h, cinv, lvl, r)
        w = lv.mv(v)
        herm = self._is_hermitian()
        if herm:
            rho1, a1 = _dot(v, w), _dot(v, r)
        else:
            rho1, a1 = _dot(w, w), _dot(w, r)
        c1 = _ratio(a1, rho1)
        r2 = r - c1 * w
        if r.device.type in K_SKIP_DEVICES and bool((_dot(r2, r2).real <= K_THRESHOLD**2 * _dot(r, r).real).all()):
            return v.mul_(c1)
        v2 = self._cycle(h, cinv, lvl, r2)
        w2 = lv.mv(v2)
        if herm:
            # d2 = v2 - (g / rho1) v is A-orthogonal to v: (d2, A d2) = (v2, A v2) - |g|^2 / rho1
            g = _dot(w, v2)
            rho2 = _dot(v2, w2).real - _ratio((g.conj() * g).real, rho1.real)
            a2 = _ratio(_dot(v2, r2), rho2)
        else:
            # GCR: A d2 = w2 - g w is orthogonal to w; r2 is already orthogonal to w
            g = _ratio(_dot(w, w2), rho1)
            w2 = w2 - g * w
            a2 = _ratio(_dot(w2, r2), _dot(w2, w2))
        # e = c1 v + a2 (v2 - g' v), g' = g / rho1 (Hermitian) or g (GCR)
        gv = _ratio(g, rho1) if herm else g
        return v.mul_(c1 - a2 * gv).add_(v2.mul_(a2))

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        self.ran = None  # this object's own cycle runs (not the K-cycle twin of flexible())
        if len(self.hierarchies) == 1:
            return self._cycle(self.hierarchies[0], self.coarse[0], 0, r[0]).unsqueeze(0)
        out = [self._cycle(h, c, 0, r[i]) for i, (h, c) in enumerate(zip(self.hierarchies, self.coarse))]
        return torch.stack(out)

    def complexity(self) -> tuple[float, float]:
        """(operator complexity, grid complexity) of the first hierarchy."""
        h = self.levels
        nnz = [lv.A.values().numel() for lv in h]
        return sum(nnz) / nnz[0], sum(lv.n for lv in h) / h[0].n

    def nbytes(self) -> int:
        return sum(lv.nbytes() for h in self.hierarchies for lv in h) + sum(
            c.numel() * c.element_size() for c in self.coarse
        )

    def describe(self) -> str:
        oc, _ = self.complexity()
        sizes = [lv.n for lv in self.levels]
        cyc = f"{self.cycle}-cycle"
        if self.ran is not None and self.ran != self.cycle:
            cyc = f"{self.ran}-cycle: cycle='auto' under a flexible Krylov method on {self.A.device.type}"
        elif self.auto:
            cyc += ", cycle='auto'"
        return f"{self.name} ({cyc}): {len(self.levels)} levels, sizes {sizes}, operator complexity {oc:.2f}"
