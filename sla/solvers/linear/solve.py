"""Linear solves: validation, backend choice, cached setup, the adjoint, reports.

``solve(A, b)`` runs in four steps:

1. validate ``A`` and ``b`` at the boundary (shapes, devices, dtypes, finiteness);
2. resolve the :class:`~sla.SolverConfig` and the matrix type, and pick
   ``(backend, method)`` from the registry;
3. fetch or build the solver state -- cached on the pattern per values
   version, so repeated solves and the backward pass reuse the factorisation
   or preconditioner;
4. solve through :class:`~sla.solvers.linear.adjoint.LinearSolve` and recompute the
   true residual for :class:`~sla.SolveInfo`.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from ... import structure
from ...checks import all_finite
from ...config import (
    IllConditionedWarning,
    NotPositiveDefiniteError,
    SingularMatrixError,
    SolveInfo,
    SolverConfig,
)
from ...kernels import norm2
from ...numeric_cache import values_scope
from ...products import spmm_nograd
from ...sparse import SparseTensor, canonical_rhs
from . import policy, registry
from .adjoint import LinearSolve

__all__ = ["solve", "spsolve", "spsolve_coo", "LUFactorization", "prepare", "Prepared"]


# ------------------------------------------------------------------ checks
def check_matrix(A: Any, name: str = "A", purpose: str = "solve") -> SparseTensor:
    """A square SparseTensor with finite values, or a clear error (shared by every solver)."""
    if not isinstance(A, SparseTensor):
        raise TypeError(f"{name} must be a sla.SparseTensor, got {type(A).__name__}")
    M, N = A.sparse_shape
    if M != N:
        raise ValueError(f"{name} must be square to {purpose}, got shape {tuple(A.shape)}")
    if not all_finite(A.values):
        raise ValueError(f"{name} has NaN or Inf among its values")
    return A


def check_rhs(A: SparseTensor, b: Any, name: str = "b") -> torch.Tensor:
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(b).__name__}")
    if b.device != A.device:
        raise ValueError(f"{name} is on {b.device} but A is on {A.device}; move one with .to()")
    if b.dtype != A.dtype:
        raise TypeError(
            f"{name} has dtype {b.dtype} but A has {A.dtype}; no implicit promotion: use {name}.to(A.dtype)"
        )
    if not all_finite(b):
        raise ValueError(f"{name} has NaN or Inf entries")
    return b


# ---------------------------------------------------------------- prepare
class Prepared:
    """A solver state ready to apply to right-hand sides (forward or adjoint)."""

    def __init__(self, A, backend, method, mtype, cfg, states, setup_time, notes):
        self.pattern = A.pattern
        self.batch_size = A.batch_size
        self.backend = backend
        self.method = method
        self.matrix_type = mtype
        self.cfg = cfg
        self.states = states
        self.setup_time = setup_time
        self.notes = notes
        self.stats: dict = {}
        # direct methods refine a solution whose residual is far above rounding (cuDSS LU on a
        # saddle point without pivoting, a badly scaled matrix): the values are kept for r = b - A x
        self.values = A._flat().detach() if method.kind == "direct" else None
        # per-call knobs of a cached iterative state (not part of its cache key)
        for st in states if isinstance(states, list) else [states]:
            if hasattr(st, "callback") and hasattr(st, "timeout"):
                st.timeout, st.callback = cfg.timeout, cfg.callback

    def solve(self, b: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``b`` is ``[B, M, K]`` with B the matrix batch size."""
        if self.backend.batched:
            x, stats = self.method.apply(self.states, b, transpose=transpose)
        else:
            xs, stats = [], {}
            for i, st in enumerate(self.states):
                xi, si = self.method.apply(st, b[i], transpose=transpose)
                xs.append(xi)
                for k, v in si.items():
                    if k == "iterations":
                        stats[k] = max(stats.get(k, 0), v)
                    elif k == "converged":
                        stats[k] = stats.get(k, True) and v
                    elif k == "rcond":
                        stats[k] = v if stats.get(k) is None else (stats[k] if v is None else min(stats[k], v))
                    else:
                        stats[k] = v
            x = torch.stack(xs)
        if self.values is not None:
            x = self._refine(b, x, transpose, stats)
        self.stats = stats
        return x

    def _product(self, x: torch.Tensor, transpose: bool, values: torch.Tensor) -> torch.Tensor:
        if not transpose:
            return spmm_nograd(self.pattern, values, x)
        pt, perm = self.pattern.transpose()
        vt = values[..., perm]
        return spmm_nograd(pt, vt.conj() if vt.is_complex() else vt, x)

    def _correction(self, r: torch.Tensor, transpose: bool) -> torch.Tensor:
        if self.backend.batched:
            return self.method.apply(self.states, r, transpose=transpose)[0]
        return torch.stack([self.method.apply(st, r[i], transpose=transpose)[0] for i, st in enumerate(self.states)])

    def _refine(self, b: torch.Tensor, x: torch.Tensor, transpose: bool, stats: dict, steps: int = 3) -> torch.Tensor:
        """Iterative refinement with the held factors (Wilkinson; Higham, *Accuracy and Stability*,
        ch. 12): ``x += solve(b - A x)`` while the relative residual is above ``sqrt(eps)`` and falls.
        A backward-stable factorisation stops at once: one residual, no extra solve.  In single
        precision the residual and the sum are formed in double (mixed-precision refinement,
        Langou et al. 2006: the float32 factors then reach float32 rounding while cond(A) eps < 1)."""
        low = x.dtype
        limit = torch.finfo(low).eps ** 0.5
        with torch.no_grad():
            bn = norm2(b, dim=1).clamp_min(torch.finfo(b.real.dtype).tiny)
            rel = lambda r: float((norm2(r, dim=1) / bn.to(r.real.dtype)).amax())  # noqa: E731
            r = b - self._product(x, transpose, self.values)
            worst, done = rel(r), 0
            if worst > limit:
                hi = {torch.float32: torch.float64, torch.complex64: torch.complex128}.get(low, low)
                vh, bh, xh = self.values.to(hi), b.to(hi), x.to(hi)
                r = bh - self._product(xh, transpose, vh)
                worst = rel(r)
                while worst > limit and done < steps:
                    x_new = xh + self._correction(r.to(low), transpose).to(hi)
                    r_new = bh - self._product(x_new, transpose, vh)
                    new = rel(r_new)
                    if not new < worst:  # no progress (or NaN): keep what we had
                        break
                    xh, r, worst, done = x_new, r_new, new, done + 1
                x = xh.to(low)
        if done:
            stats["notes"] = list(stats.get("notes", [])) + [
                f"iterative refinement: {done} step(s) with the held factors"
                f"{' (residuals in double)' if x.dtype in (torch.float32, torch.complex64) else ''}, "
                f"relative residual {worst:.1e}"
            ]
        return x


def _cache_key(backend, method, mtype, cfg: SolverConfig):
    key = (backend.name, method.name, mtype, repr(sorted((cfg.options or {}).items())))
    if method.kind == "iterative":
        key += (cfg.preconditioner, cfg.rtol, cfg.atol, cfg.maxiter, cfg.restart, cfg.check_every)
    return key


def _build(A, backend, method, mtype, cfg):
    """One state for a batch-native backend, else one state per batch member."""
    Ad = A.detach()
    if backend.batched:
        return method.setup(Ad, cfg, mtype)
    if not A.batch_shape:
        return [method.setup(Ad, cfg, mtype)]
    flat = Ad.values.reshape(A.batch_size, A.nnz)
    return [method.setup(SparseTensor._make(flat[i], A.pattern), cfg, mtype) for i in range(A.batch_size)]


def prepare(A: SparseTensor, cfg: SolverConfig, kind: str | None = None) -> Prepared:
    """Pick the solver for ``A`` and build (or fetch from the cache) its state."""
    # the type checks and the setup lookup recognise A's values once; a GMG setup takes the stencil
    # arrays a type check read (no second reading of a large grid matrix)
    pc = cfg.preconditioner
    gmg = not callable(pc) and (pc if isinstance(pc, str) else getattr(pc, "name", None)) == "gmg"  # not one built
    with values_scope(keep=("stencil",) if gmg else ()):
        return _prepare(A, cfg, kind)


def _prepare(A: SparseTensor, cfg: SolverConfig, kind: str | None) -> Prepared:
    choice = policy.choose(A, cfg, kind)
    bname, mname, mtype, notes = choice.backend, choice.method, choice.matrix_type, choice.reasons
    backend = registry.get_backend(bname).require()
    if A.device.type not in backend.devices:
        raise ValueError(f"backend {bname!r} runs on {backend.devices}, but A is on {A.device}")
    if A.dtype not in backend.dtypes:
        raise TypeError(f"backend {bname!r} supports dtypes {backend.dtypes}, got {A.dtype}")
    method = backend.method(mname)
    if kind is not None and method.kind != kind:
        raise ValueError(f"{bname}/{mname} is {method.kind}, but a {kind} method is needed here")
    if mtype not in method.matrix_types:
        raise ValueError(
            f"{bname}/{mname} needs a matrix of type {method.matrix_types}, but A is {mtype!r} "
            "(pass matrix_type=... if you know better, or choose another method)"
        )
    auto_method = cfg.method == "auto"

    def build():
        t0 = time.perf_counter()
        try:
            return method, _build(A, backend, method, mtype, cfg), time.perf_counter() - t0
        except NotPositiveDefiniteError:
            if not (auto_method and method.fallback):
                raise
            fb = backend.method(method.fallback)
            notes.append(f"{mname} failed (not positive definite); fell back to {fb.name}")
            return fb, _build(A, backend, fb, mtype, cfg), time.perf_counter() - t0

    key = _cache_key(backend, method, mtype, cfg) + (auto_method,)
    fresh = []

    def counted():
        fresh.append(1)
        return build()

    if cfg.cache:
        method, states, setup_time = A.pattern.numeric(A.values, key, counted)
    else:
        method, states, setup_time = counted()
    prep = Prepared(A, backend, method, mtype, cfg, states, setup_time if fresh else 0.0, notes)
    prep.cached = not fresh
    return prep


# ------------------------------------------------------------------ solve
def _asymmetric(A: SparseTensor) -> bool:
    """Whether ``A`` differs from ``A^H`` by more than rounding (``1e3 eps max|A|``), by
    :func:`sla.structure.is_symmetric`: on GPUs a search for each entry's mirror, with no copy of
    ``A^H``, which made a failed solve's diagnosis the peak of its memory (P2 elasticity, 515K unknowns, H200:
    1,826 bytes per unknown against 705 now)."""
    return not structure.is_symmetric(A, conjugate=True, rtol=1e3 * torch.finfo(A.dtype).eps)


def _no_vmap(A: Any, b: Any) -> None:
    """``torch.func.vmap`` over a solve is not supported: say so, and how to batch instead."""
    is_batched = getattr(torch._C._functorch, "is_batchedtensor", None)
    if is_batched is None:  # pragma: no cover - older torch
        return
    for t in (b, getattr(A, "values", None)):
        if isinstance(t, torch.Tensor) and is_batched(t):
            raise NotImplementedError(
                "sla.solve does not support torch.func.vmap. Batch without it: b of shape [n, K] solves K "
                "right-hand sides with one factorisation (pass b.T for a [K, n] stack), and a SparseTensor "
                "with values [B, nnz] (A.with_values / batched shape [B, n, n]) solves B matrices at once"
            )


def _non_finite(A: SparseTensor, x3: torch.Tensor, prep: Prepared, stats: dict) -> None:
    """Raise the error a non-finite solution means: overflow of a finite solution, an iteration
    that broke down, or a singular matrix."""
    name = f"{prep.backend.name}/{prep.method.name}"
    finite = torch.isfinite(x3)
    if prep.method.kind != "direct":
        why = stats.get("reason") or "the iteration broke down"
        extra = ""
        if prep.matrix_type in ("spd", "hpd") and _asymmetric(A):
            extra = f"; A is not symmetric but matrix_type={prep.matrix_type!r} was used: pass matrix_type='general'"
        raise SingularMatrixError(f"{name} produced a non-finite solution ({why}{extra})")
    if bool(finite.any()):
        big = float(x3[finite].abs().max()) if bool(finite.any()) else 0.0
        raise SingularMatrixError(
            f"{name} produced a non-finite solution: some entries overflowed {A.dtype} (largest finite "
            f"|x| = {big:.2e}); A is nearly singular or badly scaled -- rescale A or b, or solve in float64"
        )
    raise SingularMatrixError(f"{name} produced a non-finite solution: A is singular")


def _rounding_floor(A: SparseTensor, x3: torch.Tensor, b3: torch.Tensor) -> float:
    """``eps || |A| |x| || / ||b||`` (worst column): the relative residual that rounding the exact
    solution to the working precision can leave -- no solver in this precision gets below it."""
    with torch.no_grad():
        ax = spmm_nograd(A.pattern, A._flat().detach().abs(), x3.detach().abs())
        bn = norm2(b3.detach(), dim=1).clamp_min(torch.finfo(ax.dtype).tiny)
        ratio = norm2(ax, dim=1) / bn
        return float(ratio.amax()) * torch.finfo(A.dtype).eps if ratio.numel() else 0.0


def _relative_residual(A: SparseTensor, x3: torch.Tensor, b3: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        r = b3 - spmm_nograd(A.pattern, A._flat().detach(), x3.detach())
        rn = norm2(r, dim=1)
        bn = norm2(b3.detach(), dim=1)
        return torch.where(bn > 0, rn / bn.clamp_min(torch.finfo(bn.dtype).tiny), rn)


def _run(A: SparseTensor, b, prep: Prepared, return_info: bool, b_checked: bool = False):
    if not b_checked:  # solve() checks b before any setup; a held factorisation checks here
        b = check_rhs(A, b)
    b3, back = canonical_rhs(A.batch_shape, A.sparse_shape[0], b)
    if b3.shape[0] != A.batch_size:
        b3 = b3.expand(A.batch_size, *b3.shape[1:])
    t0 = time.perf_counter()
    values = A._flat()
    if values.requires_grad or b3.requires_grad:
        x3 = LinearSolve.apply(values, b3, prep)
    else:
        x3 = prep.solve(b3)
    if A.is_cuda and return_info:
        torch.cuda.synchronize(A.device)
    solve_time = time.perf_counter() - t0
    stats = prep.stats
    res = _relative_residual(A, x3, b3)
    worst = float(res.amax()) if res.numel() else 0.0
    direct = prep.method.kind == "direct"
    if worst != worst or worst == float("inf"):
        _non_finite(A, x3, prep, stats)
    rtol, atol = prep.cfg.tolerances(A.dtype)
    notes, reason = [], stats.get("reason")
    if direct:
        # backward-stable direct solves leave tiny residuals; a large one means trouble
        limit = torch.finfo(A.dtype).eps ** 0.5
        floor = _rounding_floor(A, x3, b3)
        converged = worst <= limit or (worst <= 4 * floor and floor <= torch.finfo(A.dtype).eps ** (1 / 3))
        if not converged:
            reason = f"the residual of a backward-stable direct solve should be near eps, but is > {limit:.1e}"
    else:
        bn = norm2(b3.detach(), dim=1).amax()
        tol = max(rtol, atol / float(bn) if float(bn) > 0 else 0.0)
        converged = bool(stats.get("converged", True)) and worst <= 10 * tol
        eps = torch.finfo(A.dtype).eps
        if not converged and prep.cfg.rtol is None and not prep.cfg.atol:
            # the default rtol means: 1e-8 / 1e-5, or the accuracy the working precision can attain,
            # whichever is larger -- in float32 a rounded exact solution can leave more than 1e-5
            # (Poisson, 50K+ unknowns): a backward error at rounding level.  An explicit rtol is kept.
            floor = _rounding_floor(A, x3, b3)
            # ... unless that level is itself large (|x| huge: a singular or hopeless system)
            if worst <= 4 * floor and floor <= eps ** (1 / 3):
                converged = True
                notes.append(
                    f"relative residual {worst:.1e} is at the rounding level of {A.dtype} (eps |A| |x| / |b| = "
                    f"{floor:.1e}): rtol={rtol:g} is met as far as this precision allows"
                )
        if not converged and reason is None:
            reason = "the true residual is above the tolerance the method's estimate met"
        if not converged and prep.matrix_type in ("spd", "hpd") and _asymmetric(A):
            reason = (
                f"A is not {'Hermitian' if A.is_complex else 'symmetric'} but matrix_type={prep.matrix_type!r} "
                f"was used ({reason}); pass matrix_type='general' (method='gmres' or 'bicgstab')"
            )
    rcond = stats.get("rcond")
    eps = torch.finfo(A.dtype).eps
    if rcond is not None and rcond < eps**0.5:
        # forward error <~ eps / rcond although the residual is tiny (Higham, Accuracy and Stability, 7.2)
        msg = (
            f"{prep.backend.name}/{prep.method.name}: A is ill-conditioned, reciprocal condition number "
            f"~{rcond:.1e}: the relative error of x can reach ~{min(1.0, eps / max(rcond, 1e-300)):.0e} "
            "although the residual is small"
        )
        notes.append(msg)
        if rcond < 1e3 * eps:  # error bound above 1e-3: say so loudly (scipy.linalg.solve: rcond < eps)
            warnings.warn(msg + "; rescale A or solve in higher precision", IllConditionedWarning, stacklevel=3)
    info = SolveInfo(
        backend=prep.backend.name,
        method=prep.method.name,
        matrix_type=prep.matrix_type,
        preconditioner=stats.get("preconditioner"),
        iterations=stats.get("iterations"),
        converged=converged,
        residual=worst,
        setup_time=prep.setup_time,
        solve_time=solve_time,
        cached=prep.cached,
        notes=prep.notes + notes + list(stats.get("notes", [])),
        history=stats.get("history"),
        reason=None if converged else reason,
        rcond=rcond,
    )
    if not converged and direct and worst > 1e-2:
        raise SingularMatrixError(
            f"{info.backend}/{info.method}: relative residual {worst:.2e}; A is singular to working precision"
        )
    info.fail(prep.cfg)
    x = back(x3, A.sparse_shape[1])
    return (x, info) if return_info else x


def solve(
    A: SparseTensor,
    b: torch.Tensor,
    backend: str | None = None,
    method: str | None = None,
    *,
    config: SolverConfig | None = None,
    return_info: bool = False,
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    """Solve ``A x = b``, differentiably in ``A.values`` and ``b``.

    Parameters
    ----------
    A : SparseTensor
        ``[*batch, n, n]``.
    b : torch.Tensor
        ``[*batch, n]`` or ``[*batch, n, K]`` (K right-hand sides, one setup);
        ``[n]`` is broadcast over a batch.  Same device and dtype as A.
    backend, method : str, optional
        ``'auto'`` (default) or a name from :func:`sla.show_backends`.
    config : SolverConfig, optional
        Overrides the context's config; keyword options override both.
    return_info : bool
        Also return a :class:`~sla.SolveInfo`.
    **options
        Any :class:`~sla.SolverConfig` field (``rtol``, ``maxiter``, ...).

    Returns
    -------
    x : torch.Tensor (and SolveInfo when ``return_info``)

    Raises
    ------
    SingularMatrixError, ConvergenceError (per ``on_failure``), ValueError / TypeError
    for bad input, BackendUnavailableError for a backend that cannot run here.
    """
    if hasattr(A, "__sla_solve__"):
        return A.__sla_solve__(b, backend=backend, method=method, config=config, return_info=return_info, **options)
    _no_vmap(A, b)
    check_matrix(A)
    check_rhs(A, b)
    cfg = SolverConfig.resolve(config, backend=backend, method=method, **options)
    prep = prepare(A, cfg)
    return _run(A, b, prep, return_info, b_checked=True)


def spsolve(
    values: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    shape: tuple[int, int],
    b: torch.Tensor,
    backend: str = "auto",
    method: str = "auto",
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    """Solve from COO arrays: ``SparseTensor(values, row, col, shape).solve(b)``."""
    return solve(SparseTensor(values, row, col, shape), b, backend=backend, method=method, **options)


def spsolve_coo(A: torch.Tensor, b: torch.Tensor, **options: Any) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    """Solve with a torch sparse (COO or CSR) matrix."""
    return solve(SparseTensor.from_torch(A), b, **options)


class LUFactorization:
    """A factorisation held for repeated solves: ``lu = A.lu(); x = lu.solve(b)``.

    Solves are differentiable (w.r.t. ``b`` and the values of the factored
    ``A``) and reuse the factors in the backward pass.
    """

    def __init__(
        self,
        A: SparseTensor,
        backend: str | None = None,
        method: str | None = None,
        *,
        config: SolverConfig | None = None,
        **options: Any,
    ) -> None:
        check_matrix(A)
        cfg = SolverConfig.resolve(config, backend=backend, method=method, **options)
        self.A = A
        self._prep = prepare(A, cfg, kind="direct")

    backend = property(lambda self: self._prep.backend.name)
    method = property(lambda self: self._prep.method.name)
    matrix_type = property(lambda self: self._prep.matrix_type)
    setup_time = property(lambda self: self._prep.setup_time)

    def solve(self, b: torch.Tensor, return_info: bool = False) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
        """Solve ``A x = b`` with the held factors."""
        return _run(self.A, b, self._prep, return_info)

    def __repr__(self) -> str:
        return f"LUFactorization({self.backend}/{self.method}, {self.matrix_type}, shape={tuple(self.A.shape)})"
