"""Pattern interning: SparseTensor rebuilt from the same, unchanged row/col tensors finds the existing
Pattern (and its cached solver work); in-place edits of row/col and new tensors do not; nothing leaks."""

import gc
import weakref

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sla
from sla.pattern import interned_patterns


def _coo(n=30, seed=0, shuffle=True, dup=True):
    g = torch.Generator().manual_seed(seed)
    A = sla.gallery.poisson2d(n)
    row, col, val = A.row.clone(), A.col.clone(), A.values.clone()
    if dup:  # split some entries into two duplicates
        k = row.numel() // 3
        row, col = torch.cat([row, row[:k]]), torch.cat([col, col[:k]])
        val = torch.cat([val, torch.zeros(k, dtype=val.dtype)])
    if shuffle:
        perm = torch.randperm(row.numel(), generator=g)
        row, col, val = row[perm], col[perm], val[perm]
    return row, col, val, tuple(A.shape)


@pytest.mark.parametrize("shuffle,dup", [(False, False), (True, False), (True, True)])
def test_rebuild_from_the_same_indices_reuses_the_pattern_and_lines_values_up(shuffle, dup):
    row, col, val, shape = _coo(shuffle=shuffle, dup=dup)
    A = sla.SparseTensor(val, row, col, shape)
    for scale in (2.0, -0.5):
        v = (val * scale + torch.rand(val.shape, dtype=val.dtype)).requires_grad_()
        B = sla.SparseTensor(v, row, col, shape)
        assert B.pattern is A.pattern
        ref = sp.coo_array((v.detach().numpy(), (row.numpy(), col.numpy())), shape=shape).toarray()
        np.testing.assert_allclose(B.to_dense().detach().numpy(), ref, rtol=0, atol=1e-14)
        (B.values * torch.arange(B.nnz)).sum().backward()  # gradient reaches v in the caller's order
        assert v.grad.shape == v.shape


def test_cached_solver_work_is_found_again():
    row, col, val, shape = _coo(n=20)
    A = sla.SparseTensor(val, row, col, shape)
    A.pattern.cache["marker"] = object()
    B = sla.SparseTensor(val * 3, row, col, shape)
    assert B.pattern.cache["marker"] is A.pattern.cache["marker"]
    b = torch.ones(shape[0], dtype=torch.float64)
    x = B.solve(b)
    ref = sp.linalg.spsolve(sp.csr_array(B.to_scipy()), b.numpy())
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-10)


def test_inplace_edit_of_row_or_col_is_detected():
    row, col, val, shape = _coo(n=10, shuffle=False, dup=False)
    A = sla.SparseTensor(val, row, col, shape)
    i = int(torch.nonzero(row != col)[0])
    r, c = int(row[i]), int(col[i])
    row[i], col[i] = c, r  # the same tensor objects, edited in place: a new version
    B = sla.SparseTensor(val, row, col, shape)
    assert B.pattern is not A.pattern
    ref = sp.coo_array((val.numpy(), (row.numpy(), col.numpy())), shape=shape).toarray()
    np.testing.assert_array_equal(B.to_dense().numpy(), ref)


def test_equal_but_different_index_tensors_or_shape_build_a_new_pattern():
    row, col, val, shape = _coo(n=10)
    A = sla.SparseTensor(val, row, col, shape)
    assert sla.SparseTensor(val, row.clone(), col, shape).pattern is not A.pattern
    big = (shape[0] + 1, shape[1] + 1)
    assert sla.SparseTensor(val, row, col, big).pattern.shape == big


def test_nothing_leaks():
    gc.collect()
    before = interned_patterns()
    row, col, val, shape = _coo(n=10)
    A = sla.SparseTensor(val, row, col, shape)
    wp = weakref.ref(A.pattern)
    assert interned_patterns() == before + 1
    del A
    gc.collect()
    assert wp() is None, "the intern table must not keep a pattern alive"
    assert interned_patterns() == before
    # the index tensors die: their entry goes too (no growth over a loop of fresh indices)
    keep = []
    for k in range(20):
        r, c, v, s = _coo(n=5, seed=k)
        keep.append(sla.SparseTensor(v, r, c, s))
        del r, c
    gc.collect()
    from sla import pattern as P

    assert all(e[2]() is not None and e[3]() is not None for e in P._INTERN.values())


def test_rebuild_in_a_loop_keeps_one_pattern():
    row, col, val, shape = _coo(n=12)
    seen = set()
    A = None
    for k in range(5):
        A = sla.SparseTensor(val * (k + 1), row, col, shape)
        seen.add(id(A.pattern))
    assert len(seen) == 1
