"""Direct solves refine a solution whose residual is far above rounding (an LU without pivoting
on a tiny pivot, as cuDSS's LU on a saddle point), forward and adjoint, against dense torch."""

import pytest
import torch

import sla

NO_PIVOTING = dict(permc_spec="NATURAL", diag_pivot_thresh=0.0)


def _tiny_pivot(e: float) -> torch.Tensor:
    return torch.tensor([[e, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)


@pytest.mark.parametrize("e", [1e-10, 1e-13])
def test_unpivoted_lu_is_refined_to_rounding(e):
    D = _tiny_pivot(e)
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x, info = sla.SparseTensor.from_dense(D).solve(
        b, backend="scipy", method="lu", options=NO_PIVOTING, return_info=True
    )
    assert info.converged and info.residual < 1e-14
    assert any("iterative refinement" in n for n in info.notes)
    torch.testing.assert_close(x, torch.linalg.solve(D, b), rtol=1e-12, atol=1e-14)


def test_refined_gradients_match_dense():
    D = _tiny_pivot(1e-12)
    A = sla.SparseTensor.from_dense(D)
    v = A.values.clone().requires_grad_()
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    x = A.with_values(v).solve(b, backend="scipy", method="lu", options=NO_PIVOTING)
    (x @ w).backward()
    Dd = D.clone().requires_grad_()
    bd = b.detach().clone().requires_grad_()
    (torch.linalg.solve(Dd, bd) @ w).backward()
    torch.testing.assert_close(b.grad, bd.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(v.grad, Dd.grad[A.row, A.col], rtol=1e-10, atol=1e-12)


def test_a_stable_factorisation_is_not_refined():
    A = sla.gallery.poisson2d(12)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    _, info = A.solve(b, backend="scipy", method="lu", return_info=True)
    assert not any("iterative refinement" in n for n in info.notes)


def test_single_precision_refines_with_double_residuals():
    D = _tiny_pivot(1e-6).float()
    b = torch.tensor([1.0, 2.0, 3.0])
    x, info = sla.SparseTensor.from_dense(D).solve(
        b, backend="scipy", method="lu", options=NO_PIVOTING, return_info=True
    )
    assert x.dtype == torch.float32 and info.converged
    assert any("residuals in double" in n for n in info.notes)
    exact = torch.linalg.solve(D.double(), b.double())
    assert float((x.double() - exact).abs().max() / exact.abs().max()) < 1e-6  # float32 rounding
