"""The row-blocked Galerkin product ``R A P`` of the AMG setup against dense products."""

import numpy as np
import pytest
import torch
from devices import DEVICES

import sla
from sla.solvers.precond import spgemm
from sla.solvers.precond.amg import SmoothedAggregation
from sla.solvers.precond.multigrid import Mat
from sla.solvers.precond.spgemm import galerkin


def _mat(D: torch.Tensor) -> Mat:
    return Mat.from_torch(D.to_sparse_csr())


@pytest.mark.parametrize("chunk", [1, 7, 50, None])
def test_galerkin_blocks_match_the_dense_product(chunk):
    g = torch.Generator().manual_seed(0)
    n, nc = 60, 13
    A = torch.rand(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.1)
    P = torch.rand(n, nc, generator=g, dtype=torch.float64) * (torch.rand(n, nc, generator=g) < 0.2)
    R = torch.rand(nc, n, generator=g, dtype=torch.float64) * (torch.rand(nc, n, generator=g) < 0.2)
    R[3] = 0  # an empty row of R: an empty row of the product
    C = galerkin(_mat(R), _mat(A), _mat(P), chunk=chunk)
    assert C.shape == (nc, nc)
    dense = torch.sparse_csr_tensor(C.crow, C.col, C.val, C.shape, check_invariants=False).to_dense()
    torch.testing.assert_close(dense, R @ A @ P, rtol=1e-13, atol=1e-13)
    assert int(C.crow[-1]) == C.col.numel() and bool((C.crow[1:] >= C.crow[:-1]).all())


def test_amg_hierarchy_is_the_same_with_small_blocks(monkeypatch):
    A = sla.gallery.poisson2d(48)
    ref = SmoothedAggregation(A, cycle="V", max_coarse=40)
    monkeypatch.setattr(spgemm, "GALERKIN_CHUNK", 97)
    small = SmoothedAggregation(A, cycle="V", max_coarse=40)
    assert [lv.n for lv in small.levels] == [lv.n for lv in ref.levels] and len(ref.levels) >= 3
    for a, b in zip(ref.levels, small.levels):
        torch.testing.assert_close(a.A.to_dense(), b.A.to_dense(), rtol=1e-12, atol=1e-12)


def test_setup_matrices_hold_int32_indices_and_only_their_values():
    D = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]], dtype=torch.float64)
    C = D.to_sparse_csr()
    M = Mat.from_torch(C @ C)
    assert M.crow.dtype == M.col.dtype == M.row.dtype == torch.int32
    assert M.val._base is None  # not a view of the product (whose int64 indices it would keep alive)
    dense = torch.sparse_csr_tensor(M.crow, M.col, M.val, M.shape, check_invariants=False).to_dense()
    torch.testing.assert_close(dense, D @ D, rtol=0, atol=0)


def _scipy_mat(S) -> Mat:
    S = S.tocsr()
    return Mat(torch.from_numpy(S.indptr), torch.from_numpy(S.indices), torch.from_numpy(S.data), S.shape)


def _to_scipy(M: Mat):
    import scipy.sparse as sp

    return sp.csr_matrix((M.val.numpy(), M.col.numpy(), M.crow.numpy()), shape=M.shape)


@pytest.mark.parametrize("block", [1, 5, 40])
@pytest.mark.parametrize("right", ["general", "one per row", "at most one per row", "grouped"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_block_product_against_scipy(block, right, dtype):
    """``spgemm.block_product`` (the smoothed prolongator's kernel), a block of ``block`` rows of A at a
    time, against SciPy's product: columns ascending in every row, exact zeros (a cancellation)
    dropped, empty rows kept; every shape of B it special-cases.  ``grouped``: B's rows by groups of
    consecutive columns (a tentative prolongator with several candidates, widths 3, 2 and 1), summed
    under one key per group; a general B asked to be grouped keeps the general form."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    A = sp.random(40, 30, density=0.15, random_state=rng, dtype=np.float64).astype(dtype)
    if dtype == np.complex128:
        A.data = A.data + 1j * rng.standard_normal(A.nnz)
    A = A.tolil()
    A[7, :] = 0  # an empty row
    A[2, 0], A[2, 1] = 1.0, -1.0  # B's rows 0 and 1 are equal: row 2 of the product cancels there
    A = A.tocsr()
    A.eliminate_zeros()
    B = sp.random(30, 20, density=0.2, random_state=rng).tolil() if right == "general" else sp.lil_matrix((30, 20))
    if right == "grouped":  # columns 0-2, 3-4, 5-7, 8, 9-11, ...: a row takes one group (or none)
        groups = [(0, 3), (3, 2), (5, 3), (8, 1), (9, 3), (12, 2), (14, 3), (17, 3)]
        for i in range(30):
            if i % 7 != 6:  # some rows empty
                c, w = groups[int(rng.integers(len(groups)))]
                B[i, c : c + w] = rng.standard_normal(w)
        B[0, :], B[1, :] = 0, 0
        B[0, 5:8], B[1, 5:8] = [2.0, 1.0, 3.0], [2.0, 1.0, 3.0]
    elif right != "general":
        for i in range(30):
            if right == "one per row" or i % 3:
                B[i, int(rng.integers(20))] = rng.standard_normal()
    if right != "grouped":
        B[0, :], B[1, :] = 0, 0
        B[0, 5], B[1, 5] = 2.0, 2.0
    B = B.tocsr()
    ref = (A @ B).tocsr()
    ref.eliminate_zeros()
    assert ref[2, 5] == 0 or A[2, 5:].nnz  # (the cancellation happens)
    Am, right_ = _scipy_mat(A), spgemm.Right(_scipy_mat(B), grouped=right in ("general", "grouped"))
    assert (right_.count is None) == (right == "one per row")
    assert (right_.kmax == 1) == (right not in ("general", "grouped"))
    assert (right_.first is not None) == (right == "grouped")
    crow, cols, vals = [0], [], []
    for r0 in range(0, 40, block):
        r1 = min(r0 + block, 40)
        lo, hi = int(Am.crow[r0]), int(Am.crow[r1])
        rows = torch.repeat_interleave(
            torch.arange(r1 - r0, dtype=torch.int32), (Am.crow[r0 + 1 : r1 + 1] - Am.crow[r0:r1])
        )
        starts, col, val = spgemm.block_product(rows, Am.col[lo:hi], Am.val[lo:hi], right_, r1 - r0, torch.int32)
        crow += (starts + crow[-1]).tolist()
        cols.append(col)
        vals.append(val)
    got = _to_scipy(Mat(torch.tensor(crow), torch.cat(cols), torch.cat(vals), (40, 20)))
    assert got.nnz == ref.nnz and abs(got - ref).max() <= 1e-14 * abs(ref).max()
    assert got.dtype == ref.dtype
    assert all((np.diff(got.indices[got.indptr[i] : got.indptr[i + 1]]) > 0).all() for i in range(40))
    assert (got.data != 0).all()


def test_every_level_takes_galerkin_blocks_sized_by_the_finest_operator(monkeypatch):
    """A coarse level's products, many per row, in blocks sized by its own rows took dozens of
    blocks (H200, 5-point 16M: 0.10-0.13 s for each of the 2.2M and 376K levels' Galerkin products,
    against 3-6 ms in one product): every level's Galerkin blocks are sized by the finest rows, the
    smoothed prolongator's by the level's own, but at least an eighth of the finest rows (a 376K
    level of the 16M matrix took 25 blocks, 35 ms)."""
    from sla.solvers.precond import amg, transfers

    seen = {"galerkin": [], "smoothed": []}
    real_g, real_s = amg.galerkin, amg._smoothed

    def g(R, A, P, chunk=None, consume=False):
        seen["galerkin"].append(chunk)
        return real_g(R, A, P, chunk=chunk, consume=consume)

    def s(C, T, w, chunk=None, dtype=None):
        seen["smoothed"].append(chunk)
        return real_s(C, T, w, chunk=chunk, dtype=dtype)

    monkeypatch.setattr(amg, "galerkin", g)
    monkeypatch.setattr(amg, "_smoothed", s)
    monkeypatch.setattr(spgemm, "GALERKIN_MIN", 1000)
    monkeypatch.setattr(transfers, "PRODUCT_CHUNK", 100)
    A = sla.gallery.poisson2d(80)
    M = SmoothedAggregation(A, cycle="V", max_coarse=20)
    assert len(M.levels) >= 4
    assert seen["galerkin"] == [spgemm.galerkin_chunk(6400)] * (len(M.levels) - 1) == [3200] * (len(M.levels) - 1)
    rows = [lv.n for lv in M.levels[:-1]]
    assert (
        seen["smoothed"] == [max(100, r, 6400 // 8) for r in rows] == [transfers.product_chunk(r, 6400) for r in rows]
    )
    assert 6400 // 8 in seen["smoothed"]  # a coarse level whose blocks the finest rows size
    # a vector problem's Galerkin blocks: as many times larger as it has candidates (three in 2D), and
    # VECTOR_BLOCKS times that by dofs per node (twice in 3D)
    from sla.assembly.cantilever import cantilever_system

    seen["galerkin"].clear()
    seen["smoothed"].clear()
    K = cantilever_system(nx=24, ny=4)[0]
    M = SmoothedAggregation(K, cycle="V", max_coarse=20)
    assert M.candidates == 3 and len(M.levels) >= 3
    want = 3 * spgemm.galerkin_chunk(K.shape[0])
    assert seen["galerkin"] == [want] * (len(M.levels) - 1), (seen["galerkin"], want)
    # and so are its prolongator's (3D elasticity 1M on an H200: setup 2.0 -> 1.2 s)
    rows = [lv.n for lv in M.levels[:-1]]
    assert seen["smoothed"] == [3 * transfers.product_chunk(r, K.shape[0]) for r in rows], seen["smoothed"]
    from sla.assembly.cantilever import cantilever_system_3d

    seen["galerkin"].clear()
    monkeypatch.setattr(amg, "VECTOR_BLOCKS", {3: 5})  # (a factor of its own: the lookup is what is tested)
    K = cantilever_system_3d(nx=8, ny=2, nz=2)[0]
    M = SmoothedAggregation(K, cycle="V", max_coarse=20)
    assert M.candidates == 6 and len(M.levels) >= 2
    want = 5 * 6 * spgemm.galerkin_chunk(K.shape[0])
    assert seen["galerkin"] == [want] * (len(M.levels) - 1), (seen["galerkin"], want)


@pytest.mark.parametrize("device", DEVICES)
def test_rows_of_a_block_of_entries(device):
    """``Mat.rows(lo, hi)`` (a search on a GPU, a host look and repeat on the CPU) against the row of
    every entry, with empty rows first, inside and last, and blocks starting and ending anywhere."""
    counts = torch.tensor([0, 2, 0, 0, 3, 1, 0, 4, 0])
    crow = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(torch.int32)
    nnz = int(crow[-1])
    M = Mat(crow.to(device), torch.zeros(nnz, dtype=torch.int32, device=device), torch.ones(nnz, device=device), (9, 9))
    ref = torch.repeat_interleave(torch.arange(9), counts)
    for lo in range(nnz):
        for hi in range(lo + 1, nnz + 1):
            r = M.rows(lo, hi)
            assert r.dtype == torch.int32 and r.device.type == device
            assert torch.equal(r.cpu().long(), ref[lo:hi]), (lo, hi)


def test_rows_not_in_groups_keep_the_general_form():
    """Groups that overlap, rows of one group of two widths, columns not consecutive: not grouped."""
    for rows in (
        [[0, 1, 2], [1, 2]],  # overlapping groups
        [[0, 1, 2], [0, 1]],  # one group, two widths
        [[0, 2], [3, 4]],  # a gap in the first row's columns
    ):
        crow = torch.tensor([0, *np.cumsum([len(r) for r in rows]).tolist()])
        col = torch.tensor([c for r in rows for c in r], dtype=torch.int32)
        B = Mat(crow, col, torch.ones(col.numel(), dtype=torch.float64), (len(rows), 5))
        assert spgemm.Right(B, grouped=True).first is None, rows
    crow, col = torch.tensor([0, 3, 5, 5]), torch.tensor([0, 1, 2, 3, 4], dtype=torch.int32)
    assert spgemm.Right(Mat(crow, col, torch.ones(5, dtype=torch.float64), (3, 5)), grouped=True).first is not None


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_smoothed_prolongator_is_the_general_one(device, monkeypatch):
    """3D elasticity's first smoothed prolongator (six candidates: rows by aggregate) made with one key
    per group and with one per product: the same entries, the same values (to rounding on a GPU,
    where the sums' order is the atomics'; bit for bit on the CPU)."""
    from test_aggregation import _elasticity_3d

    from sla.solvers.precond import amg, transfers

    A, _ = _elasticity_3d(4, device)
    made = []
    real = transfers._smoothed
    monkeypatch.setattr(amg, "_smoothed", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    SmoothedAggregation(A, aggregation="mis2")
    real_right = spgemm.Right
    monkeypatch.setattr(transfers, "Right", lambda B, grouped=False: real_right(B, False))
    SmoothedAggregation(A, aggregation="mis2")
    n = len(made) // 2
    assert n >= 1
    # on a GPU only the finest (its aggregates are structural; coarse ones read values summed by atomics)
    for P, Q in zip(made[:n], made[n:]) if device == "cpu" else [(made[0], made[n])]:
        if device == "cpu":
            assert torch.equal(P.crow.long(), Q.crow.long()) and torch.equal(P.col.long(), Q.col.long())
            assert torch.equal(P.val, Q.val)
        else:  # a sum that cancels is exactly zero (dropped) in one order, of rounding size in another
            dense = [torch.sparse_csr_tensor(M.crow.long(), M.col.long(), M.val, M.shape).to_dense() for M in (P, Q)]
            torch.testing.assert_close(dense[0], dense[1], rtol=0, atol=1e-13 * float(Q.val.abs().max()))
            assert abs(P.col.numel() - Q.col.numel()) <= 0.01 * Q.col.numel()
