"""The 'auto' policy: graph dimension, reuse of a factorisation, the CUDA 3D rule, explain_solve.

Oracles: the dimension of lattices and meshes is known (1, 2, 3); the choice must agree
with what a solve then runs (``SolveInfo``), and the solution with SciPy's.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import sla
from sla import SolverConfig, gallery
from sla.assembly import CellBasis, ElementP1, assemble, laplace, mass, unit_cube, unit_square
from sla.solvers.linear import policy


def _heat_matrix(n, device="cpu"):
    basis = CellBasis(unit_square(n, dtype=torch.float64, device=device), ElementP1())
    return assemble(mass, basis) + assemble(laplace, basis) * 1e-3


def test_graph_dimension_of_chains_meshes_and_stencils():
    chain = sla.SparseTensor.from_scipy(sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(5000, 5000), format="csr"))
    tets = assemble(laplace, CellBasis(unit_cube(12, dtype=torch.float64), ElementP1("tetra")))
    heat = _heat_matrix(64)
    assert heat.nnz / heat.shape[0] > 6.8  # the rows a '> 6 entries means 3D' rule mistook for 3D
    for A, d in ((chain, 1), (gallery.poisson2d(100), 2), (heat, 2), (gallery.poisson3d(24), 3), (tets, 3)):
        assert abs(policy.graph_dimension(A) - d) < 0.4, (A.shape, d)


def test_a_2d_time_loop_keeps_one_factorisation():
    """2D P1 heat matrix (6.94 entries per row): a direct solve, factored once, reused."""
    A = _heat_matrix(128)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    infos = [sla.solve(A, b * k, return_info=True)[1] for k in (1.0, 2.0, 3.0)]
    assert all(i.method in ("cholesky", "ldlt", "lu") for i in infos)
    assert [bool(i.cached) for i in infos] == [False, True, True]
    x = sla.solve(A, b)
    ref = spla.spsolve(A.to_scipy().tocsc(), b.numpy())
    assert np.allclose(x.numpy(), ref, rtol=1e-10, atol=0)


def test_reused_values_switch_a_large_2d_system_to_its_factorisation():
    A = gallery.poisson2d(240)  # 57,600 unknowns >= CPU_MULTIGRID_MIN, 2D
    assert A.shape[0] >= policy.CPU_MULTIGRID_MIN
    cfg = SolverConfig.resolve()
    first = policy.choose(A, cfg)
    assert (first.backend, first.method) == ("pytorch", "cg") and "2D-like" in first.reasons[0]
    again = policy.choose(A.with_values(A.values.clone()), cfg)  # the same values: a time loop
    assert again.method in ("cholesky", "ldlt", "lu")
    other = policy.choose(A.with_values(A.values * 2), cfg)  # new values: no reuse
    assert other.method == "cg"
    # explain looks without recording
    B = gallery.poisson2d(240)
    for _ in range(2):
        assert "multigrid CG" in sla.explain_solve(B, torch.ones(B.shape[0], dtype=B.dtype))


def test_3d_systems_go_to_multigrid_earlier_than_2d():
    A3 = gallery.poisson3d(24)  # 13,824 unknowns
    A2 = gallery.poisson2d(118)  # 13,924 unknowns
    c3, c2 = policy.choose(A3, SolverConfig.resolve()), policy.choose(A2, SolverConfig.resolve())
    assert c3.method == "cg" and "3D-like" in c3.reasons[0]
    assert c2.method in ("cholesky", "ldlt", "lu")


def test_explain_solve_validates_and_matches_the_solve():
    A = gallery.poisson2d(10)
    with pytest.raises(ValueError, match="b"):
        sla.explain_solve(A, torch.ones(7, dtype=A.dtype))
    with pytest.raises(TypeError, match="SparseTensor"):
        sla.explain_solve(A.to_dense())
    text = sla.explain_solve(A, backend="pytorch", preconditioner="auto")
    _, info = sla.solve(A, torch.ones(100, dtype=A.dtype), backend="pytorch", return_info=True)
    assert f": {info.method}" in text and f"auto: {info.preconditioner}" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_cuda_3d_poisson_goes_to_amg_cg_not_a_factorisation():
    A = assemble(laplace, CellBasis(unit_cube(48, dtype=torch.float64, device="cuda"), ElementP1("tetra")))
    n = A.shape[0]
    from sla.assembly import apply_dirichlet, boundary_dofs

    A0, b0 = apply_dirichlet(
        A,
        torch.ones(n, dtype=A.dtype, device="cuda"),
        boundary_dofs(CellBasis(unit_cube(48, dtype=torch.float64, device="cuda"), ElementP1("tetra"))),
    )
    assert n >= policy.CUDA_MULTIGRID_MIN_3D
    x, info = sla.solve(A0, b0, return_info=True)
    assert (info.backend, info.method, info.preconditioner) == ("pytorch", "cg", "amg")
    r = b0 - A0 @ x
    assert float(r.norm() / b0.norm()) < 1e-7


# ------------------------------------ symmetric methods on perturbed symmetric matrices
def test_gradcheck_of_eigsh_and_named_cg_on_an_spd_matrix():
    """gradcheck perturbs one stored entry: A is then unsymmetric by ~1e-7.  eigsh works on
    (A + A^H) / 2 and a named cg accepts an A symmetric within SYMMETRY_RTOL, so both pass."""
    A = gallery.poisson2d(4, 5)  # distinct eigenvalues (a derivative exists)
    v = A.values.clone().requires_grad_()
    b = torch.ones(20, dtype=torch.float64)

    def mat(v):
        return sla.SparseTensor(v, A.row, A.col, A.shape)

    assert torch.autograd.gradcheck(lambda v: mat(v).eigsh(k=2, which="SA", return_eigenvectors=False), (v,))
    assert torch.autograd.gradcheck(lambda v: (mat(v).eigsh(k=2, which="SA")[1] ** 2)[:6], (v,))
    assert torch.autograd.gradcheck(
        lambda v: mat(v).solve(b, method="cg", preconditioner="jacobi", rtol=1e-13)[:6], (v,)
    )
    # beyond the tolerance (up to SYMMETRY_WARN): cg still runs as asked, with a warning
    w = A.values.clone()
    w[1] *= 1.01
    with pytest.warns(UserWarning, match="method='cg' on a matrix that is not symmetric.*gmres"):
        sla.solve(mat(w), b, method="cg", on_failure="ignore")
    assert policy.asymmetry(mat(w)) == pytest.approx(0.01 * 1 / 4, rel=1e-12)
    w[1] = 0.0  # far from symmetric (asymmetry 1/4 > SYMMETRY_WARN): refused as before
    with pytest.raises(ValueError, match="needs a matrix of type"):
        sla.solve(mat(w), b, method="cg")


def test_eigsh_of_an_unsymmetric_matrix_is_that_of_its_symmetric_part():
    rng = np.random.default_rng(3)
    M = sp.random(40, 40, density=0.15, random_state=rng, format="csr") + 4 * sp.eye(40)
    A = sla.SparseTensor.from_scipy(M.tocsr())
    with pytest.warns(UserWarning, match="symmetric part"):
        lam = A.eigsh(k=3, which="LA", return_eigenvectors=False)
    S = (M + M.T).toarray() / 2
    np.testing.assert_allclose(lam.numpy(), np.sort(np.linalg.eigvalsh(S))[-3:], rtol=1e-10)
