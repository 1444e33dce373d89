"""Preconditioned conjugate gradients (Saad, Alg. 9.1) for Hermitian positive definite ``A``."""

from __future__ import annotations

from .base import SPD, _Ctx, _div, _real, make_method

__all__ = ["cg"]


def _cg_inner(ctx: _Ctx, x, r, rn, act, tol, box):
    # Saad Alg. 9.1 (preconditioned CG), one column per system.
    # work vectors: x, r, p, and Ap or z in turn (each dropped before the other is made).
    # With a reducing inner product (distributed: one all-reduce per reduction) z = M r is made
    # before the convergence look so that ||r||^2 and (r, z) share one reduction: two per
    # iteration, (p, Ap) and [(r, r), (r, z)]; single-process keeps the order below (no M r
    # after the last iteration).
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
        if ctx.fused:
            z = ctx.M(r)
            rr, rz_new = ctx.dots((r, r), (r, z))
            rn = _real(rr).clamp_min(0).sqrt()
        else:
            rn = ctx.norm(r)
        act = act & (rn > tol)
        ctx.watch(rn)  # x is updated in place: box[0] is x
        if ctx.done(it, act, rn, tol):
            ctx.claimed = True
            break
        if not ctx.fused:
            z = ctx.M(r)
            rz_new = ctx.dot(r, z)
        p.mul_(_div(rz_new, rz)).add_(z)
        del z
        rz = rz_new
    return x


cg = make_method(_cg_inner, "cg", "Preconditioned conjugate gradients (Hermitian positive definite A)", SPD)
