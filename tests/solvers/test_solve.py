"""sla.solve: every SciPy method on the matrix zoo (tests/zoo.py) against dense torch.linalg.solve; adjoint gradients."""

import pytest
import scipy.sparse as sp
import torch
import zoo

import sla
from sla import SolverConfig, SparseTensor, gallery
from sla.solvers.backends.scipy import has_cholmod

needs_cholmod = pytest.mark.skipif(
    not has_cholmod(),
    reason="CHOLMOD (scikit-sparse) not installed: apt-get install libsuitesparse-dev; pip install sla[cholmod]",
)


CASES = [
    ("lu", "general"),
    ("lu", "symmetric"),
    ("lu", "spd"),
    ("cg", "spd"),
    ("bicgstab", "general"),
    ("gmres", "general"),
    ("minres", "symmetric"),
    pytest.param("cholesky", "spd", marks=needs_cholmod),
    pytest.param("ldlt", "symmetric", marks=needs_cholmod),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128, torch.float32])
@pytest.mark.parametrize("method,kind", CASES)
def test_methods_match_dense(method, kind, dtype):
    A = zoo.matrix(kind, dtype=dtype)
    b = torch.randn(A.shape[0], 3, dtype=dtype)
    ref = torch.linalg.solve(
        A.to_dense().double() if not dtype.is_complex else A.to_dense().cdouble(),
        b.to(torch.complex128 if dtype.is_complex else torch.float64),
    )
    single = dtype in (torch.float32, torch.complex64)
    x, info = A.solve(b, backend="scipy", method=method, rtol=1e-5 if single else 1e-11, return_info=True)
    assert info.backend == "scipy" and info.method == method and info.converged
    err = (x.to(ref.dtype) - ref).norm() / ref.norm()
    assert err < (1e-3 if single else 1e-8)
    assert info.residual < (1e-4 if single else 1e-10)


@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
@pytest.mark.parametrize("multi", [False, True])
def test_batched_and_multi_rhs(shape, multi):
    n = 20
    base = zoo.matrix("general", n)
    vals = torch.stack(
        [base.values * (1 + 0.1 * i) for i in range(max(1, int(torch.tensor(shape).prod()) if shape else 1))]
    )
    vals = vals.reshape(*shape, base.nnz)
    A = SparseTensor(vals, base.row, base.col, (*shape, n, n))
    b = torch.randn(*shape, n, *((4,) if multi else ()), dtype=torch.float64)
    x = A.solve(b)
    D = A.to_dense()
    ref = torch.linalg.solve(D, b if multi else b.unsqueeze(-1))
    ref = ref if multi else ref.squeeze(-1)
    assert x.shape == b.shape
    torch.testing.assert_close(x, ref, rtol=1e-9, atol=1e-10)


def test_unbatched_matrix_with_many_rhs_batches():
    A = zoo.matrix("spd", 15)
    b = torch.randn(2, 3, 15, 4, dtype=torch.float64)
    x = A.solve(b)
    torch.testing.assert_close(x, torch.linalg.solve(A.to_dense(), b))


def test_broadcast_vector_over_matrix_batch():
    base = zoo.matrix("general", 10)
    A = SparseTensor(torch.stack([base.values, 2 * base.values]), base.row, base.col, (2, 10, 10))
    b = torch.randn(10, dtype=torch.float64)
    x = A.solve(b)
    torch.testing.assert_close(x[1], x[0] / 2)


# -------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    "method,kind",
    [("lu", "general"), ("cg", "spd"), ("gmres", "general"), pytest.param("cholesky", "spd", marks=needs_cholmod)],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck_solve(method, kind, dtype):
    A = zoo.matrix(kind, 8, dtype=dtype, seed=1)
    v = A.values.clone().requires_grad_()
    b = torch.randn(8, 2, dtype=dtype, requires_grad=True)

    mtype = kind if not dtype.is_complex else {"spd": "hpd"}.get(kind, kind)
    _, perm = A.pattern.transpose()

    def f(v, b):
        if kind == "spd":  # perturb symmetrically: Cholesky / CG read a Hermitian matrix
            v = (v + v[perm].conj()) / 2
        return A.with_values(v).solve(b, backend="scipy", method=method, rtol=1e-13, matrix_type=mtype)

    assert torch.autograd.gradcheck(f, (v, b), atol=1e-6)


def test_gradcheck_batched():
    base = zoo.matrix("general", 6, seed=2)
    v = torch.stack([base.values, 1.5 * base.values]).requires_grad_()
    b = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    f = lambda v, b: base.with_values(v).solve(b)
    assert torch.autograd.gradcheck(f, (v, b))


def test_gradient_matches_dense_solve():
    A = zoo.matrix("general", 12, seed=3)
    v = A.values.clone().requires_grad_()
    b = torch.randn(12, dtype=torch.float64, requires_grad=True)
    x = SparseTensor(v, A.row, A.col, A.shape).solve(b)
    (x**2).sum().backward()
    vd = A.values.clone().requires_grad_()
    bd = b.detach().clone().requires_grad_()
    xd = torch.linalg.solve(A.with_values(vd).to_dense(), bd)
    (xd**2).sum().backward()
    torch.testing.assert_close(v.grad, vd.grad)
    torch.testing.assert_close(b.grad, bd.grad)


def test_backward_reuses_factorisation():
    # the state is cached on the pattern per values version: the second solve and the
    # backward pass find it instead of factoring again
    A = zoo.matrix("general", 30)
    v = A.values.clone().requires_grad_()
    At = A.with_values(v)
    b = torch.randn(30, dtype=torch.float64)
    x, info = At.solve(b, method="lu", return_info=True)
    assert not info.cached
    x.sum().backward()
    _, info2 = At.solve(b, method="lu", return_info=True)
    assert info2.cached  # same values version: setup reused
    assert v.grad is not None


def _graph_nodes(t):
    seen, todo = set(), [t.grad_fn]
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        todo += [g for g, _ in f.next_functions]
    return [type(f).__name__ for f in seen]


def test_graph_size_independent_of_iterations():
    A = gallery.poisson2d(12)
    v = A.values.clone().requires_grad_()
    b = torch.ones(144, dtype=torch.float64)
    sizes = []
    for rtol in (1e-1, 1e-12):
        x, info = SparseTensor._make(v, A.pattern).solve(b, method="cg", rtol=rtol, return_info=True)
        nodes = _graph_nodes(x)
        assert "LinearSolveBackward" in nodes
        sizes.append((len(nodes), info.iterations))
    assert sizes[0][0] == sizes[1][0] <= 5 and sizes[1][1] > 2 * sizes[0][1]


# ------------------------------------------------------------- LU handle
def test_lu_factorization_reuse_and_gradient():
    A = zoo.matrix("general", 25)
    v = A.values.clone().requires_grad_()
    lu = A.with_values(v).lu()
    assert isinstance(lu, sla.LUFactorization) and lu.method == "lu"
    b1, b2 = torch.randn(25, dtype=torch.float64), torch.randn(25, 2, dtype=torch.float64)
    D = A.to_dense()
    torch.testing.assert_close(lu.solve(b1), torch.linalg.solve(D, b1))
    x2 = lu.solve(b2)
    torch.testing.assert_close(x2, torch.linalg.solve(D, b2))
    x2.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()


# ------------------------------------------------------------- config
def test_solver_config_context_and_precedence():
    A = zoo.matrix("spd", 20)
    b = torch.randn(20, dtype=torch.float64)
    with SolverConfig(method="cg", rtol=1e-12):
        _, info = A.solve(b, return_info=True)
        assert info.method == "cg"
        _, info = A.solve(b, method="lu", return_info=True)  # explicit argument wins
        assert info.method == "lu"
        with SolverConfig(method="gmres"):
            assert A.solve(b, return_info=True)[1].method == "gmres"
        assert A.solve(b, return_info=True)[1].method == "cg"
    assert A.solve(b, return_info=True)[1].method in ("lu", "cholesky")
    cfg = SolverConfig(method="bicgstab")
    assert sla.solve(A, b, config=cfg, return_info=True)[1].method == "bicgstab"


def test_check_every_validation():
    A = gallery.poisson2d(20)
    b = torch.ones(400, dtype=torch.float64)
    x, info = A.solve(b, backend="pytorch", method="cg", preconditioner="gmg", check_every="adaptive", return_info=True)
    assert info.converged
    for bad in ("sometimes", 0, True, 2.5):
        with pytest.raises(ValueError, match="check_every must be a positive integer or .adaptive., got"):
            SolverConfig(check_every=bad)


def test_solve_info_fields():
    A = gallery.poisson2d(20)
    b = torch.ones(400, dtype=torch.float64)
    x, info = A.solve(b, method="cg", rtol=1e-10, return_info=True)
    assert info.iterations > 5 and info.converged
    r = (b - A @ x).norm() / b.norm()
    assert abs(info.residual - float(r)) < 1e-14
    assert info.setup_time >= 0 and info.solve_time > 0


def test_spsolve_and_spsolve_coo():
    A = zoo.matrix("general", 10)
    b = torch.randn(10, dtype=torch.float64)
    ref = torch.linalg.solve(A.to_dense(), b)
    torch.testing.assert_close(sla.spsolve(A.values, A.row, A.col, (10, 10), b), ref)
    torch.testing.assert_close(sla.spsolve_coo(A.to_torch("coo"), b), ref)
    torch.testing.assert_close(sla.spsolve_coo(A.to_torch("csr"), b), ref)


def test_auto_selection_visible_in_info():
    A = gallery.poisson2d(10)
    _, info = A.solve(torch.ones(100, dtype=torch.float64), return_info=True)
    assert info.backend == "scipy"
    assert info.matrix_type == "spd"
    assert info.method == ("cholesky" if has_cholmod() else "lu")
    assert sla.select_backend("cpu", 100, torch.float64, "general") == ("scipy", "lu")
    assert "scipy" in sla.get_available_backends()
    assert "lu" in sla.get_backend_methods("scipy")
    assert sla.is_scipy_available()


@needs_cholmod
def test_cholesky_falls_back_for_indefinite_with_positive_diagonal():
    # symmetric, positive diagonal, but indefinite: the optimistic guess says spd
    D = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    A = SparseTensor.from_dense(D)
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x, info = A.solve(b, return_info=True)
    torch.testing.assert_close(x, torch.linalg.solve(D, b))
    assert info.method == "lu" and any("fell back" in n for n in info.notes)
    with pytest.raises(sla.NotPositiveDefiniteError):
        A.solve(b, method="cholesky")


# ------------------------------------------------------------- failures
def test_singular_matrix_raises():
    D = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    A = SparseTensor.from_dense(D)
    with pytest.raises(sla.SingularMatrixError):
        A.solve(torch.ones(2, dtype=torch.float64), method="lu")
    # numerically singular at size: the zoo's graph Laplacian (A @ 1 = 0), LU and the 'auto' choice
    L = zoo.matrix("singular")
    for method in ("lu", None):
        with pytest.raises(sla.SingularMatrixError):
            L.solve(torch.ones(L.shape[0], dtype=torch.float64), method=method)
    # structurally singular: an empty row
    B = SparseTensor(torch.ones(2, dtype=torch.float64), torch.tensor([0, 0]), torch.tensor([0, 1]), (2, 2))
    with pytest.raises(sla.SingularMatrixError):
        B.solve(torch.ones(2, dtype=torch.float64))


def test_non_convergence_policy():
    A = gallery.poisson2d(30)
    b = torch.ones(900, dtype=torch.float64)
    with pytest.raises(sla.ConvergenceError) as exc:
        A.solve(b, method="cg", maxiter=3)
    assert exc.value.info.iterations == 3 and not exc.value.info.converged
    with pytest.warns(sla.ConvergenceWarning):
        A.solve(b, method="cg", maxiter=3, on_failure="warn")
    x, info = A.solve(b, method="cg", maxiter=3, on_failure="ignore", return_info=True)
    assert not info.converged and info.residual > 1e-3


BAD = [
    (
        "non-square",
        lambda A, b: SparseTensor.from_dense(torch.ones(3, 2, dtype=torch.float64)).solve(b[:3]),
        ValueError,
        "square",
    ),
    ("b length", lambda A, b: A.solve(b[:-1]), ValueError, "shape"),
    ("b batch", lambda A, b: A.solve(torch.ones(2, 3, 5, dtype=torch.float64)), ValueError, "shape"),
    (
        "nan values",
        lambda A, b: SparseTensor(A.values * float("nan"), A.row, A.col, A.shape).solve(b),
        ValueError,
        "NaN",
    ),
    ("inf b", lambda A, b: A.solve(b * float("inf")), ValueError, "NaN or Inf"),
    ("mixed dtype", lambda A, b: A.solve(b.float()), TypeError, "dtype"),
    ("b not tensor", lambda A, b: A.solve([1.0] * 5), TypeError, "torch.Tensor"),
    ("unknown backend", lambda A, b: A.solve(b, backend="nope"), ValueError, "known backends"),
    ("unknown method", lambda A, b: A.solve(b, method="nope"), ValueError, "unknown method"),
    ("method lacking", lambda A, b: A.solve(b, backend="scipy", method="fgmres"), ValueError, "offers"),
    ("bad option", lambda A, b: A.solve(b, tolerance=1e-3), TypeError, "unknown solver option"),
    ("bad on_failure", lambda A, b: A.solve(b, on_failure="explode"), ValueError, "on_failure"),
    (
        "cg on general",
        lambda A, b: (
            A + A.T() * 0.5 + SparseTensor.from_dense(torch.triu(torch.ones(5, 5, dtype=torch.float64)))
        ).solve(b, method="cg"),
        ValueError,
        "needs a matrix of type",
    ),
    ("A not sparse", lambda A, b: sla.solve(torch.eye(5), b), TypeError, "SparseTensor"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[c[0] for c in BAD])
def test_bad_input(name, call, exc, match):
    A = gallery.poisson1d(5)
    b = torch.ones(5, dtype=torch.float64)
    with pytest.raises(exc, match=match):
        call(A, b)


def test_backend_not_installed_names_the_extra(monkeypatch):
    from sla.solvers.linear import registry

    fake = registry.Backend(
        name="fake", devices=("cpu",), methods={}, check=lambda: "package 'fakepkg' missing", extra="fake"
    )
    monkeypatch.setitem(registry._MODULES, "fake", "fake.module")
    monkeypatch.setitem(registry._loaded, "fake", fake)
    with pytest.raises(sla.BackendUnavailableError, match=r"sla-torch\[fake\]"):
        gallery.poisson1d(4).solve(torch.ones(4, dtype=torch.float64), backend="fake", method="lu")
    text = sla.show_backends(file=open("/dev/null", "w"))
    assert "fake" in text and "fakepkg" in text


def test_mixed_devices_rejected():
    A = gallery.poisson1d(4)
    b = torch.ones(4, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="is on meta but A is on cpu"):
        A.solve(b)


def test_from_scipy_solution_matches_scipy():
    import scipy.sparse.linalg as spla

    S = sp.random(50, 50, density=0.1, random_state=1, format="csr") + sp.eye(50) * 5
    A = SparseTensor.from_scipy(S)
    b = torch.randn(50, dtype=torch.float64)
    torch.testing.assert_close(A.solve(b), torch.from_numpy(spla.spsolve(S.tocsc(), b.numpy())))


def test_cache_never_serves_stale_factors():
    A = zoo.matrix("general", 12, seed=7)
    b = torch.randn(12, dtype=torch.float64)
    x1 = A.solve(b)
    A.values.data.mul_(2.0)  # .data bypasses the version counter
    x2, info = A.solve(b, return_info=True)
    assert not info.cached
    torch.testing.assert_close(x2, x1 / 2)
    same = A.with_values(A.values.clone())  # equal values, new tensor: reused
    assert same.solve(b, return_info=True)[1].cached


def test_auto_on_cpu_takes_multigrid_only_for_certified_definite_large_systems():
    from sla.solvers.linear.policy import CPU_MULTIGRID_MIN

    n = 232  # 53,824 unknowns: above the crossover
    assert n * n >= CPU_MULTIGRID_MIN
    L = gallery.poisson2d(n)
    b = torch.ones(n * n, dtype=torch.float64)
    x, info = L.solve(b, return_info=True)
    assert (info.backend, info.method, info.preconditioner) == ("pytorch", "cg", "gmg")
    assert info.converged and info.residual <= 1e-8 and any("multigrid CG" in s for s in info.notes)
    ref = sla.SparseTensor._make(L.values, L.pattern).solve(b, method="cholesky")
    assert float((x - ref).norm() / ref.norm()) < 1e-6
    # Hermitian with a positive diagonal but indefinite: not certified, keeps its direct solver
    I = sla.SparseTensor.from_scipy(sp.identity(n * n, format="csr"))
    H = L - 0.05 * I
    x, info = H.solve(b, return_info=True)
    assert info.backend == "scipy" and info.residual < 1e-10
    # small systems stay direct; denser rows (3D stencils: factorisations fill in faster) switch earlier
    assert gallery.poisson2d(100).solve(torch.ones(10_000, dtype=torch.float64), return_info=True)[1].backend == "scipy"
    P3 = gallery.poisson3d(24)  # 13,824 unknowns, 7 entries per row
    x3, info = P3.solve(torch.ones(24**3, dtype=torch.float64), return_info=True)
    assert info.backend == "pytorch" and info.converged
