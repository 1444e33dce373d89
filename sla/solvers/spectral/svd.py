"""Truncated SVD, spectral norm and condition number, differentiable.

``svd(A, k)`` returns the ``k`` largest singular triplets ``U [*, m, k]``,
``S [*, k]`` (descending), ``Vt [*, k, n]``:

* ``'arpack'`` -- ``scipy.sparse.linalg.svds`` (CPU);
* ``'lobpcg'`` -- LOBPCG on ``A^H A`` in torch (CPU/CUDA, batched), then
  ``U = A V / S`` (accurate for the large singular values it targets);
* ``'dense'`` -- ``torch.linalg.svd`` (small matrices; ``'auto'`` for
  ``min(m, n) <= 200``).

Gradients use the Hermitian augmented matrix ``H = [[0, A], [A^H, 0]]``,
whose eigenpairs are ``(s_i, [u_i; v_i] / sqrt(2))``: the eigen-adjoint of
:mod:`sla.solvers.spectral.adjoint` on ``H`` (one projected MINRES for the
singular vectors, closed form for the singular values ``dS_i/dA[r,c] =
u_i[r] conj(v_i[c])``) gives ``grad_A = G_H[:m, m:] + G_H[m:, :m]^H``.

``condition_number`` is ``s_max / s_min``; ``s_min`` of a large square matrix
is the reciprocal of the largest singular value of ``A^{-1}`` (ARPACK on a
SuperLU factorisation, CPU), or the smallest eigenvalue of ``A^H A`` by
LOBPCG on CUDA (accuracy limited to ``eps * cond^2``; reported in the notes).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...checks import all_finite, first_order_only
from ...config import SolveInfo, SolverConfig, rtol_alias
from ...products import spmm_nograd
from ...sparse import SparseTensor
from .adjoint import eig_backward_vectors
from .lobpcg import lobpcg

__all__ = ["svd", "spectral_norm", "condition_number"]

DENSE_MAX = 200


def _check(A, k: int | None):
    if not isinstance(A, SparseTensor):
        raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
    if not all_finite(A.values):
        raise ValueError("A has NaN or Inf among its values")
    m, n = A.sparse_shape
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return m, n


def _ops(A: SparseTensor):
    """``(x -> A x, y -> A^H y)`` on ``[B, *, K]`` blocks (no autograd)."""
    vals = A._flat().detach()
    pt, perm = A.pattern.transpose()
    vt = vals[:, perm].conj()
    return (lambda X: spmm_nograd(A.pattern, vals, X)), (lambda Y: spmm_nograd(pt, vt, Y))


class _SVDAdjoint(torch.autograd.Function):
    """Attach ``(U, S, V)`` of ``A(values)`` to the graph (one node)."""

    @staticmethod
    def forward(ctx, values, U, S, V, A):
        ctx.set_materialize_grads(False)
        ctx.A = A
        ctx.save_for_backward(U, S, V)
        return U.clone(), S.clone(), V.clone()

    @staticmethod
    @first_order_only("svd")
    @torch.autograd.function.once_differentiable
    def backward(ctx, gU, gS, gV):
        U, S, V = ctx.saved_tensors
        A = ctx.A
        p = A.pattern
        m = U.shape[1]
        if gU is None and gV is None:
            if gS is None:
                return None, None, None, None, None
            gv = gS[:, None, :].to(U.dtype) * U[:, p.row, :] * V[:, p.col, :].conj()
            gv = gv.sum(-1)
            return (gv if A.is_complex else gv.real), None, None, None, None
        mv, rmv = _ops(A)

        def hop(Z):  # H = [[0, A], [A^H, 0]]: its eigenpairs are (sigma_i, [u_i; v_i] / sqrt 2)
            return torch.cat([mv(Z[:, m:]), rmv(Z[:, :m])], 1)

        Z = torch.cat([U, V], 1) / math.sqrt(2)
        zero = torch.zeros_like
        gZ = torch.cat([gU if gU is not None else zero(U), gV if gV is not None else zero(V)], 1) * math.sqrt(2)
        if A.is_complex:
            # (u_i, v_i) -> (u_i, v_i) e^{i phi} is a gauge freedom: only losses blind to it have a
            # gradient (torch.linalg.svd's backward makes the same test)
            phase = (Z.conj() * gZ).sum(1).imag
            if bool((phase.abs() > 1e-6 * gZ.abs().amax().clamp_min(1e-30)).any()):
                raise ValueError(
                    "this loss depends on the arbitrary phase of complex singular vectors, so its gradient is "
                    "ill-defined; use phase-invariant quantities (u_i v_i^H, |u_i|^2, singular values)"
                )
        W = eig_backward_vectors(hop, S, Z, gS, gZ)
        # G_H = W Z^H; A[r, c] sits at H[r, m + c] and, conjugated, at H[m + c, r]:
        # grad_A[r, c] = G_H[r, m + c] + conj(G_H[m + c, r])
        gv = (W[:, p.row, :] * Z[:, m + p.col, :].conj()).sum(-1) + (W[:, m + p.col, :].conj() * Z[:, p.row, :]).sum(-1)
        return gv, None, None, None, None


def _dense(A, k):
    m, n = A.sparse_shape
    U, S, Vh = torch.linalg.svd(A.detach().to_dense().reshape(A.batch_size, m, n), full_matrices=False)
    return U[:, :, :k], S[:, :k], Vh[:, :k, :].mH


def _arpack(A, k, tol, maxiter):
    import scipy.sparse.linalg as spla

    if A.device.type != "cpu":
        raise ValueError("method 'arpack' runs on the CPU; use method='lobpcg' on CUDA, or A.cpu()")
    m, n = A.sparse_shape
    if k >= min(m, n):
        raise ValueError(f"ARPACK svds needs k < min(m, n) = {min(m, n)}, got k={k}; use method='dense'")
    flat = A._flat().detach()
    rng = np.random.default_rng(0)
    Us, Ss, Vs = [], [], []
    for b in range(A.batch_size):
        S = SparseTensor._make(flat[b], A.pattern).to_scipy("csr")
        wide = np.complex128 if np.iscomplexobj(S.data) else np.float64
        S = S.astype(wide)
        u, s, vt = spla.svds(S, k=k, tol=tol or 0.0, maxiter=maxiter, v0=rng.standard_normal(min(m, n)).astype(wide))
        order = np.argsort(-s)
        Us.append(u[:, order])
        Ss.append(s[order])
        Vs.append(vt[order].conj().T)
    to = lambda x, dt: torch.from_numpy(np.ascontiguousarray(np.stack(x))).to(dt)  # noqa: E731
    return to(Us, A.dtype), to(Ss, A.dtype.to_real()), to(Vs, A.dtype)


def _lobpcg(A, k, tol, maxiter):
    m, n = A.sparse_shape
    mv, rmv = _ops(A)
    if 3 * k > n:
        raise ValueError(f"LOBPCG needs 3k <= n, got k={k}, n={n}; use method='dense'")
    gen = torch.Generator(device=A.device).manual_seed(0)
    lam, V, st = lobpcg(
        lambda X: -rmv(mv(X)), n, k, A.batch_size, A.dtype, A.device, rtol=tol, maxiter=maxiter or 1000, generator=gen
    )
    S = (-lam).clamp_min(0).sqrt()  # lam ascending = -s^2 descending
    AV = mv(V)
    U = AV / S[:, None, :].clamp_min(torch.finfo(S.dtype).tiny).to(AV.dtype)
    return U, S, V


def svd(
    A: SparseTensor,
    k: int = 6,
    method: str = "auto",
    *,
    rtol: float | None = None,
    maxiter: int | None = None,
    tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest singular triplets: ``U [*, m, k]``, ``S [*, k]`` descending, ``Vt [*, k, n]``.

    ``k`` above ``min(m, n)`` returns all ``min(m, n)`` triplets.

    Differentiable in ``A.values`` (singular values always; singular vectors
    for real matrices).  ``method``: ``'auto'``, ``'arpack'`` (CPU),
    ``'lobpcg'`` (CPU/CUDA) or ``'dense'``; ``rtol`` and ``maxiter`` control the iterative
    ones (``tol`` is accepted as an alias of ``rtol``, as in :func:`eigsh`).

    Examples
    --------
    >>> import torch, sla
    >>> A = sla.SparseTensor.from_dense(torch.tensor([[3., 0.], [0., -2.]], dtype=torch.float64))
    >>> A.svd(k=1)[1]
    tensor([3.], dtype=torch.float64)
    """
    m, n = _check(A, k)
    tol = rtol_alias(rtol, tol, "svd")
    k = int(min(k, m, n))  # more triplets than exist: all of them (as torch-sla's eigsh does)
    if method == "auto":
        method = "dense" if min(m, n) <= DENSE_MAX or k >= min(m, n) else ("lobpcg" if A.is_cuda else "arpack")
    if method == "dense":
        U, S, V = _dense(A, k)
    elif method == "arpack":
        U, S, V = _arpack(A, k, tol, maxiter)
    elif method == "lobpcg":
        U, S, V = _lobpcg(A, k, tol, maxiter)
    else:
        raise ValueError(f"method must be 'auto', 'arpack', 'lobpcg' or 'dense', got {method!r}")
    U, S, V = U.to(A.device), S.to(A.device), V.to(A.device)
    if A.values.requires_grad:
        U, S, V = _SVDAdjoint.apply(A._flat(), U, S, V, A.detach())
    b = A.batch_shape
    return U.reshape(*b, m, k), S.reshape(*b, k), V.mH.reshape(*b, k, n)


def spectral_norm(A: SparseTensor, method: str = "auto") -> torch.Tensor:
    """``||A||_2`` (largest singular value) ``[*batch]``, differentiable; ``A.norm(2)``."""
    return svd(A, k=1, method=method)[1][..., 0]


class _SigmaMin(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, s, u, v, pattern):
        ctx.pattern = pattern
        ctx.save_for_backward(u, v)
        return s.clone()

    @staticmethod
    @first_order_only("the smallest singular value (svd / cond)")
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        u, v = ctx.saved_tensors
        p = ctx.pattern
        gv = g[:, None].to(u.dtype) * u[:, p.row] * v[:, p.col].conj()
        return (gv if u.is_complex() else gv.real), None, None, None, None


def _sigma_min_arpack(A: SparseTensor, notes: list):
    import scipy.sparse.linalg as spla

    n = A.sparse_shape[0]
    flat = A._flat().detach()
    ss, us, vs = [], [], []
    for b in range(A.batch_size):
        S = SparseTensor._make(flat[b], A.pattern).to_scipy("csc")
        S = S.astype(np.complex128 if np.iscomplexobj(S.data) else np.float64)
        try:
            lu = spla.splu(S)
        except RuntimeError:
            notes.append(f"batch member {b} is singular: sigma_min = 0")
            ss.append(0.0)
            us.append(np.zeros(n, S.dtype))
            vs.append(np.zeros(n, S.dtype))
            continue
        inv = spla.LinearOperator(
            (n, n),
            matvec=lambda x, lu=lu: lu.solve(np.asarray(x).reshape(n)),
            rmatvec=lambda x, lu=lu: lu.solve(np.asarray(x).reshape(n), trans="H"),
            dtype=S.dtype,
        )
        # A^{-1} = V diag(1/s) U^H: its top left vector is A's v_min, its top right vector A's u_min
        x, t, yh = spla.svds(inv, k=1, v0=np.random.default_rng(0).standard_normal(n).astype(S.dtype))
        ss.append(1.0 / t[0])
        us.append(yh[0].conj())
        vs.append(x[:, 0])
    dt = A.dtype
    notes.append("sigma_min: ARPACK on A^{-1} (SuperLU)")
    return (
        torch.tensor(ss, dtype=dt.to_real()),
        torch.from_numpy(np.stack(us)).to(dt),
        torch.from_numpy(np.stack(vs)).to(dt),
    )


def _sigma_min_lobpcg(A: SparseTensor, notes: list):
    n = A.sparse_shape[0]
    mv, rmv = _ops(A)
    gen = torch.Generator(device=A.device).manual_seed(0)
    lam, V, st = lobpcg(lambda X: rmv(mv(X)), n, 1, A.batch_size, A.dtype, A.device, maxiter=2000, generator=gen)
    s = lam[:, 0].clamp_min(0).sqrt()
    u = mv(V)[:, :, 0] / s[:, None].clamp_min(torch.finfo(s.dtype).tiny).to(V.dtype)
    notes.append(f"sigma_min: LOBPCG on A^H A ({st['iterations']} iterations; accuracy ~ eps * cond^2)")
    if not st["converged"]:
        notes.append(f"sigma_min not converged: relative residual {st['residual']:.1e}")
    return s, u, V[:, :, 0]


def condition_number(
    A: SparseTensor, method: str = "auto", return_info: bool = False, *, config: SolverConfig | None = None
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    """2-norm condition number ``s_max / s_min`` ``[*batch]`` (an estimate), differentiable.

    ``method``: ``'dense'`` (exact, small matrices; ``'auto'`` for ``n <= 200``),
    ``'arpack'`` (CPU: ``s_max`` by svds, ``s_min`` by svds of ``A^{-1}`` through
    SuperLU) or ``'lobpcg'`` (CPU/CUDA, through ``A^H A``).  A singular matrix
    gives ``inf``.  An unconverged LOBPCG estimate is handled per
    ``config.on_failure`` (raise by default).  ``return_info=True`` adds a :class:`~sla.SolveInfo` whose
    ``method`` and ``notes`` say how each extreme singular value was found.

    Examples
    --------
    >>> import torch, sla
    >>> A = sla.SparseTensor.from_dense(torch.tensor([[4., 0.], [0., 0.5]], dtype=torch.float64))
    >>> A.condition_number()
    tensor(8., dtype=torch.float64)
    """
    m, n = _check(A, None)
    if m != n:
        raise ValueError(f"condition_number needs a square matrix, got shape {tuple(A.shape)}")
    notes: list = []
    if method == "auto":
        method = "dense" if n <= DENSE_MAX else ("lobpcg" if A.is_cuda else "arpack")
    if method == "dense":
        U, S, V = _dense(A, n)
        smax, umax, vmax = S[:, 0], U[:, :, 0], V[:, :, 0]
        smin, umin, vmin = S[:, -1], U[:, :, -1], V[:, :, -1]
        notes.append("dense SVD")
    elif method in ("arpack", "lobpcg"):
        U, S, V = (_arpack if method == "arpack" else _lobpcg)(A, 1, None, None)
        smax, umax, vmax = S[:, 0], U[:, :, 0], V[:, :, 0]
        smin, umin, vmin = (_sigma_min_arpack if method == "arpack" else _sigma_min_lobpcg)(A, notes)
    else:
        raise ValueError(f"method must be 'auto', 'dense', 'arpack' or 'lobpcg', got {method!r}")
    dev = A.device
    smax, umax, vmax, smin, umin, vmin = (t.to(dev) for t in (smax, umax, vmax, smin, umin, vmin))
    if A.values.requires_grad:
        flat = A._flat()
        smax = _SigmaMin.apply(flat, smax, umax, vmax, A.pattern)
        smin = _SigmaMin.apply(flat, smin, umin, vmin, A.pattern)
    cond = torch.where(
        smin > 0, smax / smin.clamp_min(torch.finfo(smin.dtype).tiny), torch.full_like(smax, float("inf"))
    )
    cond = cond.reshape(A.batch_shape)
    converged = not any("not converged" in note for note in notes)
    info = SolveInfo(
        backend="scipy" if method == "arpack" else "pytorch",
        method=method,
        notes=notes,
        converged=converged,
        residual=float("nan"),
    )
    info.fail(SolverConfig.resolve(config))
    return (cond, info) if return_info else cond
