"""The shared matrix zoo (tests/zoo.py) has the properties its kinds claim, checked by dense torch.linalg."""

import numpy as np
import pytest
import torch
import zoo

DTYPES = [torch.float64, torch.complex128, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", zoo.KINDS)
def test_kinds_have_their_properties(kind, dtype):
    D = zoo.dense(kind, 40, torch.complex128 if dtype.is_complex else torch.float64)
    assert D.dtype == (torch.complex128 if dtype.is_complex else torch.float64)
    hermitian = torch.equal(D, D.mH)
    s = torch.linalg.svdvals(D)
    cond = float(s[0] / s[-1])
    if kind in ("spd", "symmetric", "ill", "singular") or (kind == "csym" and not dtype.is_complex):
        assert hermitian
        ev = torch.linalg.eigvalsh(D)
        lo, hi = float(ev.min()), float(ev.max())
    else:
        assert not hermitian
    if kind in ("spd", "csym") and hermitian:
        assert lo > 1.0 and cond < 100
    if kind == "symmetric":
        assert lo < -1.0 and hi > 1.0 and cond < 1e4
    if kind == "csym" and dtype.is_complex:
        assert torch.equal(D, D.mT) and D.imag.abs().max() > 0.1 and cond < 100
    if kind == "general":
        assert not torch.allclose(D, D.mT) and cond < 100
    if kind == "ill":
        assert lo > 0 and cond > 1e7
    if kind == "singular":
        assert lo > -1e-12 and float((D @ torch.ones(40, dtype=D.dtype)).abs().max()) < 1e-12
        assert float(s[-2] / s[0]) > 1e-3  # the kernel is the constant vector only


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", zoo.KINDS)
def test_torch_and_scipy_views_are_one_matrix(kind, dtype):
    A = zoo.matrix(kind, 24, dtype, seed=3)
    S = zoo.scipy_matrix(kind, 24, dtype, seed=3)
    assert A.dtype == dtype and A.shape == (24, 24)
    np.testing.assert_allclose(S.toarray(), zoo.dense(kind, 24, dtype, seed=3).cpu().numpy(), rtol=1e-7)
    np.testing.assert_allclose(A.to_dense().numpy(), S.toarray(), rtol=1e-6 if dtype == torch.float32 else 0)
    assert torch.equal(zoo.matrix(kind, 24, dtype, seed=3).values, A.values)  # seeded
    assert not torch.equal(zoo.matrix(kind, 24, dtype, seed=4).to_dense(), A.to_dense())


@pytest.mark.parametrize("kind", zoo.KINDS)
def test_batches_share_the_pattern_and_keep_the_kind(kind):
    A = zoo.matrix(kind, 20, torch.complex128, batch=3)
    assert A.shape == (3, 20, 20)
    base = zoo.matrix(kind, 20, torch.complex128)
    assert torch.equal(A.row, base.row) and torch.equal(A.col, base.col)
    D = A.to_dense()
    for i, Di in enumerate(D):
        if kind == "singular":  # rescaled only: still singular
            torch.testing.assert_close(Di, (1 + 0.5 * i) * base.to_dense())
        else:  # rescaled and shifted on the diagonal by a real number: the off-diagonal scales
            off = ~torch.eye(20, dtype=torch.bool)
            torch.testing.assert_close(Di[off], (1 + 0.5 * i) * base.to_dense()[off])
            shift = torch.diagonal(Di) - (1 + 0.5 * i) * torch.diagonal(base.to_dense())
            assert float(shift.imag.abs().max()) == 0 and float(shift.real.std()) < 1e-12
        assert torch.equal(Di, Di.mH) == torch.equal(base.to_dense(), base.to_dense().mH)
    if kind != "singular":
        assert not torch.allclose(D[1], 1.5 * D[0])  # members are not multiples of each other


def test_scipy_solve_reference_per_member():
    A = zoo.matrix("general", 15, batch=2)
    b = torch.randn(2, 15, 3, dtype=torch.float64)
    x = zoo.scipy_solve(A, b)
    torch.testing.assert_close(x, torch.linalg.solve(A.to_dense(), b))
    A0 = zoo.matrix("general", 15)
    torch.testing.assert_close(zoo.scipy_solve(A0, b[0, :, 0]), torch.linalg.solve(A0.to_dense(), b[0, :, 0]))
