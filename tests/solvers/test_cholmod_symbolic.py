"""CHOLMOD's symbolic analysis is done once per pattern and reused by every later set of values.

The oracle: a fresh ``sksparse.cholmod.cholesky`` of the same matrix (the reused analysis must give
the same factor, bit for bit) and SciPy's ``spsolve``.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import sla
from sla.solvers.backends.scipy import has_cholmod

pytestmark = pytest.mark.skipif(not has_cholmod(), reason="needs scikit-sparse (CHOLMOD): the 'cholmod' extra")


def _laplacian(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """COO of the 2D 5-point Laplacian on an n x n grid (the values are replaced by the tests)."""
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (n, n))
    A = sp.kronsum(T, T).tocoo()
    return torch.from_numpy(A.row).long(), torch.from_numpy(A.col).long(), torch.from_numpy(A.data)


def _spd_values(row, col, base, seed: int) -> torch.Tensor:
    """Values of a random SPD matrix on the pattern: symmetric positive off-diagonal weights w,
    diagonal = row sums of |w| + 1 (strictly diagonally dominant)."""
    g = torch.Generator().manual_seed(seed)
    n = int(row.max()) + 1
    w = torch.rand(n, n, generator=g, dtype=torch.float64)
    w = w + w.T
    off = torch.where(row != col, -w[row, col], torch.zeros_like(base))
    diag = torch.zeros(n, dtype=torch.float64).index_add_(0, row, off.abs()) + 1.0
    return torch.where(row == col, diag[row], off)


def _count_analyses(monkeypatch) -> list:
    from sksparse import cholmod

    calls = []
    real = cholmod.analyze

    def counting(*a, **k):
        calls.append(k.get("mode"))
        return real(*a, **k)

    monkeypatch.setattr(cholmod, "analyze", counting)
    return calls


def test_new_values_reuse_the_analysis_and_match_a_fresh_factorisation(monkeypatch):
    from sksparse import cholmod

    calls = _count_analyses(monkeypatch)
    row, col, base = _laplacian(12)
    n = int(row.max()) + 1
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    A0 = sla.SparseTensor(_spd_values(row, col, base, 0), row, col, (n, n))
    for seed, A in (
        (1, A0.with_values(_spd_values(row, col, base, 1))),  # same pattern object
        (2, sla.SparseTensor(_spd_values(row, col, base, 2), row, col, (n, n))),  # rebuilt from the same indices
        (3, A0.with_values(_spd_values(row, col, base, 3))),
    ):
        assert A.pattern is A0.pattern
        x = sla.solve(A, b, backend="scipy", method="cholesky")
        S = A.to_scipy("csc")
        fresh = cholmod.cholesky(S)(b.numpy())  # its own analysis (not through the cached one)
        np.testing.assert_array_equal(x.numpy(), fresh)  # the same ordering: the same factor, bit for bit
        np.testing.assert_allclose(x.numpy(), spla.spsolve(S, b.numpy()), rtol=1e-12, atol=1e-14)
    x0 = sla.solve(A0, b, backend="scipy", method="cholesky")
    np.testing.assert_allclose(x0.numpy(), spla.spsolve(A0.to_scipy("csc"), b.numpy()), rtol=1e-12, atol=1e-14)
    # four factorisations, one analysis (the fresh reference factorisations analyse inside cholesky())
    assert calls == ["auto"]


def test_an_earlier_factor_stays_valid_for_its_adjoint(monkeypatch):
    """The backward solve of the first matrix runs after the second was factored on the same
    analysis: it must still use the first matrix's factor (the gradient vs dense torch)."""
    row, col, base = _laplacian(6)
    n = int(row.max()) + 1
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v1 = _spd_values(row, col, base, 4).requires_grad_(True)
    A1 = sla.SparseTensor(v1, row, col, (n, n))
    x1 = sla.solve(A1, b, backend="scipy", method="cholesky")
    A2 = A1.with_values(_spd_values(row, col, base, 5))
    sla.solve(A2, b, backend="scipy", method="cholesky")
    (g,) = torch.autograd.grad((x1**2).sum(), v1)

    v1d = v1.detach().clone().requires_grad_(True)
    dense = torch.zeros(n, n, dtype=torch.float64).index_put((row, col), v1d, accumulate=True)
    (gd,) = torch.autograd.grad((torch.linalg.solve(dense, b) ** 2).sum(), v1d)
    torch.testing.assert_close(g, gd, rtol=1e-10, atol=1e-12)


def test_ldlt_and_cholesky_keep_separate_analyses_and_indefinite_values_still_fail(monkeypatch):
    calls = _count_analyses(monkeypatch)
    row, col, base = _laplacian(5)
    n = int(row.max()) + 1
    b = torch.ones(n, dtype=torch.float64)
    spd = _spd_values(row, col, base, 6)
    A = sla.SparseTensor(spd, row, col, (n, n))
    sla.solve(A, b, backend="scipy", method="cholesky")
    # symmetric indefinite values on the same pattern: LDL^T (simplicial analysis) solves it ...
    indef = torch.where(row == col, spd - 2.5 * spd[row == col].mean(), spd)
    B = A.with_values(indef)
    x = sla.solve(B, b, backend="scipy", method="ldlt", matrix_type="symmetric")
    np.testing.assert_allclose(x.numpy(), spla.spsolve(B.to_scipy("csc"), b.numpy()), rtol=1e-10)
    sla.solve(B.with_values(indef * 2), b, backend="scipy", method="ldlt", matrix_type="symmetric")
    # ... and Cholesky on the cached analysis still refuses it (no silently wrong factor)
    with pytest.raises(sla.NotPositiveDefiniteError):
        sla.solve(B, b, backend="scipy", method="cholesky", matrix_type="spd")
    assert sorted(calls) == ["auto", "simplicial"]
