"""Geometric multigrid setup on stencil arrays: the Galerkin product one axis at a time, the CSR by
one scatter, and the host looks it needs.  Oracle: the dense ``P^T A P`` with ``P`` the Kronecker
product of 1-D linear interpolations written out here, and SciPy's CSR of the same stencil."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from gridref import coarse_points, hat_interpolation

from sla import SparseTensor, gallery
from sla.solvers.precond import grid_stencil, make_preconditioner
from sla.solvers.precond.gmg import GeometricMultigrid


def _random_stencil_matrix(dims, seed=0, full=True) -> sp.csr_matrix:
    """A nonsymmetric matrix with the full compact stencil (3^d offsets), variable coefficients."""
    rng = np.random.default_rng(seed)
    d = len(dims)
    n = int(np.prod(dims))
    idx = np.arange(n).reshape(dims)
    rows, cols, vals = [], [], []
    offs = list(itertools.product((-1, 0, 1), repeat=d)) if full else [(0,) * d]
    for o in offs:
        src = tuple(slice(max(0, -k), dims[a] - max(0, k)) for a, k in enumerate(o))
        dst = tuple(slice(max(0, k), dims[a] - max(0, -k)) for a, k in enumerate(o))
        r, c = idx[src].ravel(), idx[dst].ravel()
        v = rng.uniform(-1, 0, r.size) if any(o) else rng.uniform(3**d, 3**d + 1, r.size)
        rows.append(r), cols.append(c), vals.append(v)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


@pytest.mark.parametrize("dims", [(9, 10), (8, 7), (16, 5), (6, 7, 9)])
@pytest.mark.parametrize("chunk", [None, 1])
def test_galerkin_one_axis_at_a_time_equals_dense_ptap(dims, chunk, monkeypatch):
    """Every coarse level of a nonsymmetric full-stencil matrix is P^T A P (1e-12), with the
    Galerkin blocks one grid row each (chunk=1) or as large as allowed."""
    if chunk is not None:
        monkeypatch.setattr(grid_stencil, "GALERKIN_CHUNK", {"cpu": chunk, "cuda": chunk})
    S = _random_stencil_matrix(dims)
    A = SparseTensor.from_scipy(S)
    A.pattern.cache["grid"] = dims
    M = GeometricMultigrid(A, max_coarse=1)
    ref = S.toarray()
    level = tuple(dims)
    xs = [list(range(n)) for n in dims]  # each level's points on the fine axes
    for lv in M.levels[1:]:
        axes = [a for a, n in enumerate(level) if n >= 4]
        P = np.ones((1, 1))
        for a, n in enumerate(level):
            P = np.kron(P, hat_interpolation(xs[a], -1, dims[a]) if a in axes else np.eye(n))
            xs[a] = coarse_points(xs[a]) if a in axes else xs[a]
        ref = P.T @ ref @ P
        level = tuple(n // 2 if a in axes else n for a, n in enumerate(level))
        got = lv.A.to_dense().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * abs(ref).max())
        # the CSR holds no entry off the grid: its pattern is within the dense product's
        assert np.all((got != 0) <= (np.abs(ref) > 0))
    assert len(M.levels) >= 2


@pytest.mark.parametrize("dims", [(5, 4), (6, 7, 5)])
@pytest.mark.parametrize("group", [1, 7, None])
def test_stencil_to_csr_matches_scipy_and_sorts_columns(dims, group, monkeypatch):
    """Exactly SciPy's CSR of the same matrix, whether the offsets are scattered one at a time, in
    groups or all together (``CSR_GROUP``)."""
    if group is not None:
        monkeypatch.setattr(grid_stencil, "CSR_GROUP", group)
    S = _random_stencil_matrix(dims, seed=3)
    A = SparseTensor.from_scipy(S)
    offs, grids = grid_stencil.read_stencil(A.pattern, A.values, dims)
    C = grid_stencil.stencil_to_csr(offs, grids, dims)
    assert C.col_indices().dtype == torch.int32
    np.testing.assert_array_equal(C.crow_indices().numpy(), S.indptr)
    np.testing.assert_array_equal(C.col_indices().numpy(), S.indices)
    np.testing.assert_allclose(C.values().numpy(), S.data, rtol=0, atol=0)


def test_bounds_and_zero_pivots_are_checked_with_one_host_look():
    """The level bounds equal the Gershgorin bound of each level's CSR, and a zero pivot on a
    coarse level is still refused with the multigrid's message."""
    A = gallery.poisson2d(40)
    M = make_preconditioner(A, "gmg", max_coarse=10)
    for lv in M.levels:
        D = lv.A.to_dense()
        d = torch.diagonal(D)
        assert lv.hi == pytest.approx(float((D.abs().sum(1) / d.abs()).max()), rel=1e-14)
    S = sp.diags([np.r_[np.ones(7), 0.0]], [0]).tocsr()  # a zero on the diagonal of the fine level
    B = SparseTensor.from_scipy(S)
    B.pattern.cache["grid"] = (8,)
    with pytest.raises(ValueError, match="non-zero diagonal"):
        GeometricMultigrid(B, max_coarse=1)
