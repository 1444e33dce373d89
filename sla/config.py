"""Solver configuration, solve reports and the library's errors.

``SolverConfig`` holds every knob of a solve.  It is an ordinary argument
(``A.solve(b, config=cfg)``) and a context manager (``with SolverConfig(...):``);
keyword arguments of a call win over the innermost context, which wins over
outer contexts, which win over the defaults.  A field left at ``None`` means
"not set here".
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "SolverConfig",
    "SolveInfo",
    "SlaError",
    "SingularMatrixError",
    "NotPositiveDefiniteError",
    "ConvergenceError",
    "ConvergenceWarning",
    "IllConditionedWarning",
    "BackendUnavailableError",
]

log = logging.getLogger("sla")


class SlaError(Exception):
    """Base class of the errors raised by sla."""


class SingularMatrixError(SlaError, RuntimeError):
    """The matrix is (numerically) singular; no solution is returned."""


class NotPositiveDefiniteError(SlaError, ValueError):
    """A Cholesky factorisation was asked of a matrix that is not positive definite."""


class ConvergenceError(SlaError, RuntimeError):
    """An iterative method stopped before reaching its tolerance."""

    def __init__(self, message: str, info: SolveInfo | None = None):
        super().__init__(message)
        self.info = info


class ConvergenceWarning(UserWarning):
    """Warning variant of :class:`ConvergenceError` (``on_failure='warn'``)."""


class IllConditionedWarning(UserWarning):
    """The matrix of a direct solve is ill-conditioned to working precision: the residual is
    small but the forward error can be large (as LAPACK's ``*gesvx`` and ``scipy.linalg.solve``
    warn)."""


class BackendUnavailableError(SlaError, ImportError):
    """A backend was asked for that cannot run here (package or device missing)."""


_DEFAULTS: dict[str, Any] = dict(
    backend="auto",
    method="auto",
    rtol=None,
    atol=0.0,
    maxiter=None,
    preconditioner="auto",
    matrix_type="auto",
    on_failure="raise",
    restart=50,
    check_every=None,
    cache=True,
    options=None,
    timeout=None,
    callback=None,
)

_ON_FAILURE = ("raise", "warn", "ignore")


def _is_typed_preconditioner(v: Any) -> bool:
    """A ``sla.precond`` object: a frozen dataclass with a ``name`` and ``options()``
    (checked by shape: this module sits below the solvers that define them)."""
    return isinstance(getattr(type(v), "name", None), str) and callable(getattr(v, "options", None))


def _is_built_preconditioner(v: Any) -> bool:
    """A built preconditioner (``sla.solvers.precond.Preconditioner``): ``M(r)`` plus ``adjoint()``."""
    return callable(v) and callable(getattr(v, "adjoint", None)) and isinstance(getattr(type(v), "name", None), str)


_MATRIX_TYPES = ("auto", "general", "symmetric", "spd", "hermitian", "hpd")

_stack: contextvars.ContextVar[tuple[SolverConfig, ...]] = contextvars.ContextVar("sla_solver_config", default=())


@dataclass
class SolverConfig:
    """Every knob of a solve.

    Parameters
    ----------
    backend : str
        ``'auto'`` or a registered backend name (``sla.get_available_backends()``).
    method : str
        ``'auto'`` or a method of that backend (``'lu'``, ``'cholesky'``, ``'cg'``, ...).
    rtol, atol : float
        Iterative methods stop when ``||b - A x|| <= max(rtol * ||b||, atol)``;
        rtol defaults to 1e-8 (double) or 1e-5 (single precision).
    maxiter : int, optional
        Iteration cap of iterative methods (default: method-specific).
    preconditioner : str or sla.precond object
        ``'auto'``, ``'none'``, ``'jacobi'``, ... (backend-specific), or a typed choice
        carrying its options (``sla.precond.AMG(cycle='W')``, ``sla.precond.Jacobi()``, ...), or a
        preconditioner already built for this matrix (a :class:`sla.solvers.precond.Preconditioner`,
        e.g. the element-wise multigrid of :class:`sla.assembly.galerkin.GridHierarchy`; pytorch
        backend only, used as given).
    matrix_type : str
        ``'auto'`` (detected), ``'general'``, ``'symmetric'``, ``'spd'``,
        ``'hermitian'`` or ``'hpd'``.
    on_failure : str
        What a non-converged iterative solve does: ``'raise'``
        (:class:`ConvergenceError`), ``'warn'`` (:class:`ConvergenceWarning`)
        or ``'ignore'``.  Singular matrices always raise.
    restart : int
        GMRES restart length.
    check_every : int or 'adaptive', optional
        Iterations between convergence checks on GPU (host synchronisations);
        ``'adaptive'`` (CG) predicts from the measured convergence rate when the
        next check can succeed (the default for multigrid-preconditioned CG on GPUs).
    cache : bool
        Reuse factorisations / preconditioners cached on the pattern.
    options : dict, optional
        Extra backend-specific options, passed through.
    timeout : float, optional
        Wall-clock limit in seconds of an iterative solve (pytorch backend); past it the
        solve stops unconverged and ``on_failure`` applies.
    callback : callable, optional
        ``callback(iteration, relative_residual)`` after each iteration of an iterative solve
        of the pytorch backend (the estimate for the worst right-hand side; on GPU each call
        synchronises the device).  ``SolveInfo.history`` holds the same sequence afterwards.
    """

    backend: str | None = None
    method: str | None = None
    rtol: float | None = None
    atol: float | None = None
    maxiter: int | None = None
    preconditioner: Any = None
    matrix_type: str | None = None
    on_failure: str | None = None
    restart: int | None = None
    check_every: int | str | None = None
    cache: bool | None = None
    options: dict | None = None
    timeout: float | None = None
    callback: Any = None
    _tokens: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.validate()

    def tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        """``(rtol, atol)``; an unset rtol is 1e-8 in double and 1e-5 in single precision."""
        rtol = self.rtol
        if rtol is None:
            single = dtype in (torch.float32, torch.complex64, torch.float16, torch.bfloat16)
            rtol = 1e-5 if single else 1e-8
        return float(rtol), float(self.atol or 0.0)

    def validate(self) -> SolverConfig:
        if self.on_failure is not None and self.on_failure not in _ON_FAILURE:
            raise ValueError(f"on_failure must be one of {_ON_FAILURE}, got {self.on_failure!r}")
        if self.matrix_type is not None and self.matrix_type not in _MATRIX_TYPES:
            raise ValueError(f"matrix_type must be one of {_MATRIX_TYPES}, got {self.matrix_type!r}")
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if v is not None and not (v >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not self.timeout > 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(
                f"callback must be callable(iteration, relative_residual), got {type(self.callback).__name__}"
            )
        for name in ("maxiter", "restart", "check_every"):
            v = getattr(self, name)
            if name == "check_every" and v == "adaptive":
                continue
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                also = " or 'adaptive'" if name == "check_every" else ""
                raise ValueError(f"{name} must be a positive integer{also}, got {v!r}")
        for name in ("backend", "method", "preconditioner"):
            v = getattr(self, name)
            if name == "preconditioner" and (_is_typed_preconditioner(v) or _is_built_preconditioner(v)):
                continue
            if v is not None and not isinstance(v, str):
                also = " or a sla.precond object (AMG(), Jacobi(), ...)" if name == "preconditioner" else ""
                raise TypeError(f"{name} must be a string{also}, got {type(v).__name__}")
        return self

    # ------------------------------------------------------------ merging
    def _set_fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _DEFAULTS if getattr(self, f) is not None}

    @classmethod
    def resolve(cls, config: SolverConfig | None = None, **kwargs: Any) -> SolverConfig:
        """The effective config: defaults < contexts (outer to inner) < ``config`` < ``kwargs``."""
        unknown = set(kwargs) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown solver option(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
        merged = dict(_DEFAULTS)
        for ctx in _stack.get():
            merged.update(ctx._set_fields())
        if config is not None:
            if not isinstance(config, SolverConfig):
                raise TypeError(f"config must be a SolverConfig, got {type(config).__name__}")
            merged.update(config._set_fields())
        merged.update({k: v for k, v in kwargs.items() if v is not None})
        return cls(**merged)

    def replace(self, **changes: Any) -> SolverConfig:
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------- context manager
    def __enter__(self) -> SolverConfig:
        self._tokens.append(_stack.set(_stack.get() + (self,)))
        return self

    def __exit__(self, *exc) -> None:
        _stack.reset(self._tokens.pop())


@dataclass
class SolveInfo:
    """What a solve did (``return_info=True``).

    ``residual`` is the true relative residual ``||b - A x|| / ||b||``
    recomputed after the solve (the largest over batch and right-hand sides).
    ``history`` (iterative solves of the pytorch backend) is the method's estimate of the
    relative residual after each iteration, starting with the initial one; ``reason`` says
    why an unconverged solve stopped; ``rcond`` is the reciprocal condition number estimated
    from the factorisation (direct solves of the scipy backend; ``None`` when not estimated).
    """

    backend: str
    method: str
    matrix_type: str = "general"
    preconditioner: str | None = None
    iterations: int | None = None
    converged: bool = True
    residual: float = float("nan")
    setup_time: float = 0.0
    solve_time: float = 0.0
    cached: bool = False
    notes: list = field(default_factory=list)
    history: list | None = None
    reason: str | None = None
    rcond: float | None = None

    def fail(self, cfg: SolverConfig) -> None:
        """Apply the failure policy of ``cfg`` to a non-converged solve."""
        if self.converged:
            return
        why = f": {self.reason}" if self.reason else ""
        if self.iterations is None:  # a direct method
            msg = (
                f"{self.backend}/{self.method} is inaccurate: relative residual {self.residual:.3e}{why}. "
                "A is nearly singular or badly scaled; rescale it, solve in float64, or set "
                "on_failure='warn'/'ignore'."
            )
        else:
            if self.reason and self.reason.startswith(("stagnated", "breakdown")):
                advice = (
                    "More iterations will not help: use a direct method (method='lu' or 'cholesky'), "
                    "a stronger preconditioner (preconditioner='amg'), another Krylov method "
                    "(gmres for a nonsymmetric or indefinite A), or loosen rtol"
                )
            else:
                advice = "Raise maxiter, loosen rtol, pick a preconditioner (or a direct method)"
            msg = (
                f"{self.backend}/{self.method} did not converge: relative residual {self.residual:.3e} "
                f"after {self.iterations} iterations{why} (rtol={cfg.rtol}, atol={cfg.atol}, "
                f"maxiter={cfg.maxiter}). {advice}, or set on_failure='warn'/'ignore'."
            )
        apply_failure_policy(cfg.on_failure, msg, self, stacklevel=5)


def apply_failure_policy(policy: str, msg: str, info: Any = None, stacklevel: int = 2) -> None:
    """The failure policy, applied in one place: ``'raise'`` a :class:`ConvergenceError`
    (carrying ``info``), ``'warn'`` with a :class:`ConvergenceWarning`, or ``'ignore'``
    (logged at INFO level).

    Parameters
    ----------
    policy : {'raise', 'warn', 'ignore'}
        ``SolverConfig.on_failure``.
    msg : str
        What did not converge, and what to do about it.
    info : object, optional
        The result record attached to the raised error.
    stacklevel : int
        For the warning: 2 points at the caller of this function.
    """
    if policy not in _ON_FAILURE:
        raise ValueError(f"on_failure must be one of {_ON_FAILURE}, got {policy!r}")
    if policy == "raise":
        raise ConvergenceError(msg, info)
    if policy == "warn":
        warnings.warn(msg, ConvergenceWarning, stacklevel=stacklevel + 1)
    else:
        log.info(msg)


def rtol_alias(rtol: float | None, tol: float | None, where: str) -> float | None:
    """``rtol``, or ``tol`` -- the name the seed project's ``eigsh`` / ``nonlinear_solve`` use,
    accepted as an alias; giving both with different values is an error."""
    if tol is None:
        return rtol
    if rtol is not None and rtol != tol:
        raise ValueError(f"{where}: give rtol or its alias tol, not both (rtol={rtol!r}, tol={tol!r})")
    return tol
