"""svd / spectral norm / condition number against numpy, with gradchecks."""

import numpy as np
import pytest
import torch
from devices import DEVICES

import sla


def rand_sparse(m, n, density, seed, batch=(), dtype=torch.float64, diag=0.0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(*batch, m, n, generator=g, dtype=torch.float64)
    mask = torch.rand(m, n, generator=g) < density
    if diag:
        mask |= torch.eye(m, n, dtype=torch.bool)
        D = D + diag * torch.eye(m, n, dtype=torch.float64)
    D = (D * mask).to(dtype)
    row, col = torch.nonzero(mask, as_tuple=True)
    return sla.SparseTensor(D[..., row, col], row, col, (*batch, m, n)), D


@pytest.mark.parametrize("method", ["dense", "arpack", "lobpcg"])
def test_svd_vs_numpy(method):
    A, D = rand_sparse(70, 50, 0.15, seed=0)
    U, S, Vt = A.svd(k=4, method=method, tol=1e-12 if method == "lobpcg" else None)
    u, s, vt = np.linalg.svd(D.numpy())
    np.testing.assert_allclose(S.numpy(), s[:4], rtol=1e-10)
    np.testing.assert_allclose((U * S[None]) @ Vt, (u[:, :4] * s[:4]) @ vt[:4], atol=1e-9)
    torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_svd_batched_lobpcg(device):
    A, D = rand_sparse(80, 60, 0.1, seed=1, batch=(3,))
    U, S, Vt = A.to(device).svd(k=2, method="lobpcg")
    assert U.shape == (3, 80, 2) and S.shape == (3, 2) and Vt.shape == (3, 2, 60)
    np.testing.assert_allclose(S.cpu().numpy(), np.linalg.svd(D.numpy(), compute_uv=False)[:, :2], rtol=1e-7)


def test_spectral_norm_and_norm2():
    A, D = rand_sparse(250, 250, 0.02, seed=2, batch=(2,))
    ref = np.linalg.norm(D.numpy(), 2, axis=(-2, -1))
    np.testing.assert_allclose(A.norm(2).numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(sla.spectral_norm(A).numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("method", ["dense", "arpack", "lobpcg"])
def test_condition_number(method):
    A, D = rand_sparse(260, 260, 0.02, seed=3, diag=2.0 if method != "lobpcg" else 6.0)
    cond, info = A.condition_number(method=method, return_info=True)
    ref = np.linalg.cond(D.numpy())
    np.testing.assert_allclose(float(cond), ref, rtol=1e-6 if method == "lobpcg" else 1e-9)
    assert info.method == method and info.notes


def test_condition_number_unconverged_lobpcg_is_reported():
    A, _ = rand_sparse(260, 260, 0.02, seed=3, diag=2.0)  # cond ~ 5e3: A^H A too ill-conditioned
    with pytest.raises(sla.ConvergenceError):
        A.condition_number(method="lobpcg")
    with pytest.warns(sla.ConvergenceWarning):
        _, info = A.condition_number(method="lobpcg", return_info=True, config=sla.SolverConfig(on_failure="warn"))
    assert not info.converged


def test_condition_number_singular_is_inf():
    D = torch.zeros(210, 210, dtype=torch.float64)
    D[:-1, :-1] = torch.eye(209, dtype=torch.float64)
    D[-1, 0] = 1.0
    A = sla.SparseTensor.from_dense(D)
    assert torch.isinf(A.condition_number(method="arpack"))


@pytest.mark.parametrize("method", ["dense", "arpack", "lobpcg"])
def test_gradcheck_svd(method):
    A, _ = rand_sparse(14, 11, 0.4, seed=4)
    v = A.values.clone().requires_grad_()
    kw = dict(k=3, method=method, tol=1e-13 if method == "lobpcg" else None)
    if method == "arpack":
        kw.pop("tol")

    def f(v):
        U, S, Vt = sla.svd(sla.SparseTensor._make(v, A.pattern), **kw)
        return S, U[:, :2] @ Vt[:2, :5]  # invariant to the joint sign of (u_i, v_i)

    assert torch.autograd.gradcheck(f, (v,), atol=1e-6, fast_mode=method != "dense")


def test_gradcheck_condition_number_and_norm():
    A, _ = rand_sparse(12, 12, 0.4, seed=5, diag=3.0)
    v = A.values.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: sla.SparseTensor._make(v, A.pattern).condition_number(), (v,))
    assert torch.autograd.gradcheck(lambda v: sla.SparseTensor._make(v, A.pattern).norm(2), (v,))
    B, _ = rand_sparse(230, 230, 0.02, seed=6, diag=3.0)
    w = B.values.clone().requires_grad_()
    f = lambda w: sla.condition_number(sla.SparseTensor._make(w, B.pattern), method="arpack")
    assert torch.autograd.gradcheck(f, (w,), fast_mode=True)


def test_complex_singular_values_grad():
    A, D = rand_sparse(9, 7, 0.5, seed=7, dtype=torch.complex128)
    S = A.svd(k=2)[1]
    np.testing.assert_allclose(S.numpy(), np.linalg.svd(D.numpy(), compute_uv=False)[:2], rtol=1e-12)
    v = A.values.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: sla.svd(sla.SparseTensor._make(v, A.pattern), k=2)[1], (v,))


def test_validation():
    A, _ = rand_sparse(5, 4, 0.5, seed=8)
    with pytest.raises(ValueError, match="k must be"):
        A.svd(k=0)
    assert A.svd(k=10)[1].shape == (4,)  # clamped to min(m, n), as the seed README's A.svd(k=10) on 3x3
    with pytest.raises(ValueError, match="square"):
        A.condition_number()


@pytest.mark.parametrize("method", ["dense", "arpack", "lobpcg"])
def test_complex_singular_vector_grads_match_torch(method):
    A, D = rand_sparse(12, 9, 0.5, seed=9, dtype=torch.complex128)
    g = torch.Generator().manual_seed(3)
    C = torch.complex(
        torch.randn(12, 9, generator=g, dtype=torch.float64), torch.randn(12, 9, generator=g, dtype=torch.float64)
    )
    w = torch.rand(12, generator=g, dtype=torch.float64)
    k = 3

    def loss(U, S, Vh):  # phase-invariant: u_i v_i^H, |u_i|^2 and the singular values
        P = torch.einsum("ik,kj->ij", U[:, :k] * S[:k], Vh[:k])
        return (P * C).real.sum() + (w[:, None] * U[:, :k].abs() ** 2).sum() + S[:k].sum()

    v = A.values.clone().requires_grad_()
    kw = {"k": k, "method": method}
    if method == "lobpcg":
        kw["tol"] = 1e-13
    loss(*sla.svd(sla.SparseTensor._make(v, A.pattern), **kw)).backward()
    vd = A.values.clone().requires_grad_()
    Dd = torch.zeros(12, 9, dtype=torch.complex128).index_put((A.row, A.col), vd)
    loss(*torch.linalg.svd(Dd, full_matrices=False)).backward()
    torch.testing.assert_close(v.grad, vd.grad, rtol=1e-6, atol=1e-8)
    # a loss that sees the phase of the vectors has no gradient: a clear error (sla fixes the gauge
    # so that sum(u_i) is real; Im(sum(u_i)) moves with the phase)
    with pytest.raises(ValueError, match="phase"):
        sla.svd(sla.SparseTensor._make(A.values.clone().requires_grad_(), A.pattern), k=2)[0].imag.sum().backward()
