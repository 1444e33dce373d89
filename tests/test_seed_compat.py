"""Code written for the seed project (``torch_sla``) runs on sla with only the import changed.

One test per call the seed's users make (issue #19), each checked against an independent
reference: dense torch, SciPy, or the seed package itself (``torch_sla`` 0.4.0) where installed.
"""

import logging

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import torch

import sla
from sla import SparseTensor, SparseTensorList

F64 = torch.float64


def seed():
    return pytest.importorskip("torch_sla", reason="the seed package torch_sla is not installed (oracle)")


def spd(n=6, seed_=0, batch=()):
    g = torch.Generator().manual_seed(seed_)
    M = torch.randn(*batch, n, n, generator=g, dtype=F64)
    D = M @ M.mT + n * torch.eye(n, dtype=F64)
    D[..., 0, n - 1] = D[..., n - 1, 0] = 0.0
    return SparseTensor.from_dense(D), D


def coo_unsorted(n=5, dup=True):
    """A tridiagonal matrix given in reversed order, with the diagonal split in two entries when ``dup``."""
    i = torch.arange(n)
    row = torch.cat([i, i[:-1], i[1:]] + ([i] if dup else []))
    col = torch.cat([i, i[1:], i[:-1]] + ([i] if dup else []))
    val = torch.cat(
        [torch.full((n,), 3.0 if dup else 4.0), -torch.ones(2 * (n - 1))] + ([torch.ones(n)] if dup else [])
    )
    order = torch.arange(row.numel() - 1, -1, -1)
    return val.to(F64)[order], row[order], col[order]


# ------------------------------------------------------------------ x @ A
def test_row_vectors_times_batched_matrix():
    A = SparseTensor(torch.ones(4, 3), torch.arange(3), torch.arange(3), (4, 3, 3))
    x = torch.arange(12.0).reshape(4, 3)
    torch.testing.assert_close(x @ A, torch.einsum("bm,bmn->bn", x, A.to_dense()))
    rows = torch.randn(4, 2, 3)
    torch.testing.assert_close(rows @ A, rows @ A.to_dense())
    B, D = spd(5)
    v = torch.randn(5, dtype=F64)
    torch.testing.assert_close(v @ B, v @ D)
    X = torch.randn(2, 7, 5, dtype=F64)
    torch.testing.assert_close(X @ B, X @ D)


def test_row_vector_shape_error_names_the_real_shapes():
    A = SparseTensor(torch.ones(4, 3), torch.arange(3), torch.arange(3), (4, 3, 3))
    with pytest.raises(ValueError) as err:
        torch.ones(5, 3) @ A
    msg = str(err.value)
    assert "x @ A" in msg and "[5, 3]" in msg and "[4, 3]" in msg and "'M'" not in msg


# ----------------------------------------------------------- attributes
def test_row_col_indices_square_batched():
    A, D = spd(4)
    assert torch.equal(A.row_indices, A.row) and torch.equal(A.col_indices, A.col)
    assert torch.equal(D[A.row_indices, A.col_indices], A.values)
    assert A.is_square and not A.is_batched
    R = SparseTensor(torch.ones(2, 3), [0, 1, 1], [0, 0, 2], (2, 2, 3))
    assert R.is_batched and not R.is_square


def test_to_csr_and_from_torch_sparse():
    A, D = spd(5)
    csr = A.to_csr()
    assert csr.layout == torch.sparse_csr
    torch.testing.assert_close(csr.to_dense(), D)
    for t in (D.to_sparse_coo(), D.to_sparse_csr()):
        torch.testing.assert_close(SparseTensor.from_torch_sparse(t).to_dense(), D)
    Ab, Db = spd(4, batch=(2,))
    torch.testing.assert_close(Ab.to_csr(1).to_dense(), Db[1])
    with pytest.raises(ValueError, match="batch_idx"):
        Ab.to_csr()
    with pytest.raises(IndexError, match="batch_idx"):
        Ab.to_csr(2)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, (0, 1), (1, 2), (0, 2), (0, 1, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_and_mean_over_axes_match_dense(axis, keepdim):
    A, D = spd(4, batch=(3,))
    for name in ("sum", "mean"):
        got = getattr(A, name)(axis=axis, keepdim=keepdim)
        want = getattr(D, name)(axis, keepdim=keepdim)
        if isinstance(got, SparseTensor):  # a batch-only reduction keeps the pattern
            assert axis in (0, (0,)) and got.pattern is A.pattern
            got = got.to_dense()
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="dim"):
        A.sum(axis=3)
    with pytest.raises(ValueError, match="alias"):
        A.sum(1, axis=2)


def test_sum_axis_matches_the_seed():
    ts = seed()
    A, D = spd(5)
    S = ts.SparseTensor(A.values, A.row, A.col, (5, 5))
    for axis in (0, 1):
        torch.testing.assert_close(A.sum(axis=axis), S.sum(axis=axis))
    torch.testing.assert_close(A.sum(), S.sum())


def test_save_with_metadata(tmp_path):
    pytest.importorskip("safetensors")
    A, D = spd(4)
    f = tmp_path / "matrix.safetensors"
    A.save(f, metadata={"mesh": "unit square", "h": "0.25"})
    torch.testing.assert_close(SparseTensor.load(f).to_dense(), D)
    assert sla.io.load_metadata(f) == {"mesh": "unit square", "h": "0.25"}
    with pytest.raises(ValueError, match="reserved"):
        A.save(tmp_path / "x.safetensors", metadata={"shape": "3"})
    with pytest.raises(TypeError, match="str to str"):
        A.save(tmp_path / "x.safetensors", metadata={"h": 0.25})


def test_condition_number_ord2():
    A, D = spd(6)
    torch.testing.assert_close(A.condition_number(ord=2), torch.tensor(np.linalg.cond(D.numpy(), 2), dtype=F64))
    torch.testing.assert_close(A.condition_number(2, method="dense"), torch.linalg.cond(D))
    with pytest.raises(ValueError, match="ord"):
        A.condition_number(ord=1)


# ------------------------------------------------ per batch member checks
def test_is_symmetric_per_batch_member():
    _, D = spd(5, batch=(3,))
    D[1, 0, 2] += 1.0  # member 1 loses symmetry
    A = SparseTensor.from_dense(D)
    got = A.is_symmetric()
    assert got.dtype == torch.bool and got.shape == (3,)
    want = torch.tensor([bool(torch.allclose(d, d.T)) for d in D])
    assert torch.equal(got, want) and want.tolist() == [True, False, True]
    assert isinstance(SparseTensor.from_dense(D[0]).is_symmetric(), bool)


def test_is_symmetric_matches_the_seed():
    ts = seed()
    _, D = spd(5, batch=(3,))
    D[2, 4, 1] -= 0.5
    A = SparseTensor.from_dense(D)
    S = ts.SparseTensor(A.values, A.row, A.col, (3, 5, 5))
    assert torch.equal(A.is_symmetric(), S.is_symmetric().cpu())


@pytest.mark.parametrize("method", ["auto", "cholesky", "eigenvalue", "gershgorin"])
def test_is_positive_definite_per_member(method):
    n = 6
    L = sla.gallery.poisson1d(n).to_dense()  # SPD, weakly diagonally dominant
    g = torch.Generator().manual_seed(1)
    M = torch.randn(n, n, generator=g, dtype=F64)
    spd_nondominant = M @ M.T + 0.1 * torch.eye(n, dtype=F64)
    indefinite = L - 3.0 * torch.eye(n, dtype=F64)
    nonsym = L.clone()
    nonsym[0, 1] = 0.0
    D = torch.stack([L, spd_nondominant, indefinite, nonsym])
    A = SparseTensor.from_dense(D)
    got = A.is_positive_definite(method=method)
    exact = [bool(torch.allclose(d, d.T) and torch.linalg.eigvalsh(d).min() > 0) for d in D]
    assert exact == [True, True, False, False]
    if method == "gershgorin":  # a certificate: diagonal dominance certifies L only
        assert got.tolist() == [True, False, False, False]
    else:
        assert got.tolist() == exact
    assert isinstance(SparseTensor.from_dense(L).is_positive_definite(method=method), bool)


def test_is_positive_definite_matches_the_seed_cholesky():
    ts = seed()
    A, D = spd(5, batch=(2,))
    S = ts.SparseTensor(A.values, A.row, A.col, (2, 5, 5))
    assert torch.equal(A.is_positive_definite(method="cholesky"), S.is_positive_definite(method="cholesky").cpu())
    with pytest.raises(ValueError, match="method"):
        A.is_positive_definite(method="sylvester")


# ------------------------------------------------------------ solve_batch
def test_solve_batch_takes_values_in_the_callers_entry_order():
    val, row, col = coo_unsorted(5, dup=True)  # reversed order and split diagonal entries
    A = SparseTensor(val, row, col, (5, 5))
    scales = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    vals = val * scales[:, None]  # [3, k] in the caller's order, k > A.nnz
    assert vals.shape[-1] == row.numel() > A.nnz
    b = torch.randn(3, 5, dtype=F64)
    x = A.solve_batch(vals, b)
    for i in range(3):
        dense = torch.zeros(5, 5, dtype=F64).index_put_((row, col), vals[i], accumulate=True)
        torch.testing.assert_close(x[i], torch.linalg.solve(dense, b[i]))
    # rebuilt from the same index tensors: the interned pattern and its order are found again
    A2 = SparseTensor(2 * val, row, col, (5, 5))
    torch.testing.assert_close(A2.solve_batch(vals, b), x)
    with pytest.raises(ValueError, match=f"\\[\\*batch, {row.numel()}\\]"):
        A.solve_batch(vals[:, : A.nnz], b)


def test_solve_batch_gradients_reach_the_values():
    val, row, col = coo_unsorted(4, dup=False)
    A = SparseTensor(val, row, col, (4, 4))
    v = torch.stack([val, 1.5 * val]).requires_grad_(True)
    b = torch.randn(2, 4, dtype=F64)
    assert torch.autograd.gradcheck(lambda w: A.solve_batch(w, b), (v,))


def test_solve_batch_matches_the_seed():
    ts = seed()
    val, row, col = coo_unsorted(6, dup=False)
    vals = torch.stack([val, 2 * val, val + 0.1])
    b = torch.randn(3, 6, dtype=F64)
    want = ts.SparseTensor(val, row, col, (6, 6)).solve_batch(vals, b)
    torch.testing.assert_close(SparseTensor(val, row, col, (6, 6)).solve_batch(vals, b, tol=1e-12), want)


# ------------------------------------------------------- nonlinear_solve
def _cubic(n=12):
    A = sla.gallery.poisson1d(n)
    f = torch.linspace(0.5, 2.0, n, dtype=F64)
    return A, f


def test_nonlinear_solve_seed_keywords(caplog):
    A, f = _cubic()
    u0 = torch.zeros(A.shape[0], dtype=F64)
    res = lambda u, A, f: A @ u + u**3 - f
    with caplog.at_level(logging.INFO, logger="sla"):
        u, info = A.nonlinear_solve(res, u0, f, tol=1e-12, max_iter=40, verbose=True, return_info=True)
    assert info.converged and float((res(u, A, f)).abs().max()) < 1e-9
    assert sum("||F||" in r.getMessage() for r in caplog.records) == info.iterations
    with pytest.raises(sla.ConvergenceError, match="maxiter=1"):
        A.nonlinear_solve(res, u0, f, tol=1e-14, max_iter=1)
    with pytest.raises(ValueError, match="max_iter"):
        A.nonlinear_solve(res, u0, f, maxiter=3, max_iter=4)


def test_nonlinear_solve_uses_the_users_jacobian():
    A, f = _cubic()
    n = A.shape[0]
    u0 = torch.zeros(n, dtype=F64)
    i = torch.arange(n)

    def res(u, f):
        return A @ u + u**3 - f

    def jac(u, f):  # the seed's form: (values, row, col, shape)
        J = A + SparseTensor(3 * u**2, i, i, (n, n))
        return J.values, J.row, J.col, (n, n)

    def wrong(u, f):  # twice the Jacobian: Newton then converges only linearly (halving)
        J = 2.0 * (A + SparseTensor(3 * u**2, i, i, (n, n)))
        return J

    ref = sla.nonlinear_solve(res, u0, f, rtol=1e-12)
    fp = f.clone().requires_grad_(True)
    u, info = sla.nonlinear_solve(res, u0, fp, jacobian_fn=jac, tol=1e-12, return_info=True)
    assert info.method == "newton-jacobian_fn" and info.iterations <= 8
    torch.testing.assert_close(u, ref)
    _, slow = sla.nonlinear_solve(res, u0, f, jacobian_fn=wrong, tol=1e-12, max_iter=200, return_info=True)
    assert slow.iterations > 3 * info.iterations  # the given Jacobian is the one used
    # the adjoint uses it too: du/df = (A + 3 diag(u^2))^{-1}
    (g,) = torch.autograd.grad(u.sum(), fp)
    Jd = A.to_dense() + torch.diag(3 * u.detach() ** 2)
    torch.testing.assert_close(g, torch.linalg.solve(Jd.T, torch.ones(n, dtype=F64)))


def test_nonlinear_solve_matches_the_seed():
    ts = seed()
    A, f = _cubic(10)
    u0 = torch.zeros(10, dtype=F64)
    res = lambda u, A, f: A @ u + u**3 - f
    want = ts.SparseTensor(A.values, A.row, A.col, (10, 10)).nonlinear_solve(res, u0, f, tol=1e-12, max_iter=50)
    torch.testing.assert_close(A.nonlinear_solve(res, u0, f, tol=1e-12, max_iter=50), want, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------- SparseTensorList
def _members():
    a, _ = spd(4, 0)
    b, _ = spd(3, 1)
    c = sla.gallery.poisson1d(5)
    return [a, b, c]


def test_list_from_coo_list_sizes_and_nnz():
    ms = _members()
    L = SparseTensorList.from_coo_list([(m.values, m.row, m.col, tuple(m.shape)) for m in ms])
    assert L.block_sizes == [(4, 4), (3, 3), (5, 5)]
    assert L.total_nnz == sum(m.nnz for m in ms)
    with pytest.raises(ValueError, match="empty"):
        SparseTensorList([])
    with pytest.raises(ValueError, match=r"matrices\[0\]"):
        SparseTensorList.from_coo_list([(ms[0].values, ms[0].row)])


def test_list_per_member_results():
    ms = _members()
    L = SparseTensorList(ms)
    for got, m in zip(L.norm(), ms):
        torch.testing.assert_close(got, torch.linalg.matrix_norm(m.to_dense()))
    for got, m in zip(L.norm(1), ms):
        torch.testing.assert_close(got, torch.linalg.matrix_norm(m.to_dense(), 1))
    assert L.is_symmetric() == [True, True, True]
    assert L.is_positive_definite() == [bool(torch.linalg.eigvalsh(m.to_dense()).min() > 0) for m in ms]
    for got, m in zip(L.sum(), ms):
        torch.testing.assert_close(got, m.to_dense().sum())
    for got, m in zip(L.sum(axis=1), ms):
        torch.testing.assert_close(got, m.to_dense().sum(1))


def test_list_arithmetic():
    ms = _members()
    L = SparseTensorList(ms)
    for op, want in [
        (L + L, [2 * m.to_dense() for m in ms]),
        (L - 0.5 * L, [0.5 * m.to_dense() for m in ms]),
        (L * L, [m.to_dense() ** 2 for m in ms]),
        (3 * L, [3 * m.to_dense() for m in ms]),
        (L * 3, [3 * m.to_dense() for m in ms]),
        (L / 2, [m.to_dense() / 2 for m in ms]),
        (-L, [-m.to_dense() for m in ms]),
    ]:
        assert isinstance(op, SparseTensorList)
        for got, w in zip(op, want):
            torch.testing.assert_close(got.to_dense(), w)
    with pytest.raises(ValueError, match="length"):
        L + L[:2]
    with pytest.raises(TypeError, match="implicit zero"):
        L + 1.0


def test_list_block_diagonal_is_a_sparse_tensor():
    ms = _members()
    L = SparseTensorList(ms)
    B = L.to_block_diagonal()
    assert isinstance(B, SparseTensor)
    np.testing.assert_array_equal(B.to_dense().numpy(), sp.block_diag([m.to_scipy() for m in ms]).toarray())
    assert L.offsets.tolist() == [0, 4, 7, 12]


def test_list_one_vector_applies_to_every_member():
    ms = [spd(4, s)[0] for s in range(3)]
    L = SparseTensorList(ms)
    x = torch.randn(4, dtype=F64)
    ys = L @ x
    assert isinstance(ys, list) and len(ys) == 3
    for y, m in zip(ys, ms):
        torch.testing.assert_close(y, m.to_dense() @ x)
    X = torch.randn(4, 2, dtype=F64)
    for y, m in zip(L @ X, ms):
        torch.testing.assert_close(y, m.to_dense() @ X)
    for xs, m in zip(L.solve(x), ms):
        torch.testing.assert_close(xs, torch.linalg.solve(m.to_dense(), x))
    with pytest.raises(ValueError, match="one operand"):
        L @ torch.randn(5, dtype=F64)


def test_list_matches_the_seed():
    ts = seed()
    ms = _members()
    S = ts.SparseTensorList([ts.SparseTensor(m.values, m.row, m.col, tuple(m.shape)) for m in ms])
    L = SparseTensorList(ms)
    assert L.block_sizes == [tuple(s) for s in S.block_sizes] and L.total_nnz == S.total_nnz
    torch.testing.assert_close(L.to_block_diagonal().to_dense(), S.to_block_diagonal().to_dense())
    for a, b in zip(L.norm(), S.norm()):
        torch.testing.assert_close(a, b)


def _two_islands():
    D = torch.zeros(7, 7, dtype=F64)
    for i, j in [(0, 3), (3, 5), (1, 2), (2, 6)]:  # components {0,3,5}, {1,2,6}, {4}
        D[i, j] = D[j, i] = -1.0
    D += 3 * torch.eye(7, dtype=F64)
    return SparseTensor.from_dense(D), D


def test_connected_components_match_scipy():
    A, D = _two_islands()
    labels, count = A.connected_components()
    n_ref, ref = csgraph.connected_components(sp.csr_array(D.numpy()), directed=False)
    assert count == n_ref == 3 and labels.dtype == torch.int64
    assert torch.equal(labels, torch.from_numpy(ref.astype(np.int64)))
    assert A.has_isolated_components() and not sla.gallery.poisson1d(5).has_isolated_components()
    parts = A.to_connected_components()
    assert [tuple(p.shape) for p in parts] == [(3, 3), (3, 3), (1, 1)]
    L = SparseTensorList(list(parts))
    assert L.connected_components()[1] == 3 and L.has_isolated_components()
    with pytest.raises(ValueError, match="square"):
        SparseTensor(torch.ones(2, dtype=F64), [0, 1], [0, 2], (2, 3)).connected_components()


def test_connected_components_match_the_seed():
    ts = seed()
    A, _ = _two_islands()
    labels, count = ts.SparseTensor(A.values, A.row, A.col, (7, 7)).connected_components()
    mine, n = A.connected_components()
    assert n == count
    # the same partition (label names may differ)
    assert len({(int(a), int(b)) for a, b in zip(mine, labels.cpu())}) == count


# --------------------------------------------------- batched-solve helpers
def test_spsolve_batch_same_layout_and_coo():
    val, row, col = coo_unsorted(5, dup=False)
    vals = torch.stack([val, 2 * val, val + 0.3])
    b = torch.randn(3, 5, dtype=F64)
    x = sla.spsolve_batch_same_layout(vals, row, col, (5, 5), b)
    for i in range(3):
        dense = torch.zeros(5, 5, dtype=F64).index_put_((row, col), vals[i])
        torch.testing.assert_close(x[i], torch.linalg.solve(dense, b[i]))
    T = torch.sparse_coo_tensor(torch.stack([row, col]), val, (5, 5)).coalesce()
    tv = torch.stack([T.values(), 2 * T.values(), T.values() + 0.3])
    torch.testing.assert_close(sla.spsolve_batch_coo_same_layout(T, tv, b, method="lu"), x)
    with pytest.raises(ValueError, match="val_batch"):
        sla.spsolve_batch_same_layout(val, row, col, (5, 5), b[0])


def test_spsolve_batch_different_layout_coo_and_csr():
    ms = _members()
    bs = [torch.randn(m.shape[0], dtype=F64) for m in ms]
    want = [torch.linalg.solve(m.to_dense(), b) for m, b in zip(ms, bs)]
    got = sla.spsolve_batch_different_layout([(m.values, m.row, m.col, tuple(m.shape)) for m in ms], bs)
    got_coo = sla.spsolve_batch_coo_different_layout([m.to_torch() for m in ms], bs)
    for g, c, w in zip(got, got_coo, want):
        torch.testing.assert_close(g, w)
        torch.testing.assert_close(c, w)
    torch.testing.assert_close(sla.spsolve_csr(ms[0].to_csr(), bs[0], tol=1e-12), want[0])
    with pytest.raises(TypeError, match="CSR"):
        sla.spsolve_csr(ms[0].to_torch(), bs[0])


def test_spsolve_batch_same_layout_matches_the_seed():
    ts = seed()
    val, row, col = coo_unsorted(6, dup=False)
    vals = torch.stack([val, 2 * val])
    b = torch.randn(2, 6, dtype=F64)
    want = ts.spsolve_batch_same_layout(vals, row, col, (6, 6), b, method="cg", atol=1e-14)
    torch.testing.assert_close(sla.spsolve_batch_same_layout(vals, row, col, (6, 6), b), want, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------- spy
def test_spy_draws_the_pattern(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    A, D = _two_islands()
    ax = A.spy(title="islands")
    x, y = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    assert sorted(zip(y.tolist(), x.tolist())) == sorted(map(tuple, torch.nonzero(D).tolist()))
    assert ax.get_title() == "islands"
    plt.close("all")
    Ab, Db = spd(4, batch=(2,))
    with pytest.raises(ValueError, match="batch_idx"):
        Ab.spy()
    f = tmp_path / "spy.png"
    assert Ab.spy(batch_idx=1, save_path=f) == str(f) and f.stat().st_size > 0
    plt.close("all")


def test_list_splits_its_members_into_components():
    A, _ = _two_islands()
    L = SparseTensorList([A, sla.gallery.poisson1d(4)])
    parts = L.to_connected_components()
    assert [tuple(p.shape) for p in parts] == [(3, 3), (3, 3), (1, 1), (4, 4)]
    assert [idx.tolist() for idx in parts.node_index] == [[0, 3, 5], [1, 2, 6], [4], [7, 8, 9, 10]]
    with pytest.raises(TypeError, match="no matrix"):
        L.to_connected_components(A)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_seed_calls_on_cuda():
    val, row, col = coo_unsorted(6, dup=True)
    A = SparseTensor(val, row, col, (6, 6))
    vals = torch.stack([val, 2 * val])
    b = torch.randn(2, 6, dtype=F64)
    want = A.solve_batch(vals, b)
    Ac = SparseTensor(val.cuda(), row.cuda(), col.cuda(), (6, 6))
    torch.testing.assert_close(Ac.solve_batch(vals.cuda(), b.cuda()).cpu(), want)
    Ab, Db = spd(5, batch=(3,))
    Abc = Ab.cuda()
    x = torch.randn(3, 5, dtype=F64)
    torch.testing.assert_close((x.cuda() @ Abc).cpu(), torch.einsum("bm,bmn->bn", x, Db))
    assert torch.equal(Abc.is_symmetric(), Ab.is_symmetric())
    assert torch.equal(Abc.is_positive_definite(), Ab.is_positive_definite())
    torch.testing.assert_close(Abc.sum(axis=1).cpu(), Db.sum(1))
    torch.testing.assert_close(Abc.to_csr(2).to_dense().cpu(), Db[2])
    L = SparseTensorList([m.cuda() for m in _members()])
    v = torch.randn(4, dtype=F64).cuda()
    assert len(SparseTensorList([spd(4, s)[0].cuda() for s in range(2)]) @ v) == 2
    torch.testing.assert_close(
        L.to_block_diagonal().to_dense().cpu(), SparseTensorList(_members()).to_block_diagonal().to_dense()
    )
