"""Right-preconditioned BiCGStab (Saad, Alg. 7.7; van der Vorst 1992) for general ``A``."""

from __future__ import annotations

import torch

from .base import _Ctx, _div, _real, make_method

__all__ = ["bicgstab"]


def _bicgstab_inner(ctx: _Ctx, x, r, rn, act, tol, box):
    # Saad Alg. 7.7 with right preconditioning (van der Vorst 1992).
    # Inner products asked together (one reduction each when distributed): (rhat, v);
    # [(s, s), (t, s), (t, t)]; [(r, r), (rhat, r)] -- three per iteration.
    rhat = r.clone()
    one = torch.ones_like(rn, dtype=r.dtype)
    rho, alpha, omega = one, one, one
    v = torch.zeros_like(r)
    p = torch.zeros_like(r)
    scale = torch.finfo(rn.dtype).eps * rn  # rn = ||r|| = ||rhat||
    rnorm = rn
    rho_new = ctx.dot(rhat, r)
    for it in range(ctx.maxiter - ctx.used):
        # breakdown (rho ~ 0: r orthogonal to the shadow residual): restart from the true residual
        broken = act & (rho_new.abs() <= scale * rnorm)
        if it > 0 and ctx.check(it) and bool(broken.any()):
            break  # restart from the true residual with a fresh shadow vector (the watch sees no-progress loops)
        beta = _div(rho_new, rho) * _div(alpha, omega)
        p = r + beta * (p - omega * v)
        ph = ctx.M(p)
        v = ctx.A(ph)
        alpha = _div(rho_new, ctx.dot(rhat, v)) * act
        s = r - alpha * v
        sh = ctx.M(s)
        t = ctx.A(sh)
        ss, ts, tt = ctx.dots((s, s), (t, s), (t, t))
        s_done = _real(ss).clamp_min(0).sqrt() <= tol
        omega = torch.where(s_done, torch.zeros_like(alpha), _div(ts, tt)) * act
        x = x + alpha * ph + omega * sh
        box[0] = x
        r = s - omega * t
        rho = rho_new
        ctx.iters += act
        ctx.used += 1
        rr, rho_new = ctx.dots((r, r), (rhat, r))
        rnorm = _real(rr).clamp_min(0).sqrt()
        act = act & ~s_done & (rnorm > tol)
        ctx.watch(torch.where(s_done, torch.zeros_like(rnorm), rnorm))
        if ctx.check(it) and not bool(act.any()):
            ctx.claimed = True
            break
    return x


bicgstab = make_method(_bicgstab_inner, "bicgstab", "Right-preconditioned BiCGStab (general A)")
