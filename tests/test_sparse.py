"""SparseTensor: construction, conversion, arithmetic and structure, against dense torch / SciPy."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from devices import DEVICES

import sla
from sla import SparseTensor, gallery

DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


def random_sparse(m, n, density=0.3, dtype=torch.float64, batch=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(m, n, generator=g) < density
    row, col = torch.nonzero(mask, as_tuple=True)
    vals = torch.randn(*batch, row.numel(), generator=g, dtype=torch.float64)
    if dtype.is_complex:
        vals = torch.complex(vals, torch.randn(*batch, row.numel(), generator=g, dtype=torch.float64))
    return SparseTensor(vals.to(dtype), row, col, (*batch, m, n))


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype in (torch.float32, torch.complex64) else dict(rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- construction
def test_duplicates_summed_and_gradient_in_caller_order():
    row = torch.tensor([2, 0, 2, 1, 0])
    col = torch.tensor([1, 0, 1, 1, 0])
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64, requires_grad=True)
    A = SparseTensor(v, row, col, (3, 2))
    assert A.nnz == 3
    dense = torch.zeros(3, 2, dtype=torch.float64)
    dense[0, 0], dense[1, 1], dense[2, 1] = 7.0, 4.0, 4.0
    torch.testing.assert_close(A.to_dense(), dense)
    w = torch.tensor([[1.0, 10.0], [100.0, 1000.0], [1e4, 1e5]], dtype=torch.float64)
    (A.to_dense() * w).sum().backward()
    # each caller entry gets the weight of the position it was summed into
    torch.testing.assert_close(v.grad, torch.tensor([1e5, 1.0, 1e5, 1000.0, 1.0], dtype=torch.float64))


def test_caller_tensors_not_modified():
    row = torch.tensor([1, 0, 1])
    col = torch.tensor([0, 0, 1])
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    copies = [t.clone() for t in (row, col, v)]
    A = SparseTensor(v, row, col, (2, 2))
    A.solve(torch.ones(2, dtype=torch.float64))
    (A * 2 + A.T()).to_dense()
    for t, c in zip((row, col, v), copies):
        assert torch.equal(t, c)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_round_trip(dtype):
    A = random_sparse(7, 5, dtype=dtype)
    B = SparseTensor.from_dense(A.to_dense())
    assert B.nnz == A.nnz
    assert torch.equal(B.to_dense(), A.to_dense())


def test_batched_shapes_and_pattern_shared():
    A = random_sparse(6, 6, batch=(2, 3))
    assert A.shape == (2, 3, 6, 6) and A.batch_shape == (2, 3)
    assert (A * 3.0).pattern is A.pattern
    assert A.double().pattern is A.pattern
    assert A.to_dense().shape == (2, 3, 6, 6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scipy_round_trip(dtype):
    A = random_sparse(9, 4, dtype=dtype)
    S = A.to_scipy()
    np.testing.assert_allclose(S.toarray(), A.to_dense().numpy())
    B = SparseTensor.from_scipy(sp.coo_matrix(S))
    assert B.dtype == dtype
    assert torch.equal(B.to_dense(), A.to_dense())


def test_torch_round_trip():
    A = random_sparse(6, 8)
    for layout in ("coo", "csr"):
        T = A.to_torch(layout)
        torch.testing.assert_close(T.to_dense(), A.to_dense())
        torch.testing.assert_close(SparseTensor.from_torch(T).to_dense(), A.to_dense())


def test_with_values_shares_the_pattern_and_carries_gradients():
    A = random_sparse(5, 4, seed=3)
    v = torch.randn(2, A.nnz, dtype=torch.float64, requires_grad=True)
    B = A.with_values(v)
    assert B.pattern is A.pattern and B.values is v and B.shape == (2, 5, 4)
    dense = torch.zeros(2, 5, 4, dtype=torch.float64)
    dense[:, A.row, A.col] = v.detach()  # stored order is (row, col) sorted: no re-coalescing
    torch.testing.assert_close(B.to_dense(), dense)
    w = torch.randn(4, dtype=torch.float64)
    (B @ w).sum().backward()
    torch.testing.assert_close(v.grad, w[A.col].expand(2, -1))  # d(sum A w)/dA_ij = w_j
    assert A.with_values(A.values.to(torch.complex128)).dtype == torch.complex128


def test_with_values_errors():
    A = random_sparse(5, 4, seed=3)
    with pytest.raises(ValueError, match=rf"nnz = {A.nnz}.*\(3, {A.nnz + 1}\)"):
        A.with_values(torch.ones(3, A.nnz + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="scalar"):
        A.with_values(torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        A.with_values(torch.ones(A.nnz, dtype=torch.int64))
    with pytest.raises(ValueError, match="pattern is on cpu"):
        A.with_values(torch.ones(A.nnz, dtype=torch.float64, device="meta"))


def test_to_dtype_and_device():
    A = random_sparse(4, 4)
    assert A.float().dtype == torch.float32
    assert A.to(torch.complex128).dtype == torch.complex128
    assert A.cpu() is A
    with pytest.raises(TypeError, match="dtype"):
        A.to(torch.int32)


# ---------------------------------------------------------------- products
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_shapes(dtype):
    A = random_sparse(5, 4, dtype=dtype)
    D = A.to_dense()
    x = torch.randn(4, dtype=dtype)
    X = torch.randn(4, 3, dtype=dtype)
    X3 = torch.randn(2, 4, 3, dtype=dtype)
    torch.testing.assert_close(A @ x, D @ x, **tol(dtype))
    torch.testing.assert_close(A @ X, D @ X, **tol(dtype))
    torch.testing.assert_close(A @ X3, D @ X3, **tol(dtype))
    y = torch.randn(5, dtype=dtype)
    torch.testing.assert_close(y @ A, y @ D, **tol(dtype))


def test_batched_matmul():
    A = random_sparse(5, 5, batch=(3,))
    D = A.to_dense()
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(A @ x, (D @ x.unsqueeze(-1)).squeeze(-1))
    X = torch.randn(3, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(A @ X, D @ X)
    v = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(A @ v, D @ v)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_matmul_gradcheck(dtype):
    A = random_sparse(5, 4, dtype=dtype)
    v = A.values.clone().requires_grad_()
    x = torch.randn(4, 2, dtype=dtype, requires_grad=True)
    f = lambda v, x: A.with_values(v) @ x
    assert torch.autograd.gradcheck(f, (v, x))


def test_batched_matmul_gradcheck():
    A = random_sparse(4, 4, batch=(2,))
    v = A.values.clone().requires_grad_()
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, x: A.with_values(v) @ x, (v, x))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_spspmm_matches_dense_and_gradcheck(dtype):
    A = random_sparse(5, 6, dtype=dtype, seed=1)
    B = random_sparse(6, 4, dtype=dtype, seed=2)
    C = A @ B
    assert isinstance(C, SparseTensor)
    torch.testing.assert_close(C.to_dense(), A.to_dense() @ B.to_dense())
    va = A.values.clone().requires_grad_()
    vb = B.values.clone().requires_grad_()

    def f(va, vb):
        return (A.with_values(va) @ B.with_values(vb)).values

    assert torch.autograd.gradcheck(f, (va, vb))


def test_add_sub_mul_union_intersection():
    A = random_sparse(6, 6, seed=3)
    B = random_sparse(6, 6, seed=4)
    Da, Db = A.to_dense(), B.to_dense()
    torch.testing.assert_close((A + B).to_dense(), Da + Db)
    torch.testing.assert_close((A - B).to_dense(), Da - Db)
    torch.testing.assert_close((A * B).to_dense(), Da * Db)
    torch.testing.assert_close((-A).to_dense(), -Da)
    torch.testing.assert_close((2.5 * A).to_dense(), 2.5 * Da)
    torch.testing.assert_close((A / 4).to_dense(), Da / 4)
    torch.testing.assert_close((A * Db).to_dense(), Da * Db)  # dense factor sampled on A's pattern
    torch.testing.assert_close(A + Db, Da + Db)
    # intersection pattern is no larger than either
    assert (A * B).nnz <= min(A.nnz, B.nnz)
    with pytest.raises(TypeError, match="scalar"):
        A + 1.0


def test_add_gradcheck():
    A = random_sparse(5, 5, seed=5)
    B = random_sparse(5, 5, seed=6)
    va = A.values.clone().requires_grad_()
    vb = B.values.clone().requires_grad_()

    def f(va, vb):
        a, b = A.with_values(va), B.with_values(vb)
        return (a + b * a).to_dense()

    assert torch.autograd.gradcheck(f, (va, vb))


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_conj_abs(dtype):
    A = random_sparse(4, 7, dtype=dtype)
    D = A.to_dense()
    torch.testing.assert_close(A.T().to_dense(), D.T)
    torch.testing.assert_close(A.H().to_dense(), D.conj().T)
    torch.testing.assert_close(A.abs().to_dense(), D.abs())
    assert A.T().T().pattern is A.pattern


@pytest.mark.parametrize("batch", [(), (2,)])
def test_reductions_and_norms(batch):
    A = random_sparse(5, 3, batch=batch)
    D = A.to_dense()
    torch.testing.assert_close(A.sum(), D.sum((-2, -1)))
    torch.testing.assert_close(A.sum(-2), D.sum(-2))
    torch.testing.assert_close(A.sum(-1), D.sum(-1))
    torch.testing.assert_close(A.mean(), D.mean((-2, -1)))
    torch.testing.assert_close(A.mean(-1), D.mean(-1))
    torch.testing.assert_close(A.norm("fro"), torch.linalg.matrix_norm(D, "fro"))
    torch.testing.assert_close(A.norm(1), torch.linalg.matrix_norm(D, 1))
    torch.testing.assert_close(A.norm(float("inf")), torch.linalg.matrix_norm(D, float("inf")))
    torch.testing.assert_close(A.diagonal(), torch.diagonal(D, dim1=-2, dim2=-1))
    with pytest.raises(ValueError, match="dim"):
        A.sum(5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex128])
@pytest.mark.parametrize("keepdim", [False, True])
def test_abs_max_equals_the_abs_temporary_it_avoids(monkeypatch, dtype, keepdim):
    from sla import reductions

    monkeypatch.setattr(reductions, "_ABS_CHUNK", 7)  # several chunks of a complex row
    g = torch.Generator().manual_seed(3)
    v = torch.randn(3, 40, generator=g, dtype=dtype)
    v[1, 5] = -50  # the largest magnitude is a negative entry
    for dim in (-1, 0):
        assert torch.equal(reductions.abs_max(v, dim, keepdim), v.abs().amax(dim, keepdim=keepdim))


def test_norm_gradient():
    A = random_sparse(4, 4)
    v = A.values.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: A.with_values(v).norm("fro"), (v,))
    assert torch.autograd.gradcheck(lambda v: A.with_values(v).sum(0), (v,))


# ---------------------------------------------------------------- structure
def test_laplacian_is_spd():
    A = gallery.poisson2d(12)
    assert A.is_symmetric()
    assert A.is_positive_definite()
    assert A.detect_matrix_type() == "spd"


def test_matrix_types_against_dense_eigenvalues():
    g = torch.Generator().manual_seed(0)
    n = 30
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    S = M + M.T
    cases = {
        "general": M,
        "symmetric": S,  # indefinite
        "spd": M @ M.T + 0.1 * torch.eye(n, dtype=torch.float64),  # dense SPD, not diagonally dominant
    }
    for expected, D in cases.items():
        assert SparseTensor.from_dense(D).detect_matrix_type() == expected
    H = torch.complex(M, M - M.T)  # real part general -> general
    assert SparseTensor.from_dense(H).detect_matrix_type() == "general"
    Hh = torch.complex(S, M - M.T)  # Hermitian, indefinite
    assert SparseTensor.from_dense(Hh).detect_matrix_type() == "hermitian"
    Hp = Hh @ Hh.conj().T + torch.eye(n, dtype=torch.complex128)
    assert SparseTensor.from_dense(Hp).detect_matrix_type() == "hpd"


def test_large_non_dominant_spd_uses_sparse_factorisation():
    # 2D biharmonic-like operator L^2 + I: SPD, not diagonally dominant, too big for the dense test
    L = gallery.poisson2d(45)
    A = L @ L + sla.SparseTensor.from_scipy(sp.eye(L.shape[0], format="csr"))
    assert A.sparse_shape[0] > 1500
    assert A.is_positive_definite()
    B = L @ L - 20.0 * sla.SparseTensor.from_scipy(sp.eye(L.shape[0], format="csr"))  # indefinite
    assert B.is_symmetric() and not B.is_positive_definite()


@pytest.mark.parametrize("device", DEVICES)
def test_symmetry_by_search_agrees_with_the_transpose_permutation(device):
    # the GPU path (no permutation kept on the pattern) against the CPU one, on a zoo
    from sla.structure import _symmetric_by_search

    g = torch.Generator().manual_seed(3)
    L = gallery.poisson2d(7)
    S = L.to_dense()
    M = S.clone()
    M[0, 5] = 0.3  # structurally nonsymmetric
    Z = S.clone()
    Z[0, 9] = 1e-300  # stored (almost) zero facing a missing mirror: numerically symmetric
    R = torch.rand(60, 60, generator=g, dtype=torch.float64) * (torch.rand(60, 60, generator=g) < 0.15)
    R[7, :] = torch.rand(60, generator=g, dtype=torch.float64) + 0.5  # an arrow: rows of 1 to 60 entries
    R = R + R.T
    Ra = R.clone()
    Ra[59, 7] += 1e-6  # the last entry of the longest row's mirror
    Ml = S.clone()
    Ml[5, 0] = 0.3  # a lower entry that is nobody's mirror
    Zl = S.clone()
    Zl[9, 0] = 1e-300  # the same, numerically zero
    H = torch.complex(S, torch.triu(S, 1) - torch.tril(S, -1))
    Hd = H.clone()
    Hd[3, 3] += 0.5j  # a diagonal entry that is not real
    cases = {
        "arrow": SparseTensor.from_dense(R),
        "arrow, perturbed": SparseTensor.from_dense(Ra),
        "laplacian": L,
        "nonsymmetric": SparseTensor.from_dense(M),
        "stored zero": SparseTensor.from_dense(Z),
        "perturbed": L.with_values(L.values + 1e-3 * torch.rand(L.nnz, generator=g, dtype=torch.float64)),
        "batched": L.with_values(torch.stack([L.values, 2 * L.values])),
        "lower, unmatched": SparseTensor.from_dense(Ml),
        "lower zero, unmatched": SparseTensor.from_dense(Zl),
        "batched, one member perturbed": L.with_values(
            torch.stack([L.values, L.values.flip(0) * (1 + torch.arange(L.nnz) % 2)])
        ),
        "complex hermitian": SparseTensor.from_dense(H),
        "complex, diagonal not real": SparseTensor.from_dense(Hd),
    }
    for name, A in cases.items():
        Ad = A.to(device)
        for conj in (False, True):
            if conj and not A.is_complex:
                continue
            v = Ad.values.detach()
            tol = 100 * torch.finfo(A.dtype).eps * v.abs().amax(-1, keepdim=True)
            expected = sla.structure.is_symmetric(A, conjugate=conj)  # on the CPU, every batch member at once
            assert _symmetric_by_search(Ad.pattern, v, conj, tol) == expected, name
    assert not cases["nonsymmetric"].is_symmetric() and cases["stored zero"].is_symmetric()
    assert not cases["lower, unmatched"].is_symmetric() and cases["lower zero, unmatched"].is_symmetric()
    assert cases["batched, one member perturbed"].is_symmetric().tolist() == [True, False]
    assert not cases["complex, diagonal not real"].is_hermitian()
    assert cases["complex hermitian"].is_hermitian()
    assert not cases["complex hermitian"].is_symmetric()


def test_dominance_certificate_against_eigenvalues_and_stored_zeros():
    # the certificate (weak dominance, a strict row reached through non-zero couplings) against
    # dense eigenvalues; both reaches (GPU: sparse products, CPU: SciPy's components) agree
    from sla.structure import _reach_by_products, _reaches_all, is_dominant_definite

    L = gallery.poisson2d(6).to_dense()
    dirichlet = L.clone()
    dirichlet[:, 0] = 0
    dirichlet[0, :] = 0
    dirichlet[0, 0] = 1.0  # L with row/column 0 replaced by the identity: still dominant, still SPD
    block = torch.zeros(5, 5, dtype=torch.float64)
    block[:2, :2] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # a singular weakly dominant block...
    block[2:, 2:] = gallery.poisson2d(1).to_dense()[0, 0] * torch.eye(3, dtype=torch.float64)
    tied = SparseTensor.from_dense(block)
    r, c = tied.pattern.rows(), tied.pattern.ccol.long()
    # ... tied to the strict rows by stored zeros only: not a coupling, not certified
    r, c = torch.cat([r, torch.tensor([1, 2])]), torch.cat([c, torch.tensor([2, 1])])
    tied = SparseTensor(torch.cat([tied.values, torch.zeros(2, dtype=torch.float64)]), r, c, (5, 5))
    chain = torch.diag(torch.full((300,), 2.0, dtype=torch.float64))
    chain += torch.diag(torch.full((299,), -1.0, dtype=torch.float64), 1) + torch.diag(
        torch.full((299,), -1.0, dtype=torch.float64), -1
    )
    chain[0, 0] = chain[-1, -1] = 1.0  # a path graph's Laplacian: singular; every row weak
    grounded = chain.clone()
    grounded[150, 150] += 1.0  # one strict row in the middle: 150 graph steps to reach the ends
    cases = {
        "laplacian": SparseTensor.from_dense(L),
        "dirichlet row": SparseTensor.from_dense(dirichlet),
        "tied by stored zeros": tied,
        "chain": SparseTensor.from_dense(chain),
        "grounded chain": SparseTensor.from_dense(grounded),
    }
    for name, A in cases.items():
        pd = bool(torch.linalg.eigvalsh(A.to_dense()).min() > 1e-12)
        assert is_dominant_definite(A) == pd, name
        v = A.values.detach().abs()
        d = A.diagonal().abs()
        off = v.new_zeros(A.shape[0]).index_add(0, A.pattern.rows(), v) - d
        strict = d > off + 1e-12
        assert _reach_by_products(A.pattern, A.values, strict) == _reaches_all(A.pattern, A.values, strict), name
    grounded = cases["grounded chain"]
    strict = torch.zeros(300, dtype=torch.bool)
    strict[150] = True
    assert _reach_by_products(grounded.pattern, grounded.values, strict, steps=64) is None  # not settled: SciPy decides
    assert _reach_by_products(grounded.pattern, grounded.values, strict, steps=160)
    assert not is_dominant_definite(cases["tied by stored zeros"]) and is_dominant_definite(cases["dirichlet row"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_dominance_certificate_on_a_gpu_matches_the_cpu_without_scipy():
    # the reach by sparse products on the device, against SciPy's components on the CPU
    code = """
import sys, torch, sla
from sla import structure
A = sla.gallery.poisson3d(30, device="cuda")
ok = structure.is_dominant_definite(A)
print(ok, "scipy" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    A = gallery.poisson3d(20)
    for M in (A, A.with_values(A.values * torch.where(A.pattern.rows() == A.pattern.ccol.long(), 0.5, 1.0))):
        assert sla.structure.is_dominant_definite(M.to("cuda")) == sla.structure.is_dominant_definite(M)


def test_gallery_is_reachable_from_the_package():
    # a fresh interpreter: in this one another test may already have imported sla.gallery
    code = "import sla; print(sla.gallery.poisson2d(3).to_dense().diagonal().tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([4.0] * 9)


def test_structure_cache_follows_in_place_updates():
    A = gallery.poisson2d(5)
    assert A.detect_matrix_type() == "spd"
    with torch.no_grad():
        A.values.neg_()  # the same tensor, a new version
    assert A.detect_matrix_type() == "symmetric"


# ---------------------------------------------------------------- bad input
def test_constructor_errors():
    v = torch.ones(3, dtype=torch.float64)
    with pytest.raises(IndexError, match="out of range"):
        SparseTensor(v, torch.tensor([0, 1, 5]), torch.tensor([0, 1, 2]), (3, 3))
    with pytest.raises(IndexError, match="non-negative"):
        SparseTensor(v, torch.tensor([0, -1, 2]), torch.tensor([0, 1, 2]), (3, 3))
    with pytest.raises(ValueError, match="same number of entries"):
        SparseTensor(v, torch.tensor([0, 1]), torch.tensor([0, 1, 2]), (3, 3))
    with pytest.raises(ValueError, match=r"\[\*batch, nnz\]"):
        SparseTensor(torch.ones(2, 3, dtype=torch.float64), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), (3, 3))
    with pytest.raises(TypeError, match="integer"):
        SparseTensor(v, torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0, 1, 2]), (3, 3))
    with pytest.raises(TypeError, match="dtype"):
        SparseTensor(torch.ones(3, dtype=torch.int64), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), (3, 3))


def test_matmul_errors():
    A = random_sparse(4, 3)
    with pytest.raises(ValueError, match="shape"):
        A @ torch.ones(4, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype"):
        A @ torch.ones(3, dtype=torch.float32)
    with pytest.raises(ValueError, match="inner dimensions"):
        A @ random_sparse(4, 4)


def test_forward_mode_jvp_matches_dense():
    from torch.func import jvp

    A = random_sparse(6, 5, seed=9)
    v, x = A.values.clone(), torch.randn(5, 2, dtype=torch.float64)
    dv, dx = torch.randn_like(v), torch.randn_like(x)
    _, t = jvp(lambda v, x: A.with_values(v) @ x, (v, x), (dv, dx))
    torch.testing.assert_close(t, A.with_values(dv).to_dense() @ x + A.to_dense() @ dx)
    assert torch.autograd.gradcheck(
        lambda v, x: A.with_values(v) @ x,
        (v.requires_grad_(), x.requires_grad_()),
        check_forward_ad=True,
    )


def test_all_finite_scans_in_chunks(monkeypatch):
    from sla import checks

    monkeypatch.setattr(checks, "_CHUNK", 7)
    t = torch.zeros(50, dtype=torch.float64)
    assert checks.all_finite(t)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for pos in (0, 6, 7, 49):
            u = t.clone()
            u[pos] = bad
            assert not checks.all_finite(u), (bad, pos)
    assert not checks.all_finite(torch.complex(t, t).index_fill(0, torch.tensor([30]), complex(0, float("nan"))))
    assert checks.all_finite(torch.arange(5))


def test_pattern_find_against_a_dense_table():
    import scipy.sparse as sp

    S = sp.random(50, 70, density=0.2, random_state=0, format="lil")
    S[7, :] = 1.0  # one full row: the longest search
    S = S.tocsr()
    S.sort_indices()
    p = SparseTensor.from_scipy(S).pattern
    table = torch.full((50, 70), -1, dtype=torch.int64)
    table[p.rows(), p.ccol.long()] = torch.arange(p.nnz)
    g = torch.Generator().manual_seed(0)
    r, c = torch.randint(0, 50, (3000,), generator=g), torch.randint(0, 70, (3000,), generator=g)
    assert torch.equal(p.find(r, c), table[r, c])
    assert torch.equal(p.find(r.int(), c, dtype=torch.int32), table[r, c].int())  # int32 work and result
    pos, idx = p.diag_index
    on = (p.rows() == p.ccol.long()).nonzero().flatten()
    assert torch.equal(pos.long(), on) and torch.equal(idx.long(), p.ccol[on].long())
    empty = SparseTensor(torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), (3, 3))
    assert torch.equal(empty.pattern.find(torch.tensor([0, 2]), torch.tensor([0, 1])), torch.tensor([-1, -1]))
