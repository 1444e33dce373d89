"""Restarted GMRES(m) with right preconditioning (Saad, Alg. 9.5) and flexible GMRES (Alg. 9.6)."""

from __future__ import annotations

import torch

from .base import _Ctx, _div, _real, _Stop, make_method
from .cg import is_variable

__all__ = ["fgmres", "gmres"]


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


def _gmres_inner(ctx: _Ctx, x, r, rn, act, tol, box, flexible: bool, restart: int):
    # Saad Alg. 9.5 (right-preconditioned GMRES) / 9.6 (FGMRES); one restart cycle.
    m = max(1, min(restart, ctx.maxiter - ctx.used))
    # a variable preconditioner (a K-cycle) must not be re-applied to the basis at the end: FGMRES
    flexible = flexible or is_variable(ctx.M)
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
        if ctx.fused:
            # distributed: the second pass and the norm share one all-reduce (two an iteration):
            # ||w - V h2||^2 = ||w||^2 - ||h2||^2 for orthonormal V, and h2 is a rounding-level
            # correction, so nothing cancels (Swirydowicz et al., NLAA 28 (2021) e2343)
            h2, ww = ctx.dots((V[: j + 1], w), (w, w))
            h2 = h2[:, :, 0, :]
            hn = (_real(ww) - (h2.abs() ** 2).sum(0)[:, None, :]).clamp_min(0).sqrt()
            w = w - _combine(V[: j + 1], h2)
        else:
            h2 = ctx.dot(V[: j + 1], w)[:, :, 0, :]
            w = w - _combine(V[: j + 1], h2)
            hn = ctx.norm(w)
        h = h + h2
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
        try:
            ctx.watch(g[j + 1].abs().to(rn.dtype))
        except _Stop:
            box[0] = _update(ctx, x, V, Z, H, g, j + 1, act, flexible)
            raise
        if ctx.check(j) and not bool((act & (g[j + 1].abs() > tol)).any()):
            ctx.claimed = True
            break
    return _update(ctx, x, V, Z, H, g, j + 1, act, flexible)


def _update(ctx, x, V, Z, H, g, k, act, flexible):
    """``x + M (V_k y)`` (``x + Z_k y`` flexible) with ``y`` the least-squares solution of the cycle."""
    R = H[:, :, :k, :k]
    diag = torch.diagonal(R, dim1=-2, dim2=-1)
    R = R + torch.diag_embed(torch.where(diag == 0, torch.ones_like(diag), torch.zeros_like(diag)))
    rhs = g[:k, :, 0, :].permute(1, 2, 0).unsqueeze(-1)  # [B, K, k, 1]
    y = torch.linalg.solve_triangular(R, rhs, upper=True)[..., 0]  # [B, K, k]
    y = y.permute(2, 0, 1) * act[:, 0, :]  # [k, B, K], frozen systems get 0
    if flexible:
        return x + _combine(Z[:k], y)
    return x + ctx.M(_combine(V[:k], y))


def _fgmres_inner(ctx, x, r, rn, act, tol, box, restart):
    return _gmres_inner(ctx, x, r, rn, act, tol, box, True, restart)


def _rgmres_inner(ctx, x, r, rn, act, tol, box, restart):
    return _gmres_inner(ctx, x, r, rn, act, tol, box, False, restart)


gmres = make_method(
    _rgmres_inner,
    "gmres",
    "Right-preconditioned restarted GMRES(m) (general A; flexible with a variable preconditioner)",
    uses_restart=True,
    flexible=True,
)
fgmres = make_method(
    _fgmres_inner,
    "fgmres",
    "Flexible GMRES(m): the preconditioner may change between steps",
    uses_restart=True,
    flexible=True,
)
