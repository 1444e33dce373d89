"""eigsh / eigs against closed forms, SciPy ARPACK and numpy, with gradchecks."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from devices import DEVICES

import sla
from sla.gallery import poisson2d


def laplacian_eigenvalues(n):
    i = np.arange(1, n + 1)
    h = 1.0 / (n + 1)
    return np.sort((4 - 2 * np.cos(i * np.pi * h)[:, None] - 2 * np.cos(i * np.pi * h)[None, :]).ravel())


def sym_random(n, density, seed, batch=()):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    mask = torch.rand(n, n, generator=g) < density
    mask = mask | mask.T | torch.eye(n, dtype=torch.bool)
    D = (M + M.transpose(-1, -2)) * mask
    row, col = torch.nonzero(mask, as_tuple=True)
    return sla.SparseTensor(D[..., row, col], row, col, (*batch, n, n)), D


@pytest.mark.parametrize("method", ["arpack", "lobpcg", "dense"])
def test_laplacian_closed_form_smallest(method):
    n = 24
    lam, V = poisson2d(n).eigsh(k=6, which="SA", method=method)
    np.testing.assert_allclose(lam.numpy(), laplacian_eigenvalues(n)[:6], rtol=1e-9)
    A = poisson2d(n)
    torch.testing.assert_close(A @ V, V * lam, atol=1e-6, rtol=0)
    torch.testing.assert_close(V.T @ V, torch.eye(6, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("which", ["LM", "SM", "LA", "SA"])
@pytest.mark.parametrize("method", ["arpack", "lobpcg"])
def test_which_vs_scipy_indefinite(which, method):
    A, D = sym_random(300, 0.02, seed=1)
    lam, info = A.eigsh(k=4, which=which, method=method, return_eigenvectors=False, return_info=True)
    if method == "lobpcg" and which == "SM":
        assert any("shift-invert" in note for note in info.notes)
    ref = np.linalg.eigvalsh(D.numpy())
    key = {"LM": -np.abs(ref), "SM": np.abs(ref), "LA": -ref, "SA": ref}[which]
    np.testing.assert_allclose(lam.numpy(), np.sort(ref[np.argsort(key)[:4]]), rtol=1e-7, atol=1e-9)


def test_sigma_shift_invert_vs_scipy():
    A = poisson2d(20)
    lam, info = A.eigsh(k=3, sigma=1.0, method="arpack", return_eigenvectors=False, return_info=True)
    ref = spla.eigsh(A.to_scipy(), k=3, sigma=1.0, return_eigenvectors=False)
    np.testing.assert_allclose(lam.numpy(), np.sort(ref), rtol=1e-10)
    assert any("shift-invert" in n for n in info.notes)
    (lam2, V), info2 = A.eigsh(k=3, sigma=1.0, method="lobpcg", return_info=True)
    np.testing.assert_allclose(lam2.numpy(), np.sort(ref), rtol=1e-9)
    torch.testing.assert_close(A @ V, V * lam2, atol=1e-7, rtol=0)
    assert any("shift-invert" in n for n in info2.notes)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_lobpcg(device):
    A, D = sym_random(90, 0.05, seed=2, batch=(2,))
    A = A.to(device)
    (lam, V), info = A.eigsh(k=3, which="LA", method="lobpcg", return_info=True)
    assert lam.shape == (2, 3) and V.shape == (2, 90, 3)
    ref = np.linalg.eigvalsh(D.numpy())[:, -3:]
    np.testing.assert_allclose(lam.cpu().numpy(), ref, rtol=1e-8)
    assert info.converged and info.residual < 1e-7 and info.method == "lobpcg"


def test_lobpcg_callable_preconditioner():
    A = poisson2d(30)
    S = A.to_scipy("csc")
    lu = spla.splu(S)

    def exact(R):  # an exact inverse: LOBPCG must then converge in very few steps
        return torch.from_numpy(lu.solve(R[0].numpy()))[None]

    (lam, _), info = A.eigsh(k=4, which="SA", method="lobpcg", preconditioner=exact, return_info=True)
    np.testing.assert_allclose(lam.numpy(), laplacian_eigenvalues(30)[:4], rtol=1e-9)
    (_, _), plain = A.eigsh(k=4, which="SA", method="lobpcg", preconditioner="none", return_info=True)
    assert info.iterations < plain.iterations / 2


def test_hermitian_complex_eigenvalues_and_grad():
    g = torch.Generator().manual_seed(4)
    n = 40
    M = torch.randn(n, n, dtype=torch.complex128, generator=g)
    D = M + M.mH
    A = sla.SparseTensor.from_dense(D)
    lam = A.eigsh(k=3, which="LA", method="arpack", return_eigenvectors=False)
    np.testing.assert_allclose(lam.numpy(), np.linalg.eigvalsh(D.numpy())[-3:], rtol=1e-10)
    v = A.values.clone().requires_grad_()
    lam, V = sla.eigsh(sla.SparseTensor._make(v, A.pattern), k=1, which="LA", method="arpack")
    lam.sum().backward()
    ref = (V[:, 0][A.row] * V[:, 0][A.col].conj()).detach()
    torch.testing.assert_close(v.grad, ref)


@pytest.mark.parametrize("method", ["dense", "arpack", "lobpcg"])
def test_hermitian_complex_eigenvector_gradient(method):
    # phase-invariant losses of complex eigenvectors: gradcheck, and the same gradient as torch.linalg.eigh
    g = torch.Generator().manual_seed(5)
    n = 12
    M = torch.randn(n, n, dtype=torch.complex128, generator=g)
    A = sla.SparseTensor.from_dense((M + M.mH) / 2 + 4 * torch.eye(n, dtype=torch.complex128))
    _, perm = A.pattern.transpose()
    weights = torch.arange(n, dtype=torch.float64)[:, None]
    k = 2

    def loss(w, via_sla=True):
        v = (w + w[perm].conj()) / 2
        if via_sla:
            lam, V = sla.SparseTensor._make(v, A.pattern).eigsh(k=k, which="SA", method=method, tol=1e-12)
        else:
            lam, V = torch.linalg.eigh(sla.SparseTensor._make(v, A.pattern).to_dense())
            lam, V = lam[:k], V[:, :k]
        return (V.abs() ** 2 * weights).sum() + lam.sum()

    w = A.values.clone().requires_grad_()
    if method != "lobpcg":  # LOBPCG's finite differences are at the mercy of its stopping test
        assert torch.autograd.gradcheck(lambda w: loss(w), (w,), atol=1e-5, rtol=1e-4)
    loss(w).backward()
    w2 = A.values.clone().requires_grad_()
    loss(w2, via_sla=False).backward()
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-6, atol=1e-8)
    # a loss that sees the arbitrary phase has no gradient: refused, not made up
    w3 = A.values.clone().requires_grad_()
    v = (w3 + w3[perm].conj()) / 2
    _, V = sla.SparseTensor._make(v, A.pattern).eigsh(k=1, which="SA", method=method, tol=1e-12)
    c = torch.randn(n, dtype=torch.complex128, generator=g)
    with pytest.raises(ValueError, match="phase"):
        (V[:, 0] * c).sum().real.backward()


def _sym_param(A):
    _, perm = A.pattern.transpose()
    g = torch.Generator().manual_seed(7)
    w = (A.values + 0.3 * torch.rand(A.nnz, dtype=torch.float64, generator=g)).requires_grad_()
    return w, lambda w: sla.SparseTensor._make((w + w[perm]) / 2, A.pattern)


@pytest.mark.parametrize("method,which", [("dense", "SA"), ("arpack", "LA"), ("lobpcg", "SA"), ("lobpcg", "LA")])
def test_gradcheck_eigsh(method, which):
    A = poisson2d(5, 7)
    w, make = _sym_param(A)
    kw = dict(k=3, which=which, method=method, tol=1e-13, maxiter=3000)

    def values(w):
        return sla.eigsh(make(w), return_eigenvectors=False, **kw)

    def vectors(w):  # invariant to the sign of each eigenvector
        lam, V = sla.eigsh(make(w), **kw)
        return (V[:9] ** 2).sum(-1), V[:, 1] * V[:, 1].sum() + V[:, 2] * V[:, 2].sum()

    fast = method != "dense"
    assert torch.autograd.gradcheck(values, (w,), fast_mode=fast)
    assert torch.autograd.gradcheck(vectors, (w,), atol=1e-6, fast_mode=fast)


def test_gradcheck_lobpcg_shift_invert():
    A = poisson2d(5, 7)
    w, make = _sym_param(A)

    def f(w):
        lam, V = sla.eigsh(make(w), k=2, sigma=1.5, method="lobpcg", tol=1e-13, maxiter=3000)
        return lam, (V[:9] ** 2).sum(-1)

    assert torch.autograd.gradcheck(f, (w,), atol=1e-6, fast_mode=True)


def test_degenerate_eigenspace_projector_gradient():
    # 2D Laplacian: lam_2 == lam_3.  The projector onto the 3 smallest eigenvectors is smooth.
    A = poisson2d(5)
    _, perm = A.pattern.transpose()
    w = A.values.clone().requires_grad_()

    def proj(w):
        V = sla.eigsh(sla.SparseTensor._make((w + w[perm]) / 2, A.pattern), k=3, which="SA", method="dense")[1]
        return (V @ V.T)[:6, :6]

    assert torch.autograd.gradcheck(proj, (w,), atol=1e-6)


def test_eigenvector_gradient_graph_is_one_node():
    A = poisson2d(6)
    w, make = _sym_param(A)
    lam, V = sla.eigsh(make(w), k=2, which="SA", method="lobpcg")

    def core(t):  # skip the reshape views
        fn = t.grad_fn
        while type(fn).__name__ in ("ViewBackward0", "ReshapeAliasBackward0"):
            fn = fn.next_functions[0][0]
        return fn

    assert type(core(lam)).__name__ == "_EigshAdjointBackward"
    assert core(V) is core(lam)


def test_eigs_nonsymmetric_vs_numpy_and_grad():
    g = torch.Generator().manual_seed(3)
    n = 250
    D = torch.randn(n, n, dtype=torch.float64, generator=g) * (torch.rand(n, n, generator=g) < 0.03)
    D = D + torch.diag(torch.linspace(1, 5, n, dtype=torch.float64))
    A = sla.SparseTensor.from_dense(D)
    lam, V = A.eigs(k=4, which="LR", method="arpack")
    ref = np.linalg.eigvals(D.numpy())
    ref = ref[np.argsort(-ref.real)[:4]]
    np.testing.assert_allclose(np.sort_complex(lam.numpy()), np.sort_complex(ref), rtol=1e-8)
    Av = torch.from_numpy(A.to_scipy() @ V.numpy())
    torch.testing.assert_close(Av, V * lam, atol=1e-8, rtol=0)


@pytest.mark.parametrize("method", ["dense", "arpack"])
def test_gradcheck_eigs(method):
    g = torch.Generator().manual_seed(5)
    n = 12
    D = torch.randn(n, n, dtype=torch.float64, generator=g) * (torch.rand(n, n, generator=g) < 0.5)
    D = D + torch.diag(torch.arange(n, dtype=torch.float64))
    A = sla.SparseTensor.from_dense(D)
    v = A.values.clone().requires_grad_()

    def f(v):
        lam = sla.eigs(
            sla.SparseTensor._make(v, A.pattern), k=3, which="LM", method=method, return_eigenvectors=False, tol=1e-14
        )
        return torch.view_as_real(lam)

    assert torch.autograd.gradcheck(f, (v,), fast_mode=True)


def test_eigs_vector_gradient_refused():
    A = sla.SparseTensor.from_dense(torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64))
    v = A.values.clone().requires_grad_()
    _, V = sla.eigs(sla.SparseTensor._make(v, A.pattern), k=1)
    with pytest.raises(NotImplementedError):
        V.abs().sum().backward()


def test_validation():
    A = poisson2d(5)
    with pytest.raises(ValueError, match="k must be"):
        A.eigsh(k=0)
    lam, V = A.eigsh(k=40)  # more than n = 25: all pairs (seed README: A.eigsh(k=6) on a 3x3 matrix)
    assert lam.shape == (25,) and V.shape == (25, 25)
    with pytest.raises(ValueError, match="which"):
        A.eigsh(k=2, which="XX")
    N = sla.SparseTensor.from_dense(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64))
    with pytest.warns(UserWarning, match=r"symmetric part \(A \+ A\^H\) / 2 -- use eigs"):
        # eigsh works on the symmetric part [[1, 1], [1, 1]]: eigenvalues 0, 2
        lam = N.eigsh(k=1, return_eigenvectors=False)
    torch.testing.assert_close(lam, torch.tensor([2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="method"):
        A.eigsh(k=2, method="magic")


def test_seed_readme_snippet():
    # the torch-sla README's "other operations" block, against dense torch.linalg
    dense = torch.tensor([[4.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 4.0]], dtype=torch.float64)
    A = sla.SparseTensor.from_dense(dense)
    torch.testing.assert_close(A.det(), torch.linalg.det(dense))
    eigenvalues, eigenvectors = A.eigsh(k=6)
    torch.testing.assert_close(eigenvalues, torch.linalg.eigvalsh(dense))
    U, S, Vt = A.svd(k=10)
    torch.testing.assert_close(S, torch.linalg.svdvals(dense))
    torch.testing.assert_close(U @ torch.diag(S) @ Vt, dense)
    torch.testing.assert_close(A.norm(2), torch.linalg.matrix_norm(dense, 2))
    torch.testing.assert_close(A.condition_number(), torch.linalg.cond(dense))


@pytest.mark.slow
@pytest.mark.parametrize("method,kw", [("lobpcg", dict(preconditioner="amg")), ("arpack", {})])
def test_laplacian_100x100_smallest(method, kw):
    n = 100
    lam, info = poisson2d(n).eigsh(k=6, which="SA", method=method, return_eigenvectors=False, return_info=True, **kw)
    np.testing.assert_allclose(lam.numpy(), laplacian_eigenvalues(n)[:6], rtol=1e-9)
    assert info.converged


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_cupy_lanczos_on_cuda_matches_scipy(which):
    pytest.importorskip("cupy", reason="CuPy not installed")
    import scipy.sparse.linalg as spla

    A = poisson2d(20)
    ref = np.sort(spla.eigsh(A.to_scipy(), k=4, which=which)[0])
    v = A.values.clone().cuda().requires_grad_()
    (lam, V), info = sla.SparseTensor._make(v, A.pattern.to("cuda")).eigsh(
        k=4, which=which, method="cupy", return_info=True
    )
    assert info.backend == "cupy" and info.residual < 1e-8
    np.testing.assert_allclose(lam.detach().cpu().numpy(), ref, rtol=1e-9)
    lam.sum().backward()  # eigenvalue gradient v_i[row] v_i[col], through the shared adjoint
    ref_grad = (V[A.row.cuda()] * V[A.col.cuda()]).sum(-1)
    torch.testing.assert_close(v.grad, ref_grad.detach())


def test_cupy_method_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        poisson2d(6).eigsh(k=2, method="cupy")
