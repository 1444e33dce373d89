"""What ``'auto'`` means for a linear solve: the one place where it is decided.

Read top to bottom; the first row that matches decides.  ``n`` is the size, ``mtype``
the matrix type (given, or detected by :func:`sla.structure.guess_matrix_type`).

=====================================  ============================================================
backend / method given                 choice
=====================================  ============================================================
both ``'auto'``, CPU, mtype spd/hpd,   ``pytorch`` / ``cg`` with a multigrid preconditioner:
certified definite (diagonal           ``n >= CPU_MULTIGRID_MIN``, or ``n >= CPU_MULTIGRID_MIN_DENSE``
dominance), large                      with more than 6 entries per row (fill grows fast there;
                                       measured by ``benchmarks/bench_auto.py``)
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
carries its grid, else smoothed-aggregation AMG, for spd/hpd systems with
``n >= MULTIGRID_PRECONDITIONER_MIN``; else Jacobi when the diagonal allows it (positive
and real for CG/MINRES, non-zero otherwise); else none.  Options the user gives
(``SolverConfig.options``) go to the chosen preconditioner.

:func:`choose` returns the choice with its reasons (they end up in ``SolveInfo.notes``);
:func:`explain` says it in words without solving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ... import structure
from ...config import SolverConfig
from ...sparse import SparseTensor
from . import registry

__all__ = [
    "CPU_MULTIGRID_MIN",
    "CPU_MULTIGRID_MIN_DENSE",
    "MULTIGRID_PRECONDITIONER_MIN",
    "Choice",
    "choose",
    "choose_preconditioner",
    "explain",
]

CPU_MULTIGRID_MIN = 50_000
CPU_MULTIGRID_MIN_DENSE = 10_000  # more than 6 entries per row (3D stencils, P2 elements)
MULTIGRID_PRECONDITIONER_MIN = 10_000  # below this a multigrid setup does not pay off: Jacobi

_DEFINITE = ("spd", "hpd")


@dataclass
class Choice:
    """A decision of the policy: what runs, and why."""

    backend: str
    method: str
    matrix_type: str
    reasons: list[str] = field(default_factory=list)


def _multigrid_pays(A: SparseTensor, n: int, mtype: str) -> bool:
    """'auto' on the CPU sends a large system to multigrid CG only when it is *certified*
    positive definite (diagonal dominance, O(nnz)); anything else keeps its direct solver."""
    if A.device.type != "cpu" or mtype not in _DEFINITE:
        return False
    limit = CPU_MULTIGRID_MIN_DENSE if A.nnz > 6 * n else CPU_MULTIGRID_MIN
    return n >= limit and structure.is_dominant_definite(A)


def _backend_with(A: SparseTensor, method: str) -> str:
    dev = A.device.type
    names = registry.priority(dev)
    for name in names:
        b = registry.get_backend(name)
        if method in b.methods and b.check() is None and A.dtype in b.dtypes:
            return name
    known = sorted({m for n in names for m in registry.get_backend(n).methods})
    raise ValueError(f"unknown method {method!r} for a {A.dtype} matrix on {dev}; methods there: {known}")


def choose(A: SparseTensor, cfg: SolverConfig, kind: str | None = None) -> Choice:
    """The backend and method for solving with ``A`` under ``cfg``, with the reasons.

    Parameters
    ----------
    A : SparseTensor
        The (square) matrix.
    cfg : SolverConfig
        A resolved config (:meth:`SolverConfig.resolve`).
    kind : {None, 'direct', 'iterative'}
        Restrict the choice to one kind of method.

    Returns
    -------
    Choice
    """
    detected = cfg.matrix_type == "auto"
    mtype = structure.guess_matrix_type(A) if detected else cfg.matrix_type
    n = A.sparse_shape[0]
    backend, method = cfg.backend, cfg.method
    typed = f"{mtype} ({'detected' if detected else 'given'})"
    reasons = []
    if backend == "auto" and method == "auto" and kind is None and _multigrid_pays(A, n, mtype):
        backend, method = "pytorch", "cg"
        reasons.append(
            f"auto: multigrid CG (large, positive definite by diagonal dominance; rtol "
            f"{cfg.tolerances(A.dtype)[0]:g}; method='cholesky' for a direct solve)"
        )
    elif backend == "auto" and method == "auto":
        backend, method = registry.select_backend(A.device, n, A.dtype, mtype, kind=kind)
        reasons.append(
            f"auto: {backend}/{method}, the first backend on {A.device.type} that proposes a method "
            f"for a {typed} {A.dtype} matrix of size {n}" + (f" ({kind} asked for)" if kind else "")
        )
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
    c = choose(A, cfg)
    lines = [f"matrix type: {c.matrix_type} ({'detected' if cfg.matrix_type == 'auto' else 'given'})"]
    lines += c.reasons or [f"{c.backend}/{c.method} as given"]
    kind = registry.get_backend(c.backend).methods[c.method].kind if c.method else None
    if c.backend == "pytorch" and kind == "iterative" and (cfg.preconditioner in (None, "auto")):
        lines.append(choose_preconditioner(A, c.matrix_type, c.method)[1])
    return "\n".join(lines)
