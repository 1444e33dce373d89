"""Native Krylov methods (sla.solvers.krylov) and the `pytorch` backend.

The shared zoo (tests/zoo.py: SPD, Hermitian PD, symmetric indefinite, nonsymmetric, complex) x methods x
preconditioners, batched and multi-RHS, against SciPy's sparse direct solve; per-system
convergence; the inner-product contract; gradients; the failure policy.  Each test body
runs on CPU and, on the GPU machine, on CUDA.
"""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
import zoo
from devices import DEVICES

import sla
from sla import ConvergenceError, ConvergenceWarning, SparseTensor, gallery
from sla.solvers import krylov


def _tol(dtype):
    return 1e-4 if dtype in (torch.float32, torch.complex64) else 1e-8


CASES = [
    ("cg", "spd"),
    ("minres", "spd"),
    ("bicgstab", "spd"),
    ("gmres", "spd"),
    ("fgmres", "spd"),
    ("minres", "symmetric"),
    ("gmres", "symmetric"),
    ("fgmres", "symmetric"),
    ("bicgstab", "general"),
    ("gmres", "general"),
    ("fgmres", "general"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128, torch.float32])
@pytest.mark.parametrize("method,kind", CASES)
def test_zoo_against_scipy(method, kind, dtype, device):
    S = zoo.scipy_matrix(kind, 48, dtype)
    A = zoo.matrix(kind, 48, dtype, device=device)
    rng = np.random.default_rng(1)
    b = rng.standard_normal((S.shape[0], 2))
    if dtype.is_complex:
        b = b + 1j * rng.standard_normal(b.shape)
    ref = spla.spsolve(S.astype(np.complex128 if dtype.is_complex else np.float64).tocsc(), b)
    pcs = ["none", "jacobi"] if kind != "symmetric" else ["none"]
    for pc in pcs:
        x, info = A.solve(
            torch.as_tensor(b).to(device=device, dtype=dtype),
            backend="pytorch",
            method=method,
            preconditioner=pc,
            restart=60,
            return_info=True,
        )
        assert info.backend == "pytorch" and info.method == method and info.preconditioner == pc
        assert info.converged and info.residual <= 10 * _tol(dtype)
        err = np.linalg.norm(x.cpu().numpy() - ref) / np.linalg.norm(ref)
        assert err < 1e3 * _tol(dtype), (pc, err)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pc", ["jacobi", "block_jacobi", "chebyshev", "amg", "gmg"])
@pytest.mark.parametrize("method", ["cg", "minres", "gmres", "fgmres", "bicgstab"])
def test_methods_x_preconditioners_batched_multirhs(method, pc, device):
    # three Poisson matrices on one pattern, scaled differently (a batch), four right-hand sides
    A0 = gallery.poisson2d(24, device=device)
    scale = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, device=device).unsqueeze(-1)
    A = SparseTensor._make(A0.values * scale, A0.pattern)
    b = torch.randn(3, A0.shape[0], 4, dtype=torch.float64, device=device)
    opts = {"max_coarse": 40} if pc in ("amg", "gmg") else None
    x, info = A.solve(b, backend="pytorch", method=method, preconditioner=pc, options=opts, return_info=True)
    assert info.converged and info.residual <= 1e-7
    ref = torch.linalg.solve(A.to_dense(), b)
    torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-6)
    if pc in ("amg", "gmg"):
        assert info.iterations <= 30


@pytest.mark.parametrize("device", DEVICES)
def test_converged_systems_stop_changing(device):
    # system 0 is the identity (done in one step), system 1 needs many; iterations are per system
    n = 50
    A = gallery.poisson1d(n, device=device).to_dense()
    eye = torch.eye(n, dtype=torch.float64, device=device)
    As = torch.stack([eye, A])
    b = torch.randn(2, n, 1, dtype=torch.float64, device=device)
    res = krylov.cg(lambda v: As @ v, b, rtol=1e-10, check_every=4)
    assert res.iterations[0, 0, 0] == 1 and res.iterations[1, 0, 0] > 10
    assert bool(res.converged.all())
    torch.testing.assert_close(res.x[0], b[0])  # frozen after converging: unchanged by later steps
    torch.testing.assert_close(res.x[1], torch.linalg.solve(A, b[1]), rtol=1e-8, atol=1e-8)


def test_fgmres_takes_a_changing_preconditioner():
    # the preconditioner is itself a few CG steps (nonlinear in r): FGMRES converges to the solution
    A = gallery.poisson2d(20).to_dense()
    b = torch.randn(1, 400, 2, dtype=torch.float64)

    def inner_cg(r):
        return krylov.cg(lambda v: A @ v, r, rtol=1e-1, maxiter=5).x

    res = krylov.fgmres(lambda v: A @ v, b, precond=inner_cg, rtol=1e-10, restart=30)
    assert bool(res.converged.all()) and int(res.iterations.max()) < 60
    torch.testing.assert_close(res.x[0], torch.linalg.solve(A, b[0]), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("check_every", [1, 5, 64, "adaptive"])
def test_check_every_changes_no_result(check_every):
    # fewer host looks at the flags: the same per-system iterations and solutions
    A = gallery.poisson1d(40).to_dense()
    As = torch.stack([A, 2 * A + torch.eye(40, dtype=torch.float64)])
    b = torch.randn(2, 40, 3, dtype=torch.float64)
    ref = krylov.cg(lambda v: As @ v, b, rtol=1e-10, check_every=1)
    res = krylov.cg(lambda v: As @ v, b, rtol=1e-10, check_every=check_every)
    assert torch.equal(res.iterations, ref.iterations)
    torch.testing.assert_close(res.x, ref.x, rtol=0, atol=0)


@pytest.mark.parametrize("pc", ["gmg", "amg", "jacobi"])
def test_adaptive_checks_look_less_and_rarely_overshoot(pc):
    from sla.solvers.precond import make_preconditioner

    A = gallery.poisson2d(96)
    M = make_preconditioner(A, pc)
    C = A.pattern.csr(A.values)
    b = torch.randn(1, A.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = krylov.cg(lambda v: (C @ v[0]).unsqueeze(0), b, precond=M, rtol=1e-8, check_every=1)
    res = krylov.cg(lambda v: (C @ v[0]).unsqueeze(0), b, precond=M, rtol=1e-8, check_every="adaptive")
    assert torch.equal(res.iterations, ref.iterations) and bool(res.converged.all())
    torch.testing.assert_close(res.x, ref.x, rtol=0, atol=0)  # frozen systems: extra steps change nothing
    its = int(ref.iterations.max())
    assert ref.looks == ref.steps == its
    # long solves look far less often; short (multigrid) ones approach convergence in half steps
    assert res.looks <= (its // 4 if pc == "jacobi" else its), (res.looks, its)
    assert res.steps <= its + 1, (res.steps, its)


def test_inner_product_is_the_only_reduction():
    # a custom inner product (here: weighted by 1, but counted) is what every method uses
    A = gallery.poisson1d(30).to_dense()
    b = torch.randn(1, 30, 1, dtype=torch.float64)
    calls = []

    def dot(u, v):
        calls.append(u.dim())
        return krylov.local_dot(u, v)

    for name in krylov.METHODS:
        calls.clear()
        res = krylov.krylov_solve(name, lambda v: A @ v, b, dot=dot, rtol=1e-10)
        assert calls, name
        torch.testing.assert_close(res.x[0], torch.linalg.solve(A, b[0]), rtol=1e-7, atol=1e-7)
    with pytest.raises(ValueError, match="unknown Krylov method"):
        krylov.krylov_solve("qmr", lambda v: v, b)


@pytest.mark.parametrize("device", DEVICES)
def test_x0_and_inputs_untouched(device):
    A = gallery.poisson1d(20, device=device).to_dense()
    b = torch.randn(1, 20, 1, dtype=torch.float64, device=device)
    x0 = torch.randn_like(b)
    b_copy, x0_copy = b.clone(), x0.clone()
    res = krylov.gmres(lambda v: A @ v, b, x0=x0, rtol=1e-10, restart=20)
    assert bool(res.converged.all())
    assert torch.equal(b, b_copy) and torch.equal(x0, x0_copy)
    torch.testing.assert_close(res.x[0], torch.linalg.solve(A, b[0]), rtol=1e-8, atol=1e-8)


def test_on_failure_policy():
    A = gallery.poisson2d(16)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    with pytest.raises(ConvergenceError, match="did not converge"):
        A.solve(b, backend="pytorch", method="cg", preconditioner="none", maxiter=3)
    with pytest.warns(ConvergenceWarning):
        A.solve(b, backend="pytorch", method="cg", preconditioner="none", maxiter=3, on_failure="warn")
    _, info = A.solve(
        b,
        backend="pytorch",
        method="gmres",
        preconditioner="none",
        maxiter=3,
        restart=2,
        on_failure="ignore",
        return_info=True,
    )
    assert not info.converged and info.iterations == 3 and info.residual > 1e-3


def test_unattainable_tolerance_stops_early():
    # rtol below float32's attainable accuracy: report non-convergence, do not burn the budget
    A = gallery.poisson2d(40, dtype=torch.float32)
    b = torch.ones(A.shape[0], dtype=torch.float32)
    x, info = A.solve(
        b,
        backend="pytorch",
        method="cg",
        preconditioner="jacobi",
        rtol=1e-9,
        maxiter=20000,
        on_failure="ignore",
        return_info=True,
    )
    assert not info.converged and info.iterations < 2000
    ref = torch.linalg.solve(A.to_dense().double(), b.double())
    assert float((x.double() - ref).norm() / ref.norm()) < 1e-4  # still as accurate as float32 allows


def test_auto_choice_and_errors():
    A = gallery.poisson2d(120)  # 14400 unknowns on a grid: multigrid
    _, info = A.solve(torch.ones(A.shape[0], dtype=torch.float64), backend="pytorch", return_info=True)
    assert (info.method, info.preconditioner) == ("cg", "gmg")
    with pytest.raises(ValueError, match="unknown preconditioner"):
        A.solve(torch.ones(A.shape[0], dtype=torch.float64), backend="pytorch", preconditioner="ilu9")
    with pytest.raises(ValueError, match="restart"):
        krylov.gmres(lambda v: v, torch.ones(1, 3, 1), restart=0)
    # a complex symmetric (not Hermitian) matrix cannot go to MINRES / CG
    C = SparseTensor.from_dense(torch.tensor([[2.0 + 1j, 1j], [1j, 3.0]], dtype=torch.complex128))
    with pytest.raises(ValueError, match="Hermitian"):
        C.solve(torch.ones(2, dtype=torch.complex128), backend="pytorch", method="minres", matrix_type="symmetric")
    # symmetric indefinite with a mixed-sign diagonal: 'auto' must not give MINRES an indefinite Jacobi
    Ai = zoo.matrix("symmetric", 48)
    _, info = Ai.solve(
        torch.ones(Ai.shape[0], dtype=torch.float64), backend="pytorch", method="minres", return_info=True
    )
    assert info.preconditioner == "none" and info.converged
    assert sla.is_pytorch_available()


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_preconditioned(device):
    # symmetric parameterisation keeps A SPD under gradcheck's perturbations: CG + GMG
    A0 = gallery.poisson2d(6, device=device)
    p = A0.pattern
    _, perm = p.transpose()
    theta = (0.1 * torch.rand(p.nnz, dtype=torch.float64, device=device)).requires_grad_()
    b = torch.randn(p.shape[0], dtype=torch.float64, device=device, requires_grad=True)

    def f(theta, b):
        A = A0.with_values(A0.values + theta + theta[perm])
        return A.solve(
            b,
            backend="pytorch",
            method="cg",
            preconditioner="gmg",
            matrix_type="spd",
            rtol=1e-13,
            options={"max_coarse": 4},
        )

    assert torch.autograd.gradcheck(f, (theta, b), atol=1e-6)

    # nonsymmetric A: GMRES + AMG, the adjoint runs with A^H and the adjoint AMG hierarchy
    A1 = zoo.matrix("general", 20, device=device)
    v = A1.values.detach().clone().requires_grad_()
    b1 = torch.randn(20, dtype=torch.float64, device=device, requires_grad=True)

    def g(v, b):
        return A1.with_values(v).solve(
            b, backend="pytorch", method="gmres", preconditioner="amg", rtol=1e-13, options={"max_coarse": 5}
        )

    assert torch.autograd.gradcheck(g, (v, b1), atol=1e-6)
