"""Typed preconditioner choices (sla.precond.AMG, ...), 'auto' with user options, and the
readable policy of sla.solvers.linear.policy."""

import dataclasses

import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import sla
from sla import SolverConfig, gallery
from sla.solvers.linear.policy import choose, explain
from sla.solvers.precond import make_preconditioner


def _dense_of(M, n):
    """The preconditioner as a dense matrix (applied to the identity's columns)."""
    return M(torch.eye(n, dtype=torch.float64).unsqueeze(0))[0]


def _cond(D, A):
    ev = torch.linalg.eigvals(D @ A).real
    return float(ev.max() / ev.min())


@pytest.mark.parametrize("kind", ["amg", "gmg"])
def test_typed_multigrid_options_reach_the_cycle(kind):
    A = gallery.poisson2d(24)
    n = A.shape[0]
    spec = (sla.precond.AMG if kind == "amg" else sla.precond.GMG)(cycle="W", max_coarse=4)
    M = make_preconditioner(A, spec)
    assert M.cycle == "W" and M.levels[-1].n < make_preconditioner(A, kind).levels[-1].n <= 500
    # the same operator as the options given by name ...
    by_name = make_preconditioner(A, kind, cycle="W", max_coarse=4)
    torch.testing.assert_close(_dense_of(M, n), _dense_of(by_name, n), rtol=1e-12, atol=1e-14)
    # ... and a better one than the V-cycle (the W-cycle repeats the coarse correction)
    V = make_preconditioner(A, spec.__class__(cycle="V", max_coarse=4))
    Ad = A.to_dense()
    assert _cond(_dense_of(M, n), Ad) < _cond(_dense_of(V, n), Ad)


def test_typed_choices_in_solve_and_config():
    A = gallery.poisson2d(20)
    b = torch.linspace(-1, 1, A.shape[0], dtype=torch.float64)
    ref = torch.from_numpy(spla.spsolve(A.to_scipy("csc"), b.numpy()))
    x, info = sla.solve(
        A, b, backend="pytorch", method="cg", preconditioner=sla.precond.AMG(cycle="W", max_coarse=8), return_info=True
    )
    torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-8)
    assert info.preconditioner == "amg" and any("W-cycle" in s for s in info.notes)
    with SolverConfig(preconditioner=sla.precond.BlockJacobi(block_size=20)):
        x, info = sla.solve(A, b, backend="pytorch", method="cg", return_info=True)
    assert info.preconditioner == "block_jacobi"
    torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-8)
    x = sla.solve(A, b, backend="pytorch", method="cg", preconditioner=sla.precond.Chebyshev(degree=3))
    torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-8)


def test_typed_choices_are_validated():
    with pytest.raises(ValueError, match="AMG: cycle must be one of"):
        sla.precond.AMG(cycle="F")
    with pytest.raises(TypeError, match="cyle"):
        sla.precond.AMG(cyle="W")
    with pytest.raises(ValueError, match="BlockJacobi: block_size must be a positive integer"):
        sla.precond.BlockJacobi(block_size=0)
    with pytest.raises(ValueError, match="GMG: transfers"):
        sla.precond.GMG(transfers="dense")
    with pytest.raises(TypeError, match="sla.precond object"):
        SolverConfig(preconditioner=3)
    A = gallery.poisson2d(8)
    with pytest.raises(ValueError, match="given both"):
        make_preconditioner(A, sla.precond.AMG(cycle="W"), cycle="V")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sla.precond.AMG().cycle = "W"


def test_auto_preconditioner_honours_user_options():
    A = gallery.poisson2d(100)  # 10,000 unknowns on a recorded grid: 'auto' picks geometric multigrid
    b = torch.ones(A.shape[0], dtype=torch.float64)
    _, plain = sla.solve(A, b, backend="pytorch", method="cg", return_info=True)
    x, info = sla.solve(
        A, b, backend="pytorch", method="cg", options={"max_coarse": 40, "cycle": "W"}, return_info=True
    )
    assert plain.preconditioner == info.preconditioner == "gmg"
    desc = [s for s in info.notes if s.startswith("gmg (")]
    assert desc and "W-cycle" in desc[0] and "W-cycle" not in " ".join(plain.notes)
    coarsest = int(desc[0].split("sizes [")[1].split("]")[0].split(",")[-1])
    assert coarsest <= 40
    ref = torch.from_numpy(spla.spsolve(A.to_scipy("csc"), b.numpy()))
    torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-8)
    # options that the automatic choice does not take are an error, not dropped
    small = gallery.poisson2d(10)
    with pytest.raises(ValueError, match="chose 'jacobi'.*max_coarse"):
        sla.solve(small, torch.ones(100, dtype=torch.float64), backend="pytorch", options={"max_coarse": 40})


def test_policy_explains_its_choice():
    A = gallery.poisson2d(8)
    text = explain(A, backend="pytorch")
    assert text.splitlines() == [
        "matrix type: spd (detected)",
        "auto: pytorch's method for a spd (detected) matrix: cg",
        "auto: jacobi (n = 64 < 10000; cg with a positive real diagonal)",
    ]
    c = choose(A, SolverConfig.resolve())
    _, info = sla.solve(A, torch.ones(64, dtype=A.dtype), return_info=True)
    assert (c.backend, c.method, c.matrix_type) == (info.backend, info.method, "spd")
    assert any(s.startswith(f"auto: {info.backend}/{info.method}") for s in info.notes)
    # a non-symmetric matrix is not sent to CG or MINRES, and the explanation says so
    G = sla.SparseTensor.from_scipy(sp.diags([-1.0, 4.0, -2.0], [-1, 0, 1], shape=(30, 30), format="csr"))
    text = explain(G, backend="pytorch").splitlines()
    assert text[0] == "matrix type: general (detected)" and text[1].endswith(": gmres")
    _, info = sla.solve(A, torch.ones(64, dtype=A.dtype), backend="pytorch", return_info=True)
    assert info.method == "cg" and any("auto: jacobi" in s for s in info.notes)


def test_spectral_info_names_registered_backends():
    A = gallery.poisson2d(12)
    _, info = sla.eigsh(A, k=2, which="SA", method="lobpcg", return_info=True)
    assert info.backend == "pytorch" and info.backend in sla.get_available_backends()


def test_rtol_is_the_name_and_tol_the_seed_alias():
    A = gallery.poisson1d(60)
    ref = torch.linalg.eigvalsh(A.to_dense())[:2]
    lam_r, _ = sla.eigsh(A, k=2, which="SA", method="lobpcg", rtol=1e-10)
    lam_t, _ = sla.eigsh(A, k=2, which="SA", method="lobpcg", tol=1e-10)
    torch.testing.assert_close(lam_r, ref, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(lam_t, ref, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="rtol or its alias tol"):
        sla.eigsh(A, k=2, which="SA", method="lobpcg", rtol=1e-10, tol=1e-6)
    f = torch.tensor([1.0, 2.0], dtype=torch.float64)
    u = sla.nonlinear_solve(lambda u, f: u**3 + u - f, torch.zeros(2, dtype=torch.float64), f, tol=1e-12)
    torch.testing.assert_close(u**3 + u, f, rtol=0, atol=1e-10)
