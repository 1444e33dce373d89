"""The kernel-vocabulary spellings (sla.kernels, and the products that avoid other families) give
what PyTorch's own spellings give, on every device and dtype."""

import pytest
import torch
from devices import DEVICES

from sla import kernels
from sla.kernels import add_at_, all_, any_, count_, norm2, reciprocal, repeat_rows, unique_inverse
from sla.products import csr_add_matmul_, csr_residual
from sla.reductions import abs_max
from sla.solvers.precond.multigrid import _apply_inverse

DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


def _rand(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.complex128 if dtype.is_complex else torch.float64)
    return x.to(dtype).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_norm2_is_the_vector_norm(device, dtype):
    x = _rand((3, 50, 2), dtype, device)
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            want = torch.linalg.vector_norm(x, dim=dim, keepdim=keepdim)
            got = norm2(x, dim, keepdim)
            assert got.dtype == want.dtype and got.shape == want.shape
            torch.testing.assert_close(got, want)
    # like torch's, no rescaling: squares beyond the range overflow (documented, not hidden)
    big = torch.full((4,), 1e200, dtype=torch.float64, device=device)
    assert torch.isinf(norm2(big)) and torch.isinf(torch.linalg.vector_norm(big))
    assert float(norm2(torch.zeros(0, device=device))) == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reciprocal(device, dtype):
    d = _rand((7,), dtype, device) + 3
    torch.testing.assert_close(reciprocal(d), 1 / d)
    z = torch.tensor([0.0, -0.0, 2.0], device=device)
    assert reciprocal(z).tolist() == [float("inf"), float("-inf"), 0.5]


def _csr(n, dtype, device):
    A = _rand((n, n), dtype, device, seed=1) * (torch.rand(n, n, generator=torch.Generator().manual_seed(2)) < 0.2).to(
        device
    )
    return A, A.to_sparse_csr()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128])
@pytest.mark.parametrize("k", [1, 3])
def test_products_match_dense(device, dtype, k):
    D, C = _csr(40, dtype, device)
    y, b = _rand((40, k), dtype, device, 3), _rand((40, k), dtype, device, 4)
    x = _rand((40, k), dtype, device, 5)
    want = x + D @ y
    out = csr_add_matmul_(x, C, y)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(x, want)  # in place
    b0 = b.clone()
    torch.testing.assert_close(csr_residual(b, C, y), b0 - D @ y)
    assert torch.equal(b, b0)  # the residual leaves b alone


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
@pytest.mark.parametrize("k", [1, 2])
def test_coarse_inverse_application(device, dtype, k):
    cinv = _rand((30, 30), dtype, device, 6)
    b = _rand((30, k), dtype, device, 7)
    torch.testing.assert_close(_apply_inverse(cinv, b), cinv @ b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128, torch.int64])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_add_at_is_index_add(device, dtype, index_dtype):
    g = torch.Generator().manual_seed(8)
    src = (torch.randn(3, 40, generator=g) * 10).to(dtype).to(device)
    idx = torch.randint(0, 7, (40,), generator=g).to(index_dtype).to(device)
    out = torch.ones(3, 7, dtype=dtype, device=device)
    want = out.clone().index_add_(-1, idx.long(), src)
    got = add_at_(out, -1, idx, src)
    assert got is out  # in place, like index_add_
    torch.testing.assert_close(got, want)
    o1 = torch.zeros(7, dtype=dtype, device=device)
    torch.testing.assert_close(add_at_(o1, 0, idx, src[1]), torch.zeros_like(o1).index_add_(0, idx.long(), src[1]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_count_is_bincount(device, index_dtype, monkeypatch):
    g = torch.Generator().manual_seed(9)
    idx = torch.randint(0, 11, (1000,), generator=g).to(index_dtype).to(device)
    out = torch.arange(13, dtype=torch.int64, device=device)  # accumulates, bins past the last index stay
    want = out + torch.bincount(idx.long(), minlength=13)
    assert count_(out, idx) is out
    assert torch.equal(out, want)
    monkeypatch.setattr(kernels, "_COUNT_CHUNK", 64)  # by passes: the same counts
    assert torch.equal(
        count_(torch.zeros(13, dtype=torch.int64, device=device), idx), want - torch.arange(13, device=device)
    )
    assert count_(torch.zeros(3, dtype=torch.int64, device=device), idx[:0]).tolist() == [0, 0, 0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float64])
def test_unique_inverse_is_unique(device, dtype):
    g = torch.Generator().manual_seed(10)
    for key in (torch.randint(-5, 40, (500,), generator=g), torch.tensor([7]), torch.zeros(0, dtype=torch.int64)):
        key = key.to(dtype).to(device)
        want, want_inv = torch.unique(key, sorted=True, return_inverse=True)
        got, inv = unique_inverse(key)
        assert torch.equal(got, want) and torch.equal(inv, want_inv)
        assert torch.equal(got[inv], key)


@pytest.mark.parametrize("device", DEVICES)
def test_any_all_are_torchs(device):
    x = torch.tensor([0.0, 1.0, float("nan"), -2.0], device=device)
    for mask in (x > 0, x == x, x != x, x > 5, x[:0] > 0, (x > -3).reshape(2, 2)):
        assert any_(mask).dtype == torch.bool and any_(mask).shape == ()
        assert bool(any_(mask)) == bool(mask.any()) and bool(all_(mask)) == bool(mask.all())


@pytest.mark.parametrize("device", DEVICES)
def test_abs_max_without_maximum(device):
    v = torch.tensor(
        [[1.0, -3.0, 2.0], [-1.0, 0.5, 4.0], [0.0, 0.0, 0.0], [float("inf"), -float("inf"), 0.0]], device=device
    )
    assert abs_max(v, -1).tolist() == [3.0, 4.0, 0.0, float("inf")]
    assert torch.isnan(abs_max(torch.tensor([1.0, float("nan")], device=device), -1))
    assert abs_max(v, 0, keepdim=True).tolist() == [[float("inf"), float("inf"), 4.0]]
    big = torch.randn(3, (1 << 20) + 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64).to(device)
    torch.testing.assert_close(abs_max(big, -1), big.abs().amax(-1), rtol=0, atol=0)  # by chunks


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_repeat_rows_is_repeat_interleave_of_a_range(device, dtype):
    counts = torch.tensor([2, 0, 3, 1, 0, 0, 4], device=device)
    for start in (0, 5):
        want = torch.repeat_interleave(torch.arange(start, start + 7, device=device, dtype=dtype), counts.to(dtype))
        for size in (None, 10):
            got = repeat_rows(counts, start, size, dtype)
            assert got.dtype == dtype and torch.equal(got, want)
    assert torch.equal(repeat_rows(counts.int()), torch.repeat_interleave(torch.arange(7, device=device).int(), counts))
    assert repeat_rows(torch.zeros(0, dtype=dtype, device=device), 3).numel() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_shift_right_is_the_shift(device):
    """Exact for every int64 in ``[0, 2^53)``: the edges of the range, powers of two and their
    neighbours, and random values, by every shift the MIS hash uses and beyond."""
    g = torch.Generator().manual_seed(0)
    edges = [0, 1, 2, 3, 2**52 - 1, 2**52, 2**52 + 1, 2**53 - 2, 2**53 - 1]
    powers = [2**p + d for p in range(1, 53) for d in (-1, 0, 1)]
    x = torch.tensor(edges + powers, dtype=torch.int64)
    x = torch.cat([x, torch.randint(0, 2**53, (10000,), generator=g)]).to(device)
    for s in (1, 2, 5, 12, 22, 31, 40, 52):
        assert torch.equal(kernels.shift_right(x, s), x >> s), s


def _shift_hash(n: int, deg: torch.Tensor | None) -> torch.Tensor:
    """The MIS priorities in the shift and or spelling (int64)."""
    k = max(1, (n - 1).bit_length())
    mask, s = (1 << k) - 1, max(1, k // 2)
    x = torch.arange(n, dtype=torch.int64)
    for c in (0x9E3779B1, 0x85EBCA77):
        x = ((x ^ (x >> s)) * c) & mask
    x = x ^ (x >> s)
    return x if deg is None else x | (deg.clamp(0, 63 if k <= 24 else 2**20 - 1) << k)


@pytest.mark.slow
def test_mis_priorities_beyond_two_to_the_24_nodes():
    """The int64 priorities (more than 2^24 nodes: 20 bits of degree) are those of the shift spelling."""
    from sla.solvers.precond.aggregate import _priorities

    n = 2**24 + 5
    deg = torch.randint(0, 2**21, (n,), generator=torch.Generator().manual_seed(2))
    p = _priorities(n, "cpu", deg)
    assert p.dtype == torch.int64 and torch.equal(p, _shift_hash(n, deg))


def test_mis_priorities_are_the_shift_hash():
    """The MIS priorities spelled with :func:`shift_right` and products are those of the shift and
    or spelling (the aggregates, cached on patterns, stay the same)."""
    from sla.solvers.precond.aggregate import _priorities

    g = torch.Generator().manual_seed(1)
    for n in (1, 2, 5, 1000, 4096, 4097, 300001):
        deg = torch.randint(0, 90, (n,), generator=g)
        assert torch.equal(_priorities(n, "cpu").long(), _shift_hash(n, None))
        assert torch.equal(_priorities(n, "cpu", deg).long(), _shift_hash(n, deg))


def test_small_coarsest_inverse_runs_in_one_thread(monkeypatch):
    """On a many-thread host the coarsest level's dense inverse (a few hundred rows) runs in one
    thread, and the caller's thread count comes back after it, also when the inverse raises; larger
    inverses and hosts of few threads keep the threads."""
    from sla import gallery
    from sla.solvers.precond import multigrid

    A = gallery.poisson2d(12)
    C = torch.sparse_csr_tensor(A.pattern.crow, A.pattern.ccol, A.values, A.shape)
    real = torch.linalg.inv_ex
    calls = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)  # as on a host with 16 threads
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    inv = multigrid._dense_inverse(C)
    torch.testing.assert_close(inv @ C.to_dense(), torch.eye(144, dtype=torch.float64), atol=1e-12, rtol=0)
    assert calls == [1, 16]  # one thread for the inverse, then the caller's count again

    def broken(D):
        raise RuntimeError("LAPACK failed")

    calls.clear()
    monkeypatch.setattr(torch.linalg, "inv_ex", broken)
    with pytest.raises(RuntimeError, match="LAPACK failed"):
        multigrid._dense_inverse(C)
    assert calls == [1, 16]
    monkeypatch.setattr(torch.linalg, "inv_ex", real)
    calls.clear()
    n = multigrid._ONE_THREAD_MAX + 1
    eye = torch.sparse_csr_tensor(
        torch.arange(n + 1), torch.arange(n), torch.full((n,), 2.0, dtype=torch.float64), (n, n)
    )
    torch.testing.assert_close(multigrid._dense_inverse(eye), torch.eye(n, dtype=torch.float64) / 2)
    assert calls == []  # beyond _ONE_THREAD_MAX: the caller's threads
    monkeypatch.setattr(torch, "get_num_threads", lambda: multigrid._ONE_THREAD_FROM)
    multigrid._dense_inverse(C)
    assert calls == []  # a host of few threads keeps them (two on two cores were faster than one)
