"""Smoothed-aggregation AMG: the setup of a hierarchy for the cycle of
:class:`sla.solvers.precond.multigrid.Multigrid`.

Smoothed aggregation (Vanek, Mandel & Brezina 1996; pyamg's
``smoothed_aggregation_solver`` is the reference):

1. strength graph: the off-diagonal pattern (``theta=0``, the default) or the
   entries with ``|a_ij| >= theta sqrt(|a_ii a_jj|)``;
2. aggregates: pyamg's ``standard_aggregation`` on the CPU or the parallel aggregation in
   torch (``'mis2'``: distance-2 independent-set aggregates on the finest level and on every
   level of a vector problem, distance-1 ones on the coarse levels of a scalar problem; see
   :mod:`sla.solvers.precond.aggregate`); structural, so cached on the pattern when ``theta == 0``;
3. tentative prolongator ``T`` (one 1 per row, constant near-null space);
4. smoothed prolongator ``P = (I - w D^{-1} A) T`` with ``w = 4 / (3 rho)``,
   ``rho`` the Lanczos estimate of ``rho(D^{-1} A)`` (Hermitian A; the Gershgorin bound
   otherwise or when smaller);
5. Galerkin coarse operator ``A_c = P^H A P`` (torch sparse products on A's device),
   without the couplings the product cancels (:data:`DROP_RTOL`).

The smoother on every level is a Chebyshev polynomial on ``[hi / ratio, hi]``, ``hi`` the
Lanczos estimate times :data:`~sla.solvers.precond.chebyshev.LANCZOS_SAFETY` capped by
Gershgorin (:meth:`~sla.solvers.precond.multigrid.Mat.bound`).
"""

from __future__ import annotations

import logging

import torch

from ..._optional import installed
from ...kernels import count_, reciprocal
from ...products import csr_matmul
from ...reductions import abs_max
from ...sparse import SparseTensor
from .aggregate import aggregate
from .multigrid import Level, Mat, Multigrid, check_cycle, coarse_dtype_for
from .nullspace import amalgamate, fit_candidates, rigid_body_modes
from .spgemm import galerkin, galerkin_chunk
from .transfers import (
    Tentative,
    _blocks,
    _coo_tentative,
    _smoothed,
    _tentative,
    _transpose,
    product_chunk,
    prolongation_for,
)

__all__ = ["DROP_RTOL", "VECTOR_BLOCKS", "VECTOR_COARSE_THETA", "VECTOR_THETA", "SmoothedAggregation"]


# strength threshold with several candidates, by dofs per node: 2D P2 elasticity (130K) coarsens too
# fast on every coupling (53 CG iterations; 34 at 0.08); 3D P1 elasticity (15K) does best at 0
# (24 iterations, operator complexity 1.4; 16 at 0.08 but complexity 2.5 and twice the time)
VECTOR_THETA = {2: 0.08}

# strength threshold below the finest level with several candidates (at least this): the coarse
# Galerkin operators of 3D P1 elasticity couple each node to dozens, and aggregates of every coupling
# grow to ~70 nodes there (1M unknowns: levels 1.0M, 79K, 1,032, 24 and 51 V-cycle CG iterations; 25 at
# 0.08, operator complexity 1.40 -> 1.45; 21-25 from 16K to 1M)
VECTOR_COARSE_THETA = 0.08

VECTOR_BLOCKS = {3: 2}
"""Galerkin blocks of a vector problem, by dofs per node: ``VECTOR_BLOCKS[dofs] * k`` times a scalar problem's
products for ``k`` candidates (``k`` alone where not listed).  Block by block the product is bound by
cuSPARSE's fixed costs per call.  H200, 1M unknowns, setup at ``k`` / ``2k`` times: 3D elasticity
1.07-1.08 / 0.76-0.78 s, peak 1,546 B/unknown either way; 2D 0.36-0.52 / 0.35-0.39 s, peak 655 / 707
(no clear gain for more memory; ``bench_amg_setup.py --vector-blocks``)."""

log = logging.getLogger("sla")

DROP_RTOL = 1e-13
"""Off-diagonal entries of a coarse operator with ``|a_ij| <= DROP_RTOL sqrt(|a_ii a_jj|)`` are dropped:
the Galerkin product of a structured mesh cancels many couplings exactly (P1 triangles: a third of the
entries at 160K), and as stored entries they would join the strength graph (theta = 0 reads the pattern)
and make the aggregates too large -- 1.6x the V-cycle iterations of pyamg, whose SciPy products drop them."""


def _level(C: Mat, hermitian: bool, **kw) -> Level:
    """The level of operator C, its Chebyshev bound from Lanczos (capped by Gershgorin)."""
    return Level(C, hi=C.bound(hermitian), **kw)


def _transfer_level(C: Mat, hermitian: bool, P, R, csr) -> Level:
    """The level of C with its transfers: ``P`` a matrix, or ``(T, w)`` for an implicit one (:func:`_sa_level`)."""
    if isinstance(P, tuple):
        return _level(C, hermitian, R=R, csr=csr, smoothed=P)
    return _level(C, hermitian, P=P, R=R, csr=csr)


def _couplings(C: Mat, tol: float, strict: bool) -> torch.Tensor:
    """The mask of C's diagonal and of its entries with ``|a_ij|^2 > tol^2 |a_ii a_jj|`` (``>=`` unless
    ``strict``), by blocks of entries: the temporaries stay small (whole-array ones were four of C's
    values, the setup's peak memory on a vector problem)."""
    d = C.diag().abs()
    keep = torch.empty(C.col.numel(), dtype=torch.bool, device=C.val.device)
    for lo, hi in _blocks(C.col.numel()):
        r, c = C.rows(lo, hi), C.col[lo:hi]
        bound = d[r].mul_(d[c]).mul_(tol**2)
        a2 = C.val[lo:hi].abs()
        a2.mul_(a2)  # not square_ (pow) or logical_or: kernel families of their own (see docs/architecture.md)
        diagonal = r == c
        torch.where(diagonal, diagonal, a2 > bound if strict else a2 >= bound, out=keep[lo:hi])
    return keep


def _drop_cancelled(Ac: Mat) -> Mat:
    """The coarse operator without the couplings its product cancelled (see :data:`DROP_RTOL`)."""
    return Ac.select(_couplings(Ac, DROP_RTOL, strict=True))


def _diagonal_fits(d: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Whether every ``|d_i|`` and ``1 / |d_i|`` is inside ``dtype``'s range with a margin (a 0-dim bool).
    Spelled with ``amax`` and a quotient, which every solve loads: ``aminmax`` would load a kernel
    family of its own on a GPU (a zero or NaN entry fails either way)."""
    big, tiny = torch.finfo(dtype).max / 8, torch.finfo(dtype).tiny * 8
    a = d.abs()
    hi, inv = a.amax(), reciprocal(a).amax()  # inv = 1 / min |d_i|
    return (hi < big) & (hi < 1 / tiny) & (inv < 1 / tiny) & (inv < big)


def _fits(hierarchies, dtype: torch.dtype) -> bool:
    """Whether every coarse operator, transfer and inverse diagonal fits ``dtype``'s range (one host look)."""
    big = torch.finfo(dtype).max / 8
    looks = []
    for levels in hierarchies:
        for k, lv in enumerate(levels):
            mats = [lv.P, lv.R] if k == 0 else [lv.A, lv.P, lv.R]
            looks += [abs_max(M.values()) < big for M in mats if M is not None and M.values().numel()]
            looks.append(_diagonal_fits(lv.dinv, dtype))  # an inverse diagonal that would overflow or underflow
    ok = looks[0] if looks else torch.tensor(True)
    for look in looks[1:]:
        ok = ok & look  # no stack (a copy kernel of its own) and no all() (a reduction family of its own)
    return bool(ok)


# ------------------------------------------------------ smoothed aggregation
def _has_pyamg() -> bool:
    return installed("pyamg")


def _strength(C: Mat, theta: float):
    """CSR arrays of the strength graph: the pattern itself (``theta = 0``) or its entries with
    ``|a_ij|^2 >= theta^2 |a_ii a_jj|``.  Self loops are harmless to both aggregations."""
    if theta == 0:
        return C.crow, C.col
    keep = _couplings(C, theta, strict=False)
    n = C.shape[0]
    counts = torch.zeros(n, dtype=torch.int64, device=C.val.device)
    for lo, hi in _blocks(C.col.numel()):  # kept entries per row (no row array of A's size)
        count_(counts, C.rows(lo, hi)[keep[lo:hi]])
    scrow = torch.zeros(n + 1, dtype=torch.int64, device=C.val.device)
    torch.cumsum(counts, 0, out=scrow[1:])
    return scrow, C.col[keep]


def _improved_candidate(C: Mat, d: torch.Tensor, rho: float, sweeps: int) -> torch.Tensor | None:
    """The constant vector after ``sweeps`` damped-Jacobi sweeps on ``A x = 0`` (pyamg's improve_candidates)."""
    if sweeps <= 0:
        return None
    A = C.csr64()
    x = torch.ones(C.shape[0], 1, dtype=C.val.dtype, device=C.val.device)
    dinv = reciprocal(d).unsqueeze(-1) * (4.0 / (3.0 * rho))
    for _ in range(sweeps):
        x = x - dinv * csr_matmul(A, x)
    x = x[:, 0]
    return x / x.abs().amax()


def _improved(C: Mat, d: torch.Tensor, rho: float, sweeps: int, B: torch.Tensor) -> torch.Tensor:
    """Candidates ``B`` after ``sweeps`` damped-Jacobi sweeps on ``A x = 0``."""
    if sweeps <= 0:
        return B
    A = C.csr64()
    dinv = reciprocal(d).unsqueeze(-1) * (4.0 / (3.0 * rho))
    for _ in range(sweeps):
        B = B - dinv * csr_matmul(A, B)
    return B / B.abs().amax(0)


def _sa_level(
    C: Mat,
    tentative,
    omega: float,
    hermitian: bool,
    sweeps: int = 0,
    B=None,
    dtype=None,
    implicit: bool = False,
    rows: int | None = None,
    width: int = 1,
    blocks: int = 1,
):
    """Smoothed prolongator ``P = (I - w D^{-1} A) T``, ``R = P^H`` and ``A_c = R A P``.

    ``tentative`` is ``(agg, nagg)`` (one constant candidate) or, with candidates ``B``, a
    function of the (improved) candidates returning ``(T, extra)``; ``extra`` is returned last.
    ``P`` comes from :func:`_smoothed` (row blocks, no sparse-sparse product) and ``R`` is its
    conjugate transpose (a sort of ``P``'s entries): no matrix of ``A``'s size is made.
    ``P`` and ``R`` are stored in ``dtype`` (default C's: see :func:`_smoothed`); ``A_c`` is the
    Galerkin product of the stored transfers, in C's precision.  With ``implicit`` the first
    value returned is ``(T, w)`` (a :class:`Tentative` and the weight: ``P = (I - w D^{-1} A) T``)
    instead of ``P``, which is dropped once ``A_c`` is made.  ``rows``: the finest operator's rows
    (default C's), which size the Galerkin product's blocks (:func:`~.spgemm.galerkin_chunk`: the
    problem's memory, not the level's), ``blocks * width`` times larger for ``width`` candidates (a
    vector problem's rows hold many times a scalar one's entries: 3D elasticity at 1M unknowns on an
    H200, setup 5.4-5.6 s in blocks of the scalar size, 1.8-1.9 s at six times; ``blocks``: see
    :data:`VECTOR_BLOCKS`).  The prolongator's blocks follow C's rows: sized by the
    finest, its temporaries on coarse levels came on top of the hierarchy already made (H200, 5-point
    16M: setup peak above A 112.9 against 99.5 B/unknown, for a setup 0.03-0.07 s shorter).  They are
    ``width`` times larger too: 3D elasticity 1M on an H200, setup 2.03-2.05 s at the scalar size,
    1.19-1.26 s at six times, the same peak (``--vector-blocks --which prolongator``)."""
    d = C.diag()
    rho = C.bound(hermitian, safety=1.0)  # the estimate itself, as pyamg's approximate_spectral_radius
    C._row = None  # nnz-sized; the diagonal and the bounds are kept, nothing below needs the rows
    extra = None
    if B is None:
        agg, nagg = tentative
        T = _tentative(agg, nagg, C.val.dtype, _improved_candidate(C, d, rho, sweeps))
    else:
        T, extra = tentative(_improved(C, d, rho, sweeps, B))
    w = omega / rho
    chunk = width * product_chunk(C.shape[0], C.shape[0] if rows is None else rows)
    P = _smoothed(C, T, w, chunk=chunk, dtype=dtype)
    T = Tentative(T) if implicit else None  # (its gather form: no row starts kept)
    R = _transpose(P, P.val.conj_physical() if P.val.is_complex() else P.val)
    low = P.val.dtype
    if low != C.val.dtype:
        # the level keeps its inverse diagonal in the transfers' dtype: the diagonal need not be held
        # in C's through the product (unless it does not fit, which :func:`_fits` then reports), and
        # the product reads P in C's precision: one copy of P at a time
        if bool(_diagonal_fits(d, low)):
            C._diag = d.to(low)
        del d
        P.val = P.val.to(C.val.dtype)
    chunk = blocks * width * galerkin_chunk(C.shape[0] if rows is None else rows)
    Ac = galerkin(R, C, P, chunk=chunk, consume=implicit)
    if implicit:
        return (T, w), R, _drop_cancelled(Ac), extra
    P.val = P.val.to(low)
    return P, R, _drop_cancelled(Ac), extra


def _candidates(A: SparseTensor, near_nullspace, block_size):
    """``(B, node, nnodes)``: candidates ``[n, k]``, node of every dof; ``(None, None, n)`` for the constant."""
    n = A.sparse_shape[0]
    rec = A.pattern.cache.get("dof_points")
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1 or n % block_size):
        raise ValueError(f"block_size must be a positive integer dividing n = {n}, got {block_size!r}")
    if isinstance(near_nullspace, str):
        if near_nullspace not in ("auto", "constant"):
            raise ValueError(f"near_nullspace must be 'auto', 'constant' or a tensor [n, k], got {near_nullspace!r}")
        if near_nullspace == "constant" or rec is None or rec[1] < 2:
            return None, None, n
        points, ncomp = rec
        B = rigid_body_modes(points.to(A.device), ncomp, dtype=A.dtype)
        if B.shape[0] != n:
            raise ValueError(f"the recorded dof points give {B.shape[0]} dofs, A has {n} rows")
        block_size = ncomp if block_size is None else block_size
    else:
        B = near_nullspace
        if not isinstance(B, torch.Tensor) or B.dim() not in (1, 2) or B.shape[0] != n:
            raise ValueError(
                f"near_nullspace must be a tensor [n, k] with n = {n}, got {getattr(B, 'shape', type(B).__name__)}"
            )
        B = B.detach().to(device=A.device, dtype=A.dtype).reshape(n, -1)
        block_size = block_size or (rec[1] if rec is not None and n % rec[1] == 0 else 1)
    node = torch.arange(n, device=A.device) // block_size
    return B, node, n // block_size


def _node_aggregate(C: Mat, theta: float, node, nnodes: int, method: str):
    """Aggregates of the node graph, returned per dof."""
    agg_node, nagg = aggregate(*amalgamate(*_strength(C, theta), node, nnodes), nnodes, method)
    return agg_node[node], nagg


def _fitted(agg, nagg: int):
    """The tentative-prolongator builder of :func:`_sa_level` for candidates on aggregates ``agg``."""

    def build(B):
        rows, cols, vals, nc, Bc, cnode = fit_candidates(agg, nagg, B)
        return _coo_tentative(rows, cols, vals, (agg.numel(), nc)), (Bc, cnode, nagg)

    return build


class SmoothedAggregation(Multigrid):
    """Smoothed-aggregation AMG preconditioner (V-cycle, Chebyshev smoothing).

    Parameters
    ----------
    A : SparseTensor
        Hermitian positive definite works best; ``[*batch, n, n]``.
    theta : float, optional
        Strength threshold (0: every off-diagonal entry is strong; aggregates
        are then structural and cached on the pattern).  Default 0 for scalar problems,
        :data:`VECTOR_THETA` (by dofs per node) with several candidates.
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
        ``'standard'`` (pyamg's greedy sweep, serial on the CPU), ``'mis2'`` (parallel, in
        torch on A's device: distance-2 maximal-independent-set aggregates on the finest
        level and on every level of a vector problem; on the coarse levels of a scalar
        problem distance-1 ones, since their Galerkin operators couple aggregates two apart
        and distance-2 aggregates there coarsen too fast) or ``'auto'`` (standard when pyamg
        is installed, on CUDA too: its round trip to the host costs a little more setup than
        mis2 at 16M rows and saves iterations in every solve; mis2 otherwise).  The same
        iterations as standard where the node numbering
        has no structure; fewer aggregates and more iterations on a lexicographically
        numbered grid, where the greedy sweep packs its roots tightly.  Deterministic.
    coarse_dtype : torch.dtype or str
        The dtype of the levels below the fine one (operators, vectors, coarsest inverse), of the
        transfers ``P`` and ``R`` and of the smoother's inverse diagonals; the fine operator and
        the cycle's fine vectors keep A's.  ``'auto'`` (default): single precision for a
        double-precision A on GPUs from :data:`~sla.solvers.precond.multigrid.MIXED_MIN`
        unknowns (the transfers and coarse levels take half the memory and traffic; the coarse
        correction needs no more digits), with every cycle (the K-cycle's coarse Krylov steps run
        in the coarse levels' dtype); A's dtype otherwise.  The products are formed in A's
        precision: each prolongator is rounded as it is made and the coarse operator is the
        Galerkin product of the rounded transfers (then rounded itself); a hierarchy whose entries
        do not fit keeps A's dtype under ``'auto'``.
    coarse_theta : float, optional
        Strength threshold on levels below the finest (default ``theta``; with several candidates
        at least :data:`VECTOR_COARSE_THETA`).
    improve : int
        Damped-Jacobi sweeps that improve the constant near-null-space candidate
        before building the tentative prolongator (pyamg's ``improve_candidates``).
    hermitian : bool, optional
        Whether A is Hermitian (detected when ``None``); then ``R = P^H`` needs no transpose
        and the preconditioner is its own adjoint.
    cycle : str
        ``'V'``, ``'W'`` (two coarse-grid corrections per level: fewer iterations, more
        work per iteration), ``'K'`` (Krylov-accelerated coarse corrections: iterations that
        hardly grow with the grid; a variable preconditioner, see
        :class:`~sla.solvers.precond.multigrid.Multigrid`) or ``'auto'`` (default): V, and the
        K-cycle when CG, GMRES or FGMRES runs it on the CPU, and on CUDA from 4M rows
        (:data:`~sla.solvers.precond.multigrid.AUTO_FLEXIBLE`; 5-point 16M: V 24 iterations,
        K 11).  With the Lanczos smoother bounds and the cancelled couplings dropped, V needs
        1.1-1.4x W's iterations at half its cost per iteration (CPU, 1 thread: 5-point 250K
        0.53 s vs 0.89 s, P1 triangles 160K 0.62 vs 0.70 s, P1 tetrahedra 69K 0.20 vs 0.24 s;
        GPUs: the coarse levels are launch-bound).
    near_nullspace : {'auto', 'constant'} or tensor ``[n, k]``
        The near-null-space candidates ``B`` (pyamg's ``B``).  ``'constant'``: the
        constant vector (scalar problems).  A tensor: its columns (e.g.
        :func:`~sla.solvers.precond.nullspace.rigid_body_modes`); nodes of ``block_size``
        consecutive dofs are aggregated together.  ``'auto'`` (default): the rigid-body
        modes when the assembly recorded the dof coordinates of a vector element on the
        pattern (``A.pattern.cache['dof_points'] = (points, ncomp)``, set by
        :func:`sla.assembly.assemble` for ``ElementVector`` bases), else the constant.
    block_size : int, optional
        Dofs per node for a tensor ``near_nullspace`` (default: the recorded ``ncomp``,
        else 1).
    prolongation : str
        The finest level's prolongator: ``'stored'`` (a CSR matrix), ``'implicit'`` (``P = (I - w
        D^{-1} A) T`` applied as the tentative ``T`` -- a gather by aggregate for one candidate --
        then one product with the fine ``A``: P's storage, a fifth to two fifths of A's, is saved for
        one fine SpMV per cycle) or ``'auto'`` (default: implicit on GPUs from
        :data:`~sla.solvers.precond.multigrid.MIXED_MIN` unknowns, stored otherwise).  ``R`` is
        stored either way; the coarse levels' prolongators are stored.
    """

    name = "amg"

    def __init__(
        self,
        A: SparseTensor,
        theta: float | None = None,
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
        near_nullspace: str | torch.Tensor = "auto",
        block_size: int | None = None,
        coarse_dtype: torch.dtype | str = "auto",
        prolongation: str = "auto",
    ):
        cycle = check_cycle(cycle, auto="V")
        cd = coarse_dtype_for(coarse_dtype, A)
        implicit = prolongation_for(prolongation, A) == "implicit"
        candidates = _candidates(A, near_nullspace, block_size)
        if theta is None:
            theta = 0.0 if candidates[0] is None else VECTOR_THETA.get(A.sparse_shape[0] // candidates[2], 0.0)
        if not theta >= 0:
            raise ValueError(f"theta must be >= 0, got {theta!r}")
        if not isinstance(max_coarse, int) or max_coarse < 1:
            raise ValueError(f"max_coarse must be a positive integer, got {max_coarse!r}")
        p = A.pattern
        vals = A._flat().detach()
        if hermitian is None:
            from ...structure import is_symmetric

            hermitian = is_symmetric(A, conjugate=True)
        if aggregation not in ("auto", "standard", "mis2"):
            raise ValueError(f"aggregation must be 'auto', 'standard' or 'mis2', got {aggregation!r}")
        self.auto_aggregation = aggregation == "auto"
        if aggregation == "auto":
            aggregation = "standard" if _has_pyamg() else "mis2"
        if coarse_theta is None:
            coarse_theta = theta if candidates[0] is None else max(theta, VECTOR_COARSE_THETA)
        if not coarse_theta >= 0:
            raise ValueError(f"coarse_theta must be >= 0, got {coarse_theta!r}")
        # scalar coarse levels of the parallel aggregation: distance-1 aggregates (see above)
        coarse_aggregation = "mis1" if aggregation == "mis2" else aggregation
        # aggregates that depend on the structure alone (theta = 0) are cached on the pattern
        key = ("amg_aggregates", aggregation, max_coarse, max_levels, coarse_theta)
        cached = p.cache.get(key) if theta == 0 else None
        aggs = []
        hierarchies = []
        for bi in range(A.batch_size):
            C = Mat(p.crow, p.ccol, vals[bi], p.shape)  # the pattern's int32 arrays, no copy; rows int32
            fine_csr = p.csr(vals[bi])  # the pattern's own int32 arrays: no copy of the fine matrix
            B, node, nnodes = candidates
            fine = C.shape[0]  # the blocks of every level's products are sized by it
            levels = []
            lvl = 0
            while C.shape[0] > max_coarse and lvl < max_levels - 1:
                n = C.shape[0]
                th = theta if lvl == 0 else max(theta, coarse_theta)
                if B is not None:  # vector problem: aggregate nodes, fit the candidates
                    agg, nagg = _node_aggregate(C, th, node, nnodes, aggregation)
                    if nagg == 0 or nagg > 0.8 * nnodes:
                        break
                    P, R, Ac, (B, node, nnodes) = _sa_level(
                        C,
                        _fitted(agg, nagg),
                        omega,
                        hermitian,
                        improve,
                        B=B,
                        dtype=cd,
                        implicit=implicit and lvl == 0,
                        rows=fine,
                        width=candidates[0].shape[1],
                        blocks=VECTOR_BLOCKS.get(A.sparse_shape[0] // candidates[2], 1),
                    )
                    levels.append(_transfer_level(C, hermitian, P, R, fine_csr if lvl == 0 else None))
                    C = Ac
                    lvl += 1
                    continue
                if cached is not None and lvl < len(cached) and cached[lvl] is not None and cached[lvl][0].numel() == n:
                    agg, nagg = cached[lvl]
                elif bi > 0 and lvl < len(aggs) and th == 0:
                    agg, nagg = aggs[lvl]
                else:
                    method = aggregation if lvl == 0 else coarse_aggregation
                    agg, nagg = aggregate(*_strength(C, th), n, method)
                    if nagg > 0.8 * n and th > 0:  # the threshold isolated too many nodes: use every coupling
                        th = 0.0
                        agg, nagg = aggregate(*_strength(C, th), n, method)
                if nagg == 0 or nagg > 0.8 * n:  # coarsening stalled: make this the coarsest level
                    break
                if bi == 0:
                    aggs.append((agg, nagg) if th == 0 else None)
                P, R, Ac, _ = _sa_level(
                    C, (agg, nagg), omega, hermitian, improve, dtype=cd, implicit=implicit and lvl == 0, rows=fine
                )
                levels.append(_transfer_level(C, hermitian, P, R, fine_csr if lvl == 0 else None))
                C = Ac
                lvl += 1
            if C.shape[0] > 5000:
                log.warning(
                    "amg: coarsening stalled at %d unknowns; the coarsest dense inverse will be large", C.shape[0]
                )
            levels.append(_level(C, hermitian, csr=fine_csr if lvl == 0 else None))
            hierarchies.append(levels)
        if theta == 0 and cached is None:
            p.cache[key] = aggs
        if cd != A.dtype and not _fits(hierarchies, cd):
            if coarse_dtype != "auto":
                raise ValueError(
                    f"coarse_dtype={coarse_dtype}: the coarse operators' or transfers' entries do not fit its "
                    f"range (use coarse_dtype='auto' or {A.dtype})"
                )
            cd = A.dtype
        for levels in hierarchies:
            for k, lv in enumerate(levels):
                lv.cast(cd, fine=k == 0)
        self.coarse_dtype = cd
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
            "near_nullspace": near_nullspace,
            "block_size": block_size,
            "coarse_dtype": coarse_dtype,
            "prolongation": prolongation,
        }
        self.candidates = 1 if candidates[0] is None else candidates[0].shape[1]
        self.hermitian = hermitian
        log.debug("%s", self.describe())

    def describe(self) -> str:
        """The cycle and levels, and which aggregation built them (and why, when ``'auto'`` chose)."""
        agg = self.options["aggregation"]
        why = " (aggregation='auto': pyamg is not installed)" if self.auto_aggregation and agg == "mis2" else ""
        mixed = f", coarse levels and transfers in {self.coarse_dtype}" if self.coarse_dtype != self.A.dtype else ""
        implicit = any(h[0].T is not None for h in self.hierarchies)
        lean = ", the finest prolongator applied as (I - w D^-1 A) T (not stored)" if implicit else ""
        return f"{super().describe()}, {'standard (pyamg)' if agg == 'standard' else agg} aggregation{why}{mixed}{lean}"

    def adjoint(self) -> SmoothedAggregation:
        if self.hermitian:
            return self
        return SmoothedAggregation(self.A.H(), hermitian=False, **self.options)
