"""Partial eigendecompositions of Hermitian matrices with adjoints: ``eigsh``.

Methods of :func:`eigsh`:

* ``'arpack'`` -- SciPy ARPACK (CPU), shift-invert through a sparse
  factorisation of ``A - sigma I`` when ``sigma`` is given or ``which='SM'``;
* ``'lobpcg'`` -- :func:`sla.solvers.spectral.lobpcg.lobpcg` in torch (CPU and CUDA,
  batched), preconditioned for the smallest eigenpairs (AMG from
  :mod:`sla.solvers.precond` when that module is installed, else Jacobi);
  with ``sigma`` (or ``'SM'`` of an indefinite matrix) it runs on
  ``(A - sigma I)^{-1}`` applied by sla's direct solver of the device;
* ``'dense'`` -- ``torch.linalg.eigh`` of the dense matrix (small ``n``).

``'auto'`` takes ``dense`` for ``n <= 200``, ``lobpcg`` on CUDA and
``arpack`` on the CPU.  Gradients (see :mod:`sla.solvers.spectral.adjoint`):
eigenvalues ``d lam_i / dA[r, c] = v_i[r] conj(v_i[c])``; eigenvectors through
one projected MINRES solve per requested vector.  One graph node per call.

General (non-Hermitian) matrices: :mod:`sla.solvers.spectral.eigs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ...checks import first_order_only
from ...config import BackendUnavailableError, ConvergenceError, SolveInfo, SolverConfig, rtol_alias
from ...products import spmm_nograd
from ...sparse import SparseTensor
from ..linear.policy import hermitian_part
from ..linear.solve import check_matrix
from ..precond import make_preconditioner
from .adjoint import eig_backward_vectors
from .lobpcg import lobpcg

__all__ = ["eigsh"]

log = logging.getLogger("sla")

_WHICH_H = ("LM", "SM", "LA", "SA")
DENSE_MAX = 200


# ------------------------------------------------------------------ checks
def _check(A, k, which, allowed, name) -> int:
    check_matrix(A, purpose=f"compute {name}")
    N = A.sparse_shape[1]
    if N == 0:
        raise ValueError(
            f"{name} needs a non-empty matrix, got shape {tuple(A.shape)} (a 0 x 0 matrix has no eigenpairs)"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if which not in allowed:
        raise ValueError(f"which must be one of {allowed}, got {which!r}")
    if k > N:  # as torch-sla: asking for more pairs than exist returns all of them
        log.info("%s: k=%d > n=%d; returning all %d eigenpairs", name, k, N, N)
    return N, int(min(k, N))


def _select(lam: torch.Tensor, k: int, which: str, sigma) -> torch.Tensor:
    """Indices ``[B, k]`` of the wanted eigenvalues among all of them, ascending by value."""
    if sigma is not None:
        key = -(lam - sigma).abs()
    elif which in ("LM",):
        key = lam.abs()
    elif which == "SM":
        key = -lam.abs()
    elif which in ("LA", "LR"):
        key = lam.real
    elif which in ("SA", "SR"):
        key = -lam.real
    elif which == "LI":
        key = lam.imag
    else:  # SI
        key = -lam.imag
    idx = torch.topk(key, k, dim=-1).indices
    order = torch.argsort(lam.gather(-1, idx).real, dim=-1)
    return idx.gather(-1, order)


# ------------------------------------------------------------- autograd
class _EigshAdjoint(torch.autograd.Function):
    """Attach ``(lam, V)`` of ``A = A(values)`` to the graph (one node)."""

    @staticmethod
    def forward(ctx, values, lam, V, pattern, tol):
        ctx.set_materialize_grads(False)
        ctx.pattern, ctx.tol = pattern, tol
        ctx.save_for_backward(values, lam, V)
        return lam.clone(), V.clone()

    @staticmethod
    @first_order_only("eigsh (eigenvalues and eigenvectors)")
    @torch.autograd.function.once_differentiable
    def backward(ctx, glam, gV):
        values, lam, V = ctx.saved_tensors
        p = ctx.pattern
        if gV is not None and V.is_complex():
            # each eigenvector is defined up to a phase e^{i phi}: only losses that do not see it
            # have a gradient (the test torch.linalg.eigh makes too)
            phase = (V.conj() * gV).sum(1).imag
            if bool((phase.abs() > 1e-6 * gV.abs().amax().clamp_min(1e-30)).any()):
                raise ValueError(
                    "this loss depends on the arbitrary phase of complex eigenvectors, so its gradient is "
                    "ill-defined; use phase-invariant quantities (|v|^2, v v^H, eigenvalues)"
                )
        U = eig_backward_vectors(lambda X: spmm_nograd(p, values, X), lam, V, glam, gV, tol=ctx.tol)
        gv = (U[:, p.row, :] * V[:, p.col, :].conj()).sum(-1)
        return (gv.real if not values.is_complex() else gv), None, None, None, None


# -------------------------------------------------------- preconditioner
def _preconditioner(A: SparseTensor, spec, notes: list) -> Callable | None:
    if callable(spec):
        notes.append("preconditioner: user callable")
        return spec
    if spec in (None, "none"):
        return None
    if spec == "auto":
        d = A.diagonal().detach()
        if not bool(((d.real if A.is_complex else d) > 0).all()):
            notes.append("preconditioner: none (diagonal not positive, A not definite)")
            return None
    if spec in ("auto", "amg"):
        try:
            T = make_preconditioner(A.detach(), "amg")
            notes.append("preconditioner: amg")
            return T
        except ImportError as exc:  # AMG's own optional dependencies
            if spec == "amg":
                raise
            notes.append(f"amg unavailable ({exc}), falling back to jacobi")
        spec = "jacobi"
    if spec == "jacobi":
        d = A.diagonal().detach().reshape(A.batch_size, -1)
        if bool((d == 0).any()):
            notes.append("preconditioner: none (zero diagonal)")
            return None
        notes.append("preconditioner: jacobi")
        dinv = (1.0 / d)[:, :, None]
        return lambda R: R * dinv
    raise ValueError(f"preconditioner must be 'auto', 'amg', 'jacobi', 'none' or a callable, got {spec!r}")


# ----------------------------------------------------------------- methods
def _dense_eigh(A, k, which, sigma):
    D = A.detach().to_dense().reshape(A.batch_size, *A.sparse_shape)
    lam, V = torch.linalg.eigh(D)
    idx = _select(lam, k, which, sigma)
    return lam.gather(-1, idx), V.gather(-1, idx[:, None, :].expand(-1, V.shape[1], -1)), {"iterations": 0}


def _arpack_eigsh(A, k, which, sigma, tol, maxiter, notes):
    import scipy.sparse.linalg as spla

    if A.device.type != "cpu":
        raise ValueError("method 'arpack' runs on the CPU; use method='lobpcg' on CUDA, or A.cpu()")
    wide = np.complex128 if A.is_complex else np.float64
    n = A.sparse_shape[0]
    lams, vecs = [], []
    rng = np.random.default_rng(0)
    flat = A._flat().detach()
    for b in range(A.batch_size):
        S = SparseTensor._make(flat[b], A.pattern).to_scipy("csc").astype(wide)
        v0 = rng.standard_normal(n).astype(wide)
        kw = dict(k=k, tol=tol or 0.0, maxiter=maxiter, v0=v0)
        shift = sigma if sigma is not None else (0.0 if which in ("SM", "SA") else None)
        try:
            OPinv = None
            if shift is not None:
                OPinv, pd = _shift_invert(S, shift)
                if sigma is None and which == "SA" and not pd:
                    OPinv = None  # smallest algebraic of an indefinite matrix: not the ones nearest 0
            if OPinv is not None:
                w, v = spla.eigsh(S, sigma=shift, which="LM", OPinv=OPinv, **kw)
                if b == 0:
                    notes.append(f"shift-invert at sigma={shift}")
            else:
                w, v = spla.eigsh(S, which=which, **kw)
        except spla.ArpackNoConvergence as exc:
            raise ConvergenceError(f"ARPACK did not converge ({exc}); raise maxiter or loosen tol") from exc
        except RuntimeError as exc:
            if shift is None or sigma is not None:
                raise
            notes.append(f"shift-invert at 0 failed ({exc}); regular mode")
            w, v = spla.eigsh(S, which=which, **kw)
        lams.append(w)
        vecs.append(v)
    lam = torch.from_numpy(np.stack(lams)).to(A.dtype.to_real())
    V = torch.from_numpy(np.stack(vecs)).to(A.dtype)
    order = torch.argsort(lam, -1)
    return lam.gather(-1, order), V.gather(-1, order[:, None, :].expand(-1, n, -1)), {"iterations": None}


def _shift_invert(S, sigma):
    """``((A - sigma I)^{-1}`` as a LinearOperator, positive definite?)``.

    CHOLMOD when ``A - sigma I`` is positive definite (scikit-sparse), else
    SuperLU with a symmetric ordering; definiteness is read off the LDU
    pivots when the diagonal pivoting kept the symmetric permutation.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    n = S.shape[0]
    Ss = (S - sigma * sp.eye_array(n, format="csc", dtype=S.dtype)).tocsc()
    solve, pd = None, False
    try:
        from sksparse import cholmod

        solve, pd = cholmod.cholesky(Ss), True
    except ImportError:
        pass
    except Exception:  # not positive definite: CHOLMOD raises its own error class
        solve = None
    if solve is None:
        lu = spla.splu(Ss, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options=dict(SymmetricMode=True))
        pd = bool(np.array_equal(lu.perm_r, lu.perm_c) and np.all(lu.U.diagonal().real > 0))
        solve = lu.solve
    op = spla.LinearOperator((n, n), matvec=lambda x: solve(np.asarray(x).reshape(n)), dtype=S.dtype)
    return op, pd


def _lobpcg_shift_invert(A, k, sigma, tol, maxiter, notes):
    """Eigenpairs nearest ``sigma``: LOBPCG on ``(A - sigma I)^{-1}`` (both ends), any device.

    The inverse is applied with sla's own direct solver (cached factorisation:
    SciPy on the CPU, cuDSS/CuPy on CUDA); ``lam = sigma + 1 / mu``.
    """
    from ..linear.solve import prepare

    n = A.sparse_shape[0]
    idx = torch.arange(n, device=A.device)
    shift = torch.full((*A.batch_shape, n), -float(sigma), dtype=A.dtype, device=A.device)
    As = A.detach() + SparseTensor(shift, idx, idx, A.shape)
    prep = prepare(As, SolverConfig.resolve(), kind="direct")
    notes.append(f"shift-invert at sigma={sigma} ({prep.backend.name}/{prep.method.name})")
    gen = torch.Generator(device=A.device).manual_seed(0)
    kw = dict(
        n=n, k=k, batch=A.batch_size, dtype=A.dtype, device=A.device, rtol=tol, maxiter=maxiter or 1000, generator=gen
    )
    lo, Vlo, st1 = lobpcg(lambda X: prep.solve(X), **kw)  # most negative mu: just below sigma
    hi, Vhi, st2 = lobpcg(lambda X: -prep.solve(X), **kw)  # most positive mu: just above sigma
    mu = torch.cat([lo, -hi], -1)
    V = torch.cat([Vlo, Vhi], -1)
    top = torch.topk(mu.abs(), k, dim=-1).indices
    lam = sigma + 1.0 / mu.gather(-1, top)
    V = V.gather(-1, top[:, None, :].expand(-1, n, -1))
    order = torch.argsort(lam, -1)
    stats = {"iterations": st1["iterations"] + st2["iterations"], "converged": st1["converged"] and st2["converged"]}
    return lam.gather(-1, order), V.gather(-1, order[:, None, :].expand(-1, n, -1)), stats


def _lobpcg_eigsh(A, k, which, sigma, tol, maxiter, preconditioner, notes):
    if sigma is not None:
        return _lobpcg_shift_invert(A, k, sigma, tol, maxiter, notes)
    n = A.sparse_shape[0]
    vals = A._flat().detach()
    op = lambda X: spmm_nograd(A.pattern, vals, X)  # noqa: E731
    neg = lambda X: -spmm_nograd(A.pattern, vals, X)  # noqa: E731
    gen = torch.Generator(device=A.device).manual_seed(0)
    kw = dict(
        n=n, k=k, batch=A.batch_size, dtype=A.dtype, device=A.device, rtol=tol, maxiter=maxiter or 1000, generator=gen
    )
    runs = []
    if which in ("SA", "SM", "LM"):
        T = _preconditioner(A, preconditioner, notes)
        lam, V, st = lobpcg(op, precond=T, **kw)
        runs.append((lam, V, st))
        if which == "SM" and bool((lam[:, 0] < 0).any()):  # indefinite: the ones nearest 0 are interior
            notes.append("indefinite matrix: 'SM' by shift-invert at 0")
            return _lobpcg_shift_invert(A, k, 0.0, tol, maxiter, notes)
    if which in ("LA", "LM"):
        lam, V, st = lobpcg(neg, **kw)
        runs.append((-lam.flip(-1), V.flip(-1), st))
    lam = torch.cat([r[0] for r in runs], -1)
    V = torch.cat([r[1] for r in runs], -1)
    idx = _select(lam, k, which, None)
    stats = {"iterations": sum(r[2]["iterations"] for r in runs), "converged": all(r[2]["converged"] for r in runs)}
    reasons = [r[2]["reason"] for r in runs if r[2].get("reason")]
    if reasons:
        stats["reason"] = reasons[0]
    return lam.gather(-1, idx), V.gather(-1, idx[:, None, :].expand(-1, n, -1)), stats


# --------------------------------------------------------------------- API
def _cupy_eigsh(A, k, which, sigma, tol, maxiter, notes):
    """CuPy's thick-restart Lanczos on the GPU (zero-copy through DLPack)."""
    if not A.is_cuda:
        raise ValueError("method 'cupy' runs on CUDA tensors; use method='arpack' or 'lobpcg' on the CPU")
    if sigma is not None or which == "SM":
        raise ValueError("CuPy's eigsh has no shift-invert (sigma / which='SM'); use method='lobpcg'")
    try:
        import cupy
        import cupyx.scipy.sparse as csp
        import cupyx.scipy.sparse.linalg as cla
    except ImportError as exc:
        raise BackendUnavailableError("method 'cupy' needs CuPy (pip install 'sla-torch[cupy]')") from exc
    n = A.sparse_shape[0]
    p = A.pattern
    crow, ccol = cupy.from_dlpack(p.crow.to(torch.int32)), cupy.from_dlpack(p.ccol.to(torch.int32))
    flat = A._flat().detach()
    lams, vecs = [], []
    for b in range(A.batch_size):
        S = csp.csr_matrix((cupy.from_dlpack(flat[b].contiguous()), ccol, crow), shape=p.shape)
        w, v = cla.eigsh(S, k=k, which=which, tol=tol or 0, maxiter=maxiter)
        lams.append(torch.from_dlpack(w))
        vecs.append(torch.from_dlpack(v))
    lam = torch.stack(lams).to(A.dtype.to_real())
    V = torch.stack(vecs).to(A.dtype)
    order = torch.argsort(lam, -1)
    notes.append("cupyx.scipy.sparse.linalg.eigsh (Lanczos)")
    return lam.gather(-1, order), V.gather(-1, order[:, None, :].expand(-1, n, -1)), {"iterations": None}


def _residual(A, lam, V) -> float:
    with torch.no_grad():
        R = spmm_nograd(A.pattern, A._flat().detach(), V) - V * lam[:, None, :].to(V.dtype)
        scale = lam.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(lam.dtype).tiny)
        return float((torch.linalg.vector_norm(R, dim=1) / scale).max()) if R.numel() else 0.0


def eigsh(
    A: SparseTensor,
    k: int = 6,
    which: str = "LM",
    sigma: float | None = None,
    return_eigenvectors: bool = True,
    method: str = "auto",
    *,
    rtol: float | None = None,
    maxiter: int | None = None,
    preconditioner: str | Callable = "auto",
    config: SolverConfig | None = None,
    return_info: bool = False,
    tol: float | None = None,
) -> torch.Tensor | tuple:
    """``k`` eigenpairs of a real symmetric or complex Hermitian matrix.

    eigsh works on the Hermitian part ``(A + A^H) / 2`` -- exactly A when A is Hermitian (as
    LAPACK's ``eigh`` reads one triangle, so a rounding-level asymmetry changes nothing).
    Gradients therefore reach the stored entries symmetrically (``gradcheck`` perturbing one
    entry passes), and a matrix further than ``SYMMETRY_RTOL`` from Hermitian gets a
    warning: its eigenvalues are those of the Hermitian part (use :func:`eigs` for A's own).

    Parameters
    ----------
    A : SparseTensor
        ``[*batch, n, n]`` Hermitian.
    k : int
        Number of eigenpairs (more than ``n`` returns all ``n``).
    which : {'LM', 'SM', 'LA', 'SA'}
        Largest/smallest magnitude, largest/smallest algebraic.
    sigma : float, optional
        Eigenvalues nearest ``sigma`` (shift-invert: ARPACK on the CPU, or
        LOBPCG on ``(A - sigma I)^{-1}`` with sla's direct solver, any device).
    return_eigenvectors : bool
        Also return the eigenvectors.
    method : {'auto', 'arpack', 'lobpcg', 'cupy', 'dense'}
        ``'cupy'``: CuPy's Lanczos on CUDA (no shift-invert).
    rtol, maxiter : optional
        Convergence controls of the iterative method (``tol``, the seed project's name,
        is accepted as an alias of ``rtol``).
    preconditioner : {'auto', 'amg', 'jacobi', 'none'} or callable
        LOBPCG preconditioner for the smallest eigenpairs (a callable maps
        ``[B, n, K]`` residual blocks to corrections).
    config : SolverConfig, optional
        Its ``on_failure`` decides what an unconverged LOBPCG run does.
    return_info : bool
        Also return a :class:`~sla.SolveInfo` (method, iterations, worst
        relative residual ``||A v - lam v|| / max|lam|``, notes).

    Returns
    -------
    eigenvalues : ``[*batch, k]`` real, ascending;
    eigenvectors : ``[*batch, n, k]`` orthonormal columns (if requested).

    Examples
    --------
    >>> from sla.gallery import poisson1d
    >>> A = poisson1d(50)
    >>> lam = A.eigsh(k=2, which='SA', return_eigenvectors=False)
    >>> [round(float(x), 6) for x in lam]
    [0.003793, 0.015159]
    """
    n, k = _check(A, k, which, _WHICH_H, "eigsh")
    tol = rtol_alias(rtol, tol, "eigsh")
    A = hermitian_part(A, "eigsh", "eigs")
    if method == "auto":
        method = "dense" if n <= DENSE_MAX or k >= n - 1 else ("lobpcg" if A.is_cuda else "arpack")
    notes: list = []
    if method == "dense":
        lam, V, stats = _dense_eigh(A, k, which, sigma)
    elif method == "arpack":
        if k >= n:
            raise ValueError(f"ARPACK needs k < n, got k={k}, n={n}; use method='dense'")
        lam, V, stats = _arpack_eigsh(A, k, which, sigma, tol, maxiter, notes)
    elif method == "lobpcg":
        if 3 * k > n:
            raise ValueError(f"LOBPCG needs 3k <= n, got k={k}, n={n}; use method='dense'")
        lam, V, stats = _lobpcg_eigsh(A, k, which, sigma, tol, maxiter, preconditioner, notes)
    elif method == "cupy":
        if k >= n:
            raise ValueError(f"CuPy's Lanczos needs k < n, got k={k}, n={n}; use method='dense'")
        lam, V, stats = _cupy_eigsh(A, k, which, sigma, tol, maxiter, notes)
    else:
        raise ValueError(f"method must be 'auto', 'arpack', 'lobpcg', 'cupy' or 'dense', got {method!r}")
    info = SolveInfo(
        backend={"arpack": "scipy", "cupy": "cupy"}.get(method, "pytorch"),
        method=method,
        matrix_type="hermitian" if A.is_complex else "symmetric",
        iterations=stats.get("iterations"),
        converged=bool(stats.get("converged", True)),
        residual=_residual(A, lam, V),
        notes=notes,
        reason=stats.get("reason"),
    )
    info.fail(SolverConfig.resolve(config))
    if A.values.requires_grad:
        lam, V = _EigshAdjoint.apply(A._flat(), lam, V, A.pattern, None)
    lam = lam.reshape(*A.batch_shape, k)
    V = V.reshape(*A.batch_shape, n, k)
    out = (lam, V) if return_eigenvectors else lam
    return (out, info) if return_info else out
