"""The row-blocked Galerkin product ``R A P`` of the AMG setup against dense products."""

import numpy as np
import pytest
import torch
from devices import cuda

import sla
from sla.solvers.precond import spgemm
from sla.solvers.precond.amg import SmoothedAggregation
from sla.solvers.precond.multigrid import Mat
from sla.solvers.precond.spgemm import galerkin


def _mat(D: torch.Tensor) -> Mat:
    return Mat.from_torch(D.to_sparse_csr())


@pytest.mark.parametrize("chunk", [1, 7, 50, None])
def test_galerkin_blocks_match_the_dense_product(chunk):
    g = torch.Generator().manual_seed(0)
    n, nc = 60, 13
    A = torch.rand(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.1)
    P = torch.rand(n, nc, generator=g, dtype=torch.float64) * (torch.rand(n, nc, generator=g) < 0.2)
    R = torch.rand(nc, n, generator=g, dtype=torch.float64) * (torch.rand(nc, n, generator=g) < 0.2)
    R[3] = 0  # an empty row of R: an empty row of the product
    C = galerkin(_mat(R), _mat(A), _mat(P), chunk=chunk)
    assert C.shape == (nc, nc)
    dense = torch.sparse_csr_tensor(C.crow, C.col, C.val, C.shape, check_invariants=False).to_dense()
    torch.testing.assert_close(dense, R @ A @ P, rtol=1e-13, atol=1e-13)
    assert int(C.crow[-1]) == C.col.numel() and bool((C.crow[1:] >= C.crow[:-1]).all())


def test_amg_hierarchy_is_the_same_with_small_blocks(monkeypatch):
    A = sla.gallery.poisson2d(48)
    ref = SmoothedAggregation(A, cycle="V", max_coarse=40)
    monkeypatch.setattr(spgemm, "GALERKIN_CHUNK", 97)
    small = SmoothedAggregation(A, cycle="V", max_coarse=40)
    assert [lv.n for lv in small.levels] == [lv.n for lv in ref.levels] and len(ref.levels) >= 3
    for a, b in zip(ref.levels, small.levels):
        torch.testing.assert_close(a.A.to_dense(), b.A.to_dense(), rtol=1e-12, atol=1e-12)


def test_setup_matrices_hold_int32_indices_and_only_their_values():
    D = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]], dtype=torch.float64)
    C = D.to_sparse_csr()
    M = Mat.from_torch(C @ C)
    assert M.crow.dtype == M.col.dtype == M.row.dtype == torch.int32
    assert M.val._base is None  # not a view of the product (whose int64 indices it would keep alive)
    dense = torch.sparse_csr_tensor(M.crow, M.col, M.val, M.shape, check_invariants=False).to_dense()
    torch.testing.assert_close(dense, D @ D, rtol=0, atol=0)


def _scipy_mat(S) -> Mat:
    S = S.tocsr()
    return Mat(torch.from_numpy(S.indptr), torch.from_numpy(S.indices), torch.from_numpy(S.data), S.shape)


def _to_scipy(M: Mat):
    import scipy.sparse as sp

    return sp.csr_matrix((M.val.numpy(), M.col.numpy(), M.crow.numpy()), shape=M.shape)


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize("right", ["general", "one per row", "at most one per row"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_expand_sort_compress_product_against_scipy(chunk, right, dtype):
    """``spgemm.matmul`` (blocks of ``chunk`` products) against SciPy's product: columns ascending in
    every row, exact zeros (a cancellation) dropped, empty rows kept."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    A = sp.random(40, 30, density=0.15, random_state=rng, dtype=np.float64).astype(dtype)
    if dtype == np.complex128:
        A.data = A.data + 1j * rng.standard_normal(A.nnz)
    A = A.tolil()
    A[7, :] = 0  # an empty row
    A[2, 0], A[2, 1] = 1.0, -1.0  # row 2 of the product: B's rows 0 and 1 cancel in column 5
    A = A.tocsr()
    A.eliminate_zeros()
    if right == "general":
        B = sp.random(30, 20, density=0.2, random_state=rng).tolil()
    else:
        B = sp.lil_matrix((30, 20))
        for i in range(30):
            if right == "one per row" or i % 3:
                B[i, int(rng.integers(20))] = rng.standard_normal()
    B[0, 5], B[1, 5] = 2.0, 2.0
    if right != "general":
        B[0, :], B[1, :] = 0, 0
        B[0, 5], B[1, 5] = 2.0, 2.0
    B = B.tocsr()
    C = spgemm.matmul(_scipy_mat(A), _scipy_mat(B), chunk)
    ref = (A @ B).tocsr()
    ref.eliminate_zeros()
    got = _to_scipy(C)
    assert got.nnz == ref.nnz and abs(got - ref).max() <= 1e-14 * abs(ref).max()
    assert C.val.dtype == torch.from_numpy(ref.data).dtype
    for i in range(C.shape[0]):
        cols = got.indices[got.indptr[i] : got.indptr[i + 1]]
        assert (np.diff(cols) > 0).all()
    assert (got.data != 0).all()


@pytest.mark.parametrize("esc", [True, False])
def test_galerkin_by_either_product_against_scipy(esc, monkeypatch):
    """The Galerkin product by expand-sort-compress (the GPU's) and by torch's product (the CPU's),
    both in small blocks, against SciPy's ``R @ A @ P``; a single-precision P joins in A's precision."""
    import scipy.sparse as sp

    monkeypatch.setattr(spgemm, "ESC_DEVICES", ("cpu",) if esc else ())
    rng = np.random.default_rng(5)
    A = sp.random(80, 80, density=0.08, random_state=rng) + sp.eye(80)
    P = sp.random(80, 17, density=0.2, random_state=rng).tocsr()
    R = P.T.tocsr()
    P32 = _scipy_mat(P)
    P32.val = P32.val.to(torch.float32)
    for chunk in (3, 40, None):
        C = galerkin(_scipy_mat(R), _scipy_mat(A), P32, chunk=chunk)
        assert C.val.dtype == torch.float64
        ref = R @ A @ P.astype(np.float32).astype(np.float64)
        assert abs(_to_scipy(C) - ref).max() <= 1e-13 * abs(ref).max()


@pytest.mark.gpu
@cuda
def test_a_gpu_setup_by_expand_sort_compress_matches_cusparse(monkeypatch):
    """On a GPU the Galerkin products are spgemm.matmul's: every coarse operator equals the one
    cuSPARSE's SpGEMM gives (torch's product, the CPU's path) to rounding, level sizes alike."""
    A = sla.gallery.poisson2d(96, device="cuda")
    esc = SmoothedAggregation(A, cycle="V", max_coarse=40, prolongation="stored")
    monkeypatch.setattr(spgemm, "ESC_DEVICES", ())
    lib = SmoothedAggregation(A, cycle="V", max_coarse=40, prolongation="stored")
    assert [lv.n for lv in esc.levels] == [lv.n for lv in lib.levels] and len(lib.levels) >= 3
    for a, b in zip(lib.levels[1:], esc.levels[1:]):
        torch.testing.assert_close(b.A.to_dense(), a.A.to_dense(), rtol=1e-12, atol=1e-12)
