"""Batched LOBPCG in torch for the extreme eigenpairs of Hermitian operators.

Locally Optimal Block Preconditioned Conjugate Gradient (Knyazev, SIAM J. Sci.
Comput. 23 (2001) 517-541), written for a batch of operators at once and for
any device.  Each iteration:

1. residuals ``R = A X - X diag(theta)``; stop when every wanted column has
   ``||r_j|| <= tol * max(|theta_j|, ||A||_est)``;
2. preconditioned directions ``W = T(R)``, orthogonalised against ``X``;
3. Rayleigh-Ritz on the trial space ``S = [X, W, P]`` -- a generalised
   eigenproblem ``S^H A S c = theta S^H S c`` solved through an eigen-
   decomposition of the (diagonally scaled) Gram matrix that drops
   numerically dependent directions per batch member (they get a penalty
   eigenvalue, so they sort last and never pollute the wanted end);
4. ``X <- S C``, and the new search directions ``P`` are the ``[W, P]`` part
   of ``S C``.  Columns converged in every batch member are soft-locked: they
   stay in the Rayleigh-Ritz basis but get no new ``W``/``P`` directions.

Only the smallest eigenpairs are computed; the caller negates the operator for
the largest.  The block holds ``m >= k`` vectors (a few guard vectors speed up
convergence of the k-th pair).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

__all__ = ["lobpcg"]

log = logging.getLogger("sla")

Operator = Callable[[torch.Tensor], torch.Tensor]


def _rayleigh_ritz(S: torch.Tensor, AS: torch.Tensor, m: int, drop: float):
    """Smallest ``m`` Ritz pairs of the pencil ``(S^H A S, S^H S)``: ``(theta [B, m], C [B, s, m])``."""
    G = S.mH @ S
    H = AS.mH @ S
    H = 0.5 * (H + H.mH)
    d = torch.diagonal(G, dim1=-2, dim2=-1).real
    scale = torch.where(d > 0, d.rsqrt(), torch.zeros_like(d))
    G = G * scale[:, :, None] * scale[:, None, :]
    g, Q = torch.linalg.eigh(G)
    keep = g > drop * g.amax(-1, keepdim=True)
    inv = torch.where(keep, g.clamp_min(torch.finfo(g.dtype).tiny).rsqrt(), torch.zeros_like(g))
    T = scale[:, :, None] * Q * inv[:, None, :].to(Q.dtype)
    Hr = T.mH @ H @ T
    Hr = 0.5 * (Hr + Hr.mH)
    big = Hr.abs().sum(-1).amax(-1) * 10 + 1
    Hr = Hr + torch.diag_embed(torch.where(keep, torch.zeros_like(g), big[:, None]).to(Hr.dtype))
    theta, C = torch.linalg.eigh(Hr)
    return theta[:, :m], T @ C[:, :, :m]


def lobpcg(
    op: Operator,
    n: int,
    k: int,
    batch: int,
    dtype: torch.dtype,
    device: torch.device | str,
    precond: Operator | None = None,
    rtol: float | None = None,
    maxiter: int = 500,
    guard: int | None = None,
    X0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The ``k`` smallest eigenpairs of Hermitian operators ``op`` (a batch).

    Parameters
    ----------
    op : callable
        ``X [B, n, K] -> A X`` for each batch member.
    n, k, batch : int
        Size, number of wanted pairs, batch size.
    precond : callable, optional
        ``R [B, n, K] -> T R`` (an approximate inverse of ``A``, e.g. AMG).
    rtol : float, optional
        Relative residual ``||A x - theta x|| / max(|theta|, ||A||_est)``
        (default ``1e-8`` in double and ``1e-4`` in single precision).
    maxiter : int
        Iteration cap.
    guard : int, optional
        Extra block vectors (default ``min(k, 8)`` within ``n // 3``).
    X0 : torch.Tensor, optional
        ``[B, n, m]`` initial block.

    Returns
    -------
    theta : ``[B, k]`` ascending; X : ``[B, n, k]`` orthonormal;
    stats : dict with ``iterations``, ``converged``, ``residual`` (worst relative).
    """
    single = dtype in (torch.float32, torch.complex64)
    tol = (1e-4 if single else 1e-8) if rtol is None else rtol
    drop = 1e3 * torch.finfo(dtype).eps
    if guard is None:
        guard = min(k, 8)
    m = max(k, min(k + guard, n // 3))
    if X0 is None:
        X0 = torch.randn(batch, n, m, dtype=dtype, device=device, generator=generator)
    X = torch.linalg.qr(X0).Q
    AX = op(X)
    theta, C = _rayleigh_ritz(X, AX, m, drop)
    X, AX = X @ C, AX @ C
    P = AP = None
    anorm = theta.abs().amax(-1)
    it, worst, converged = 0, float("inf"), False
    # stagnation: no new best residual (by 1 %) within 1000 iterations ends a solve whose budget is
    # larger than that (rtol=0 with maxiter=10**9 would run forever); a budget the caller bounded is
    # spent in full (plateaus near a tight tolerance -- shift-invert at 1e-13 -- do end in convergence)
    best, best_at, stall = float("inf"), 0, maxiter if maxiter <= 10_000 else 1000
    stopped = None
    for it in range(1, maxiter + 1):
        R = AX - X * theta[:, None, :].to(X.dtype)
        rn = torch.linalg.vector_norm(R, dim=1)
        anorm = torch.maximum(anorm, theta.abs().amax(-1))
        rel = rn / torch.maximum(theta.abs(), anorm[:, None] * 1e-3).clamp_min(torch.finfo(rn.dtype).tiny)
        worst = float(rel[:, :k].max())
        if worst <= tol:
            converged = True
            break
        if worst < 0.99 * best:
            best, best_at = worst, it
        elif it - best_at >= stall or worst != worst:
            stopped = f"stagnated: no progress in {it - best_at} iterations (best relative residual {best:.2e})"
            break
        # soft locking: columns converged in every batch member stay in X (Rayleigh-Ritz)
        # but get no new search directions
        act = torch.nonzero(~(rel <= tol).all(0)).flatten()
        if act.numel() < m:
            R = R[:, :, act]
            if P is not None:
                P, AP = P[:, :, act], AP[:, :, act]
        W = precond(R) if precond is not None else R
        W = W - X @ (X.mH @ W)
        W = W - X @ (X.mH @ W)
        W = W / torch.linalg.vector_norm(W, dim=1, keepdim=True).clamp_min(torch.finfo(rn.dtype).tiny)
        AW = op(W)
        if P is None:
            S, AS = torch.cat([X, W], -1), torch.cat([AX, AW], -1)
        else:
            pn = torch.linalg.vector_norm(P, dim=1, keepdim=True).clamp_min(torch.finfo(rn.dtype).tiny)
            S, AS = torch.cat([X, W, P / pn], -1), torch.cat([AX, AW, AP / pn], -1)
        theta, C = _rayleigh_ritz(S, AS, m, drop)
        Cw = C[:, m:, :]
        P, AP = S[:, :, m:] @ Cw, AS[:, :, m:] @ Cw
        X, AX = S @ C, AS @ C
        if it % 20 == 0:  # refresh against accumulated rounding in A X
            X = torch.linalg.qr(X).Q
            AX = op(X)
            theta, C = _rayleigh_ritz(X, AX, m, drop)
            X, AX = X @ C, AX @ C
            P = AP = None
    log.debug("lobpcg: %d iterations, worst relative residual %.2e", it, worst)
    stats = {"iterations": it, "converged": converged, "residual": worst}
    if stopped:
        stats["reason"] = stopped
    return theta[:, :k], X[:, :, :k], stats
