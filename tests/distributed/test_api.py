"""The seed's DSparseTensor API on 2 and 4 gloo ranks: every operation against the
single-process SparseTensor, dense torch and SciPy (one spawn per world size)."""

import importlib.util
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _workers import api_worker, fault_worker, nonsymmetric, two_components

from sla import SparseTensor, gallery

pytestmark = [
    pytest.mark.skipif(not dist.is_gloo_available(), reason="torch.distributed without gloo"),
    pytest.mark.skipif(
        importlib.util.find_spec("pymetis") is None, reason="pymetis not installed (pip install 'sla-torch[dist]')"
    ),
]


def _spawn(fn, world):
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        out = os.path.join(tmp, "out.pt")
        mp.spawn(fn, args=(world, init, out), nprocs=world, join=True)
        return [torch.load(out.replace(".pt", f"_{r}.pt"), weights_only=False) for r in range(world)]


@pytest.fixture(scope="module", params=[2, pytest.param(4, marks=pytest.mark.slow)])
def results(request):
    return request.param, _spawn(api_worker, request.param)


def _close(a, b, tol=1e-8):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_seed_readme_code(results):
    _, res = results
    A = gallery.poisson2d(12)
    b = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_ref = torch.linalg.solve(A.to_dense(), b)
    for r in res:  # every rank gets the same global vectors
        name, x, resid = r["seed"]
        assert name == "OwnedShard"  # a DTensor subclass
        _close(x, x_ref)
        assert float(resid.norm()) < 1e-8 * float(b.norm())
        _close(r["method_solve"][0], x_ref)
        assert r["method_solve"][1] == len(res)


def test_products_and_partitioners(results):
    _, res = results
    A = gallery.poisson2d(12)
    g = torch.Generator().manual_seed(1)
    torch.randn(A.shape[0], generator=g, dtype=torch.float64)
    X = torch.randn(A.shape[0], 3, generator=g, dtype=torch.float64)
    for pm in ("metis", "contiguous", "rcb"):
        _close(res[0][f"matmul_{pm}"], A.to_dense() @ X, 1e-12)


def test_every_krylov_method_and_preconditioner(results):
    _, res = results
    A, N = gallery.poisson2d(12), nonsymmetric(12)
    b = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for method in ("cg", "minres", "bicgstab", "gmres", "fgmres"):
        M = A if method in ("cg", "minres") else N
        x, it, resid = res[0][f"solve_{method}"]
        _close(x, torch.linalg.solve(M.to_dense(), b), 1e-7)
        assert it > 0 and resid < 1e-9
        assert all(r[f"solve_{method}"][1] == it for r in res)  # identical on every rank
    x_ref = torch.linalg.solve(A.to_dense(), b)
    its = {}
    for pc in ("distributed_amg", "schwarz", "amg", "jacobi", "none"):
        x, its[pc] = res[0][f"pc_{pc}"]
        _close(x, x_ref, 1e-8)
    assert its["distributed_amg"] < its["jacobi"] and its["schwarz"] < its["jacobi"]


def test_collectives_per_cg_iteration(results):
    _, res = results
    c5, c10 = res[0]["counts_5"], res[0]["counts_10"]
    per_it = {k: (c10.get(k, 0) - c5.get(k, 0)) / 5 for k in ("halo", "all_reduce", "all_gather")}
    assert per_it["halo"] == 1  # one halo exchange: the product
    assert 1 <= per_it["all_reduce"] <= 2  # the inner products
    assert per_it["all_gather"] == 0  # nothing global in the loop


def test_reductions_norms_structure(results):
    _, res = results
    A = gallery.poisson2d(12)
    Ad = A.to_dense()
    s, m, mx, mn, prod, fro, one, inf = res[0]["reduce"]
    _close(s, Ad.sum())
    _close(m, Ad.mean())
    assert float(mx) == 4.0 and float(mn) == -1.0
    _close(prod, (A.values * 0.5).prod())
    _close(fro, torch.linalg.matrix_norm(Ad, "fro"))
    _close(one, torch.linalg.matrix_norm(Ad, 1))
    _close(inf, torch.linalg.matrix_norm(Ad, float("inf")))
    _close(res[0]["norm2"], torch.linalg.matrix_norm(Ad, 2), 1e-6)
    _close(res[0]["det"], torch.linalg.det(Ad), 1e-8)
    _close(res[0]["cond"], torch.linalg.cond(Ad), 1e-6)
    _close(res[0]["svd"].sort().values, torch.linalg.svdvals(Ad)[:3].sort().values, 1e-6)
    b = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _close(res[0]["lu_solve"], torch.linalg.solve(Ad, b))
    assert res[0]["resource_warnings"] >= 5  # norm(2), det, condition_number, svd, lu all gather
    assert res[0]["structure"] == [True, True, True, "spd"]
    assert res[0]["structure_N"][0] is False and res[0]["structure_N"][1] != "spd"
    _close(res[0]["nT"], nonsymmetric(12).to_dense().T)
    _close(res[0]["eigsh"].sort().values, torch.linalg.eigvalsh(Ad)[:3], 1e-6)


def test_elementwise_maps_and_full_tensor(results):
    _, res = results
    A = gallery.poisson2d(12)
    plus, times, absneg, sub = res[0]["maps"]
    _close(plus.to_dense(), A.with_values(A.values + 1.5).to_dense())  # on the stored entries
    _close(times.to_dense(), 2 * A.to_dense())
    _close(absneg.to_dense(), A.to_dense().abs())
    _close(sub, (A.values - 1).sum())
    full = res[0]["full"]
    assert isinstance(full, SparseTensor) and full.nnz == A.nnz
    _close(full.to_dense(), A.to_dense())


def test_batch_shard_and_list(results):
    _, res = results
    A, N = gallery.poisson2d(12), nonsymmetric(12)
    n = A.shape[0]
    g = torch.Generator().manual_seed(1)
    torch.randn(n, generator=g, dtype=torch.float64)
    torch.randn(n, 3, generator=g, dtype=torch.float64)
    xb = torch.randn(5, n, generator=g, dtype=torch.float64)
    dense = A.to_dense()[None] * torch.arange(1, 6, dtype=torch.float64)[:, None, None]
    y, x, full, s, mx, mn, mean, fro, ev = res[0]["batch"]
    _close(y, (dense @ xb[..., None])[..., 0])
    _close(x, torch.linalg.solve(dense, xb))
    _close(full.to_dense(), dense)
    _close(s, dense.sum())
    assert float(mx) == 20.0 and float(mn) == -5.0
    _close(mean, dense.mean())
    _close(fro, torch.linalg.matrix_norm(dense))
    _close(ev, torch.linalg.eigvalsh(dense)[:, :2], 1e-6)
    got = res[0]["list"]
    for M, G in zip((A, N, two_components(6)), got):
        _close(G.to_dense(), M.to_dense(), 0)


def test_save_load_round_trip(results):
    world, res = results
    A = gallery.poisson2d(12)
    b = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    full, x = res[0]["load"]
    _close(full.to_dense(), A.to_dense(), 0)
    _close(x, torch.linalg.solve(A.to_dense(), b))
    assert res[0]["files"] == sorted(["metadata.json", *[f"partition_{r}.safetensors" for r in range(world)]])
    _close(res[0]["alias"], b, 0)


def test_more_parts_than_components_and_ranks_without_boundary(results):
    world, res = results
    C = two_components(6)
    x_ref = torch.linalg.solve(C.to_dense(), torch.ones(12, dtype=torch.float64))
    for r in res:
        _close(r["components"][0], x_ref)
    if world == 2:  # contiguous halves = the two components: no rank has a boundary
        assert all(r["components"][1] == 0 for r in res)


def test_nonconvergence_reported_identically(results):
    _, res = results
    msgs = [r["nonconv"] for r in res]
    assert msgs[0] is not None and "3" in msgs[0]
    assert all(m == msgs[0] for m in msgs)


def test_gradients_match_single_process(results):
    _, res = results
    n = 144
    b = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.linspace(-1, 1, n, dtype=torch.float64)
    for name, M in (("cg", gallery.poisson2d(12)), ("gmres", nonsymmetric(12))):
        v = M.values.clone().requires_grad_()
        bb = b.clone().requires_grad_()
        (w * M.with_values(v).solve(bb)).sum().backward()
        gb, gv = res[0][f"grad_{name}"]
        _close(gb, bb.grad, 1e-7)
        _close(gv, v.grad, 1e-6)


def test_mesh_decomposition_matches_single_process(results):
    _, res = results
    import sla.assembly as fe

    cube = fe.unit_cube(5)
    basis = fe.CellBasis(cube, fe.ElementP1("tetra"))
    K, F = fe.apply_dirichlet(
        fe.assemble(fe.laplace, basis), fe.assemble(fe.source, basis, f=1.0), fe.boundary_dofs(basis)
    )
    x_ref = torch.linalg.solve(K.to_dense(), F)
    xs, xa, full = res[0]["mesh"]
    _close(xs, x_ref)
    _close(xa, x_ref)
    assert full.shape == K.shape


def test_pvtu_one_piece_per_rank(results):
    world, res = results
    import sla.assembly as fe

    sq = fe.unit_square(6)
    basis = fe.CellBasis(sq, fe.ElementP1("triangle"))
    K, F = fe.apply_dirichlet(
        fe.assemble(fe.laplace, basis), fe.assemble(fe.source, basis, f=1.0), fe.boundary_dofs(basis)
    )
    n_pieces, n_cells, umax = res[0]["pvtu"]
    assert n_pieces == world and n_cells == sq.cells.shape[0]
    assert abs(umax - float(K.solve(F).max())) < 1e-10


@pytest.mark.slow
def test_a_failing_rank_makes_every_rank_raise():
    res = _spawn(fault_worker, 2)
    assert "injected failure" in res[1]["outcome"]
    assert res[0]["outcome"] != "returned"  # the other rank raised too, instead of hanging
    assert res[0]["seconds"] < 60
