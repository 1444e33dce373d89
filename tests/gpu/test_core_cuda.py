"""The storage layer on CUDA: every op gives the CPU answer (run on the GPU machine)."""

import pytest
import torch

from sla import SparseTensor, gallery

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)"),
]

DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


def rand(m, n, dtype, batch=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(m, n, generator=g) < 0.3
    row, col = torch.nonzero(mask, as_tuple=True)
    v = torch.randn(*batch, row.numel(), generator=g, dtype=torch.float64)
    if dtype.is_complex:
        v = torch.complex(v, torch.randn(*batch, row.numel(), generator=g, dtype=torch.float64))
    return SparseTensor(v.to(dtype), row, col, (*batch, m, n))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ops_match_cpu(dtype):
    A, B = rand(20, 20, dtype, seed=1), rand(20, 20, dtype, seed=2)
    Ac, Bc = A.cuda(), B.cuda()
    assert Ac.pattern.device.type == "cuda"
    x = torch.randn(20, 3, dtype=dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype in (torch.float32, torch.complex64) else {}
    torch.testing.assert_close((Ac @ x.cuda()).cpu(), A @ x, **tol)
    torch.testing.assert_close((Ac @ Bc).to_dense().cpu(), (A @ B).to_dense(), **tol)
    torch.testing.assert_close((Ac + Bc).to_dense().cpu(), (A + B).to_dense(), **tol)
    torch.testing.assert_close((Ac * Bc).to_dense().cpu(), (A * B).to_dense(), **tol)
    torch.testing.assert_close(Ac.H().to_dense().cpu(), A.H().to_dense(), **tol)
    torch.testing.assert_close(Ac.sum(0).cpu(), A.sum(0), **tol)
    torch.testing.assert_close(Ac.norm(1).cpu(), A.norm(1), **tol)
    torch.testing.assert_close(Ac.diagonal().cpu(), A.diagonal(), **tol)


def test_structure_detection_on_cuda():
    A = gallery.poisson2d(30, device="cuda")
    assert A.detect_matrix_type() == "spd"
    B = rand(15, 15, torch.float64).cuda()
    assert B.detect_matrix_type() == "general"


def test_batched_matmul_gradcheck_cuda():
    A = rand(6, 6, torch.float64, batch=(2,)).cuda()
    v = A.values.clone().requires_grad_()
    x = torch.randn(2, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, x: A.with_values(v) @ x, (v, x))
