"""The seed's DSparseTensor API on 2 and 4 gloo ranks: every operation against the
single-process SparseTensor, dense torch and SciPy (one spawn per world size)."""

import importlib.util
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _workers import UNEVEN, api_worker, fault_worker, nonsymmetric, simple_spectrum, two_components, uneven_matrix

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


def test_halo_exchange_sends_only_the_boundary(results):
    """D @ x receives exactly the off-rank columns of the rank's rows and each owner sends
    exactly the values its neighbours need (each once)."""
    _, res = results
    A = gallery.poisson2d(12)
    for rank, r in enumerate(res):
        owned, ghosts, recv, sent = r["halo"]
        mine = torch.isin(A.row, owned)
        boundary = torch.unique(A.col[mine][~torch.isin(A.col[mine], owned)])
        assert torch.equal(torch.sort(ghosts).values, boundary)
        assert sum(recv.values()) == ghosts.numel()
        for q, ids in sent.items():  # what rank q receives from this rank: its ghosts owned here
            q_owned, q_ghosts = res[q]["halo"][0], res[q]["halo"][1]
            want = q_ghosts[torch.isin(q_ghosts, owned)]
            assert torch.equal(torch.sort(ids).values, torch.sort(want).values)
            assert not torch.isin(ids, q_owned).any()


def test_products_and_partitioners(results):
    _, res = results
    A = gallery.poisson2d(12)
    g = torch.Generator().manual_seed(1)
    torch.randn(A.shape[0], generator=g, dtype=torch.float64)  # the worker's b comes first in the stream
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


# (halo exchanges, all-reduces) per iteration: the product(s), then the inner products asked
# together in one all-reduce each (CG: (p, Ap) and [(r, r), (r, z)])
PER_ITERATION = {"cg": (1, 2), "minres": (1, 2), "bicgstab": (2, 3), "gmres": (1, 2), "fgmres": (1, 2)}


@pytest.mark.parametrize("method", sorted(PER_ITERATION))
def test_collectives_per_krylov_iteration(results, method):
    _, res = results
    for pc in ("none", "jacobi"):  # the block Jacobi preconditioner communicates nothing
        for r in res:
            c4, c8 = r[f"counts_{method}_{pc}"]
            per_it = {k: (c8.get(k, 0) - c4.get(k, 0)) / 4 for k in ("halo", "all_reduce", "all_gather")}
            assert (per_it["halo"], per_it["all_reduce"]) == PER_ITERATION[method], (method, pc, per_it)
            assert per_it["all_gather"] == 0


def _eig_ref(M, which, k):
    import scipy.sparse.linalg as spla

    lam, V = torch.linalg.eigh(M.to_dense())
    order = {"SA": lam.argsort(), "SM": lam.abs().argsort(), "LA": (-lam).argsort(), "LM": (-lam.abs()).argsort()}
    idx = order[which][:k].sort().values
    if which in ("SA", "SM"):  # an SPD matrix: shift-invert at 0 (the ones nearest 0)
        w = spla.eigsh(M.to_scipy("csc"), k=k, sigma=0.0, which="LM", tol=1e-12)[0]
    else:
        w = spla.eigsh(M.to_scipy("csr"), k=k, which=which, tol=1e-12)[0]
    return lam[idx], V[:, idx], torch.from_numpy(w).sort().values


@pytest.mark.parametrize("which", ["SA", "LA", "LM", "SM"])
def test_distributed_eigsh_matches_single_process(results, which):
    _, res = results
    E = simple_spectrum(12)
    lam_ref, V_ref, lam_scipy = _eig_ref(E, which, 4)
    single = E.eigsh(k=4, which=which, method="lobpcg")[0]
    for r in res:
        lam, V, its, converged, resid, counts = r[f"eig_{which}"]
        assert converged and resid < 1e-7 and its > 0
        _close(lam, lam_ref, 1e-8)
        _close(lam, lam_scipy, 1e-8)
        _close(lam, single, 1e-8)
        _close(lam, res[0][f"eig_{which}"][0], 0)  # replicated: the same on every rank
        overlap = (V.T @ V_ref).abs()  # simple eigenvalues: each vector up to its sign
        _close(overlap, torch.eye(4, dtype=torch.float64), 1e-7)
        assert counts.get("all_gather", 0) <= 5  # the AMG setup's (SA), never per iteration
        if which == "LA":  # unpreconditioned: one product and six small all-reduces per iteration
            assert counts["halo"] <= its + 4 and counts["all_reduce"] <= 6 * its + 12
    assert res[0]["eig_vec_type"] == "OwnedShard" and res[0]["eig_no_gather"] == 0


def test_distributed_eigsh_options_gradients_errors(results):
    _, res = results
    E = simple_spectrum(12)
    lam_all = torch.linalg.eigvalsh(E.to_dense())
    none, auto = res[0]["eig_pc"]
    assert auto < none  # distributed AMG preconditions the smallest end
    _close(res[0]["eig_tol"], lam_all[-2:], 1e-4)
    lam, V, warned = res[0]["eig_gather"]
    near = lam_all[(lam_all - 1.0).abs().argsort()[:3]].sort().values
    _close(lam, near, 1e-8)
    _close(E.to_dense() @ V, V * lam, 1e-7)
    assert warned >= 1  # method='gather' gathers the matrix: ResourceWarning
    N = nonsymmetric(12).to_dense()
    lam, msgs = res[0]["eig_nonsym"]
    _close(lam, torch.linalg.eigvalsh((N + N.T) / 2)[-3:], 1e-8)
    assert len(msgs) == 1
    A = gallery.poisson2d(12)
    skew = 0.3j * ((A.col > A.row).to(torch.complex128) - (A.col < A.row).to(torch.complex128))
    H = SparseTensor(A.values.to(torch.complex128) + skew, A.row, A.col, A.shape).to_dense()
    lam, V, HH = res[0]["eig_complex"]
    _close(HH, ((1 + 1j) * H).mH, 0)  # H() of a complex DSparseTensor: the conjugate transpose
    _close(lam, torch.linalg.eigvalsh(H)[:3], 1e-8)
    _close(H @ V, V * lam.to(V.dtype), 1e-6)
    v = E.values.clone().requires_grad_()
    lam = E.with_values(v).eigsh(k=3, which="SA", return_eigenvectors=False)
    (lam * torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)).sum().backward()
    _close(res[0]["eig_grad"], v.grad, 1e-7)
    assert "eigenvectors" in res[0]["eig_vec_grad"] and "full_tensor" in res[0]["eig_vec_grad"]
    k0, k49, which, sigma, method, sm_indefinite = res[0]["eig_errors"]
    assert "indefinite" in sm_indefinite and "method='gather'" in sm_indefinite
    assert "k must be a positive integer" in k0 and "3k <= n" in k49 and "which must be" in which
    assert "method='gather'" in sigma and "method must be" in method


def test_uneven_partitions_empty_rank_no_boundary(results):
    world, res = results
    for j, (kind, cuts) in enumerate(UNEVEN[world]):
        A = uneven_matrix(kind)
        Ad = A.to_dense()
        b = torch.linspace(-1, 2, A.shape[0], dtype=torch.float64)
        x_ref = torch.linalg.solve(Ad, b)
        for rank, r in enumerate(res):
            out = r[f"uneven_{j}"]
            assert out["n_owned"] == cuts[rank + 1] - cuts[rank]
            _close(out["matmul"], Ad @ b, 1e-12)
            for key in (
                "cg_jacobi",
                "cg_distributed_amg",
                "cg_schwarz",
                "gmres_jacobi",
                "bicgstab_none",
                "minres_none",
            ):
                _close(out[key], x_ref, 1e-8)
            _close(out["eigsh"], torch.linalg.eigvalsh(Ad)[:2], 1e-8)
            s, mx, mn, fro, one, inf = out["reduce"]
            _close(s, Ad.sum())
            assert float(mx) == float(Ad.max()) and float(mn) == float(A.values.min())
            _close(fro, torch.linalg.matrix_norm(Ad))
            _close(one, torch.linalg.matrix_norm(Ad, 1))
            _close(inf, torch.linalg.matrix_norm(Ad, float("inf")))
            _close(out["full"], Ad, 0)
        if kind == "blocks":  # each rank owns whole components: no boundary, no ghost
            assert all(r[f"uneven_{j}"]["n_ghost"] == 0 for r in res)
        if 0 in [cuts[q + 1] - cuts[q] for q in range(world)]:
            assert any(r[f"uneven_{j}"]["n_owned"] == 0 for r in res)


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
    assert all(r["batch_comm"] == {} for r in res)  # BatchShard: no collective in products/solves/eigsh
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
