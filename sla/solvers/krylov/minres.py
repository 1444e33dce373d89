"""Preconditioned MINRES (Paige & Saunders 1975, in the form of ``scipy.sparse.linalg.minres``)
for Hermitian, possibly indefinite ``A``."""

from __future__ import annotations

import torch

from .base import SPD, _Ctx, _div, _real, make_method
from .cg import is_variable

__all__ = ["minres"]


def _minres_inner(ctx: _Ctx, x, r, rn, act, tol, box):
    # Paige & Saunders (1975) with an SPD preconditioner, as in scipy's minres.
    # The estimate phibar is the M^{-1}-norm of the residual: scale the target.
    if is_variable(ctx.M):
        raise ValueError(
            "minres needs a fixed (linear, Hermitian positive definite) preconditioner, but "
            f"{ctx.M!r} is variable (a K-cycle multigrid): use method='cg' (flexible with it), "
            "'fgmres', or a 'V'/'W' cycle"
        )
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
        box[0] = x
        ctx.iters += act
        ctx.used += 1
        act = act & (phibar > tol_m) & (beta > 0)
        ctx.watch(phibar * _div(rn, beta1))  # the estimate in the 2-norm scale
        if ctx.check(it) and not bool(act.any()):
            ctx.claimed = True
            break
    return x


minres = make_method(_minres_inner, "minres", "Preconditioned MINRES (Hermitian, possibly indefinite A)", SPD)
