"""det / slogdet through sparse LU, against dense torch.linalg, with gradcheck."""

import numpy as np
import pytest
import torch
from devices import DEVICES

import sla
from sla.gallery import poisson2d


def _random_sparse(n, density=0.3, dtype=torch.float64, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=g) < density
    mask |= torch.eye(n, dtype=torch.bool)
    vals = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        vals = torch.complex(vals, torch.randn(*batch, n, n, generator=g, dtype=torch.float64))
    D = (vals * mask).to(dtype)
    row, col = torch.nonzero(mask, as_tuple=True)
    return sla.SparseTensor(D[..., row, col], row, col, (*batch, n, n)), D


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex128])
def test_matches_dense(dtype):
    A, D = _random_sparse(12, dtype=dtype)
    sign, logabs = A.slogdet()
    ref = torch.linalg.slogdet(D.to(torch.complex128 if dtype.is_complex else torch.float64))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert sign.dtype == dtype and logabs.dtype == dtype.to_real()
    torch.testing.assert_close(sign.to(ref.sign.dtype), ref.sign, rtol=tol, atol=tol)
    torch.testing.assert_close(logabs.double(), ref.logabsdet, rtol=tol, atol=tol)
    torch.testing.assert_close(A.det().to(ref.sign.dtype), torch.linalg.det(D.to(ref.sign.dtype)), rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_and_functions(device):
    A, D = _random_sparse(9, batch=(2, 3))
    A, D = A.to(device), D.to(device)
    torch.testing.assert_close(sla.det(A), torch.linalg.det(D))
    s, l = sla.slogdet(A)
    ref = torch.linalg.slogdet(D)
    assert s.shape == (2, 3)
    torch.testing.assert_close(s, ref.sign)
    torch.testing.assert_close(l, ref.logabsdet)


def test_laplacian_overflow_safe():
    # det of the 5-point Laplacian on 40x40 is ~1e900: det overflows, slogdet does not.
    n = 40
    A = poisson2d(n)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    h = 1.0 / (n + 1)
    lam = 4 - 2 * torch.cos(i * np.pi * h)[:, None] - 2 * torch.cos(i * np.pi * h)[None, :]
    sign, logabs = A.slogdet()
    assert float(sign) == 1.0
    torch.testing.assert_close(logabs, torch.log(lam).sum(), rtol=1e-12, atol=0)
    assert torch.isinf(A.det())


def test_singular_matrix():
    D = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    A = sla.SparseTensor.from_dense(D)
    s, l = A.slogdet()
    assert float(s) == 0.0 and float(l) == float("-inf")
    assert float(A.det()) == 0.0
    v = A.values.clone().requires_grad_()
    with pytest.raises(sla.SingularMatrixError):
        sla.slogdet(sla.SparseTensor._make(v, A.pattern))[1].backward()


def test_validation():
    A = sla.SparseTensor(torch.ones(2, dtype=torch.float64), torch.tensor([0, 1]), torch.tensor([0, 2]), (2, 3))
    with pytest.raises(ValueError, match="square"):
        A.det()
    with pytest.raises(TypeError, match="SparseTensor"):
        sla.det(torch.eye(3))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck(dtype):
    A, _ = _random_sparse(7, dtype=dtype, seed=3)
    v = A.values.clone().requires_grad_()
    p = A.pattern

    def as_real(t):
        return torch.view_as_real(t) if t.is_complex() else t

    assert torch.autograd.gradcheck(lambda v: as_real(sla.det(sla.SparseTensor._make(v, p))), (v,))
    assert torch.autograd.gradcheck(lambda v: sla.slogdet(sla.SparseTensor._make(v, p))[1], (v,))
    if dtype.is_complex:
        assert torch.autograd.gradcheck(lambda v: as_real(sla.slogdet(sla.SparseTensor._make(v, p))[0]), (v,))


def test_gradient_is_inverse_transpose_batched():
    A, D = _random_sparse(30, density=0.1, batch=(2,), seed=5)
    v = A.values.clone().requires_grad_()
    sla.slogdet(sla.SparseTensor._make(v, A.pattern))[1].sum().backward()
    ref = torch.linalg.inv(D).transpose(-1, -2)[..., A.row, A.col]
    torch.testing.assert_close(v.grad, ref, rtol=1e-9, atol=1e-11)


def test_block_solves_cover_every_column(monkeypatch):
    # force several column blocks so the blocking logic is exercised
    import importlib

    det_mod = importlib.import_module("sla.solvers.spectral.det")

    monkeypatch.setattr(det_mod, "_BLOCK_BYTES", 8 * 7 * 3)
    A, D = _random_sparse(7, seed=2)
    v = A.values.clone().requires_grad_()
    sla.slogdet(sla.SparseTensor._make(v, A.pattern))[1].backward()
    torch.testing.assert_close(v.grad, torch.linalg.inv(D).T[A.row, A.col])


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_on_device(device):
    A, D = _random_sparse(10, seed=9)
    v = A.values.clone().to(device).requires_grad_()
    sla.det(sla.SparseTensor._make(v, A.pattern.to(device))).backward()
    ref = torch.linalg.det(D) * torch.linalg.inv(D).T[A.row, A.col]
    assert v.grad.device.type == device
    torch.testing.assert_close(v.grad.cpu(), ref)


def _spd(n, batch=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    A = poisson2d(n)
    _, perm = A.pattern.transpose()
    w = A.values + 0.5 * torch.rand(*batch, A.nnz, generator=g, dtype=torch.float64)
    return sla.SparseTensor._make((w + w[..., perm]) / 2, A.pattern)


def test_spd_path_takahashi_gradient_batched():
    pytest.importorskip("sksparse.cholmod")
    A = _spd(9, batch=(2,))
    D = A.to_dense()
    v = A.values.clone().requires_grad_()
    s, l = sla.slogdet(sla.SparseTensor._make(v, A.pattern))
    ref = torch.linalg.slogdet(D)
    torch.testing.assert_close(s, ref.sign)
    torch.testing.assert_close(l, ref.logabsdet)
    l.sum().backward()
    torch.testing.assert_close(v.grad, torch.linalg.inv(D).transpose(-1, -2)[..., A.row, A.col], rtol=1e-10, atol=1e-12)
    from sla.solvers.spectral.det import _factors, _SPDFactor

    assert all(isinstance(f, _SPDFactor) for f in _factors(A))


def test_spd_gradcheck_mixes_both_paths():
    # perturbations break symmetry (SuperLU path); the analytic gradient comes from CHOLMOD + Takahashi
    A = _spd(4, seed=1)
    v = A.values.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: sla.slogdet(sla.SparseTensor._make(v, A.pattern))[1], (v,))


def test_symmetric_indefinite_falls_back_to_lu():
    D = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 0.5], [0.0, 0.5, 3.0]], dtype=torch.float64)  # positive diagonal
    A = sla.SparseTensor.from_dense(D)
    s, l = A.slogdet()
    ref = torch.linalg.slogdet(D)
    assert float(s) == float(ref.sign) == -1.0
    torch.testing.assert_close(l, ref.logabsdet)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_lu_selected_inverse_on_structurally_symmetric_pattern(dtype):
    # convection-diffusion-like: symmetric pattern, nonsymmetric values -> SuperLU + Takahashi
    A = poisson2d(7)
    g = torch.Generator().manual_seed(3)
    v = A.values * (1 + 0.3 * torch.rand(A.nnz, generator=g, dtype=torch.float64))
    v = v.to(dtype) * (1 + 0.2j if dtype.is_complex else 1)
    A = sla.SparseTensor._make(v, A.pattern)
    from sla.solvers.spectral.det import _Factor, _factors

    facs = _factors(A)
    assert isinstance(facs[0], _Factor) and facs[0]._selected_inverse() is not None
    w = v.clone().requires_grad_()
    sla.slogdet(sla.SparseTensor._make(w, A.pattern))[1].backward()
    D = A.to_dense()
    ref = torch.linalg.inv(D).T[A.row, A.col]
    torch.testing.assert_close(w.grad, ref.conj() if dtype.is_complex else ref, rtol=1e-10, atol=1e-12)


def test_unsymmetric_pattern_uses_column_solves():
    A, D = _random_sparse(15, density=0.2, seed=11)
    assert not A.pattern.is_structurally_symmetric
    from sla.solvers.spectral.det import _factors

    assert _factors(A)[0]._selected_inverse() is None
