"""The K-cycle (Krylov-accelerated multigrid cycle) and flexible CG.

Oracles: SciPy's sparse direct solve and dense ``torch.linalg.solve`` (solutions), the V-cycle on
the same hierarchy (iterations: the K-cycle's reason to exist is that its iterations hardly grow
with the grid where the V-cycle's do), and plain CG with a fixed preconditioner (flexible CG is
the same iteration then).
"""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from devices import DEVICES

import sla
from sla import SparseTensor, gallery
from sla.solvers import krylov
from sla.solvers.precond import make_preconditioner


def _p1_square(n, device="cpu"):
    """P1 Laplacian on ``unit_square(n)`` (right triangles), Dirichlet rows."""
    from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, unit_square

    basis = CellBasis(unit_square(n, dtype=torch.float64, device=device), ElementP1())
    A = assemble(laplace, basis)
    return apply_dirichlet(A, torch.ones(A.shape[0], dtype=A.dtype, device=device), boundary_dofs(basis))[0]


def _solve(A, b, pc="amg", method="cg", **options):
    return sla.solve(
        A, b, backend="pytorch", method=method, preconditioner=pc, options=options, rtol=1e-8, return_info=True
    )


def _spsolve(A, b):
    return spla.spsolve(A.to_scipy("csr").tocsc(), b.cpu().numpy())


# --- flexible CG ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_fcg_is_cg_with_a_fixed_preconditioner(dtype):
    # SPD / Hermitian PD matrix, Jacobi (fixed): the same iterations as CG and the dense solution
    g = torch.Generator().manual_seed(3)
    n = 60
    X = torch.randn(n, n, dtype=dtype, generator=g)
    A = X @ X.mH + n * torch.diag(torch.rand(n, generator=g, dtype=torch.float64) + 0.1).to(dtype)
    b = torch.randn(1, n, 2, dtype=dtype, generator=g)
    dinv = 1.0 / torch.diagonal(A).real.unsqueeze(-1)
    ref = torch.linalg.solve(A, b[0])
    plain = krylov.cg(lambda v: A @ v, b, precond=lambda r: dinv * r, rtol=1e-10)
    flex = krylov.fcg(lambda v: A @ v, b, precond=lambda r: dinv * r, rtol=1e-10)
    assert bool(flex.converged.all())
    assert abs(int(flex.iterations.max()) - int(plain.iterations.max())) <= 1
    torch.testing.assert_close(flex.x[0], ref, rtol=1e-8, atol=1e-8)


def test_fcg_converges_with_a_variable_preconditioner():
    # the preconditioner is a few CG steps at a loose tolerance (a nonlinear map of r): flexible CG
    # converges to the dense solution; CG's own beta loses conjugacy and needs far more steps
    A = gallery.poisson2d(24).to_dense()
    b = torch.randn(1, A.shape[0], 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def inner(r):
        return krylov.cg(lambda v: A @ v, r, rtol=0.3, maxiter=6).x

    flex = krylov.fcg(lambda v: A @ v, b, precond=inner, rtol=1e-10, maxiter=200)
    assert bool(flex.converged.all())
    torch.testing.assert_close(flex.x[0], torch.linalg.solve(A, b[0]), rtol=1e-8, atol=1e-8)
    plain = krylov.cg(lambda v: A @ v, b, precond=inner, rtol=1e-10, maxiter=200)
    assert int(flex.iterations.max()) < int(plain.iterations.max()), (flex.iterations, plain.iterations)

    class Variable:  # a preconditioner that says it is variable: cg takes the flexible beta itself
        variable = True

        def __call__(self, r):
            return inner(r)

    auto = krylov.cg(lambda v: A @ v, b, precond=Variable(), rtol=1e-10, maxiter=200)
    assert torch.equal(auto.iterations, flex.iterations)


# --- the K-cycle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("matrix", ["5-point", "P1 triangles"])
def test_kcycle_amg_cg_matches_spsolve(matrix, device):
    A = gallery.poisson2d(96, device=device) if matrix == "5-point" else _p1_square(80, device)
    b = torch.randn(A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    x, info = _solve(A, b, cycle="K", max_coarse=50)
    assert info.converged and info.residual <= 1e-8
    assert any("K-cycle" in n for n in info.notes), info.notes
    ref = _spsolve(A, b)
    err = np.linalg.norm(x.cpu().numpy() - ref) / np.linalg.norm(ref)
    assert err < 1e-6, err
    _, v = _solve(A, b, cycle="V", max_coarse=50)
    assert info.iterations <= v.iterations


def test_kcycle_iterations_hardly_grow():
    # P1 triangles, degree-1 smoothing, deep hierarchies (coarsest <= 10 rows): the V-cycle's
    # iterations grow 17 -> 23 over 64^2 -> 256^2 cells, the K-cycle's stay within 1.3x
    its = {"V": [], "K": []}
    for n in (64, 128, 256):
        A = _p1_square(n)
        b = torch.ones(A.shape[0], dtype=torch.float64)
        for c in its:
            x, info = _solve(A, b, cycle=c, degree=1, max_coarse=10)
            assert info.converged
            its[c].append(info.iterations)
    k = its["K"]
    assert max(k) <= 1.3 * k[0], its
    assert k[-1] < its["V"][-1], its
    # the 5-point Laplacian with the defaults (coarsest <= 500 rows): 10, 10, 10
    k5 = [
        _solve(gallery.poisson2d(n), torch.ones(n * n, dtype=torch.float64), cycle="K")[1].iterations
        for n in (64, 128, 256)
    ]
    assert max(k5) <= 1.3 * k5[0], k5


@pytest.mark.parametrize("device", DEVICES)
def test_kcycle_gmg_and_batched_multirhs(device):
    # geometric multigrid: the same cycle code; a batch of three scaled matrices, four right-hand sides
    A0 = gallery.poisson2d(48, device=device)
    scale = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, device=device).unsqueeze(-1)
    A = SparseTensor._make(A0.values * scale, A0.pattern)
    b = torch.randn(3, A0.shape[0], 4, dtype=torch.float64, device=device)
    ref = torch.linalg.solve(A.to_dense(), b)
    for pc in ("gmg", "amg"):
        x, info = _solve(A, b, pc=pc, cycle="K", max_coarse=20)
        assert info.converged and info.iterations <= 15, (pc, info.iterations)
        torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-7)


def _convection_diffusion(n, wind=20.0):
    """Upwind 5-point convection-diffusion on an n x n grid (nonsymmetric, M-matrix)."""
    h = 1.0 / (n + 1)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n)) / h**2
    C = sp.diags([-1.0, 1.0], [-1, 0], shape=(n, n)) * (wind / h)
    eye = sp.identity(n)
    return SparseTensor.from_scipy((sp.kron(eye, T + C) + sp.kron(T, eye)).tocsr())


def test_kcycle_nonsymmetric_runs_flexible_gmres():
    # a non-Hermitian matrix: the coarse Krylov steps are GCR, and GMRES runs flexible with the
    # variable preconditioner (right-preconditioned GMRES would re-apply it to the basis)
    A = _convection_diffusion(48)
    b = torch.randn(A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = _spsolve(A, b)
    for method in ("gmres", "fgmres"):
        x, info = _solve(A, b, method=method, cycle="K", max_coarse=20)
        assert info.converged, (method, info)
        err = np.linalg.norm(x.numpy() - ref) / np.linalg.norm(ref)
        assert err < 1e-6, (method, err)
    M = make_preconditioner(A, "amg", cycle="K", max_coarse=20)
    assert M.variable and M.hermitian is False
    A2 = gallery.poisson2d(16)
    with pytest.raises(ValueError, match="minres needs a fixed"):
        _solve(A2, torch.ones(A2.shape[0], dtype=torch.float64), method="minres", cycle="K", max_coarse=20)


def test_variable_only_for_k():
    A = gallery.poisson2d(32)
    for c, var in (("V", False), ("W", False), ("K", True)):
        M = make_preconditioner(A, "amg", cycle=c, max_coarse=20)
        assert M.variable is var and M.cycle == c
        assert f"{c}-cycle" in M.describe()
        assert M.flexible() is M  # a named cycle is what runs


def test_auto_cycle_is_k_only_under_flexible_krylov_methods_on_cpu():
    # cycle='auto': AMG-CG / GMRES on the CPU run the K-cycle (fewer iterations: the V-cycle's
    # count is the reference); MINRES and BiCGStab, which need a fixed preconditioner, the V-cycle
    A = _p1_square(96)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    ref = _spsolve(A, b)
    its = {}
    for method in ("cg", "gmres", "minres", "bicgstab"):
        x, info = _solve(A, b, method=method, max_coarse=50)
        assert info.converged, (method, info)
        assert np.linalg.norm(x.numpy() - ref) / np.linalg.norm(ref) < 1e-6
        cyc = "K" if method in ("cg", "gmres") else "V"
        assert f"({cyc}-cycle" in info.notes[-1], (method, info.notes)
        its[method] = info.iterations
    _, v = _solve(A, b, method="cg", max_coarse=50, cycle="V")
    assert its["cg"] < v.iterations, (its, v.iterations)
    M = make_preconditioner(A, "amg", max_coarse=50)
    K = M.flexible()
    assert M.cycle == "V" and not M.variable and K.cycle == "K" and K.variable and K.levels is M.levels
    assert M.flexible() is K  # made once
    # a distributed solve (a reducing inner product) keeps the fixed cycle: a rank owning no rows
    # holds no multigrid, and every rank must take the same CG steps
    C = A.pattern.csr(A.values)
    res = krylov.cg(
        lambda v: (C @ v[0]).unsqueeze(0), b.reshape(1, -1, 1), precond=M, dot=krylov.ReducedDot(lambda t: t)
    )
    assert bool(res.converged.all()) and M.ran is None
    assert int(res.iterations.max()) == v.iterations
    G = make_preconditioner(gallery.poisson2d(32), "gmg")
    assert G.flexible() is G and G.cycle == "V"  # GMG: the V-cycle (the K-cycle not measured to win)


@pytest.mark.parametrize("bad", ["F", "k", "v-cycle", 2, None])
def test_bad_cycle_is_a_clear_error(bad):
    A = gallery.poisson2d(16)
    for pc in ("amg", "gmg"):
        with pytest.raises(ValueError, match=r"cycle must be one of \['K', 'V', 'W', 'auto'\], got"):
            make_preconditioner(A, pc, cycle=bad)
    with pytest.raises(ValueError, match="cycle must be one of"):
        sla.precond.AMG(cycle=bad)
    with pytest.raises(ValueError, match="cycle must be one of"):
        _solve(A, torch.ones(A.shape[0], dtype=torch.float64), cycle=bad)


def test_gpu_arithmetic_and_level_cutoff_on_cpu(monkeypatch):
    # the GPU's K-cycle (both Krylov steps always: no host look) on the CPU, and K_MIN_ROWS: with
    # the cutoff above every coarse level the K-cycle is the V-cycle, to rounding
    from sla.solvers.precond import multigrid

    A = _p1_square(96)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    ref = _spsolve(A, b)
    monkeypatch.setattr(multigrid, "K_SKIP_DEVICES", ())
    x, info = _solve(A, b, cycle="K", max_coarse=50)
    assert info.converged and np.linalg.norm(x.numpy() - ref) / np.linalg.norm(ref) < 1e-6
    _, v = _solve(A, b, cycle="V", max_coarse=50)
    assert info.iterations < v.iterations, (info.iterations, v.iterations)
    monkeypatch.setitem(multigrid.K_MIN_ROWS, "cpu", A.shape[0])
    K = make_preconditioner(A, "amg", cycle="K", max_coarse=50)
    V = make_preconditioner(A, "amg", cycle="V", max_coarse=50)
    r = torch.randn(1, A.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(K(r), V(r), rtol=1e-12, atol=1e-12)


def test_kcycle_complex_hermitian():
    # a magnetic Laplacian (complex Hermitian positive definite): the coarse Krylov steps use the
    # conjugated inner product; the solution against SciPy's
    n, phase = 40, np.exp(0.3j)
    T = sp.diags([-np.conj(phase) * np.ones(n - 1), 2.0 * np.ones(n), -phase * np.ones(n - 1)], [-1, 0, 1])
    L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    S = (sp.kron(sp.identity(n), T) + sp.kron(L, sp.identity(n))).tocsr().astype(np.complex128)
    A = SparseTensor.from_scipy(S)
    b = torch.randn(n * n, dtype=torch.complex128, generator=torch.Generator().manual_seed(5))
    x, info = _solve(A, b, cycle="K", max_coarse=20)
    assert info.converged
    ref = spla.spsolve(S.tocsc(), b.numpy())
    assert np.linalg.norm(x.numpy() - ref) / np.linalg.norm(ref) < 1e-6


def test_fcg_fused_reductions_match_local():
    # the distributed form (one reduction for ||r||^2, (r, z) and (A p, z)) takes the same steps
    A = gallery.poisson2d(20).to_dense()
    b = torch.randn(1, A.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def inner(r):
        return krylov.cg(lambda v: A @ v, r, rtol=0.3, maxiter=4).x

    calls = []

    def reduce(t):
        calls.append(t.numel())
        return t

    local = krylov.fcg(lambda v: A @ v, b, precond=inner, rtol=1e-10)
    fused = krylov.fcg(lambda v: A @ v, b, precond=inner, rtol=1e-10, dot=krylov.ReducedDot(reduce))
    assert torch.equal(local.iterations, fused.iterations) and bool(fused.converged.all())
    torch.testing.assert_close(fused.x, local.x, rtol=1e-9, atol=1e-10)
    assert 6 in calls  # [(r, r), (r, z), (A p, z)] for two columns: one reduction of 3 x 2 sums


def test_auto_k_cycle_starts_at_the_device_row_threshold(monkeypatch):
    """AUTO_FLEXIBLE gives, per device, the fewest rows from which 'auto' runs the K-cycle (CUDA: 4M,
    the measured crossover on an H200); below it the flexible methods keep the V-cycle."""
    from sla.solvers.precond import multigrid

    assert multigrid.AUTO_FLEXIBLE["amg"]["cuda"] == 4_000_000
    A = gallery.poisson2d(40)
    M = make_preconditioner(A, "amg")
    monkeypatch.setitem(multigrid.AUTO_FLEXIBLE, "amg", {"cpu": A.shape[0] + 1})
    assert M.flexible() is M and M.cycle == "V"
    monkeypatch.setitem(multigrid.AUTO_FLEXIBLE, "amg", {"cpu": A.shape[0]})
    assert M.flexible().cycle == "K"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex128])
def test_coarsest_inverse_against_numpy_and_its_singular_fallback(dtype):
    """The coarsest level's dense inverse (NumPy on the host) equals the dense inverse; a singular
    one (a Neumann Laplacian: constants in its null space) falls back to the pseudo-inverse."""
    from sla.pattern import csr_tensor
    from sla.solvers.precond.multigrid import _dense_inverse

    n = 12
    main = torch.full((n,), 2.0, dtype=torch.float64)
    D = (
        torch.diag(main)
        - torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
        - torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    )
    for dense, singular in ((D, False), (D - torch.diag(torch.tensor([1.0] + [0.0] * (n - 2) + [1.0])), True)):
        dense = (dense * (1 + 1j) if dtype.is_complex else dense).to(dtype)
        C = dense.to_sparse_csr()
        C = csr_tensor(C.crow_indices(), C.col_indices(), C.values(), (n, n))
        inv = _dense_inverse(C)
        assert inv.dtype == dtype and inv.shape == (n, n)
        ref = np.linalg.pinv(dense.numpy().astype(np.complex128 if dtype.is_complex else np.float64))
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        assert np.allclose(inv.numpy(), ref, rtol=tol, atol=tol), singular
        if singular:  # the pseudo-inverse: A A+ A = A
            a = dense.double() if not dtype.is_complex else dense.to(torch.complex128)
            torch.testing.assert_close(a @ inv.to(a.dtype) @ a, a, rtol=1e-4, atol=1e-4)
