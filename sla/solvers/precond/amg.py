"""Multigrid V-cycles in torch, and smoothed-aggregation AMG setup.

:class:`Multigrid` is the V-cycle shared by algebraic (:class:`SmoothedAggregation`)
and geometric (:class:`sla.solvers.precond.gmg.GeometricMultigrid`) multigrid: a list of
levels, each with its operator (torch CSR, int32 indices), inverse diagonal,
Chebyshev smoother bounds and transfer operators, and a dense inverse on the
coarsest level.  Everything runs on A's device; batched matrices carry one
hierarchy per member, applied together.

Smoothed aggregation (Vanek, Mandel & Brezina 1996; pyamg's
``smoothed_aggregation_solver`` is the reference):

1. strength graph: the off-diagonal pattern (``theta=0``, the default) or the
   entries with ``|a_ij| >= theta sqrt(|a_ii a_jj|)``;
2. aggregates: pyamg's ``standard_aggregation`` on the CPU or a parallel MIS(2)
   aggregation in torch (:mod:`sla.solvers.precond.aggregate`); structural, so cached on
   the pattern when ``theta == 0``;
3. tentative prolongator ``T`` (one 1 per row, constant near-null space);
4. smoothed prolongator ``P = (I - w D^{-1} A) T`` with ``w = 4 / (3 rho)``,
   ``rho`` the Gershgorin bound of ``D^{-1} A``;
5. Galerkin coarse operator ``A_c = P^H A P`` (torch sparse products on A's device).
"""

from __future__ import annotations

import logging

import torch

from ...products import csr_matmul, csr_residual
from ...sparse import SparseTensor
from .aggregate import aggregate
from .simple import Preconditioner

__all__ = ["Level", "Multigrid", "SmoothedAggregation", "csr32", "galerkin"]

log = logging.getLogger("sla")


def csr32(crow, col, values, shape) -> torch.Tensor:
    """Torch CSR with int32 indices when they fit (2-3x faster SpMV than int64)."""
    if max(int(crow[-1]) if crow.numel() else 0, *shape) < 2**31 - 1:
        crow, col = crow.to(torch.int32), col.to(torch.int32)
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class Mat:
    """CSR arrays with int64 indices plus the row of every entry: the setup-time form of a level matrix."""

    __slots__ = ("_row", "_diag", "col", "crow", "shape", "val")

    def __init__(self, crow, col, val, shape, row=None):
        self.crow, self.col, self.val, self.shape = crow.long(), col.long(), val, tuple(shape)
        self._row = row
        self._diag = None

    @property
    def row(self) -> torch.Tensor:
        """Row index of every entry (built on first use)."""
        if self._row is None:
            counts = self.crow[1:] - self.crow[:-1]
            self._row = torch.repeat_interleave(torch.arange(self.shape[0], device=self.val.device), counts)
        return self._row

    @classmethod
    def from_torch(cls, C: torch.Tensor) -> Mat:
        # values() of a torch sparse tensor keeps the whole tensor -- its int64 index arrays
        # included -- alive; the level operators keep these values, so they get their own copy
        return cls(C.crow_indices(), C.col_indices(), C.values().clone(), C.shape)

    def csr64(self, val=None) -> torch.Tensor:
        return torch.sparse_csr_tensor(
            self.crow, self.col, self.val if val is None else val, self.shape, check_invariants=False
        )

    def csr32(self) -> torch.Tensor:
        return csr32(self.crow, self.col, self.val, self.shape)

    def diag(self) -> torch.Tensor:
        """The diagonal (computed once: the level setup and the smoother both need it)."""
        if self._diag is None:
            on = self.row == self.col
            self._diag = self.val.new_zeros(self.shape[0]).index_add_(0, self.row[on], self.val[on])
        return self._diag

    def gershgorin(self, d: torch.Tensor) -> float:
        """Upper bound of the spectral radius of ``D^{-1} A`` (largest row sum of ``|D^{-1} A|``)."""
        v = self.val.abs()
        s = torch.zeros(self.shape[0], dtype=v.dtype, device=v.device).index_add_(0, self.row, v)
        return float((s / d.abs()).amax())


def galerkin(R: Mat, A: Mat, P: Mat) -> Mat:
    """``R A P`` with torch sparse products (MKL / cuSPARSE)."""
    return Mat.from_torch(R.csr64() @ (A.csr64() @ P.csr64()))


class Level:
    """One level: operator ``A`` (int32 CSR), ``dinv``, Chebyshev bound ``hi``, transfers to the next level."""

    def __init__(self, A: Mat | None, P=None, R=None, prolong=None, restrict=None, csr=None, diag=None, hi=None):
        """``A`` (setup form) may be ``None`` when ``csr``, ``diag`` and ``hi`` are given."""
        d = A.diag() if diag is None else diag
        if bool((d == 0).any()):
            raise ValueError("multigrid needs a non-zero diagonal on every level (a zero pivot appeared)")
        self.A = A.csr32() if csr is None else csr
        self.dinv = (1.0 / d).unsqueeze(-1)
        self.hi = A.gershgorin(d) if hi is None else hi
        self.P = P.csr32() if isinstance(P, Mat) else P
        self.R = R.csr32() if isinstance(R, Mat) else R
        self._prolong, self._restrict = prolong, restrict

    @property
    def n(self) -> int:
        return self.A.shape[0]

    def mv(self, x):
        return csr_matmul(self.A, x)

    def residual(self, b, x):
        """``b - A x`` (one new vector)."""
        return csr_residual(b, self.A, x)

    def correct(self, x, xc):
        """``x + P xc`` (in place into ``x`` where the transfer allows: x is the cycle's own)."""
        if self._prolong is not None:
            return self._prolong(x, xc)
        return torch.addmm(x, self.P, xc)

    def restrict(self, r):
        return self._restrict(r) if self._restrict is not None else csr_matmul(self.R, r)

    def nbytes(self) -> int:
        total = 0
        for M in (self.A, self.P, self.R):
            if M is not None:
                total += sum(t.numel() * t.element_size() for t in (M.crow_indices(), M.col_indices(), M.values()))
        return total + self.dinv.numel() * self.dinv.element_size()


def _chebyshev(lv: Level, b, x, degree: int, ratio: float):
    """Chebyshev smoothing on ``[hi / ratio, hi]``, fused: one SpMV + two passes per step."""
    hi = lv.hi
    lo = hi / ratio
    theta, delta = (hi + lo) / 2, (hi - lo) / 2
    sigma = theta / delta
    rho = 1.0 / sigma
    if x is None:
        d = lv.dinv * b
        d.mul_(1.0 / theta)
        x = d.clone()
    else:  # x is the cycle's own: updated in place
        d = lv.residual(b, x).mul_(lv.dinv).mul_(1.0 / theta)
        x.add_(d)
    for _ in range(degree - 1):
        rho_new = 1.0 / (2 * sigma - rho)
        d.mul_(rho_new * rho).addcmul_(lv.dinv, lv.residual(b, x), value=2 * rho_new / delta)
        x.add_(d)
        rho = rho_new
    return x


def _dense_inverse(C: torch.Tensor) -> torch.Tensor:
    D = C.to_dense()
    work = torch.complex128 if D.is_complex() else torch.float64
    Dw = D.to(work)
    inv, info = torch.linalg.inv_ex(Dw)
    if int(info) != 0 or not bool(torch.isfinite(inv).all()):
        inv = torch.linalg.pinv(Dw, hermitian=bool(torch.allclose(Dw, Dw.mH)))
    return inv.to(D.dtype)


_CYCLES = {"V": 1, "W": 2}


def check_cycle(cycle, auto: str = "V") -> str:
    """The cycle name, ``'auto'`` resolved to ``auto``; a clear error for anything else."""
    if cycle == "auto":
        return auto
    if cycle not in _CYCLES:
        raise ValueError(f"cycle must be one of {sorted(_CYCLES) + ['auto']}, got {cycle!r}")
    return cycle


class Multigrid(Preconditioner):
    """V(nu, nu) or W(nu, nu) cycle over ``hierarchies`` (one list of :class:`Level` per batch member).

    The pre- and post-smoothers are the same Chebyshev polynomial, so the
    cycle is symmetric positive definite for SPD A (a valid CG preconditioner);
    a W-cycle repeats the coarse-grid correction (itself such a cycle) twice on
    every level, which keeps that symmetry.
    """

    name = "multigrid"

    def __init__(self, A: SparseTensor, hierarchies, degree: int = 2, ratio: float = 10.0, cycle: str = "V"):
        super().__init__(A)
        self.cycle = check_cycle(cycle)
        self.gamma = _CYCLES[self.cycle]
        self.hierarchies = hierarchies
        self.coarse = [_dense_inverse(h[-1].A) if h[-1].n <= 8000 else None for h in hierarchies]
        self.degree, self.ratio = degree, ratio

    @property
    def levels(self) -> list:
        return self.hierarchies[0]

    def _cycle(self, h, cinv, lvl: int, b: torch.Tensor) -> torch.Tensor:
        if lvl == len(h) - 1:
            return cinv @ b if cinv is not None else _chebyshev(h[lvl], b, None, 8, self.ratio)
        lv = h[lvl]
        x = _chebyshev(lv, b, None, self.degree, self.ratio)
        # W: a second correction, unless the next level is solved exactly (it would add nothing)
        for _ in range(self.gamma if lvl + 2 < len(h) or cinv is None else 1):
            x = lv.correct(x, self._cycle(h, cinv, lvl + 1, lv.restrict(lv.residual(b, x))))
        return _chebyshev(lv, b, x, self.degree, self.ratio)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
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
        return (
            f"{self.name} ({self.cycle}-cycle): {len(self.levels)} levels, sizes {sizes}, operator complexity {oc:.2f}"
        )


# ------------------------------------------------------ smoothed aggregation
def _has_pyamg() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("pyamg") is not None
    except (ImportError, ValueError):
        return False


def _strength(C: Mat, theta: float):
    """CSR arrays of the strength graph: the pattern itself (``theta = 0``) or its entries with
    ``|a_ij|^2 >= theta^2 |a_ii a_jj|``.  Self loops are harmless to both aggregations."""
    if theta == 0:
        return C.crow, C.col
    d = C.diag().abs()
    keep = (C.row == C.col) | (C.val.abs() ** 2 >= theta**2 * d[C.row] * d[C.col])
    n = C.shape[0]
    scrow = torch.zeros(n + 1, dtype=torch.int64, device=C.val.device)
    torch.cumsum(torch.bincount(C.row[keep], minlength=n), 0, out=scrow[1:])
    return scrow, C.col[keep]


def _tentative(agg: torch.Tensor, nagg: int, dtype, cand: torch.Tensor | None = None) -> tuple[Mat, Mat]:
    """T (n x nagg, one entry per aggregated row: the candidate vector, default 1) and T^T."""
    n = agg.numel()
    dev = agg.device
    has = agg >= 0
    crow = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    torch.cumsum(has.long(), 0, out=crow[1:])
    nodes = torch.nonzero(has).flatten()
    ones = torch.ones(nodes.numel(), dtype=dtype, device=dev) if cand is None else cand[nodes]
    T = Mat(crow, agg[has], ones, (n, nagg), row=nodes)
    order = torch.argsort(agg[has], stable=True)
    tcrow = torch.zeros(nagg + 1, dtype=torch.int64, device=dev)
    torch.cumsum(torch.bincount(agg[has], minlength=nagg), 0, out=tcrow[1:])
    Tt = Mat(tcrow, nodes[order], ones[order].conj(), (nagg, n), row=agg[has][order])
    return T, Tt


def _transpose(C: Mat, val: torch.Tensor) -> Mat:
    """The transpose of C's pattern carrying ``val`` (a sort of the entries by column)."""
    M, N = C.shape
    order = torch.argsort(C.col * M + C.row)
    tcrow = torch.zeros(N + 1, dtype=torch.int64, device=val.device)
    torch.cumsum(torch.bincount(C.col, minlength=N), 0, out=tcrow[1:])
    return Mat(tcrow, C.row[order], val[order], (N, M), row=C.col[order])


def _improved_candidate(C: Mat, d: torch.Tensor, rho: float, sweeps: int) -> torch.Tensor | None:
    """The constant vector after ``sweeps`` damped-Jacobi sweeps on ``A x = 0`` (pyamg's improve_candidates)."""
    if sweeps <= 0:
        return None
    A = C.csr64()
    x = torch.ones(C.shape[0], 1, dtype=C.val.dtype, device=C.val.device)
    dinv = (1.0 / d).unsqueeze(-1) * (4.0 / (3.0 * rho))
    for _ in range(sweeps):
        x = x - dinv * csr_matmul(A, x)
    x = x[:, 0]
    return x / x.abs().amax()


def _sa_level(C: Mat, agg: torch.Tensor, nagg: int, omega: float, hermitian: bool, sweeps: int = 0):
    """Smoothed prolongator ``P = (I - w D^{-1} A) T``, ``R = P^H`` and ``A_c = R A P``."""
    d = C.diag()
    rho = C.gershgorin(d)
    w = omega / rho
    on = torch.nonzero(C.row == C.col).flatten()  # the diagonal entries (no nnz-sized identity)
    T, Tt = _tentative(agg, nagg, C.val.dtype, _improved_candidate(C, d, rho, sweeps))
    S = torch.div(C.val, d[C.row]).mul_(-w)
    S[on] += 1
    P = Mat.from_torch(C.csr64(S) @ T.csr64())
    if hermitian:  # S^H = I - w A D^{-1} on A's own pattern: no transpose needed
        del S
        SH = torch.div(C.val, d[C.col].conj()).mul_(-w)
        SH[on] += 1
        SH = C.csr64(SH)
    else:
        SH = _transpose(C, S.conj()).csr64()
        del S
    R = Mat.from_torch(Tt.csr64() @ SH)
    del SH, T, Tt  # nnz-sized: freed before the Galerkin product (the setup's peak)
    return P, R, galerkin(R, C, P)


class SmoothedAggregation(Multigrid):
    """Smoothed-aggregation AMG preconditioner (V-cycle, Chebyshev smoothing).

    Parameters
    ----------
    A : SparseTensor
        Hermitian positive definite works best; ``[*batch, n, n]``.
    theta : float
        Strength threshold (0: every off-diagonal entry is strong; aggregates
        are then structural and cached on the pattern).
    max_coarse : int
        Coarsest level size (solved with a dense inverse).
    max_levels : int
        Level cap.
    degree : int
        Chebyshev smoother degree (pre and post).
    ratio : float
        Smoother interval ``[rho / ratio, rho]``.
    omega : float
        Prolongator smoothing weight times ``rho(D^{-1}A)``; 4/3 is standard.
    aggregation : str
        ``'standard'`` (pyamg, serial on the CPU), ``'mis2'`` (parallel, in torch on A's
        device) or ``'auto'`` (standard when pyamg is installed, else mis2).  Measured
        on 2D Poisson: standard keeps CG at 18-22 iterations from 1M to 16M unknowns;
        mis2 coarsens faster and needs more (see benchmarks/README.md).
    coarse_theta : float, optional
        Strength threshold on levels below the finest (default 0.1 for mis2, whose
        distance-2 aggregates grow too large on the denser Galerkin operators
        otherwise; ``theta`` for standard).
    improve : int
        Damped-Jacobi sweeps that improve the constant near-null-space candidate
        before building the tentative prolongator (pyamg's ``improve_candidates``).
    hermitian : bool, optional
        Whether A is Hermitian (detected when ``None``); then ``R = P^H`` needs no transpose
        and the preconditioner is its own adjoint.
    cycle : str
        ``'V'``, ``'W'`` (two coarse-grid corrections per level: fewer iterations, more
        work per iteration) or ``'auto'`` (default): W on the CPU, V on GPUs.  Measured
        on 2D Poisson, 1M unknowns: CPU (one thread) W 11 iterations 2.37 s vs V 18
        iterations 2.58 s; H100 W 0.185 s vs V 0.175 s (the coarse levels are launch-bound).
    """

    name = "amg"

    def __init__(
        self,
        A: SparseTensor,
        theta: float = 0.0,
        max_coarse: int = 500,
        max_levels: int = 25,
        degree: int = 2,
        ratio: float = 10.0,
        omega: float = 4.0 / 3.0,
        hermitian: bool | None = None,
        improve: int = 0,
        aggregation: str = "auto",
        coarse_theta: float | None = None,
        cycle: str = "auto",
    ):
        cycle = check_cycle(cycle, auto="W" if A.device.type == "cpu" else "V")
        if not theta >= 0:
            raise ValueError(f"theta must be >= 0, got {theta!r}")
        if not isinstance(max_coarse, int) or max_coarse < 1:
            raise ValueError(f"max_coarse must be a positive integer, got {max_coarse!r}")
        p = A.pattern
        vals = A._flat().detach()
        if hermitian is None:
            from ...structure import is_symmetric

            hermitian = is_symmetric(A, conjugate=True)
        if aggregation == "auto":
            aggregation = "standard" if _has_pyamg() else "mis2"
        if coarse_theta is None:
            coarse_theta = 0.1 if aggregation == "mis2" else theta
        # aggregates that depend on the structure alone (theta = 0) are cached on the pattern
        key = ("amg_aggregates", aggregation, max_coarse, max_levels, coarse_theta)
        cached = p.cache.get(key) if theta == 0 else None
        aggs = []
        hierarchies = []
        for bi in range(A.batch_size):
            C = Mat(p.crow, p.ccol, vals[bi], p.shape, row=p.rows())  # int64 copies live through the setup only
            fine_csr = p.csr(vals[bi])  # the pattern's own int32 arrays: no copy of the fine matrix
            levels = []
            lvl = 0
            while C.shape[0] > max_coarse and lvl < max_levels - 1:
                n = C.shape[0]
                th = theta if lvl == 0 else max(theta, coarse_theta)
                if cached is not None and lvl < len(cached) and cached[lvl] is not None and cached[lvl][0].numel() == n:
                    agg, nagg = cached[lvl]
                elif bi > 0 and lvl < len(aggs) and th == 0:
                    agg, nagg = aggs[lvl]
                else:
                    agg, nagg = aggregate(*_strength(C, th), n, aggregation)
                    if nagg > 0.8 * n and th > 0:  # the threshold isolated too many nodes: use every coupling
                        th = 0.0
                        agg, nagg = aggregate(*_strength(C, th), n, aggregation)
                if nagg == 0 or nagg > 0.8 * n:  # coarsening stalled: make this the coarsest level
                    break
                if bi == 0:
                    aggs.append((agg, nagg) if th == 0 else None)
                P, R, Ac = _sa_level(C, agg, nagg, omega, hermitian, improve)
                levels.append(Level(C, P=P, R=R, csr=fine_csr if lvl == 0 else None))
                C = Ac
                lvl += 1
            if C.shape[0] > 5000:
                log.warning(
                    "amg: coarsening stalled at %d unknowns; the coarsest dense inverse will be large", C.shape[0]
                )
            levels.append(Level(C, csr=fine_csr if lvl == 0 else None))
            hierarchies.append(levels)
        if theta == 0 and cached is None:
            p.cache[key] = aggs
        super().__init__(A, hierarchies, degree=degree, ratio=ratio, cycle=cycle)
        self.options = {
            "theta": theta,
            "max_coarse": max_coarse,
            "max_levels": max_levels,
            "degree": degree,
            "ratio": ratio,
            "omega": omega,
            "improve": improve,
            "aggregation": aggregation,
            "coarse_theta": coarse_theta,
            "cycle": cycle,
        }
        self.hermitian = hermitian
        log.debug("%s", self.describe())

    def adjoint(self) -> SmoothedAggregation:
        if self.hermitian:
            return self
        return SmoothedAggregation(self.A.H(), hermitian=False, **self.options)
