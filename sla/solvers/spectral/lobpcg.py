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

Rows spread over several holders (a distributed operator): ``reduce`` sums the
partial Gram matrices ``U^H V`` and squared column norms of the local rows over
the holders (an all-reduce), so Rayleigh-Ritz, residual norms and the
orthonormalisations are global while the blocks stay sharded; the QR
factorisations become SVQB (Stathopoulos & Wu, SIAM J. Sci. Comput. 23 (2002)
2165-2182), an orthonormalisation through the Gram matrix alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

__all__ = ["block_size", "lobpcg"]

log = logging.getLogger("sla")

Operator = Callable[[torch.Tensor], torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]


def block_size(n: int, k: int, guard: int | None = None) -> int:
    """Columns ``m`` of the LOBPCG block for ``k`` wanted pairs of an ``n x n`` operator
    (``guard`` extra vectors, default ``min(k, 8)``, within ``n // 3``)."""
    return max(k, min(k + (min(k, 8) if guard is None else guard), n // 3))


def _orth(X: torch.Tensor, reduce: Reduce | None) -> torch.Tensor:
    """Orthonormal columns spanning ``X`` ``[B, n, m]``: QR, or SVQB twice when the rows are spread."""
    if reduce is None:
        return torch.linalg.qr(X).Q
    for _ in range(2):
        G = reduce(X.mH @ X)
        d = torch.diagonal(G, dim1=-2, dim2=-1).real
        s = torch.where(d > 0, d.rsqrt(), torch.zeros_like(d))
        g, Q = torch.linalg.eigh(G * s[:, :, None] * s[:, None, :])
        g = g.clamp_min(torch.finfo(g.dtype).eps * g.amax(-1, keepdim=True))
        X = X @ (s[:, :, None] * Q * g.rsqrt()[:, None, :].to(Q.dtype))
    return X


def _colnorm(X: torch.Tensor, reduce: Reduce | None, keepdim: bool = False) -> torch.Tensor:
    """2-norms of the columns of ``X`` ``[B, n, m]`` (over every holder's rows)."""
    if reduce is None:
        return torch.linalg.vector_norm(X, dim=1, keepdim=keepdim)
    sq = (X.real**2 + X.imag**2 if X.is_complex() else X**2).sum(1, keepdim=keepdim)
    return reduce(sq).clamp_min(0).sqrt()


def _rayleigh_ritz(S: torch.Tensor, AS: torch.Tensor, m: int, drop: float, reduce: Reduce | None = None):
    """Smallest ``m`` Ritz pairs of the pencil ``(S^H A S, S^H S)``: ``(theta [B, m], C [B, s, m])``."""
    G = S.mH @ S
    H = AS.mH @ S
    if reduce is not None:  # both Gram matrices in one reduction
        G, H = reduce(torch.stack([G, H])).unbind(0)
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
    reduce: Reduce | None = None,
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
        ``[B, n, m]`` initial block (``[B, n_local, m]`` with ``reduce``).
    reduce : callable, optional
        Sum of a tensor of partial sums over every holder of the rows (an all-reduce) when
        the blocks are sharded by rows; ``n`` is then the global size, and ``X0`` is
        required (this holder's rows).

    Returns
    -------
    theta : ``[B, k]`` ascending; X : ``[B, n, k]`` orthonormal;
    stats : dict with ``iterations``, ``converged``, ``residual`` (worst relative).
    """
    single = dtype in (torch.float32, torch.complex64)
    tol = (1e-4 if single else 1e-8) if rtol is None else rtol
    drop = 1e3 * torch.finfo(dtype).eps
    m = block_size(n, k, guard)
    if X0 is None:
        if reduce is not None:
            raise ValueError("lobpcg with reduce= (rows spread over holders) needs X0, this holder's rows")
        X0 = torch.randn(batch, n, m, dtype=dtype, device=device, generator=generator)
    elif X0.shape[0] != batch or X0.shape[-1] != m or (reduce is None and X0.shape[1] != n):
        raise ValueError(f"X0 must be [{batch}, {'n_local' if reduce else n}, {m}], got {tuple(X0.shape)}")
    X = _orth(X0, reduce)
    AX = op(X)
    theta, C = _rayleigh_ritz(X, AX, m, drop, reduce)
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
        rn = _colnorm(R, reduce)
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
        if reduce is None:
            W = W - X @ (X.mH @ W)
            W = W - X @ (X.mH @ W)
        else:
            W = W - X @ reduce(X.mH @ W)
            W = W - X @ reduce(X.mH @ W)
        W = W / _colnorm(W, reduce, keepdim=True).clamp_min(torch.finfo(rn.dtype).tiny)
        AW = op(W)
        if P is None:
            S, AS = torch.cat([X, W], -1), torch.cat([AX, AW], -1)
        else:
            pn = _colnorm(P, reduce, keepdim=True).clamp_min(torch.finfo(rn.dtype).tiny)
            S, AS = torch.cat([X, W, P / pn], -1), torch.cat([AX, AW, AP / pn], -1)
        theta, C = _rayleigh_ritz(S, AS, m, drop, reduce)
        Cw = C[:, m:, :]
        P, AP = S[:, :, m:] @ Cw, AS[:, :, m:] @ Cw
        X, AX = S @ C, AS @ C
        if it % 20 == 0:  # refresh against accumulated rounding in A X
            X = _orth(X, reduce)
            AX = op(X)
            theta, C = _rayleigh_ritz(X, AX, m, drop, reduce)
            X, AX = X @ C, AX @ C
            P = AP = None
    log.debug("lobpcg: %d iterations, worst relative residual %.2e", it, worst)
    stats = {"iterations": it, "converged": converged, "residual": worst}
    if stopped:
        stats["reason"] = stopped
    return theta[:, :k], X[:, :, :k], stats
