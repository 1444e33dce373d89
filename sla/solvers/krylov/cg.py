"""Preconditioned conjugate gradients (Saad, Alg. 9.1) for Hermitian positive definite ``A``, and
its flexible variant for a variable preconditioner.

Flexible CG (Notay, SIAM J. Sci. Comput. 22 (2000) 1444; Golub & Ye 1999) uses the
Polak-Ribiere beta ``(r_new - r_old, z_new) / (r_old, z_old)``, here written
``-alpha (A p, z_new) / (r_old, z_old)`` (``r_new - r_old = -alpha A p``): one more inner product
an iteration and ``A p`` kept until ``z_new`` exists.  With a fixed SPD preconditioner it is the
same iteration as CG in exact arithmetic; with a nonlinear one (a K-cycle multigrid,
:class:`sla.solvers.precond.multigrid.Multigrid` with ``cycle='K'``) plain CG's beta loses the
conjugacy and stalls.  :func:`cg` switches to it by itself when the preconditioner says it is
variable (``precond.variable``); :func:`fcg` always uses it.
"""

from __future__ import annotations

import torch

from .base import SPD, _Ctx, _div, _real, make_method

__all__ = ["cg", "fcg", "is_variable"]


def is_variable(precond) -> bool:
    """Whether ``precond`` declares itself a variable (nonlinear) preconditioner (``precond.variable``)."""
    return bool(getattr(precond, "variable", False))


def _cg_inner(ctx: _Ctx, x, r, rn, act, tol, box, flexible: bool | None = None):
    # Saad Alg. 9.1 (preconditioned CG), one column per system.
    # work vectors: x, r, p, and Ap or z in turn (each dropped before the other is made; flexible:
    # Ap lives until z is made).
    # With a reducing inner product (distributed: one all-reduce per reduction) z = M r is made
    # before the convergence look so that ||r||^2 and (r, z) share one reduction: two per
    # iteration, (p, Ap) and [(r, r), (r, z)]; single-process keeps the order below (no M r
    # after the last iteration).
    if flexible is None:
        flexible = getattr(ctx, "flexible_cg", None)
    if flexible is None:
        flexible = is_variable(ctx.M)
        if ctx.fused and hasattr(ctx.dot, "reduce"):
            # distributed: every holder must take the same beta (and ask the same reductions), and
            # one whose block is empty holds no multigrid: variable anywhere means flexible everywhere
            flag = torch.tensor([float(flexible)], dtype=_real(ctx.b).dtype, device=ctx.b.device)
            flexible = bool(ctx.dot.reduce(flag)[0] > 0)
        ctx.flexible_cg = flexible
    z = ctx.M(r)
    p = z.clone()
    rz = ctx.dot(r, z)
    del z
    zAp = None  # (A p, z_new): the flexible beta's numerator
    for it in range(ctx.maxiter - ctx.used):
        Ap = ctx.A(p)
        alpha = _div(rz, ctx.dot(p, Ap)) * act  # frozen systems: alpha = 0, x and r stay put
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, Ap, value=-1)
        if not flexible:
            del Ap
        ctx.iters += act
        ctx.used += 1
        if ctx.fused:
            z = ctx.M(r)
            pairs = ((r, r), (r, z), (Ap, z)) if flexible else ((r, r), (r, z))
            rr, rz_new, *rest = ctx.dots(*pairs)
            zAp = rest[0] if flexible else None
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
            zAp = ctx.dot(Ap, z) if flexible else None
        if flexible:
            # Polak-Ribiere: (r_new - r_old, z_new) / (r_old, z_old) = -alpha (A p, z_new) / (r_old, z_old),
            # i.e. p_new is A-conjugate to p: beta = -(A p, z_new) / (p, A p)
            del Ap
            beta = _div((alpha * zAp).mul_(-1), rz)
        else:
            beta = _div(rz_new, rz)
        p.mul_(beta).add_(z)
        del z
        rz = rz_new
    return x


def _fcg_inner(ctx: _Ctx, x, r, rn, act, tol, box):
    return _cg_inner(ctx, x, r, rn, act, tol, box, flexible=True)


cg = make_method(
    _cg_inner, "cg", "Preconditioned conjugate gradients (Hermitian positive definite A)", SPD, flexible=True
)
fcg = make_method(
    _fcg_inner,
    "fcg",
    "Flexible conjugate gradients (Polak-Ribiere beta): the preconditioner may change between steps",
    SPD,
    flexible=True,
)
