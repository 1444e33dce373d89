"""The shared machinery of the Krylov methods, written once against (operator, preconditioner, inner product).

Every method here works on *batched, multi-RHS* blocks ``[B, n, K]``: the
``B * K`` columns are independent systems that iterate together with their own
scalars (shape ``[B, 1, K]``) and their own convergence.  A column that has
converged is frozen (its step length is masked to zero), so converged systems
stop changing while the others go on.

The three callables are all a method sees of the problem:

* ``matvec(v) -> A v`` on ``[B, n, K]`` blocks,
* ``precond(r) -> z ~ A^{-1} r`` (identity when ``None``),
* ``dot(u, v)``: the inner product ``sum_i conj(u_i) v_i`` over axis ``-2``
  with ``keepdim=True``, broadcasting over leading axes (GMRES passes a stack
  ``[j, B, n, K]`` as ``u``).  The default is :func:`local_dot`; a distributed
  operator passes a :class:`ReducedDot` (local sums, then an all-reduce), and
  nothing else changes.  Inner products a method needs at the same point
  (CG's ``(r, r)`` and ``(r, z)``) are asked together through ``_Ctx.dots``:
  a :class:`ReducedDot` answers them with one reduction.

Stopping: a column stops when ``||b - A x||_2 <= max(rtol ||b||_2, atol)``.
Methods iterate on their cheap residual estimate and then *verify* the true
residual (one extra matvec); a column whose estimate lied is restarted from
its current iterate with the remaining budget, unless the previous restart did
not halve its true residual (the attainable accuracy is reached: the result is
reported as not converged instead of burning the budget).  On CUDA the host looks at the
convergence flags only every ``check_every`` iterations (one synchronisation
each time); on CPU every iteration.  ``check_every='adaptive'`` (CG) looks when the
convergence rate measured between the last two looks predicts success, so a
short multigrid solve synchronises about half as often and rarely runs an
iteration more than needed.

References: Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed.
(Alg. 9.1 PCG, 9.5 right-preconditioned GMRES, 9.6 FGMRES, 7.7 BiCGStab);
Paige & Saunders (1975) for MINRES, in the form of ``scipy.sparse.linalg.minres``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...kernels import all_, any_

__all__ = ["DEFAULT_MAXITER", "KrylovResult", "Op", "ReducedDot", "local_dot", "make_method"]

Op = Callable[[torch.Tensor], torch.Tensor]

#: the default iteration budget is ``min(max(10 n, 100), DEFAULT_MAXITER)``: bounded however large ``n``
DEFAULT_MAXITER = 10_000


def local_dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_i conj(u_i) v_i`` over axis -2, keepdim (one fused pass)."""
    return torch.linalg.vecdot(u, v, dim=-2).unsqueeze(-2)


class ReducedDot:
    """Inner product of blocks whose rows are spread over several holders (ranks).

    ``reduce(t)`` sums a tensor of local partial sums over the holders (an all-reduce);
    ``dot(u, v) = reduce(local_dot(u, v))``, and :meth:`many` answers several inner
    products with one ``reduce`` of their stacked local sums.
    """

    def __init__(self, reduce: Callable[[torch.Tensor], torch.Tensor]):
        if not callable(reduce):
            raise TypeError(f"reduce must be callable(tensor) -> tensor, got {type(reduce).__name__}")
        self.reduce = reduce

    def __call__(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.reduce(local_dot(u, v))

    def many(self, pairs) -> list[torch.Tensor]:
        """``[dot(u, v) for u, v in pairs]`` in one reduction (any shapes, one dtype)."""
        parts = [local_dot(u, v) for u, v in pairs]
        flat = self.reduce(torch.cat([p.reshape(-1) for p in parts]))
        return [t.reshape(p.shape) for t, p in zip(flat.split([p.numel() for p in parts]), parts)]


@dataclass
class KrylovResult:
    """Solution block and per-system bookkeeping.

    ``iterations``: int tensor ``[B, 1, K]`` (iterations each system was active);
    ``converged``: bool tensor ``[B, 1, K]`` (verified on the true residual);
    ``residual``: true residual 2-norms ``[B, 1, K]``;
    ``steps``: iterations the block ran (>= every system's count);
    ``looks``: host synchronisations spent on convergence checks;
    ``history``: the method's estimate of the relative residual ``||r|| / ||b||`` after each
    iteration (the worst system), preceded by the initial one;
    ``reason``: why an unconverged solve stopped (``None`` when it converged): the iteration
    budget, stagnation, breakdown, a non-finite iterate or the wall-clock limit, in words.
    """

    x: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    steps: int = 0
    looks: int = 0
    history: list = field(default_factory=list)
    reason: str | None = None

    def stats(self) -> dict:
        out = {
            "iterations": int(self.iterations.amax()) if self.iterations.numel() else 0,
            "converged": bool(all_(self.converged)),
            "history": self.history,
        }
        if self.reason is not None and not out["converged"]:
            out["reason"] = self.reason
        return out


def _div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, 0 where den == 0 (breakdown of a finished or stalled system)."""
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _real(t: torch.Tensor) -> torch.Tensor:
    return t.real if t.is_complex() else t


class _Stop(Exception):
    """Raised inside a method by :meth:`_Ctx.watch`: stop the solve (``_Ctx.reason`` says why)."""


class _Ctx:
    """Shared plumbing: norms, targets, synchronisation cadence, iteration budget, progress watch."""

    def __init__(self, matvec, b, precond, dot, rtol, atol, maxiter, check_every, callback, timeout, stall):
        if b.dim() != 3:
            raise ValueError(f"b must be a [B, n, K] block, got shape {tuple(b.shape)}")
        for name, v in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable(iteration, relative_residual), got {type(callback).__name__}")
        self.A = matvec
        self.M = precond if precond is not None else (lambda r: r)
        self.dot = dot if dot is not None else local_dot
        self.b = b
        n = b.shape[1]
        self.maxiter = int(maxiter) if maxiter is not None else min(max(10 * n, 100), DEFAULT_MAXITER)
        # stagnation: no new best residual (by 1 %) within `stall` iterations ends the solve
        self.stall = int(stall) if stall is not None else max(100, min(1000, n))
        self.callback = callback
        self.deadline = None if timeout is None else time.monotonic() + float(timeout)
        self.timeout = timeout
        self.reason: str | None = None
        self.history: list = []
        self._best = math.inf
        self._best_at = 0
        self._floor = 10 * torch.finfo(b.real.dtype if b.is_complex() else b.dtype).eps
        self._watch_every = 1 if (b.device.type == "cpu" or callback is not None) else 32
        if check_every is None:
            check_every = 1 if b.device.type == "cpu" else 8
        self.adaptive = check_every == "adaptive"
        self.check_every = 1 if self.adaptive else max(1, int(check_every))
        self.looks = 0  # host synchronisations spent on convergence checks
        self._next = 0  # adaptive: the iteration of the next look ...
        self._last = None  # ... and (iteration, worst residual / target) at the last one
        bn = self.norm(b)
        self.bnorm = torch.where(bn > 0, bn, torch.ones_like(bn))
        self.tol = torch.clamp(rtol * bn, min=float(atol))
        self.iters = torch.zeros(bn.shape, dtype=torch.int64, device=b.device)
        self.used = 0
        self.claimed = False  # set by a method that stopped because every estimate met its target

    def norm(self, v: torch.Tensor) -> torch.Tensor:
        return _real(self.dot(v, v)).clamp_min(0).sqrt()

    @property
    def fused(self) -> bool:
        """Whether :meth:`dots` saves reductions (a :class:`ReducedDot`): then a method may compute
        a vector early to ask its inner products together."""
        return hasattr(self.dot, "many")

    def dots(self, *pairs) -> list[torch.Tensor]:
        """Several inner products at one point of an iteration (one reduction when :attr:`fused`)."""
        if self.fused:
            return self.dot.many(pairs)
        return [self.dot(u, v) for u, v in pairs]

    def check(self, it: int) -> bool:
        """True when the host should look at the flags after iteration ``it`` (0-based)."""
        return (it + 1) % self.check_every == 0

    def done(self, it: int, act: torch.Tensor, rn: torch.Tensor, tol: torch.Tensor) -> bool:
        """Whether the host, looking after iteration ``it``, sees every system converged.

        Skipped iterations cost no synchronisation.  Adaptive: the worst ratio
        ``||r|| / target`` of the active systems and its rate of decrease since the
        last look give the iterations still needed; the next look is half that far
        ahead (at most 8), so it rarely comes after convergence.
        """
        if not self.adaptive:
            if not self.check(it):
                return False
            self.looks += 1
            return not bool(any_(act))
        k = self.used  # iterations so far, across restarts of the method
        if k < self._next:
            return False
        self.looks += 1
        worst = float(torch.where(act, rn / tol, 0).amax())
        if worst <= 0:  # no active system left (a converged one has ratio <= 1 and act False)
            return True
        gap = 1
        if self._last is not None:
            j, prev = self._last
            if 1 < worst < prev and k > j:
                rate = (worst / prev) ** (1.0 / (k - j))
                # half the predicted distance: early rates mislead (multigrid's first steps are
                # slow), so the look that can succeed is approached, not jumped past
                gap = max(1, min(8, int(0.5 * math.log(worst) / -math.log(rate))))
        self._last = (k, worst)
        self._next = k + gap
        return False

    def residual(self, x):
        r = self.b - self.A(x)
        return r, self.norm(r)

    def watch(self, rn: torch.Tensor) -> None:
        """Record the worst relative residual estimate ``rn / ||b||`` of the systems after an
        iteration and raise :class:`_Stop` on a non-finite estimate, stagnation (no new best by 1 %
        within ``stall`` iterations) or the wall-clock limit.  The host looks every iteration on
        CPU (or with a callback), every 32 on GPU."""
        rel = (rn / self.bnorm).amax()
        self.history.append(rel)
        k = self.used
        if k % self._watch_every:
            return
        v = float(rel)
        if self.callback is not None:
            self.callback(k, v)
        if not math.isfinite(v):
            self.reason = (
                f"breakdown: the residual estimate became {v} at iteration {k} (the iterates overflowed; "
                "the matrix may be singular, indefinite for this method, or badly scaled)"
            )
            raise _Stop
        # below ~eps the estimate can fall forever while the true residual cannot: no progress
        if v < 0.99 * self._best and self._best > self._floor:
            self._best, self._best_at = max(v, self._floor), k
        elif k - self._best_at >= self.stall:
            self.reason = (
                f"stagnated: no progress in the {k - self._best_at} iterations since iteration {self._best_at} "
                f"(best relative residual {self._best:.3e})"
            )
            raise _Stop
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = f"timeout: the wall-clock limit of {self.timeout} s was reached after {k} iterations"
            raise _Stop


def _outer(method_inner, ctx: _Ctx, x0: torch.Tensor | None) -> KrylovResult:
    """Verified outer loop: iterate on estimates, confirm on the true residual."""
    b = ctx.b
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    factor = 1.0
    prev = None
    reason = None
    box = [x]  # the latest iterate, kept by the methods so a stop keeps their progress
    while True:
        r, rn = ctx.residual(x) if (x0 is not None or ctx.used) else (b.clone(), ctx.norm(b))
        act = rn > ctx.tol
        if not ctx.history:
            ctx.history.append((rn / ctx.bnorm).amax())
        if not bool(any_(act)):
            break
        if not all(map(math.isfinite, rn.reshape(-1).tolist())):
            reason = "breakdown: the iterate is not finite (the matrix may be singular or the solution overflow)"
            break
        if ctx.reason is not None:
            reason = ctx.reason
            break
        if ctx.used >= ctx.maxiter:
            reason = f"iteration budget maxiter={ctx.maxiter} spent"
            break
        if prev is not None and bool((rn[act] > 0.5 * prev[act]).all()):
            # a retry gained nothing: the attainable accuracy of this precision is reached
            worst = float((rn / ctx.bnorm)[act].amax())
            reason = (
                f"stagnated: the attainable accuracy was reached (relative residual {worst:.3e}; "
                f"a restart from the true residual gained nothing)"
            )
            break
        ctx.claimed = False
        box[0] = x
        try:
            x = method_inner(ctx, x, r, rn, act, ctx.tol * factor, box)
        except _Stop:
            x = box[0]
        prev = rn if ctx.claimed else None  # only a claimed convergence is a retry (not a GMRES restart)
        factor *= 0.5  # a retry means the estimate was optimistic: aim lower
    hist = [float(h) for h in torch.stack(ctx.history).tolist()] if ctx.history else []
    return KrylovResult(x, ctx.iters, ~act, rn, ctx.used, ctx.looks, hist, reason)


_DOC = """{title} on a batched block ``b`` of shape ``[B, n, K]``.

    Parameters
    ----------
    matvec : callable
        ``v -> A v`` on ``[B, n, K]`` blocks.
    b : torch.Tensor
        ``[B, n, K]`` right-hand sides (not modified).
    precond : callable, optional
        ``r -> z`` approximating ``A^{{-1}} r`` (see :func:`sla.solvers.precond.make_preconditioner`).{spd}
    dot : callable, optional
        Inner product over axis -2 (default :func:`local_dot`).
    x0 : torch.Tensor, optional
        Initial guess (default zero; not modified).
    rtol, atol : float
        Stop a system when ``||b - A x|| <= max(rtol ||b||, atol)``.
    maxiter : int, optional
        Iteration budget (default ``min(max(10 n, 100), DEFAULT_MAXITER)``).
    check_every : int, optional
        Iterations between host looks at the flags (default 1 on CPU, 8 on CUDA).
    restart : int
        Krylov subspace size per cycle (GMRES / FGMRES; ignored by the others).
    callback : callable, optional
        ``callback(iteration, relative_residual)`` after every iteration (the estimate of the
        worst system; on GPU each call synchronises).
    timeout : float, optional
        Wall-clock limit in seconds; a solve past it stops unconverged (``reason`` says so).
    stall : int, optional
        Iterations without a 1 % improvement of the best residual after which the solve stops
        as stagnated (default ``max(100, min(1000, n))``).

    Returns
    -------
    KrylovResult
    """


def make_method(inner, name: str, title: str, spd: str = "", uses_restart: bool = False, flexible: bool = False):
    """The public method around ``inner``; ``flexible``: it takes a variable preconditioner, so a
    preconditioner with a ``flexible()`` form (a multigrid whose ``cycle='auto'`` picks the K-cycle
    there, :meth:`sla.solvers.precond.multigrid.Multigrid.flexible`) is asked for it."""

    def method(
        matvec: Op,
        b: torch.Tensor,
        *,
        precond: Op | None = None,
        dot=None,
        x0: torch.Tensor | None = None,
        rtol: float = 1e-8,
        atol: float = 0.0,
        maxiter: int | None = None,
        check_every: int | None = None,
        restart: int = 50,
        callback: Callable[[int, float], None] | None = None,
        timeout: float | None = None,
        stall: int | None = None,
    ) -> KrylovResult:
        if flexible and hasattr(precond, "flexible") and not hasattr(dot, "many"):
            # (not in a distributed solve: a rank owning no rows holds no multigrid to ask)
            precond = precond.flexible()
        ctx = _Ctx(matvec, b, precond, dot, rtol, atol, maxiter, check_every, callback, timeout, stall)
        if not uses_restart:
            return _outer(inner, ctx, x0)
        if not isinstance(restart, int) or restart < 1:
            raise ValueError(f"restart must be a positive integer, got {restart!r}")
        return _outer(lambda c, x, r, rn, a, t, box: inner(c, x, r, rn, a, t, box, restart), ctx, x0)

    method.__name__ = name
    method.__qualname__ = name
    method.__doc__ = _DOC.format(title=title, spd=spd)
    return method


SPD = " Must be Hermitian positive definite."
