"""Second-order gradients: solve (and A @ x) give the right double backward, checked by
gradgradcheck and against dense torch; det, eigsh, svd, nonlinear_solve say clearly that they
cannot, instead of returning gradients without a graph (silently zero second derivatives)."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import sla
from sla.solvers.backends.scipy import has_cholmod

A0 = sla.gallery.poisson2d(3)


def _values(symmetric: bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    d = torch.rand(A0.nnz, generator=g, dtype=torch.float64)
    v = A0.values.clone() + 0.2 * d
    if symmetric:
        v = 0.5 * (v + v[A0.pattern.transpose()[1]])
    return v.to(dtype).requires_grad_()


CASES = [("scipy", "lu", False), ("pytorch", "gmres", False), ("pytorch", "cg", True)]
if has_cholmod():
    CASES.append(("scipy", "cholesky", True))


@pytest.mark.parametrize("backend,method,sym", CASES)
def test_solve_gradgradcheck(backend, method, sym):
    v = _values(sym)
    b = torch.randn(9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    mtype = "spd" if sym else "general"

    perm = A0.pattern.transpose()[1]

    def f(v, b):
        if sym:  # a symmetric parametrisation: finite differences stay in the SPD class
            v = 0.5 * (v + v[perm])
        A = sla.SparseTensor._make(v, A0.pattern)
        return A.solve(b, backend=backend, method=method, matrix_type=mtype, rtol=1e-12)

    tol = 1e-6 if method in ("cg", "gmres") else 1e-8
    assert gradgradcheck(f, (v, b), atol=tol, rtol=1e-4, fast_mode=True)


def test_complex_solve_gradgradcheck():
    v = (_values(False).detach() * (1 + 0.3j)).requires_grad_()
    b = torch.randn(9, dtype=torch.complex128, generator=torch.Generator().manual_seed(2)).requires_grad_()
    assert gradgradcheck(
        lambda v, b: sla.SparseTensor._make(v, A0.pattern).solve(b, method="lu"), (v, b), fast_mode=True
    )


def test_hessian_vector_product_matches_dense_torch():
    v = _values(False)
    b = torch.linspace(-1, 1, 9, dtype=torch.float64)
    dirn = torch.randn(A0.nnz, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def hvp(solve):
        x = solve(v)
        loss = (x**3).sum()
        (g,) = torch.autograd.grad(loss, v, create_graph=True)
        (h,) = torch.autograd.grad((g * dirn).sum(), v)
        return h

    ours = hvp(lambda v: sla.SparseTensor._make(v, A0.pattern).solve(b, method="lu"))
    dense = hvp(
        lambda v: torch.linalg.solve(
            torch.zeros(9, 9, dtype=v.dtype).index_put((A0.row, A0.col), v, accumulate=True), b
        )
    )
    assert float(dense.abs().max()) > 1e-3  # the test sees a non-zero Hessian
    torch.testing.assert_close(ours, dense, rtol=1e-9, atol=1e-12)


def test_spmm_gradgradcheck():
    v = _values(False)
    x = torch.randn(9, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_()
    assert gradgradcheck(lambda v, x: sla.SparseTensor._make(v, A0.pattern) @ x, (v, x))


def test_first_order_still_fine():
    v = _values(False)
    b = torch.randn(9, dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda v, b: sla.SparseTensor._make(v, A0.pattern).solve(b, method="lu"), (v, b))


def _spd():
    return _values(True)


@pytest.mark.parametrize(
    "name,fn",
    [
        ("det", lambda A: A.det()),
        ("eigsh", lambda A: A.eigsh(k=2)[0].sum()),
        ("svd", lambda A: A.svd(k=2)[1].sum()),
    ],
)
def test_unsupported_second_order_raises(name, fn):
    v = _spd()
    A = sla.SparseTensor._make(v, A0.pattern)
    (g,) = torch.autograd.grad(fn(A), v)  # first order works
    assert torch.isfinite(g).all()
    with pytest.raises(RuntimeError, match="second-order gradients"):
        torch.autograd.grad(fn(sla.SparseTensor._make(v, A0.pattern)), v, create_graph=True)


def test_nonlinear_solve_second_order_raises():
    p = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)

    def F(u, p):
        return u**3 + u - p

    u = sla.nonlinear_solve(F, torch.zeros(3, dtype=torch.float64), p, jacobian_fn=None)
    with pytest.raises(RuntimeError, match="second-order gradients"):
        torch.autograd.grad(u.sum(), p, create_graph=True)
