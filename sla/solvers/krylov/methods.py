"""Krylov methods written once against (operator, preconditioner, inner product).

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
  operator passes one that all-reduces the local sums, and nothing else changes.

Stopping: a column stops when ``||b - A x||_2 <= max(rtol ||b||_2, atol)``.
Methods iterate on their cheap residual estimate and then *verify* the true
residual (one extra matvec); a column whose estimate lied is restarted from
its current iterate with the remaining budget, unless the previous restart did
not halve its true residual (the attainable accuracy is reached: the result is
reported as not converged instead of burning the budget).  On CUDA the host looks at the
convergence flags only every ``check_every`` iterations (one synchronisation
each time); on CPU every iteration.  ``check_every='adaptive'`` (CG) looks when the
convergence rate measured between the last two looks predicts success: an
8-iteration multigrid solve synchronises 3-4 times instead of 8, and rarely
runs an iteration more than needed.

References: Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed.
(Alg. 9.1 PCG, 9.5 right-preconditioned GMRES, 9.6 FGMRES, 7.7 BiCGStab);
Paige & Saunders (1975) for MINRES, in the form of ``scipy.sparse.linalg.minres``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["METHODS", "KrylovResult", "bicgstab", "cg", "fgmres", "gmres", "krylov_solve", "local_dot", "minres"]

Op = Callable[[torch.Tensor], torch.Tensor]


def local_dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_i conj(u_i) v_i`` over axis -2, keepdim (one fused pass)."""
    return torch.linalg.vecdot(u, v, dim=-2).unsqueeze(-2)


@dataclass
class KrylovResult:
    """Solution block and per-system bookkeeping.

    ``iterations``: int tensor ``[B, 1, K]`` (iterations each system was active);
    ``converged``: bool tensor ``[B, 1, K]`` (verified on the true residual);
    ``residual``: true residual 2-norms ``[B, 1, K]``;
    ``steps``: iterations the block ran (>= every system's count);
    ``looks``: host synchronisations spent on convergence checks.
    """

    x: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    steps: int = 0
    looks: int = 0

    def stats(self) -> dict:
        return {
            "iterations": int(self.iterations.max()) if self.iterations.numel() else 0,
            "converged": bool(self.converged.all()),
        }


def _div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, 0 where den == 0 (breakdown of a finished or stalled system)."""
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _real(t: torch.Tensor) -> torch.Tensor:
    return t.real if t.is_complex() else t


class _Ctx:
    """Shared plumbing: norms, targets, synchronisation cadence, iteration budget."""

    def __init__(self, matvec, b, precond, dot, rtol, atol, maxiter, check_every):
        if b.dim() != 3:
            raise ValueError(f"b must be a [B, n, K] block, got shape {tuple(b.shape)}")
        self.A = matvec
        self.M = precond if precond is not None else (lambda r: r)
        self.dot = dot if dot is not None else local_dot
        self.b = b
        n = b.shape[1]
        self.maxiter = int(maxiter) if maxiter is not None else max(10 * n, 100)
        if check_every is None:
            check_every = 1 if b.device.type == "cpu" else 8
        self.adaptive = check_every == "adaptive"
        self.check_every = 1 if self.adaptive else max(1, int(check_every))
        self.looks = 0  # host synchronisations spent on convergence checks
        self._next = 0  # adaptive: the iteration of the next look ...
        self._last = None  # ... and (iteration, worst residual / target) at the last one
        bn = self.norm(b)
        self.tol = torch.clamp(rtol * bn, min=float(atol))
        self.iters = torch.zeros(bn.shape, dtype=torch.int64, device=b.device)
        self.used = 0
        self.claimed = False  # set by a method that stopped because every estimate met its target

    def norm(self, v: torch.Tensor) -> torch.Tensor:
        return _real(self.dot(v, v)).clamp_min(0).sqrt()

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
            return not bool(act.any())
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


def _outer(method_inner, ctx: _Ctx, x0: torch.Tensor | None) -> KrylovResult:
    """Verified outer loop: iterate on estimates, confirm on the true residual."""
    b = ctx.b
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    factor = 1.0
    prev = None
    while True:
        r, rn = ctx.residual(x) if (x0 is not None or ctx.used) else (b.clone(), ctx.norm(b))
        act = rn > ctx.tol
        if not bool(act.any()) or ctx.used >= ctx.maxiter:
            break
        if prev is not None and bool((rn[act] > 0.5 * prev[act]).all()):
            break  # a retry gained nothing: the attainable accuracy of this precision is reached
        ctx.claimed = False
        x = method_inner(ctx, x, r, rn, act, ctx.tol * factor)
        prev = rn if ctx.claimed else None  # only a claimed convergence is a retry (not a GMRES restart)
        factor *= 0.5  # a retry means the estimate was optimistic: aim lower
    return KrylovResult(x, ctx.iters, ~act, rn, ctx.used, ctx.looks)


# ---------------------------------------------------------------------- CG
def _cg_inner(ctx: _Ctx, x, r, rn, act, tol):
    # Saad Alg. 9.1 (preconditioned CG), one column per system.
    # work vectors: x, r, p, and Ap or z in turn (each dropped before the other is made)
    z = ctx.M(r)
    p = z.clone()
    rz = ctx.dot(r, z)
    del z
    for it in range(ctx.maxiter - ctx.used):
        Ap = ctx.A(p)
        alpha = _div(rz, ctx.dot(p, Ap)) * act  # frozen systems: alpha = 0, x and r stay put
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, Ap, value=-1)
        del Ap
        ctx.iters += act
        ctx.used += 1
        rn = ctx.norm(r)
        act = act & (rn > tol)
        if ctx.done(it, act, rn, tol):
            ctx.claimed = True
            break
        z = ctx.M(r)
        rz_new = ctx.dot(r, z)
        p.mul_(_div(rz_new, rz)).add_(z)
        del z
        rz = rz_new
    return x


# ---------------------------------------------------------------- BiCGStab
def _bicgstab_inner(ctx: _Ctx, x, r, rn, act, tol):
    # Saad Alg. 7.7 with right preconditioning (van der Vorst 1992).
    rhat = r.clone()
    one = torch.ones_like(ctx.dot(r, r))
    rho, alpha, omega = one, one, one
    v = torch.zeros_like(r)
    p = torch.zeros_like(r)
    for it in range(ctx.maxiter - ctx.used):
        rho_new = ctx.dot(rhat, r)
        beta = _div(rho_new, rho) * _div(alpha, omega)
        p = r + beta * (p - omega * v)
        ph = ctx.M(p)
        v = ctx.A(ph)
        alpha = _div(rho_new, ctx.dot(rhat, v)) * act
        s = r - alpha * v
        s_done = ctx.norm(s) <= tol
        sh = ctx.M(s)
        t = ctx.A(sh)
        omega = torch.where(s_done, torch.zeros_like(alpha), _div(ctx.dot(t, s), ctx.dot(t, t))) * act
        x = x + alpha * ph + omega * sh
        r = s - omega * t
        rho = rho_new
        ctx.iters += act
        ctx.used += 1
        act = act & ~s_done & (ctx.norm(r) > tol)
        if ctx.check(it) and not bool(act.any()):
            ctx.claimed = True
            break
    return x


# ------------------------------------------------------------------- GMRES
def _combine(V: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_j V[j] * y[j]`` for a basis ``[j, B, n, K]`` and coefficients ``[j, B, K]``."""
    return torch.einsum("jbnk,jbk->bnk", V, y)


def _givens(a, b):
    """(c, s) with [c s; -conj(s) c] [a; b] = [*; 0]; c real (complex-safe)."""
    absa, absb = a.abs(), b.abs()
    d = torch.sqrt(absa * absa + absb * absb)
    phase = torch.where(absa > 0, a / torch.where(absa > 0, absa, torch.ones_like(absa)), torch.ones_like(a))
    ok = d > 0
    dd = torch.where(ok, d, torch.ones_like(d))
    c = torch.where(ok, absa / dd, torch.ones_like(d))
    s = torch.where(ok, phase * b.conj() / dd, torch.zeros_like(a))
    return c, s


def _gmres_inner(ctx: _Ctx, x, r, rn, act, tol, flexible: bool, restart: int):
    # Saad Alg. 9.5 (right-preconditioned GMRES) / 9.6 (FGMRES); one restart cycle.
    m = max(1, min(restart, ctx.maxiter - ctx.used))
    B, n, K = r.shape
    V = r.new_zeros((m + 1, B, n, K))
    Z = r.new_zeros((m, B, n, K)) if flexible else None
    V[0] = r * _div(torch.ones_like(rn), rn).to(r.dtype)
    H = r.new_zeros((B, K, m + 1, m))  # column j of the Hessenberg matrix, rotated in place
    g = r.new_zeros((m + 1, B, 1, K))
    g[0] = rn.to(r.dtype)
    cs, sn = [], []
    j = 0
    for j in range(m):
        z = ctx.M(V[j])
        if flexible:
            Z[j] = z
        w = ctx.A(z)
        # classical Gram-Schmidt, twice (CGS2): two block reductions instead of j dots
        h = ctx.dot(V[: j + 1], w)[:, :, 0, :]  # [j+1, B, K]
        w = w - _combine(V[: j + 1], h)
        h2 = ctx.dot(V[: j + 1], w)[:, :, 0, :]
        w = w - _combine(V[: j + 1], h2)
        h = h + h2
        hn = ctx.norm(w)
        V[j + 1] = w * _div(torch.ones_like(hn), hn).to(w.dtype)
        col = torch.cat([h, hn[:, 0, :].to(h.dtype).unsqueeze(0)], 0)  # [j+2, B, K]
        for i in range(j):  # previous rotations
            a, bb = col[i].clone(), col[i + 1].clone()
            col[i] = cs[i] * a + sn[i] * bb
            col[i + 1] = -sn[i].conj() * a + cs[i] * bb
        c, s = _givens(col[j], col[j + 1])
        cs.append(c)
        sn.append(s)
        col[j] = c * col[j] + s * col[j + 1]
        col[j + 1] = 0
        H[:, :, : j + 2, j] = col.permute(1, 2, 0)
        gj = g[j].clone()
        g[j] = c.unsqueeze(1) * gj
        g[j + 1] = -s.conj().unsqueeze(1) * gj
        ctx.iters += act
        ctx.used += 1
        if ctx.check(j) and not bool((act & (g[j + 1].abs() > tol)).any()):
            ctx.claimed = True
            break
    k = j + 1
    R = H[:, :, :k, :k]
    diag = torch.diagonal(R, dim1=-2, dim2=-1)
    R = R + torch.diag_embed(torch.where(diag == 0, torch.ones_like(diag), torch.zeros_like(diag)))
    rhs = g[:k, :, 0, :].permute(1, 2, 0).unsqueeze(-1)  # [B, K, k, 1]
    y = torch.linalg.solve_triangular(R, rhs, upper=True)[..., 0]  # [B, K, k]
    y = y.permute(2, 0, 1) * act[:, 0, :]  # [k, B, K], frozen systems get 0
    if flexible:
        return x + _combine(Z[:k], y)
    return x + ctx.M(_combine(V[:k], y))


# ------------------------------------------------------------------ MINRES
def _minres_inner(ctx: _Ctx, x, r, rn, act, tol):
    # Paige & Saunders (1975) with an SPD preconditioner, as in scipy's minres.
    # The estimate phibar is the M^{-1}-norm of the residual: scale the target.
    rdt = rn.dtype
    y = ctx.M(r)
    beta1 = _real(ctx.dot(r, y)).clamp_min(0).sqrt()
    tol_m = tol * _div(beta1, rn)
    r1, r2 = r, r
    beta, oldb = beta1, torch.zeros_like(beta1)
    dbar = torch.zeros_like(beta1)
    epsln = torch.zeros_like(beta1)
    phibar = beta1.clone()
    cs = -torch.ones_like(beta1)
    sn = torch.zeros_like(beta1)
    w = torch.zeros_like(r)
    w2 = torch.zeros_like(r)
    tiny = torch.finfo(rdt).eps
    for it in range(ctx.maxiter - ctx.used):
        v = y * _div(torch.ones_like(beta), beta).to(y.dtype)
        y = ctx.A(v)
        if it >= 1:
            y = y - _div(beta, oldb).to(y.dtype) * r1
        alfa = _real(ctx.dot(v, y))
        y = y - _div(alfa, beta).to(y.dtype) * r2
        r1, r2 = r2, y
        y = ctx.M(r2)
        oldb, beta = beta, _real(ctx.dot(r2, y)).clamp_min(0).sqrt()
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        gamma = torch.sqrt(gbar * gbar + beta * beta).clamp_min(tiny)
        cs = gbar / gamma
        sn = beta / gamma
        phi = cs * phibar
        phibar = sn * phibar
        w1, w2 = w2, w
        w = (v - oldeps.to(v.dtype) * w1 - delta.to(v.dtype) * w2) / gamma.to(v.dtype)
        x = x + (phi * act).to(x.dtype) * w
        ctx.iters += act
        ctx.used += 1
        act = act & (phibar > tol_m) & (beta > 0)
        if ctx.check(it) and not bool(act.any()):
            ctx.claimed = True
            break
    return x


# ------------------------------------------------------------------ public
def _fgmres_inner(ctx, x, r, rn, act, tol, restart):
    return _gmres_inner(ctx, x, r, rn, act, tol, True, restart)


def _rgmres_inner(ctx, x, r, rn, act, tol, restart):
    return _gmres_inner(ctx, x, r, rn, act, tol, False, restart)


_DOC = """{title} on a batched block ``b`` of shape ``[B, n, K]``.

    Parameters
    ----------
    matvec : callable
        ``v -> A v`` on ``[B, n, K]`` blocks.
    b : torch.Tensor
        ``[B, n, K]`` right-hand sides (not modified).
    precond : callable, optional
        ``r -> z`` approximating ``A^{{-1}} r`` (see :func:`sla.solvers.precond.simple.make_preconditioner`).{spd}
    dot : callable, optional
        Inner product over axis -2 (default :func:`local_dot`).
    x0 : torch.Tensor, optional
        Initial guess (default zero; not modified).
    rtol, atol : float
        Stop a system when ``||b - A x|| <= max(rtol ||b||, atol)``.
    maxiter : int, optional
        Iteration budget (default ``max(10 n, 100)``).
    check_every : int, optional
        Iterations between host looks at the flags (default 1 on CPU, 8 on CUDA).
    restart : int
        Krylov subspace size per cycle (GMRES / FGMRES; ignored by the others).

    Returns
    -------
    KrylovResult
    """


def _api(inner, name: str, title: str, spd: str = "", uses_restart: bool = False):
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
    ) -> KrylovResult:
        ctx = _Ctx(matvec, b, precond, dot, rtol, atol, maxiter, check_every)
        if not uses_restart:
            return _outer(inner, ctx, x0)
        if not isinstance(restart, int) or restart < 1:
            raise ValueError(f"restart must be a positive integer, got {restart!r}")
        return _outer(lambda c, x, r, rn, a, t: inner(c, x, r, rn, a, t, restart), ctx, x0)

    method.__name__ = name
    method.__qualname__ = name
    method.__doc__ = _DOC.format(title=title, spd=spd)
    return method


_SPD = " Must be Hermitian positive definite."
cg = _api(_cg_inner, "cg", "Preconditioned conjugate gradients (Hermitian positive definite A)", _SPD)
bicgstab = _api(_bicgstab_inner, "bicgstab", "Right-preconditioned BiCGStab (general A)")
minres = _api(_minres_inner, "minres", "Preconditioned MINRES (Hermitian, possibly indefinite A)", _SPD)
gmres = _api(_rgmres_inner, "gmres", "Right-preconditioned restarted GMRES(m) (general A)", uses_restart=True)
fgmres = _api(
    _fgmres_inner, "fgmres", "Flexible GMRES(m): the preconditioner may change between steps", uses_restart=True
)

METHODS = {"cg": cg, "bicgstab": bicgstab, "gmres": gmres, "fgmres": fgmres, "minres": minres}


def krylov_solve(method: str, matvec: Op, b: torch.Tensor, **kw) -> KrylovResult:
    """Dispatch by name: ``krylov_solve('cg', matvec, b, precond=M, rtol=1e-8)``."""
    if method not in METHODS:
        raise ValueError(f"unknown Krylov method {method!r}; known: {sorted(METHODS)}")
    return METHODS[method](matvec, b, **kw)
