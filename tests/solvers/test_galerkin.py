"""The row-blocked Galerkin product ``R A P`` of the AMG setup against dense products."""

import pytest
import torch

import sla
from sla.solvers.precond import multigrid
from sla.solvers.precond.amg import SmoothedAggregation
from sla.solvers.precond.multigrid import Mat, galerkin


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
    monkeypatch.setattr(multigrid, "GALERKIN_CHUNK", 97)
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
