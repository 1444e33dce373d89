"""Nonlinear solves ``F(u, *params) = 0`` with an implicit-function adjoint.

One driver loop (:func:`_drive`) and small strategy objects, in the manner of
optimistix's ``root_find(fn, solver, y0, adjoint=ImplicitAdjoint())``:

* :class:`Newton` -- Newton's method with a backtracking (Armijo) line search;
  the step ``J du = -F`` is solved matrix-free by GMRES on Jacobian-vector
  products (Jacobian-free Newton-Krylov, inexact with forcing term
  ``eta_k = min(0.1, ||F_k|| / ||F_0||)``), or with an *assembled* sparse
  Jacobian on a known pattern (coloured exact VJPs, then a sparse direct
  solve: :func:`sla.solvers.nonlinear.jacobian.assemble_jacobian`), or densely (small);
* :class:`Picard` -- ``u <- u - omega P^{-1} F(u)`` (``P = A`` when the
  residual has a matrix: then it is the classic ``A u = b - f(u)`` iteration);
* :class:`Anderson` -- Anderson acceleration of the same fixed-point map
  (depth ``m``, damping ``beta``; Walker & Ni, SIAM J. Numer. Anal. 49 (2011)).

:class:`~sla.solvers.nonlinear.implicit.ImplicitAdjoint` differentiates the solution
``u*`` without the iteration history (see :mod:`sla.solvers.nonlinear.implicit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ...config import SolverConfig, apply_failure_policy, rtol_alias
from ...pattern import Pattern
from ...sparse import SparseTensor
from ..krylov.gmres import gmres
from .implicit import ImplicitAdjoint, ImplicitSolve, block_preconditioner
from .jacobian import Residual, assemble_jacobian

__all__ = ["nonlinear_solve", "Newton", "Picard", "Anderson", "ImplicitAdjoint", "NonlinearInfo"]

log = logging.getLogger("sla")


@dataclass
class NonlinearInfo:
    """What a nonlinear solve did (``return_info=True``); ``history`` holds ``||F||`` per iteration."""

    method: str
    iterations: int = 0
    converged: bool = False
    residual: float = float("nan")
    initial_residual: float = float("nan")
    function_evals: int = 0
    linear_iterations: int = 0
    history: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def fail(self, cfg: SolverConfig) -> None:
        if self.converged:
            return
        msg = (
            f"nonlinear_solve ({self.method}) did not converge: ||F|| = {self.residual:.3e} "
            f"(initial {self.initial_residual:.3e}) after {self.iterations} iterations "
            f"(rtol={cfg.rtol}, atol={cfg.atol}, maxiter={cfg.maxiter}); {'; '.join(self.notes)}"
        )
        apply_failure_policy(cfg.on_failure, msg, stacklevel=5)


def _norm(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x))


def _flat_precond(P: Callable | None) -> Callable:
    if P is None:
        return lambda r: r
    blk = block_preconditioner(P)
    return lambda r: blk(r.reshape(1, -1, 1)).reshape(-1)


# --------------------------------------------------------------- strategies
class Newton:
    """Newton with backtracking line search; ``linear``: ``'gmres'`` (JFNK), ``'sparse'`` or ``'dense'``."""

    name = "newton"

    def __init__(
        self,
        linear: str = "gmres",
        pattern: Pattern | None = None,
        preconditioner=None,
        line_search: bool = True,
        restart: int = 50,
        inner_maxiter: int | None = None,
        linear_options: dict | None = None,
        jacobian: Callable | None = None,
    ):
        self.jacobian = jacobian  # u -> SparseTensor J(u): the caller's Jacobian, solved directly
        if linear not in ("gmres", "sparse", "dense"):
            raise ValueError(f"linear_solver must be 'gmres', 'sparse' or 'dense', got {linear!r}")
        if linear == "sparse" and pattern is None:
            raise ValueError("linear_solver='sparse' needs the Jacobian's pattern (jacobian_pattern=...)")
        self.linear, self.pattern, self.P = linear, pattern, block_preconditioner(preconditioner)
        self.line_search, self.restart, self.inner_maxiter = line_search, restart, inner_maxiter
        self.linear_options = dict(linear_options or {})
        self.verified = False
        self.fallback = None  # a derived pattern: the JFNK preconditioner to fall back on when it misses entries

    def _check_pattern(self, res: Residual, u, F, J: SparseTensor, info: NonlinearInfo) -> bool:
        """``w^T J v`` of the assembled ``J`` against a vector-Jacobian product (random ``v, w``), at ``u``
        and a random point near it: does the pattern hold every entry?  (Coloured VJPs fold missing
        entries into stored ones.)"""
        self.verified = True
        g = torch.Generator(u.device).manual_seed(0)
        v, w, z = (torch.randn(u.numel(), dtype=u.dtype, device=u.device, generator=g) for _ in range(3))
        # at a random point near u as well: at u itself entries may vanish by accident (u0 = 0)
        ur = u + 0.1 * (u.abs().max() + 1) * z
        points = [(u, J)]
        if bool(torch.isfinite(res(ur)).all()):
            points.append((ur, assemble_jacobian(res, ur, self.pattern)))
        miss = 0.0
        for x, Jx in points:
            jtw = res.linearize_transpose(x)(w).reshape(-1)
            exact = float(torch.dot(jtw, v))
            scale = max(_norm(jtw) * _norm(v), torch.finfo(u.dtype).tiny)
            miss = max(miss, abs(float(torch.dot(w, Jx @ v)) - exact) / scale)
        if miss <= 1e3 * torch.finfo(u.dtype).eps:
            return True
        if self.fallback is None:
            raise ValueError(
                f"jacobian_pattern misses entries of dF/du: the assembled Jacobian differs from a "
                f"vector-Jacobian product by {miss:.1e} (relative); pass the full pattern, or "
                "linear_solver='gmres' (matrix-free)"
            )
        info.notes.append(f"the derived Jacobian pattern misses entries ({miss:.1e}): matrix-free GMRES instead")
        self.fallback = self.fallback()
        self.linear, self.P = "gmres", block_preconditioner(self.fallback)
        return False

    def direction(self, res: Residual, u, F, r0, info: NonlinearInfo) -> torch.Tensor:
        if self.jacobian is not None:
            from ..linear.solve import solve

            return solve(self.jacobian(u), -F, **self.linear_options)
        if self.linear == "sparse":
            J = assemble_jacobian(res, u, self.pattern)
            if self.verified or self._check_pattern(res, u, F, J, info):
                from ..linear.solve import solve

                return solve(J, -F, **self.linear_options)
        if self.linear == "dense":
            vjp = res.linearize_transpose(u)
            J = torch.stack([vjp(e) for e in torch.eye(u.numel(), dtype=u.dtype, device=u.device)])
            return torch.linalg.solve(J, -F)
        eta = min(0.1, _norm(F) / r0) if r0 > 0 else 0.1
        eta = max(eta, 1e-12 if res.jvp_mode != "fd" else 1e-7)
        out = gmres(
            lambda v: res.jvp(u, v.reshape(-1), F).reshape(1, -1, 1),
            -F.reshape(1, -1, 1),
            precond=self.P,
            rtol=eta,
            restart=self.restart,
            maxiter=self.inner_maxiter or 10 * self.restart,
        )
        info.linear_iterations += out.stats()["iterations"]
        return out.x.reshape(-1)

    def step(self, res: Residual, u, F, r0, info: NonlinearInfo):
        du = self.direction(res, u, F, r0, info)
        f0 = _norm(F)
        alpha, best = 1.0, None
        for _ in range(20 if self.line_search else 1):
            ut = u + alpha * du
            Ft = res(ut)
            ft = _norm(Ft)
            if best is None or ft < best[2]:
                best = (ut, Ft, ft)
            if ft <= (1 - 1e-4 * alpha) * f0:
                return ut, Ft
            alpha *= 0.5
        if self.line_search:
            info.notes.append("line search found no decrease")
        return best[0], best[1]


class Picard:
    """Fixed-point iteration ``u <- u - damping * P(F(u))`` (``P``: approximate ``J^{-1}``, default identity)."""

    name = "picard"

    def __init__(self, preconditioner=None, damping: float = 1.0):
        if not damping > 0:
            raise ValueError(f"damping must be positive, got {damping!r}")
        self.P, self.damping = _flat_precond(preconditioner), damping

    def step(self, res, u, F, r0, info):
        u = u - self.damping * self.P(F)
        return u, res(u)


class Anderson:
    """Anderson acceleration (depth ``m``, damping ``beta``) of ``g(u) = u - P(F(u))``."""

    name = "anderson"

    def __init__(self, m: int = 5, damping: float = 1.0, preconditioner=None):
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"m (Anderson depth) must be a positive integer, got {m!r}")
        if not damping > 0:
            raise ValueError(f"damping must be positive, got {damping!r}")
        self.m, self.beta, self.P = m, damping, _flat_precond(preconditioner)
        self.dF: list = []
        self.dG: list = []
        self.prev = None

    def step(self, res, u, F, r0, info):
        f = -self.P(F)  # g(u) - u
        g = u + f
        if self.prev is not None:
            self.dF.append(f - self.prev[0])
            self.dG.append(g - self.prev[1])
            self.dF, self.dG = self.dF[-self.m :], self.dG[-self.m :]
        self.prev = (f, g)
        if self.dF:
            dF = torch.stack(self.dF, 1)
            dG = torch.stack(self.dG, 1)
            gamma = torch.linalg.lstsq(dF, f[:, None]).solution[:, 0]
            # u+ = u + beta f - (dU + beta dF) gamma,  dU = dG - dF
            un = u + self.beta * f - (dG - dF + self.beta * dF) @ gamma
        else:
            un = u + self.beta * f
        return un, res(un)


# ------------------------------------------------------------------- driver
def _drive(
    res: Residual, u0: torch.Tensor, strategy, cfg: SolverConfig, info: NonlinearInfo, verbose: bool = False
) -> torch.Tensor:
    u = u0.detach().reshape(-1).clone()
    F = res(u)
    r0 = _norm(F)
    info.initial_residual = r0
    info.history.append(r0)
    rtol, atol = cfg.tolerances(u.dtype)
    target = max(rtol * r0, atol)
    maxiter = cfg.maxiter or (50 if strategy.name == "newton" else 1000)
    fn = r0
    for it in range(1, maxiter + 1):
        if fn <= target:
            break
        u, F = strategy.step(res, u, F, r0, info)
        fn = _norm(F)
        info.history.append(fn)
        info.iterations = it
        if verbose:
            log.info("nonlinear_solve %s: iteration %d, ||F|| = %.3e", info.method, it, fn)
        if fn != fn or fn == float("inf"):
            info.notes.append("diverged (non-finite residual)")
            break
    info.residual = fn
    info.converged = fn <= target
    info.function_evals = res.evaluations
    return u.reshape(u0.shape)


def nonlinear_solve(
    residual_fn: Callable,
    u0: torch.Tensor,
    *params: Any,
    method: str = "newton",
    linear_solver: str = "auto",
    jacobian_pattern: Pattern | SparseTensor | None = None,
    preconditioner: Any = "auto",
    line_search: bool = True,
    jvp: str = "auto",
    m: int = 5,
    damping: float = 1.0,
    linear_options: dict | None = None,
    adjoint: ImplicitAdjoint | None = None,
    config: SolverConfig | None = None,
    return_info: bool = False,
    jacobian_fn: Callable | None = None,
    verbose: bool = False,
    matrix: SparseTensor | None = None,
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, NonlinearInfo]:
    """Solve ``residual_fn(u, *params) = 0`` for ``u``, differentiably in ``params``.

    Parameters
    ----------
    residual_fn : callable
        ``F(u, *params) -> tensor shaped like u``, written with torch ops
        (SparseTensor products included).
    u0 : torch.Tensor
        Initial guess (real floating point, any shape).
    *params
        Tensors (gradients flow to those that require grad; mixed is fine)
        or other objects passed through unchanged.  Gradients reach *only*
        these (and A's values for ``A.nonlinear_solve``): tensors captured by
        ``residual_fn``'s closure are constants to the adjoint, and ``u0``
        gets no gradient (the solution does not depend on it).
    method : {'newton', 'picard', 'anderson'}
    linear_solver : {'auto', 'gmres', 'sparse', 'dense'}
        Newton's linear solver: matrix-free GMRES on JVPs (JFNK), an assembled
        sparse Jacobian on ``jacobian_pattern`` with a direct solve, or dense.
        ``'auto'``: ``'sparse'`` when a pattern is known, else ``'gmres'``.
        The adjoint uses the same kind unless ``adjoint`` says otherwise.
    jacobian_pattern : Pattern or SparseTensor, optional
        Structure of ``dF/du`` (must contain every nonzero).
    preconditioner : callable, 'auto' or None
        Approximate ``J^{-1}``: right preconditioner of JFNK's GMRES, and
        ``P`` of the Picard / Anderson map ``u - P(F(u))``.  Takes ``[1, N, 1]``
        blocks or flat vectors.  ``'auto'``: a direct factorisation of ``matrix`` (see there),
        else none.
    line_search : bool
        Backtracking (Armijo) on ``||F||`` for Newton.
    linear_options : dict, optional
        Keyword arguments of :func:`sla.solve` for the sparse Jacobian solves
        (``backend``, ``method``, ``options``, ...).
    jvp : {'auto', 'forward', 'fd'}
        How JFNK forms ``J v`` (forward-mode AD when possible, else finite differences).
    m, damping : Anderson depth; damping of Picard/Anderson.
    adjoint : ImplicitAdjoint, optional
    config : SolverConfig, optional; ``**options`` override it:
        ``rtol`` (on ``||F|| / ||F(u0)||``; ``tol``, the seed project's name, is an alias), ``atol``,
        ``maxiter``, ``on_failure``.
    return_info : bool
        Also return a :class:`NonlinearInfo`.
    jacobian_fn : callable, optional
        ``J(u, *params)``, the exact ``dF/du`` at ``u``: a SparseTensor, a
        ``(values, row, col, shape)`` tuple (the seed project's form) or a dense
        tensor.  When given, Newton solves ``J du = -F`` with it (through
        :func:`sla.solve` with ``linear_options``) and the adjoint solves
        ``J^T lam = g`` with it; no Jacobian-vector products are formed.
    verbose : bool
        Log ``||F||`` at every iteration (logger ``"sla"``, level INFO).
    matrix : SparseTensor, optional
        The linear part ``A`` of residuals like ``A u + f(u) - b`` (default: the first square
        ``N x N`` SparseTensor among ``params``).  With ``preconditioner='auto'`` it makes the
        defaults fast: Newton assembles ``dF/du`` on A's pattern plus the diagonal (coloured
        VJPs, checked against one vector-Jacobian product on the first step: when entries are
        missing it says so in ``info.notes`` and falls back to JFNK preconditioned by ``A^{-1}``);
        Picard and Anderson iterate ``u - A^{-1} F(u)`` (the classic ``A u = b - f(u)``).
    max_iter : int
        The seed project's name for ``maxiter`` (an alias, like ``tol`` for ``rtol``).

    Examples
    --------
    >>> import torch, sla
    >>> f = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> u = sla.nonlinear_solve(lambda u, f: u**3 + u - f, torch.zeros(2, dtype=torch.float64), f, rtol=1e-12)
    >>> u
    tensor([0.6823, 1.0000], dtype=torch.float64)
    """
    if not callable(residual_fn):
        raise TypeError(f"residual_fn must be callable, got {type(residual_fn).__name__}")
    if not isinstance(u0, torch.Tensor) or not u0.dtype.is_floating_point:
        raise TypeError(
            f"u0 must be a real floating-point tensor, got "
            f"{u0.dtype if isinstance(u0, torch.Tensor) else type(u0).__name__}"
        )
    if not bool(torch.isfinite(u0).all()):
        raise ValueError("u0 has NaN or Inf entries")
    if "tol" in options:  # the seed project's name for rtol
        options["rtol"] = rtol_alias(options.get("rtol"), options.pop("tol"), "nonlinear_solve")
    if "max_iter" in options:  # the seed project's name for maxiter
        max_iter = options.pop("max_iter")
        if options.get("maxiter") is not None and options["maxiter"] != max_iter:
            raise ValueError(
                f"nonlinear_solve: give maxiter or its alias max_iter, not both ({options['maxiter']!r}, {max_iter!r})"
            )
        options["maxiter"] = max_iter
    cfg = SolverConfig.resolve(config, **options)
    jacobian = _user_jacobian(jacobian_fn, u0, params)
    if isinstance(preconditioner, str) and preconditioner not in ("auto", "none"):
        raise ValueError(f"preconditioner must be a callable, 'auto', 'none' or None, got {preconditioner!r}")
    square = _square_matrix(params, u0.numel()) if matrix is None else matrix
    if square is not None and (not isinstance(square, SparseTensor) or tuple(square.shape) != (u0.numel(),) * 2):
        raise ValueError(
            f"matrix must be a square SparseTensor of size u.numel() = {u0.numel()}, got "
            f"{tuple(square.shape) if isinstance(square, SparseTensor) else type(square).__name__}"
        )
    matrix_free = method != "newton" or linear_solver in ("auto", "gmres")
    derived = None
    if jacobian_pattern is None and jacobian is None and square is not None:
        if method == "newton" and linear_solver == "auto" and preconditioner in ("auto", None):
            # residuals like A u + f(u), f pointwise: dF/du lives on A's pattern plus the diagonal
            # (checked on the first Newton step; matrix-free GMRES if entries are missing)
            jacobian_pattern = derived = _with_diagonal(square.pattern)
        elif preconditioner == "auto" and matrix_free:
            preconditioner = _MatrixInverse.build(square)
    pattern = jacobian_pattern.pattern if isinstance(jacobian_pattern, SparseTensor) else jacobian_pattern
    if pattern is not None and not isinstance(pattern, Pattern):
        raise TypeError(f"jacobian_pattern must be a sla.Pattern or SparseTensor, got {type(pattern).__name__}")
    if pattern is not None and pattern.shape != (u0.numel(), u0.numel()):
        raise ValueError(f"jacobian_pattern has shape {pattern.shape}, but u has {u0.numel()} entries")
    if isinstance(preconditioner, str):
        preconditioner = None
    if linear_solver == "auto":
        linear_solver = "sparse" if pattern is not None else "gmres"
    if method == "newton":
        strategy = Newton(
            linear_solver,
            pattern,
            preconditioner,
            line_search,
            cfg.restart,
            linear_options=linear_options,
            jacobian=jacobian,
        )
    elif method == "picard":
        strategy = Picard(preconditioner, damping)
    elif method == "anderson":
        strategy = Anderson(m, damping, preconditioner)
    else:
        raise ValueError(f"method must be 'newton', 'picard' or 'anderson', got {method!r}")
    if derived is not None:
        strategy.fallback = lambda: _MatrixInverse.build(square)
    res = Residual(residual_fn, u0, params, jvp=jvp)
    kind = "jacobian_fn" if jacobian is not None else linear_solver
    info = NonlinearInfo(method=method if method != "newton" else f"newton-{kind}")
    if derived is not None:
        info.notes.append("Jacobian pattern: the square matrix among the params, plus the diagonal")
    u = _drive(res, u0, strategy, cfg, info, verbose)
    if method == "newton" and strategy.linear != linear_solver:  # the derived pattern fell short
        linear_solver, pattern, preconditioner = strategy.linear, None, strategy.fallback
        info.method = "newton-gmres"
    if res.jvp_mode == "fd" and method == "newton" and linear_solver == "gmres":
        info.notes.append("JVPs by finite differences")
    info.fail(cfg)
    if adjoint is None and jacobian is not None:
        adjoint = _JacobianAdjoint(jacobian, linear_options)
    if adjoint is None:
        # J^T is preconditioned by the preconditioner's adjoint when it has one (sla.solvers.precond objects do)
        padj = preconditioner.adjoint() if hasattr(preconditioner, "adjoint") else preconditioner
        adjoint = ImplicitAdjoint(
            linear_solver if method == "newton" else ("sparse" if pattern else "gmres"),
            pattern,
            padj,
            restart=cfg.restart,
            on_failure=cfg.on_failure,
            linear_options=linear_options,
        )
    if any(isinstance(p, torch.Tensor) and p.requires_grad for p in params) and torch.is_grad_enabled():
        u = ImplicitSolve.apply(u, res, adjoint, *params)
    return (u, info) if return_info else u


def _square_matrix(params, n: int) -> SparseTensor | None:
    """The first square ``n x n`` SparseTensor among ``params`` (unbatched), if any."""
    for p in params:
        if isinstance(p, SparseTensor) and tuple(p.shape) == (n, n):
            return p
    return None


def _user_jacobian(jacobian_fn: Callable | None, u0: torch.Tensor, params) -> Callable | None:
    """``u_flat -> SparseTensor J(u)`` from the caller's ``jacobian_fn(u, *params)`` (params detached)."""
    if jacobian_fn is None:
        return None
    if not callable(jacobian_fn):
        raise TypeError(f"jacobian_fn must be callable, got {type(jacobian_fn).__name__}")
    fixed = [p.detach() if isinstance(p, torch.Tensor) else p for p in params]
    n = u0.numel()

    def J(u: torch.Tensor) -> SparseTensor:
        with torch.no_grad():
            out = jacobian_fn(u.reshape(u0.shape), *fixed)
        if isinstance(out, (tuple, list)) and len(out) == 4:
            out = SparseTensor(*out)
        elif isinstance(out, torch.Tensor) and out.layout == torch.strided:
            out = SparseTensor.from_dense(out)
        elif isinstance(out, torch.Tensor):
            out = SparseTensor.from_torch(out)
        if not isinstance(out, SparseTensor):
            raise TypeError(
                "jacobian_fn must return a SparseTensor, a (values, row, col, shape) tuple or a tensor, "
                f"got {type(out).__name__}"
            )
        if tuple(out.shape) != (n, n):
            raise ValueError(f"jacobian_fn returned a matrix of shape {tuple(out.shape)}, expected {(n, n)}")
        return out.to(dtype=u.dtype)

    return J


class _JacobianAdjoint(ImplicitAdjoint):
    """The adjoint ``J^T lam = g`` solved with the caller's Jacobian."""

    def __init__(self, jacobian: Callable, linear_options: dict | None = None):
        super().__init__(linear_options=linear_options)
        self.jacobian = jacobian

    def solve_transpose(self, res: Residual, u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        from ..linear.solve import solve

        return solve(self.jacobian(u).T(), g, **self.linear_options)


def sparse_nonlinear_solve(
    A: SparseTensor, residual_fn: Callable, u0: torch.Tensor, *params: Any, **kwargs: Any
) -> torch.Tensor | tuple[torch.Tensor, NonlinearInfo]:
    """``A.nonlinear_solve(residual_fn, u0, *params)``: ``residual_fn(u, A, *params)``.

    Gradients also reach ``A.values``.  ``A`` is the ``matrix`` of :func:`nonlinear_solve`: the
    Jacobian pattern defaults to A's pattern plus the diagonal (residuals like ``A @ u + f(u)``
    with a pointwise ``f``; checked on the first Newton step), and Picard/Anderson are
    preconditioned by ``A^{-1}``.
    """
    if not isinstance(A, SparseTensor):
        raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
    pattern = A.pattern

    def fn(u, values, *rest):
        return residual_fn(u, SparseTensor._make(values, pattern), *rest)

    jac, seed_jac = kwargs.pop("jacobian_fn", None), kwargs.pop("jac_fn", None)  # jac_fn: the seed's method's name
    if jac is not None and seed_jac is not None:
        raise ValueError("give jacobian_fn or its alias jac_fn, not both")
    jac = jac if jac is not None else seed_jac
    if jac is not None:
        kwargs["jacobian_fn"] = lambda u, values, *rest: jac(u, SparseTensor._make(values, pattern), *rest)

    if kwargs.get("linear_solver") == "sparse" and kwargs.get("jacobian_pattern") is None:
        kwargs["jacobian_pattern"] = _with_diagonal(pattern)
    if A.batch_shape or A.sparse_shape[0] != A.sparse_shape[1]:
        kwargs.setdefault("preconditioner", None)
    else:
        kwargs.setdefault("matrix", A)
    return nonlinear_solve(fn, u0, A.values, *params, **kwargs)


class _MatrixInverse:
    """``r -> A^{-1} r`` (or ``A^{-H} r`` for the adjoint) with a cached direct factorisation of A."""

    def __init__(self, prep, batch: int, transpose: bool = False):
        self.prep, self.batch, self.transpose = prep, batch, transpose

    @classmethod
    def build(cls, A: SparseTensor):
        from ...config import BackendUnavailableError, SingularMatrixError
        from ..linear.solve import prepare

        if A.sparse_shape[0] != A.sparse_shape[1]:
            return None
        try:
            return cls(prepare(A.detach(), SolverConfig.resolve(), kind="direct"), A.batch_size)
        except (SingularMatrixError, BackendUnavailableError, ValueError) as exc:
            log.info("nonlinear_solve: no factorisation of A for preconditioning (%s)", exc)
            return None

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        x = self.prep.solve(r.reshape(self.batch, self.prep.pattern.shape[0], -1), transpose=self.transpose)
        return x.reshape(r.shape)

    def adjoint(self) -> _MatrixInverse:
        return _MatrixInverse(self.prep, self.batch, not self.transpose)


def _with_diagonal(p: Pattern) -> Pattern:
    from ...products import union

    n = p.shape[0]
    i = torch.arange(n, device=p.device)
    return union(p, Pattern(i, i, (n, n)))[0]
