"""What ``'auto'`` means for a linear solve: the one place where it is decided.

Read top to bottom; the first row that matches decides.  ``n`` is the size, ``mtype``
the matrix type (given, or detected by :func:`sla.structure.guess_matrix_type`), ``d``
the dimension of A's graph (:func:`graph_dimension`: how fast a ball of neighbours grows;
2 for 2D meshes and stencils, 3 for 3D ones -- the fill of a direct factorisation grows
with it), *reused* that these very values were solved before (a time loop with a fixed
matrix, noticed on the pattern: a cached factorisation then costs only its triangular
solves).  The numbers are measured by ``benchmarks/bench_auto.py``.

=====================================  ============================================================
backend / method given                 choice
=====================================  ============================================================
both ``'auto'``, mtype spd/hpd,        ``pytorch`` / ``cg`` with a multigrid preconditioner when
certified definite (diagonal           CPU: ``d >= 2.5`` and ``n >= CPU_MULTIGRID_MIN_3D``, or
dominance), large                      ``d < 2.5`` and ``n >= CPU_MULTIGRID_MIN``; when *reused*,
                                       only from ``CPU_REUSE_DIRECT_MAX_3D`` / ``_2D`` up.
                                       CUDA: ``d >= 2.5`` and ``n >= CUDA_MULTIGRID_MIN_3D`` (a 3D
                                       factorisation costs time and memory there long before 2D)
both ``'auto'``                        the device's backends in priority order (CPU: scipy,
                                       pytorch; CUDA: cudss, pytorch, cupy); the first available
                                       one that takes the dtype proposes a method (below)
only the backend ``'auto'``            the first backend in that order that has the method
only the method ``'auto'``             that backend's proposal; if it declines for the size,
                                       its direct method, else its iterative one
=====================================  ============================================================

What each backend proposes (``kind``: a direct or iterative method was asked for):

=========  ==================================================================================
scipy      iterative: cg (spd/hpd), minres (symmetric/hermitian), gmres; else cholesky
           (spd/hpd, CHOLMOD installed) or lu
cudss      cholesky (spd/hpd), ldlt (symmetric/hermitian), lu; declines iterative, and
           declines very large systems that another backend takes
pytorch    cg (spd/hpd), minres (real symmetric, hermitian), gmres; declines direct
cupy       direct: lu; else cg (spd/hpd), minres (real symmetric, hermitian), gmres
eigen      float32/64 only; iterative: cg (spd/hpd) or bicgstab; else ldlt (symmetric) or lu
=========  ==================================================================================

``preconditioner='auto'`` (the ``pytorch`` backend): geometric multigrid when the pattern
carries its grid, else smoothed-aggregation AMG (with the rigid-body modes as near-null
space when the assembly recorded a vector field's dof coordinates), for spd/hpd systems
with ``n >= MULTIGRID_PRECONDITIONER_MIN``; else Jacobi when the diagonal allows it
(positive and real for CG/MINRES, non-zero otherwise); else none.  Options the user gives
(``SolverConfig.options``) go to the chosen preconditioner.

:func:`choose` returns the choice with its reasons (they end up in ``SolveInfo.notes``);
:func:`explain` (``sla.explain_solve``) says it in words without solving.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ... import structure
from ...config import SolverConfig
from ...sparse import SparseTensor
from . import registry

__all__ = [
    "CPU_MULTIGRID_MIN",
    "CPU_MULTIGRID_MIN_3D",
    "CPU_REUSE_DIRECT_MAX_2D",
    "CPU_REUSE_DIRECT_MAX_3D",
    "CUDA_MULTIGRID_MIN_3D",
    "MULTIGRID_PRECONDITIONER_MIN",
    "Choice",
    "choose",
    "choose_preconditioner",
    "explain",
    "explain_solve",
    "graph_dimension",
    "SYMMETRY_RTOL",
    "SYMMETRY_WARN",
    "asymmetry",
    "hermitian_part",
]

CPU_MULTIGRID_MIN = 50_000  # 2D-like graphs: a sparse Cholesky wins below
CPU_MULTIGRID_MIN_3D = 10_000  # 3D-like graphs: the fill of a factorisation grows as n^(4/3)
CPU_REUSE_DIRECT_MAX_2D = 1_000_000  # a reused 2D factorisation beats multigrid-CG below (524K: 44 s vs 60 s)
CPU_REUSE_DIRECT_MAX_3D = 20_000  # 3D: at 64K a factorisation never pays back (bench_auto --reuse)
CUDA_MULTIGRID_MIN_3D = 100_000  # 3D on CUDA: AMG-CG beats cuDSS (time and memory) above
MULTIGRID_PRECONDITIONER_MIN = 10_000  # below this a multigrid setup does not pay off: Jacobi
_DIM_3D = 2.5

_DEFINITE = ("spd", "hpd")


@dataclass
class Choice:
    """A decision of the policy: what runs, and why."""

    backend: str
    method: str
    matrix_type: str
    reasons: list[str] = field(default_factory=list)


def _ball_sizes(crow: np.ndarray, col: np.ndarray, seed: int, cap: int, rmax: int = 64) -> list[int]:
    """``|B(r)|`` for r = 0, 1, ... (breadth-first from ``seed``) until ``cap`` nodes are reached."""
    n = crow.size - 1
    seen = np.zeros(n, dtype=bool)
    seen[seed] = True
    front = np.array([seed], dtype=np.int64)
    sizes = [1]
    while front.size and sizes[-1] < cap and len(sizes) <= rmax:
        starts, stops = crow[front], crow[front + 1]
        lens = stops - starts
        idx = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        nb = np.unique(col[idx])
        front = nb[~seen[nb]]
        seen[front] = True
        sizes.append(sizes[-1] + front.size)
    return sizes


def graph_dimension(A: SparseTensor) -> float:
    """The growth dimension of A's graph: balls of neighbours grow as ``r^d`` (their spheres as ``r^(d-1)``).

    1 for a chain, 2 for 2D meshes and stencils (5-point or P1 triangles alike, whatever their
    entries per row), 3 for 3D ones: the largest estimate from eight seeds (a boundary near a seed
    only slows the growth), balls up to an eighth of the graph.  Structural: cached on the pattern.

    Examples
    --------
    >>> from sla import gallery
    >>> round(graph_dimension(gallery.poisson2d(64))), round(graph_dimension(gallery.poisson3d(24)))
    (2, 3)
    """
    p = A.pattern

    def build():
        n = p.shape[0]
        crow, col = p.crow.cpu().numpy().astype(np.int64), p.ccol.cpu().numpy().astype(np.int64)
        cap = max(16, min(n // 8, 5_000))
        dims = []
        for seed in np.random.default_rng(0).integers(0, n, 8):
            sizes = _ball_sizes(crow, col, seed, cap)
            r = len(sizes) - 1
            if r < 2:  # everything within two steps: a dense-like graph
                dims.append(float("inf") if n > 16 else 0.0)
                continue
            # spheres grow as r^(d-1): |S(r)| / |S(r/2)| ~ 2^(d-1) (less biased than balls at small r)
            sphere = np.diff(sizes)
            dims.append(1 + math.log(max(sphere[r - 1], 1) / max(sphere[r // 2 - 1], 1)) / math.log(r / (r // 2)))
        return float(max(dims))

    return p.memo("graph_dimension", build)


def _reused(A: SparseTensor, cfg: SolverConfig, record: bool = True) -> bool:
    """Whether these very values were solved with 'auto' before (a factorisation would be reused);
    ``record``: remember them for the next call."""
    if not cfg.cache:
        return False
    v = A._flat().detach()
    seen = A.pattern.cache.get("policy_values")
    if seen is not None and seen.shape == v.shape and seen.dtype == v.dtype and torch.equal(seen, v):
        return True
    if record:
        A.pattern.cache["policy_values"] = v.clone()
    return False


def _multigrid_pays(A: SparseTensor, n: int, mtype: str, cfg: SolverConfig, record: bool = True) -> str | None:
    """Why 'auto' sends this system to multigrid CG, or ``None``: only when it is *certified*
    positive definite (diagonal dominance, O(nnz)); anything else keeps its direct solver."""
    dev = A.device.type
    if mtype not in _DEFINITE or dev not in ("cpu", "cuda") or n < min(CPU_MULTIGRID_MIN_3D, CUDA_MULTIGRID_MIN_3D):
        return None
    d = graph_dimension(A)
    shape = f"graph dimension {d:.1f} ({'3D' if d >= _DIM_3D else '2D'}-like)"
    if dev == "cuda":
        if d < _DIM_3D or n < CUDA_MULTIGRID_MIN_3D:
            return None
        why = f"{shape}, n = {n} >= {CUDA_MULTIGRID_MIN_3D}: a 3D factorisation costs more time and memory"
    else:
        limit = CPU_MULTIGRID_MIN_3D if d >= _DIM_3D else CPU_MULTIGRID_MIN
        if n < limit:
            return None
        why = f"{shape}, n = {n} >= {limit}"
        if _reused(A, cfg, record):
            keep = CPU_REUSE_DIRECT_MAX_3D if d >= _DIM_3D else CPU_REUSE_DIRECT_MAX_2D
            if n < keep:
                return None
            why += f", even with the factorisation reused (n >= {keep})"
    if not structure.is_dominant_definite(A):
        return None
    return why + "; positive definite by diagonal dominance"


_HERMITIAN_METHODS = {"cg": ("spd", "hpd"), "minres": ("symmetric", "hermitian", "spd", "hpd")}


def _named_hermitian(A: SparseTensor, method: str, mtype: str) -> str:
    """The type an explicitly named cg/minres runs with on a detected non-Hermitian A: Hermitian
    (positive definite for cg) when A is within :data:`SYMMETRY_RTOL` of it, the same with a warning
    up to :data:`SYMMETRY_WARN`; beyond that the detected type (and the method's refusal)."""
    d = asymmetry(A)
    if d > SYMMETRY_WARN:  # far from Hermitian: the method's type check refuses it, as before
        return mtype
    if d > SYMMETRY_RTOL:
        warnings.warn(
            f"method={method!r} on a matrix that is not {'Hermitian' if A.is_complex else 'symmetric'} "
            f"(max|A - A^H| / max|A| = {d:.1e} > {SYMMETRY_RTOL:g}): {method} assumes it is, and the result "
            "may be wrong -- use method='gmres' or 'bicgstab'",
            stacklevel=4,
        )
    if method == "cg":
        return "hpd" if A.is_complex else "spd"
    return "hermitian" if A.is_complex else "symmetric"


def _backend_with(A: SparseTensor, method: str) -> str:
    dev = A.device.type
    names = registry.priority(dev)
    for name in names:
        b = registry.get_backend(name)
        if method in b.methods and b.check() is None and A.dtype in b.dtypes:
            return name
    known = sorted({m for n in names for m in registry.get_backend(n).methods})
    raise ValueError(f"unknown method {method!r} for a {A.dtype} matrix on {dev}; methods there: {known}")


def choose(A: SparseTensor, cfg: SolverConfig, kind: str | None = None, record: bool = True) -> Choice:
    """The backend and method for solving with ``A`` under ``cfg``, with the reasons.

    Parameters
    ----------
    A : SparseTensor
        The (square) matrix.
    cfg : SolverConfig
        A resolved config (:meth:`SolverConfig.resolve`).
    kind : {None, 'direct', 'iterative'}
        Restrict the choice to one kind of method.
    record : bool
        Remember A's values on its pattern, so that a later solve with the same values knows a
        factorisation would be reused (``False``: only look, as :func:`explain` does).

    Returns
    -------
    Choice
    """
    detected = cfg.matrix_type == "auto"
    mtype = structure.guess_matrix_type(A) if detected else cfg.matrix_type
    if detected and cfg.method in _HERMITIAN_METHODS and mtype not in _HERMITIAN_METHODS[cfg.method]:
        mtype = _named_hermitian(A, cfg.method, mtype)
    n = A.sparse_shape[0]
    backend, method = cfg.backend, cfg.method
    typed = f"{mtype} ({'detected' if detected else 'given'})"
    reasons = []
    mg = _multigrid_pays(A, n, mtype, cfg, record) if backend == "auto" and method == "auto" and kind is None else None
    if mg is not None:
        backend, method = "pytorch", "cg"
        reasons.append(
            f"auto: multigrid CG ({mg}; rtol {cfg.tolerances(A.dtype)[0]:g}; method='cholesky' for a direct solve)"
        )
    elif backend == "auto" and method == "auto":
        backend, method = registry.select_backend(A.device, n, A.dtype, mtype, kind=kind)
        reasons.append(
            f"auto: {backend}/{method}, the first backend on {A.device.type} that proposes a method "
            f"for a {typed} {A.dtype} matrix of size {n}" + (f" ({kind} asked for)" if kind else "")
        )
        if kind is None and mtype in _DEFINITE and registry.get_backend(backend).methods[method].kind == "direct":
            if A.pattern.cache.get("policy_values") is not None and _reused(A, cfg, record):
                reasons.append("auto: these values were solved before: the cached factorisation is reused")
    elif backend == "auto":
        backend = _backend_with(A, method)
        reasons.append(f"auto: backend {backend}, the first on {A.device.type} with method {method!r}")
    elif method == "auto":
        b = registry.get_backend(backend)
        method = b.choose(n, A.dtype, mtype, kind)
        why = f"auto: {backend}'s method for a {typed} matrix"
        if method is None and kind is None:  # a size limit of 'auto' does not bind an explicitly named backend
            method = b.choose(n, A.dtype, mtype, "direct") or b.choose(n, A.dtype, mtype, "iterative")
            why += f" (its size limit for 'auto' does not bind a named backend, n = {n})"
        if method is None:
            raise ValueError(f"backend {backend!r} has no {kind or ''} method for a {mtype} {A.dtype} matrix")
        reasons.append(f"{why}: {method}")
    return Choice(backend, method, mtype, reasons)


def choose_preconditioner(A: SparseTensor, mtype: str, method: str = "gmres") -> tuple[str, str]:
    """What ``preconditioner='auto'`` means for this matrix and Krylov method.

    Parameters
    ----------
    A : SparseTensor
        The matrix.
    mtype : str
        Its matrix type.
    method : str
        The Krylov method it preconditions.

    Returns
    -------
    (str, str)
        The preconditioner name and the reason.
    """
    n = A.sparse_shape[0]
    if mtype in _DEFINITE and n >= MULTIGRID_PRECONDITIONER_MIN:
        if A.pattern.cache.get("grid") is not None:
            return "gmg", f"auto: gmg ({mtype}, n = {n} >= {MULTIGRID_PRECONDITIONER_MIN}, grid recorded)"
        return "amg", f"auto: amg ({mtype}, n = {n} >= {MULTIGRID_PRECONDITIONER_MIN}, no grid recorded)"
    d = A.detach().diagonal()
    if method in ("cg", "minres"):  # these need a Hermitian positive definite preconditioner
        ok = bool((d.real > 0).all()) and (not A.is_complex or bool((d.imag == 0).all()))
        need = "a positive real diagonal"
    else:
        ok = bool((d != 0).all())
        need = "a non-zero diagonal"
    small = f"n = {n} < {MULTIGRID_PRECONDITIONER_MIN}" if mtype in _DEFINITE else f"{mtype}, not definite"
    if ok:
        return "jacobi", f"auto: jacobi ({small}; {method} with {need})"
    return "none", f"auto: none ({small}; {method} needs {need}, A lacks it)"


def explain(A: SparseTensor, cfg: SolverConfig | None = None, **options: Any) -> str:
    """What ``sla.solve(A, b, **options)`` would run, and why -- without solving.

    Parameters
    ----------
    A : SparseTensor
        The matrix.
    cfg : SolverConfig, optional
        A config (the context's config and ``options`` are merged as in :func:`sla.solve`).
    **options
        Any :class:`~sla.SolverConfig` field.

    Returns
    -------
    str
        One line per decision.

    Examples
    --------
    >>> import sla
    >>> from sla.solvers.linear.policy import explain
    >>> print(explain(sla.gallery.poisson2d(8), backend="pytorch"))
    matrix type: spd (detected)
    auto: pytorch's method for a spd (detected) matrix: cg
    auto: jacobi (n = 64 < 10000; cg with a positive real diagonal)
    """
    cfg = SolverConfig.resolve(cfg, **options)
    c = choose(A, cfg, record=False)
    lines = [f"matrix type: {c.matrix_type} ({'detected' if cfg.matrix_type == 'auto' else 'given'})"]
    lines += c.reasons or [f"{c.backend}/{c.method} as given"]
    kind = registry.get_backend(c.backend).methods[c.method].kind if c.method else None
    if c.backend == "pytorch" and kind == "iterative" and (cfg.preconditioner in (None, "auto")):
        lines.append(choose_preconditioner(A, c.matrix_type, c.method)[1])
    return "\n".join(lines)


def explain_solve(
    A: SparseTensor, b: torch.Tensor | None = None, config: SolverConfig | None = None, **options: Any
) -> str:
    """What ``sla.solve(A, b, config, **options)`` would run, and why -- before solving.

    The decision table is this module's docstring (:mod:`sla.solvers.linear.policy`); the
    same reasons end up in ``SolveInfo.notes`` of the solve.

    Parameters
    ----------
    A : SparseTensor
        The square matrix.
    b : tensor, optional
        The right-hand side (checked against A's shape when given).
    config : SolverConfig, optional
        As in :func:`sla.solve`.
    **options
        Any :class:`~sla.SolverConfig` field (``backend``, ``method``, ``preconditioner``, ...).

    Returns
    -------
    str
        One line per decision.

    Examples
    --------
    >>> import sla
    >>> print(sla.explain_solve(sla.gallery.poisson2d(8), backend="pytorch"))
    matrix type: spd (detected)
    auto: pytorch's method for a spd (detected) matrix: cg
    auto: jacobi (n = 64 < 10000; cg with a positive real diagonal)
    """
    if not isinstance(A, SparseTensor):
        raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
    if A.sparse_shape[0] != A.sparse_shape[1]:
        raise ValueError(f"A must be square to solve with, got shape {tuple(A.shape)}")
    if b is not None:
        from ...sparse import canonical_rhs
        from .solve import check_rhs

        canonical_rhs(A.batch_shape, A.sparse_shape[0], check_rhs(A, b))
    return explain(A, config, **options)


SYMMETRY_RTOL = 1e-6  # relative asymmetry max|A - A^H| / max|A| that 'symmetric' methods accept silently
SYMMETRY_WARN = 1e-2  # up to this a named cg/minres runs with a warning; beyond, it is refused


def asymmetry(A: SparseTensor) -> float:
    """``max|A - A^H| / max|A|`` over the stored entries (0 for an exactly Hermitian A)."""
    with torch.no_grad():
        Ad = A.detach()
        scale = float(Ad._flat().abs().max()) if Ad.nnz else 0.0
        if scale == 0:
            return 0.0
        AH = Ad.H()
        if AH.pattern is Ad.pattern or (
            torch.equal(AH.pattern.crow, Ad.pattern.crow) and torch.equal(AH.pattern.ccol, Ad.pattern.ccol)
        ):
            d = (AH._flat() - Ad._flat()).abs().max()
        else:
            d = (Ad - AH)._flat().abs().max()
        return float(d) / scale


def hermitian_part(A: SparseTensor, who: str, instead: str) -> SparseTensor:
    """A itself when Hermitian, else ``(A + A^H) / 2`` (differentiable in A's values), with a warning
    when A is further than :data:`SYMMETRY_RTOL` from Hermitian.

    Parameters
    ----------
    A : SparseTensor
        The matrix.
    who, instead : str
        The caller's name and the method to use for A's own (non-Hermitian) problem, for the warning.

    Returns
    -------
    SparseTensor
    """
    grad = A.values.requires_grad
    if structure.is_symmetric(A, conjugate=True):
        if not grad:
            return A
        # the same matrix, but A_ij and A_ji each get half of the gradient: perturbing one of them
        # perturbs the symmetric part by half (what gradcheck of one stored entry measures)
        pt, perm = A.pattern.transpose()
        if pt is A.pattern or (torch.equal(pt.crow, A.pattern.crow) and torch.equal(pt.ccol, A.pattern.ccol)):
            v = A.values
            return SparseTensor._make((v + v[..., perm.long()].conj()) * 0.5, A.pattern)
        return (A + A.H()) * 0.5
    d = asymmetry(A)
    if d > SYMMETRY_RTOL:
        warnings.warn(
            f"{who}: A is not {'Hermitian' if A.is_complex else 'symmetric'} (max|A - A^H| / max|A| = {d:.1e} > "
            f"{SYMMETRY_RTOL:g}); {who} uses its {'Hermitian' if A.is_complex else 'symmetric'} part (A + A^H) / 2 "
            f"-- use {instead} for A's own problem",
            stacklevel=3,
        )
    return (A + A.H()) * 0.5
