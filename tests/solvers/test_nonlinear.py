"""nonlinear_solve: Bratu and nonlinear Poisson vs independent SciPy references, adjoint gradchecks, memory."""

import numpy as np
import pytest
import scipy.optimize as so
import torch
from devices import DEVICES

import sla
from sla.gallery import poisson1d, poisson2d

METHODS = [
    dict(method="newton", linear_solver="gmres"),
    dict(method="newton", linear_solver="sparse"),
    dict(method="newton", linear_solver="dense"),
    dict(method="anderson"),
    dict(method="picard"),
]


def _ids(kw):
    return "-".join(str(v) for v in kw.values())


# ------------------------------------------------------------------ problems
def bratu_residual(u, A, lam):
    """-u'' - lam e^u = 0 on (0, 1), u(0) = u(1) = 0; A = poisson1d / h^2."""
    return A @ u - lam * torch.exp(u)


def bratu_exact(x, lam):
    theta = so.brentq(lambda t: t - np.sqrt(2 * lam) * np.cosh(t / 4), 0.1, 4.0)  # lower branch
    return -2 * np.log(np.cosh((x - 0.5) * theta / 2) / np.cosh(theta / 4))


def nlpoisson_residual(u, f, n):
    """-div((1 + u^2) grad u) = f on the unit square, u = 0 on the boundary (FD, edge-averaged k)."""
    h = 1.0 / (n + 1)
    U = torch.nn.functional.pad(u.reshape(n, n), (1, 1, 1, 1))
    k = 1 + U**2
    kx = 0.5 * (k[1:, 1:-1] + k[:-1, 1:-1])  # faces between rows
    ky = 0.5 * (k[1:-1, 1:] + k[1:-1, :-1])
    fx = kx * (U[1:, 1:-1] - U[:-1, 1:-1])
    fy = ky * (U[1:-1, 1:] - U[1:-1, :-1])
    div = (fx[1:] - fx[:-1]) + (fy[:, 1:] - fy[:, :-1])
    return (-div / h**2).reshape(-1) - f


def nlpoisson_numpy(u, f, n):
    """The same discretisation, written independently in numpy (for the SciPy reference)."""
    h = 1.0 / (n + 1)
    U = np.zeros((n + 2, n + 2))
    U[1:-1, 1:-1] = u.reshape(n, n)
    k = 1 + U**2
    out = np.zeros((n, n))
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        nb = U[1 + di : n + 1 + di, 1 + dj : n + 1 + dj]
        kf = 0.5 * (k[1:-1, 1:-1] + k[1 + di : n + 1 + di, 1 + dj : n + 1 + dj])
        out += kf * (U[1:-1, 1:-1] - nb)
    return out.ravel() / h**2 - f


# --------------------------------------------------------------- accuracy
@pytest.mark.parametrize("kw", METHODS, ids=_ids)
def test_bratu_1d_closed_form(kw):
    n, lam = 127, 1.0
    h = 1.0 / (n + 1)
    A = poisson1d(n) * float((n + 1) ** 2)
    x = np.arange(1, n + 1) * h
    u0 = torch.zeros(n, dtype=torch.float64)
    lam_t = torch.tensor(lam, dtype=torch.float64)
    kw = dict(kw)
    if kw["method"] == "anderson" or kw.get("linear_solver") == "gmres":  # explicit; Picard uses 'auto' (A's LU)
        lu = A.lu()
        kw["preconditioner"] = lambda r: lu.solve(r.reshape(-1))
    u, info = A.nonlinear_solve(bratu_residual, u0, lam_t, rtol=1e-12, return_info=True, **kw)
    assert info.converged and info.residual <= 1e-12 * info.initial_residual
    np.testing.assert_allclose(u.numpy(), bratu_exact(x, lam), atol=2e-5)  # O(h^2) discretisation error
    if kw["method"] == "newton":
        assert info.iterations <= 8


@pytest.mark.parametrize("kw", METHODS[:3], ids=_ids)
def test_nonlinear_poisson_vs_scipy(kw):
    n = 10
    g = np.random.default_rng(0)
    f = 10 + 10 * g.random(n * n)
    ref = so.root(nlpoisson_numpy, np.zeros(n * n), args=(f, n), method="hybr", tol=1e-14)
    assert ref.success
    ft = torch.from_numpy(f)
    kw = dict(kw)
    if kw["linear_solver"] == "sparse":
        kw["jacobian_pattern"] = poisson2d(n).pattern
    u, info = sla.nonlinear_solve(
        nlpoisson_residual, torch.zeros(n * n, dtype=torch.float64), ft, n, rtol=1e-13, return_info=True, **kw
    )
    assert info.converged
    np.testing.assert_allclose(u.numpy(), ref.x, rtol=1e-9, atol=1e-11)


def test_sparse_jacobian_assembly_is_exact():
    from sla.solvers.nonlinear.jacobian import Residual, assemble_jacobian

    n = 6
    f = torch.rand(n * n, dtype=torch.float64)
    u = torch.rand(n * n, dtype=torch.float64)
    res = Residual(nlpoisson_residual, u, (f, n))
    J = assemble_jacobian(res, u, poisson2d(n).pattern).to_dense()
    ref = torch.autograd.functional.jacobian(lambda x: nlpoisson_residual(x, f, n), u)
    torch.testing.assert_close(J, ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    "kw",
    [
        dict(method="newton", linear_solver="sparse"),
        dict(method="newton", linear_solver="gmres"),
        dict(method="anderson"),
    ],
    ids=_ids,
)
def test_gradcheck_each_parameter(kw):
    n = 4
    A0 = poisson2d(n) * 4.0
    g = torch.Generator().manual_seed(0)
    f = torch.rand(n * n, dtype=torch.float64, generator=g).requires_grad_()
    c = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    w = torch.rand(n * n, dtype=torch.float64, generator=g)  # no grad: mixed requires_grad
    vals = A0.values.clone().requires_grad_()
    kw = dict(kw)
    if kw["method"] == "anderson":
        lu = A0.lu()
        kw["preconditioner"] = lambda r: lu.solve(r.reshape(-1))

    def solve(vals, f, c):
        A = sla.SparseTensor._make(vals, A0.pattern)
        return A.nonlinear_solve(
            lambda u, A, f, c, w: A @ u + c * u**3 + w * u - f,
            torch.zeros(n * n, dtype=torch.float64),
            f,
            c,
            w,
            rtol=1e-14,
            maxiter=200,
            **kw,
        )

    assert torch.autograd.gradcheck(solve, (vals, f, c))


@pytest.mark.parametrize("linear_solver", ["gmres", "sparse"])
@pytest.mark.parametrize("device", DEVICES)
def test_sparse_residual_on_device(device, linear_solver):
    n = 30
    A = (poisson1d(n) * float((n + 1) ** 2)).to(device)
    f = torch.linspace(1, 30, n, dtype=torch.float64, device=device).requires_grad_()
    u = A.nonlinear_solve(
        lambda u, A, f: A @ u + u**3 - f,
        torch.zeros(n, dtype=torch.float64, device=device),
        f,
        linear_solver=linear_solver,
        rtol=1e-13,
    )
    assert u.device.type == device
    F = A.detach() @ u.detach() + u.detach() ** 3 - f.detach()
    assert float(F.norm()) <= 1e-10 * float(f.detach().norm())
    u.sum().backward()
    J = A.detach().to_dense() + torch.diag(3 * u.detach() ** 2)
    torch.testing.assert_close(f.grad, torch.linalg.solve(J.T, torch.ones_like(f)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_readme_example(dtype):
    # the torch-sla README example: A @ u + u^2 = f, gradient of u.sum() w.r.t. f
    A = poisson2d(8, dtype=dtype)
    n = A.shape[0]
    f = torch.rand(n, dtype=dtype, generator=torch.Generator().manual_seed(0)).requires_grad_()
    u = A.nonlinear_solve(lambda u, A, f: A @ u + u**2 - f, torch.zeros(n, dtype=dtype), f, method="newton")
    u.sum().backward()
    J = A.to_dense() + torch.diag(2 * u.detach())
    tol = 1e-4 if dtype == torch.float32 else 1e-7
    torch.testing.assert_close(f.grad, torch.linalg.solve(J.T, torch.ones_like(f)), rtol=tol, atol=tol)


def test_grad_matches_dense_implicit_formula():
    n = 5
    f = torch.linspace(1, 3, n, dtype=torch.float64).requires_grad_()
    u = sla.nonlinear_solve(lambda u, f: u**3 + 2 * u - f, torch.zeros(n, dtype=torch.float64), f, rtol=1e-14)
    u.sum().backward()
    torch.testing.assert_close(f.grad, 1 / (3 * u.detach() ** 2 + 2))


def test_backward_memory_independent_of_iterations():
    n = 12
    A = poisson2d(n) * float((n + 1) ** 2)
    f = (50 * torch.rand(n * n, dtype=torch.float64)).requires_grad_()
    lu = A.lu()
    counts, grads = [], []
    for rtol in (1e-3, 1e-13):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            u, info = A.nonlinear_solve(
                lambda u, A, f: A @ u + u**3 - f,
                torch.zeros(n * n, dtype=torch.float64),
                f,
                method="picard",
                preconditioner=lambda r: lu.solve(r.reshape(-1)),
                rtol=rtol,
                return_info=True,
            )
        counts.append((info.iterations, len(saved), sum(saved)))
        (g,) = torch.autograd.grad(u.sum(), f)
        grads.append(g)
    (it_lo, n_lo, size_lo), (it_hi, n_hi, size_hi) = counts
    assert it_hi >= 3 * it_lo
    assert n_lo == n_hi and size_lo == size_hi
    assert size_hi <= 2 * n * n + A.nnz + 10  # u*, f and A's values: O(1), not O(iterations)


def test_failure_policy():
    A = poisson1d(20) * 441.0
    f = torch.ones(20, dtype=torch.float64)
    fn = lambda u, A, f: A @ u + u**3 - f
    with pytest.raises(sla.ConvergenceError, match="did not converge"):
        A.nonlinear_solve(fn, torch.zeros(20, dtype=torch.float64), f, method="picard", maxiter=3)
    with pytest.warns(sla.ConvergenceWarning):
        u, info = A.nonlinear_solve(
            fn, torch.zeros(20, dtype=torch.float64), f, method="picard", maxiter=3, on_failure="warn", return_info=True
        )
    assert not info.converged and info.iterations == 3


def test_validation():
    with pytest.raises(TypeError, match="u0"):
        sla.nonlinear_solve(lambda u: u, [1.0])
    with pytest.raises(ValueError, match="method"):
        sla.nonlinear_solve(lambda u: u, torch.zeros(2), method="bisection")
    with pytest.raises(ValueError, match="shaped like u"):
        sla.nonlinear_solve(lambda u: u.sum(), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="jacobian_pattern"):
        sla.nonlinear_solve(lambda u: u, torch.zeros(3, dtype=torch.float64), linear_solver="sparse")


# ------------------------------------------ defaults from the matrix among the params
def _bratu_like(n=20):
    """-Laplace u + u^2 = 10 on the unit square (5-point, h = 1/(n+1))."""
    A = poisson2d(n) * float((n + 1) ** 2)
    return A, torch.full((n * n,), 10.0, dtype=torch.float64)


def _reference(A, f, F, dF):
    """Plain dense Newton on the analytic Jacobian ``A + dF(u)``: independent of sla's nonlinear code."""
    Ad = A.to_dense()
    u = torch.zeros_like(f)
    for _ in range(30):
        u = u - torch.linalg.solve(Ad + dF(u), F(u, Ad, f))
    assert float(F(u, Ad, f).norm()) < 1e-9 * float(f.norm())
    return u


@pytest.mark.parametrize("method", ["picard", "anderson", "newton"])
def test_auto_uses_the_square_matrix_among_the_params(method):
    """Picard/Anderson iterate u - A^{-1} F(u); Newton assembles dF/du on A's pattern + diagonal."""
    A, f = _bratu_like()
    F = lambda u, A, f: A @ u + u**2 - f
    u, info = sla.nonlinear_solve(F, torch.zeros_like(f), A, f, method=method, rtol=1e-11, return_info=True)
    assert info.converged and info.iterations <= 30
    torch.testing.assert_close(u, _reference(A, f, F, lambda u: torch.diag(2 * u)), rtol=1e-8, atol=1e-10)
    if method == "newton":
        assert info.method == "newton-sparse" and info.linear_iterations == 0
    # without the matrix the same map is u - F(u): it does not converge
    _, bare = sla.nonlinear_solve(
        F,
        torch.zeros_like(f),
        A,
        f,
        method="picard",
        preconditioner=None,
        maxiter=30,
        on_failure="ignore",
        return_info=True,
    )
    assert not bare.converged


def test_a_derived_pattern_that_misses_entries_falls_back_to_jfnk():
    A, f = _bratu_like(12)
    F = lambda u, A, f: A @ u + 5 * torch.roll(u, 7) ** 2 - f
    u, info = sla.nonlinear_solve(F, torch.zeros_like(f), A, f, rtol=1e-11, return_info=True)
    assert info.converged and info.method == "newton-gmres"
    assert any("misses entries" in s for s in info.notes)
    roll = torch.roll(torch.eye(f.numel(), dtype=f.dtype), 7, 0)  # roll(u, 7) = roll @ u
    ref = _reference(A, f, F, lambda u: 10 * torch.diag(torch.roll(u, 7)) @ roll)
    torch.testing.assert_close(u, ref, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="jacobian_pattern misses entries"):
        sla.nonlinear_solve(F, torch.zeros_like(f), A, f, jacobian_pattern=A)


def test_readme_nonlinear_line_is_sparse_newton_and_differentiable():
    A = poisson2d(4)
    b = torch.ones(16, dtype=torch.float64)
    u, info = A.nonlinear_solve(lambda u, A, f: A @ u + u**3 - f, torch.zeros_like(b), b, return_info=True)
    assert info.method == "newton-sparse" and info.converged
    torch.testing.assert_close(A @ u + u**3, b, rtol=0, atol=1e-7)
    bb = b.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f: A.nonlinear_solve(lambda u, A, f: A @ u + u**3 - f, torch.zeros_like(b), f, rtol=1e-13)[:5],
        (bb,),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="matrix must be a square SparseTensor"):
        sla.nonlinear_solve(lambda u: u, b, matrix=poisson2d(3))
