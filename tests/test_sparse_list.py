"""SparseTensorList: container behaviour, block-diagonal products and solves, components, gradients."""

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from devices import DEVICES

import sla
from sla import SparseTensorList, gallery


def _members(dtype=torch.float64):
    rng = np.random.default_rng(1)
    out = [gallery.poisson2d(3, dtype=dtype), gallery.poisson1d(5, dtype=dtype)]
    R = sp.random(4, 4, density=0.5, random_state=rng) + 4 * sp.eye(4)  # nonsymmetric, diagonally dominant
    out.append(sla.SparseTensor.from_scipy(R).to(dtype))
    return out


def test_container_basics():
    ms = _members()
    L = SparseTensorList(ms)
    assert len(L) == 3 and L[1] is ms[1] and list(L) == ms and L.to_list() == ms
    assert isinstance(L[1:], SparseTensorList) and len(L[1:]) == 2
    assert L.shapes == [(9, 9), (5, 5), (4, 4)] and L.total_shape == (18, 18)
    assert L.nnz == sum(m.nnz for m in ms)
    assert "SparseTensorList(len=3" in repr(L)
    L32 = L.to(torch.float32)
    assert L32.dtype == torch.float32 and L.dtype == torch.float64
    with pytest.raises(TypeError, match=r"tensors\[1\] must be a sla.SparseTensor"):
        SparseTensorList([ms[0], torch.eye(3)])
    with pytest.raises(ValueError, match="share device and dtype"):
        SparseTensorList([ms[0], ms[1].float()])
    with pytest.raises(ValueError, match="batched"):
        SparseTensorList([sla.SparseTensor(torch.ones(2, 1), [0], [0], (2, 1, 1))])


@pytest.mark.parametrize("device", DEVICES)
def test_block_diagonal_matches_scipy_and_round_trips(device):
    ms = _members()
    L = SparseTensorList(ms).to(device)
    B = L.to_block_diagonal()
    assert isinstance(B, sla.SparseTensor)
    ref = sp.block_diag([m.to_scipy() for m in ms]).toarray()
    np.testing.assert_array_equal(B.to_dense().cpu().numpy(), ref)
    offsets = L.offsets
    assert offsets.tolist() == [0, 9, 14, 18]
    assert L.block_sizes == [(9, 9), (5, 5), (4, 4)]
    back = SparseTensorList.from_block_diagonal(B, offsets=offsets)
    back2 = SparseTensorList.from_block_diagonal(B, [9, 5, (4, 4)])
    back3 = SparseTensorList.from_block_diagonal(B, L.block_sizes)
    assert back3.block_sizes == L.block_sizes
    for a, b, c in zip(ms, back, back2):
        assert torch.equal(a.to_dense(), b.to_dense().cpu()) and torch.equal(a.to_dense(), c.to_dense().cpu())
    with pytest.raises(ValueError, match="not block diagonal"):
        SparseTensorList.from_block_diagonal(gallery.poisson1d(6), [3, 3])
    with pytest.raises(ValueError, match="add up to"):
        SparseTensorList.from_block_diagonal(B, [9, 5])


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_list_and_stacked(device):
    ms = _members()
    L = SparseTensorList(ms).to(device)
    xs = [torch.randn(m.shape[1], 3, dtype=torch.float64, device=device) for m in ms]
    ys = L @ xs
    for m, x, y in zip(ms, xs, ys):
        np.testing.assert_allclose(y.cpu().numpy(), m.to_scipy() @ x.cpu().numpy(), rtol=1e-13)
    stacked = L @ torch.cat(xs)
    torch.testing.assert_close(stacked, torch.cat(ys))
    with pytest.raises(ValueError, match=r"x\[1\] must have 5 rows"):
        L @ [xs[0], xs[0], xs[2]]


def test_rectangular_members_matmul():
    R1 = sla.SparseTensor.from_dense(torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    R2 = sla.SparseTensor.from_dense(torch.ones(3, 1, dtype=torch.float64))
    L = SparseTensorList([R1, R2])
    y = L @ [torch.ones(3, dtype=torch.float64), torch.full((1,), 2.0, dtype=torch.float64)]
    assert y[0].tolist() == [3.0, 12.0] and y[1].tolist() == [2.0, 2.0, 2.0]
    assert L.offsets.tolist() == [0, 2, 5] and L.col_offsets.tolist() == [0, 3, 4]
    with pytest.raises(ValueError, match="square members"):
        L.solve([torch.ones(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64)])


def test_solve_all_systems_at_once_matches_scipy():
    ms = _members()
    L = SparseTensorList(ms)
    bs = [torch.randn(m.shape[0], dtype=torch.float64) for m in ms]
    xs, info = L.solve(bs, return_info=True)
    for m, b, x in zip(ms, bs, xs):
        np.testing.assert_allclose(x.numpy(), spla.spsolve(m.to_scipy("csc"), b.numpy()), rtol=1e-10)
    assert info.residual < 1e-12
    X = L.solve(torch.cat([b[:, None].repeat(1, 2) for b in bs]))
    np.testing.assert_allclose(X[:, 0].numpy(), torch.cat(xs).numpy(), rtol=1e-10)


def test_gradients_reach_every_member():
    ms = [m.detach().clone().requires_grad_() for m in _members()]
    L = SparseTensorList(ms)
    bs = [torch.randn(m.shape[0], dtype=torch.float64, requires_grad=True) for m in ms]

    def f(*args):
        vals, rhs = args[: len(ms)], args[len(ms) :]
        Ls = L.with_values(vals)
        xs = Ls.solve(list(rhs))
        ys = Ls @ [x * x for x in xs]
        return torch.cat(ys)

    assert torch.autograd.gradcheck(f, [m.values for m in ms] + bs)
    loss = sum(x.sum() for x in L.solve(bs))
    loss.backward()
    for m in ms:
        assert m.values.grad is not None and m.values.grad.abs().sum() > 0


def test_connected_components():
    rng = np.random.default_rng(4)
    # three components after a random relabelling of the nodes, plus an isolated node
    blocks = [
        gallery.poisson1d(4).to_scipy(),
        gallery.poisson2d(2).to_scipy(),
        sp.csr_array(np.array([[3.0]])),
        sp.csr_array(np.array([[1.0, 2.0], [0.0, 1.0]])),
    ]  # the last one is connected one way only
    Bd = sp.block_diag(blocks).tocsr()
    perm = rng.permutation(Bd.shape[0])
    P = sp.eye(Bd.shape[0], format="csr")[perm]
    A = sla.SparseTensor.from_scipy(P @ Bd @ P.T).requires_grad_()
    C = A.to_connected_components()
    assert isinstance(C, SparseTensorList) and len(C) == 4
    assert sorted(c.shape[0] for c in C) == [1, 2, 4, 4]
    Ad = A.detach().to_dense()
    for comp, nodes in zip(C, C.node_index):
        assert torch.equal(comp.to_dense(), Ad[nodes][:, nodes])
    assert sorted(torch.cat(C.node_index).tolist()) == list(range(A.shape[0]))
    # the components hold views of A's values: gradients flow back
    sum(c.values.sum() * (i + 1) for i, c in enumerate(C)).backward()
    assert torch.count_nonzero(A.values.grad) == A.nnz
    assert sorted(set(A.values.grad.tolist())) == [1.0, 2.0, 3.0, 4.0]


def test_graph_conv_example_trains():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import graph_conv
    finally:
        sys.path.pop(0)
    model, losses, acc = graph_conv.train(steps=25)
    assert losses[-1] < 0.5 * losses[0] and acc > 0.9
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
