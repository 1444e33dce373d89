"""Row-blocked CSR: matrices with more entries than int32 indices (or cuSPARSE) can take.

The real threshold is 2**31 - 1 entries; these tests lower ``sla.blocked.BLOCK_NNZ`` so a
small matrix takes the same path, and compare with the plain torch CSR product.
"""

import pytest
import torch

import sla
from sla import blocked
from sla.products import csr_matmul, csr_residual


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(blocked, "BLOCK_NNZ", 997)  # blocks of a few hundred rows, not aligned to anything


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_products_match_plain_csr(small_blocks, device):
    A = sla.gallery.poisson2d(40).to(device)  # 1,600 rows, 7,840 entries: 8+ blocks
    C = A.pattern.csr(A.values)
    assert isinstance(C, blocked.RowBlockedCSR) and len(C.blocks) >= 8
    assert all(blk.crow_indices().dtype == torch.int32 for _, _, blk in C.blocks)
    assert sum(blk.values().numel() for _, _, blk in C.blocks) == A.pattern.nnz
    ref = torch.sparse_csr_tensor(A.pattern.crow, A.pattern.ccol, A.values, A.shape, check_invariants=False)
    g = torch.Generator().manual_seed(0)
    for K in (1, 3):
        x = torch.randn(A.shape[1], K, generator=g, dtype=torch.float64).to(device)
        b = torch.randn(A.shape[0], K, generator=g, dtype=torch.float64).to(device)
        torch.testing.assert_close(csr_matmul(C, x), (ref @ x), rtol=1e-14, atol=1e-13)
        torch.testing.assert_close(csr_residual(b, C, x), b - ref @ x, rtol=1e-14, atol=1e-13)
    # the block structure is kept on the pattern: a second call builds no new index arrays
    C2 = A.pattern.csr(A.values * 2)
    assert C2.blocks[0][2].col_indices().data_ptr() == C.blocks[0][2].col_indices().data_ptr()


def test_one_row_longer_than_a_block(monkeypatch):
    monkeypatch.setattr(blocked, "BLOCK_NNZ", 3)
    row = torch.tensor([0, 0, 0, 0, 0, 1, 2])
    col = torch.tensor([0, 1, 2, 3, 4, 1, 2])
    A = sla.SparseTensor(torch.arange(1.0, 8.0, dtype=torch.float64), row, col, (5, 5))
    x = torch.arange(5.0, dtype=torch.float64).unsqueeze(1)
    C = A.pattern.csr(A.values)
    torch.testing.assert_close(csr_matmul(C, x), A.to_dense() @ x)


@pytest.mark.parametrize("precond", ["gmg", "amg", "jacobi"])
def test_solves_through_blocked_operators(small_blocks, precond):
    """The fine-level operator of the multigrid cycle, and CG's product, both blocked: same answer."""
    A = sla.gallery.poisson2d(48)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    x = A.solve(b, backend="pytorch", method="cg", preconditioner=precond, rtol=1e-10)
    x_ref = torch.linalg.solve(A.to_dense(), b)
    torch.testing.assert_close(x, x_ref, rtol=1e-7, atol=1e-8)
    assert isinstance(A.pattern.csr(A.values), blocked.RowBlockedCSR)


def test_csr_tensor_quiets_the_cuda_invariant_warning(monkeypatch):
    """torch 2.11 on CUDA warns once that invariant checks are 'implicitly disabled' at the first
    CSR built on the device: sla's one helper quiets it (emulated here on the CPU)."""
    import warnings

    real = torch.sparse_csr_tensor

    def warns(*args, **kw):
        warnings.warn("Sparse invariant checks are implicitly disabled. (emulated)", UserWarning, stacklevel=2)
        return real(*args, **kw)

    monkeypatch.setattr(torch, "sparse_csr_tensor", warns)
    monkeypatch.setattr(sla.pattern, "_csr_quiet_devices", set())
    crow, col, val = torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.ones(2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C = sla.pattern.csr_tensor(crow, col, val, (2, 2))
    assert C.layout == torch.sparse_csr
