"""Right-preconditioned BiCGStab (Saad, Alg. 7.7; van der Vorst 1992) for general ``A``."""

from __future__ import annotations

import torch

from .base import _Ctx, _div, make_method

__all__ = ["bicgstab"]


def _bicgstab_inner(ctx: _Ctx, x, r, rn, act, tol, box):
    # Saad Alg. 7.7 with right preconditioning (van der Vorst 1992).
    rhat = r.clone()
    one = torch.ones_like(ctx.dot(r, r))
    rho, alpha, omega = one, one, one
    v = torch.zeros_like(r)
    p = torch.zeros_like(r)
    scale = torch.finfo(rn.dtype).eps * ctx.norm(rhat)
    rnorm = rn
    for it in range(ctx.maxiter - ctx.used):
        rho_new = ctx.dot(rhat, r)
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
        s_done = ctx.norm(s) <= tol
        sh = ctx.M(s)
        t = ctx.A(sh)
        omega = torch.where(s_done, torch.zeros_like(alpha), _div(ctx.dot(t, s), ctx.dot(t, t))) * act
        x = x + alpha * ph + omega * sh
        box[0] = x
        r = s - omega * t
        rho = rho_new
        ctx.iters += act
        ctx.used += 1
        rnorm = ctx.norm(r)
        act = act & ~s_done & (rnorm > tol)
        ctx.watch(torch.where(s_done, torch.zeros_like(rnorm), rnorm))
        if ctx.check(it) and not bool(act.any()):
            ctx.claimed = True
            break
    return x


bicgstab = make_method(_bicgstab_inner, "bicgstab", "Right-preconditioned BiCGStab (general A)")
