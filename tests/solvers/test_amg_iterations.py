"""Smoothed-aggregation AMG against its reference and its spectral bounds.

Oracles: pyamg's ``smoothed_aggregation_solver(...).solve(accel='cg')`` on the same matrix
(iterations), dense eigenvalues of ``D^{-1} A`` (the Chebyshev bound must not fall short of
the spectrum), SciPy's ``P^T A P`` (the coarse operators), and a fresh interpreter with
warnings as errors (torch's CSR "beta" warning).
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import zoo
from devices import DEVICES

import sla
from sla import SparseTensor, gallery
from sla.solvers.precond import make_preconditioner
from sla.solvers.precond.amg import DROP_RTOL
from sla.solvers.precond.chebyshev import LANCZOS_SAFETY, capped, gershgorin_bound, lanczos_bound, spectral_bound


def _p1_square(n):
    """P1 Laplacian on ``unit_square(n)`` (right triangles: many couplings cancel), Dirichlet rows."""
    from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, unit_square

    basis = CellBasis(unit_square(n, dtype=torch.float64), ElementP1())
    A = assemble(laplace, basis)
    return apply_dirichlet(A, torch.ones(A.shape[0], dtype=A.dtype), boundary_dofs(basis))[0]


def _sla_iterations(A, **options):
    b = torch.ones(A.shape[0], dtype=A.dtype, device=A.device)
    _, info = sla.solve(
        A, b, backend="pytorch", method="cg", preconditioner="amg", options=options, rtol=1e-8, return_info=True
    )
    return info.iterations


def _pyamg_iterations(A):
    pyamg = pytest.importorskip("pyamg", reason="the reference iterations come from pyamg (pip install pyamg)")
    S = A.to_scipy().tocsr()
    res = []
    ml = pyamg.smoothed_aggregation_solver(S, max_coarse=500)
    ml.solve(np.ones(S.shape[0]), tol=1e-8, accel="cg", residuals=res, maxiter=500)
    return len(res) - 1


def _csr_to_scipy(C):
    C = C.cpu()
    return sp.csr_matrix(
        (C.values().numpy(), C.col_indices().numpy().astype(np.int64), C.crow_indices().numpy().astype(np.int64)),
        shape=tuple(C.shape),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cycle", ["V", "W"])
def test_amg_iterations_within_1_3x_of_pyamg_on_p1_triangles(cycle, device):
    """40K P1 triangles: sla 17 (V) / 13 (W) CG iterations, pyamg 15 (measured); before the
    cancelled couplings were dropped and Gershgorin gave way to Lanczos, V needed 1.6x pyamg's.
    The same torch code runs on a GPU (the aggregation is pyamg's on the host either way)."""
    A = _p1_square(200)
    ref = _pyamg_iterations(A)
    A = A.to(device)
    its = _sla_iterations(A, cycle=cycle)
    assert its <= 1.3 * ref, (its, ref)
    # the same hierarchy as pyamg's: level sizes of standard aggregation on the SciPy-product operators
    pyamg = pytest.importorskip("pyamg")
    ml = pyamg.smoothed_aggregation_solver(A.cpu().to_scipy().tocsr(), max_coarse=500)
    M = make_preconditioner(A, "amg", cycle=cycle)
    assert [lv.n for lv in M.levels] == [lv.A.shape[0] for lv in ml.levels]


def test_amg_iteration_growth_bounded_under_refinement():
    """Two refinements (16x the unknowns): 5-point 10 -> 11 V-cycle iterations (the issue's
    1.3x target); P1 triangles 11 -> 17, where pyamg's own grow 10 -> 15."""
    p5 = [_sla_iterations(gallery.poisson2d(n), cycle="V") for n in (64, 256)]
    assert p5[1] <= 1.3 * p5[0], p5
    tri = [_sla_iterations(_p1_square(n), cycle="V") for n in (50, 200)]
    ref = [_pyamg_iterations(_p1_square(n)) for n in (50, 200)]
    assert tri[1] / tri[0] <= 1.15 * ref[1] / ref[0], (tri, ref)


def test_coarse_operators_are_the_galerkin_products_without_cancelled_couplings():
    A = _p1_square(60)
    M = make_preconditioner(A, "amg", max_coarse=20)
    assert len(M.levels) >= 3
    for fine, coarse in zip(M.levels[:-1], M.levels[1:]):
        Af, P, R, Ac = (_csr_to_scipy(t) for t in (fine.A, fine.P, fine.R, coarse.A))
        ref = (P.T @ Af @ P).toarray()
        np.testing.assert_allclose(R.toarray(), P.T.toarray(), atol=1e-15)
        np.testing.assert_allclose(Ac.toarray(), ref, atol=1e-12 * np.abs(ref).max())
        d = np.abs(Ac.diagonal())
        rows = np.repeat(np.arange(Ac.shape[0]), np.diff(Ac.indptr))
        off = rows != Ac.indices
        # every stored coupling is a real one (none cancelled to rounding), and none was lost
        assert (np.abs(Ac.data[off]) > DROP_RTOL * np.sqrt(d[rows[off]] * d[Ac.indices[off]])).all()
        assert Ac.nnz == (np.abs(ref) > DROP_RTOL * np.abs(ref).max()).sum()
        assert (P.data != 0).all()


def _rho(D):
    d = torch.diagonal(D)
    return float(torch.linalg.eigvals(D / d.unsqueeze(-1)).abs().max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("kind", zoo.KINDS)
def test_spectral_bound_covers_the_spectrum_on_the_zoo(kind, dtype):
    """The Chebyshev interval's top is never below rho(D^{-1} A) (dense eigenvalues): an estimate
    short of the spectrum would make the smoother amplify the modes beyond it."""
    A = zoo.matrix(kind, n=40, dtype=dtype, batch=2)
    vals = A.values.detach()
    d = A.diagonal().reshape(2, -1)
    herm = kind in ("spd", "symmetric", "ill", "singular") or (kind == "csym" and not dtype.is_complex)
    mv = lambda x: (A @ x.unsqueeze(-1)).squeeze(-1)
    hi = spectral_bound(mv, A.pattern.row, vals, d, herm)
    g = gershgorin_bound(A.pattern.row, vals, d)
    for i in range(2):
        rho = _rho(A.to_dense()[i])
        assert float(hi[i]) >= rho * (1 - 1e-12), (kind, float(hi[i]), rho)
        assert float(hi[i]) <= float(g[i]) * (1 + 1e-12)
        if kind in ("spd", "ill", "singular"):  # Lanczos applies: within the safety factor of rho
            assert float(hi[i]) <= LANCZOS_SAFETY * rho * (1 + 1e-6), (kind, float(hi[i]), rho)


def test_spectral_bound_falls_back_to_gershgorin():
    A = zoo.matrix("spd", n=30)
    vals = A.values.detach().unsqueeze(0)
    d = A.diagonal().unsqueeze(0)
    g = gershgorin_bound(A.pattern.row, vals, d)
    mv = lambda x: (A @ x.unsqueeze(-1)).squeeze(-1)
    # not Hermitian, or a non-positive diagonal: Lanczos does not apply
    assert torch.equal(spectral_bound(mv, A.pattern.row, vals, d, hermitian=False), g)
    assert torch.equal(spectral_bound(mv, A.pattern.row, vals, -d, hermitian=True), g)
    # a failed estimate (NaN from the products, or not positive) is replaced by Gershgorin
    nan_mv = lambda x: torch.full_like(x, float("nan"))
    assert torch.equal(spectral_bound(nan_mv, A.pattern.row, vals, d, hermitian=True), g)
    assert torch.equal(capped(torch.tensor([0.0, float("inf")], dtype=g.dtype), g.expand(2)), g.expand(2))
    # Lanczos itself: the largest Ritz value approaches rho from below
    rho = _rho(A.to_dense())
    theta = float(lanczos_bound(mv, d, steps=30, safety=1.0)[0])
    assert rho * (1 - 1e-8) <= theta <= rho * (1 + 1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_every_amg_level_bound_covers_its_spectrum(device):
    """On the coarse levels Gershgorin overestimates rho(D^{-1} A) by 1.2-1.5x; the Lanczos bound
    is tighter and still above it (SciPy's eigsh of the symmetrically scaled level operator)."""
    for A in (_p1_square(80), gallery.poisson2d(90)):
        M = make_preconditioner(A.to(device), "amg", max_coarse=20)
        for lv in M.levels:
            S = _csr_to_scipy(lv.A)
            s = sp.diags(1 / np.sqrt(S.diagonal()))
            K = s @ S @ s
            if S.shape[0] > 200:
                rho = float(spla.eigsh(K, k=1, which="LA", return_eigenvectors=False, tol=1e-10)[0])
            else:
                rho = float(np.linalg.eigvalsh(K.toarray()).max())
            assert rho <= lv.hi <= LANCZOS_SAFETY * rho * 1.001, (lv.n, lv.hi, rho)


def test_plain_cpu_multigrid_solve_emits_no_warning():
    """torch warns once per process that CSR support is "beta"; the library's CSR constructions
    go through one helper that keeps it quiet.  A fresh interpreter with warnings as errors
    (the warning comes once per process): the multigrid's own CSR constructor first, then plain
    CPU solves with preconditioner='amg' and 'gmg'."""
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import torch, sla\n"
        "from sla import gallery\n"
        "from sla.solvers.precond.multigrid import Mat\n"
        "Mat(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.ones(2, dtype=torch.float64), (2, 2)).csr64()\n"
        "A = gallery.poisson2d(40)\n"
        "for pc in ('amg', 'gmg'):\n"
        "    x = sla.solve(A, torch.ones(A.shape[0], dtype=A.dtype), backend='pytorch', method='cg', preconditioner=pc)\n"
        "    assert float((A @ x - 1).abs().max()) < 1e-6\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("first", ["csr32", "gmg stencil", "setup matrix"])
def test_multigrid_csr_constructors_go_through_the_quiet_helper(first, monkeypatch):
    """In-process: torch's once-per-process warning emulated (the first ``sparse_csr_tensor`` call
    warns, as torch's does); each constructor, made first, must not let it through."""
    import sla.pattern
    from sla.solvers.precond import gmg, multigrid

    real = torch.sparse_csr_tensor
    calls = []

    def once(*args, **kw):
        calls.append(1)
        if len(calls) == 1:
            warnings.warn("Sparse CSR tensor support is in beta state (emulated)", UserWarning, stacklevel=2)
        return real(*args, **kw)

    monkeypatch.setattr(torch, "sparse_csr_tensor", once)
    monkeypatch.setattr(sla.pattern, "_csr_quiet_devices", set())
    crow, col, val = torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.ones(2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if first == "csr32":
            multigrid.csr32(crow, col, val, (2, 2))
        elif first == "gmg stencil":
            gmg._stencil_to_csr([(0,)], torch.ones(1, 5, dtype=torch.float64), (5,))
        else:
            M = multigrid.Mat(
                torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2]), torch.ones(3, dtype=torch.float64), (3, 3)
            )
            M.csr64()  # a setup matrix as torch CSR (the Lanczos bound's operator)
    assert calls  # the constructor did build a CSR


def test_dropping_cancelled_couplings_keeps_a_symmetric_hierarchy():
    """Real symmetric A: every coarse operator stays exactly symmetric after the drop (the
    cycle is then a valid CG preconditioner), checked on a matrix without cancellation too."""
    for A in (_p1_square(40), SparseTensor.from_scipy(sp.csr_matrix(zoo.scipy_matrix("spd", n=600)))):
        M = make_preconditioner(A, "amg", max_coarse=10)
        for lv in M.levels[1:]:
            S = _csr_to_scipy(lv.A)
            assert abs(S - S.T).max() <= 1e-13 * abs(S).max()
