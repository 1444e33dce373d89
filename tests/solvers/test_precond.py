"""Preconditioners: SPD-ness, exactness where it must hold, multigrid optimality, caching.

Oracles: dense linear algebra (a preconditioner applied to the identity is a matrix whose
symmetry and spectrum we can check), SciPy products for the Galerkin coarse operators,
and mesh-independence of multigrid-preconditioned CG.
"""

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from devices import DEVICES
from gridref import coarse_points, hat_interpolation

from sla import SingularMatrixError, SparseTensor, gallery
from sla.solvers import krylov
from sla.solvers.precond import aggregate, gmg, make_preconditioner


def _dense_of(M, n, device):
    eye = torch.eye(n, dtype=torch.float64, device=device).unsqueeze(0)
    return M(eye)[0]


def _variable_poisson(nx, ny, seed=0, device="cpu"):
    """9-point, variable-coefficient SPD stencil on an nx x ny grid (records the grid)."""
    rng = np.random.default_rng(seed)
    n = nx * ny
    idx = np.arange(n).reshape(nx, ny)
    rows, cols, vals = [], [], []
    for dx, dy in [(0, 1), (1, 0), (1, 1), (1, -1)]:
        a = idx[max(0, -dx) : nx - max(0, dx), max(0, -dy) : ny - max(0, dy)]
        b = idx[max(0, dx) : nx + min(0, dx) or None, max(0, dy) : ny + min(0, dy) or None]
        a, b = a.ravel(), b.ravel()
        w = rng.uniform(0.1, 2.0, a.size) * (0.3 if dx and dy else 1.0)
        rows += [a, b]
        cols += [b, a]
        vals += [-w, -w]
    off = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    S = off + sp.diags(-np.asarray(off.sum(1)).ravel() + 0.05)
    A = SparseTensor.from_scipy(S.tocsr()).to(device)
    A.pattern.cache["grid"] = (nx, ny)
    return A, S.tocsr()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "name,opts",
    [
        ("jacobi", {}),
        ("block_jacobi", {"block_size": 3}),
        ("chebyshev", {}),
        ("amg", {"max_coarse": 10}),
        ("gmg", {"max_coarse": 10, "transfers": "csr"}),
        ("gmg", {"max_coarse": 10, "transfers": "stencil"}),
        ("amg", {"max_coarse": 10, "cycle": "W"}),
        ("gmg", {"max_coarse": 10, "cycle": "W"}),
    ],
)
def test_preconditioner_is_spd(name, opts, device):
    A, _ = _variable_poisson(9, 10, device=device)
    M = make_preconditioner(A, name, **opts)
    D = _dense_of(M, A.shape[0], device)
    torch.testing.assert_close(D, D.T, rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.eigvalsh(D).min()) > 0
    # a good preconditioner clusters the spectrum of M A around 1: kappa(MA) < kappa(A)
    Ad = A.to_dense()
    ev = torch.linalg.eigvals(D @ Ad).real
    ka = torch.linalg.cond(Ad)
    assert float(ev.max() / ev.min()) < float(ka)


def test_block_jacobi_with_one_block_is_the_inverse():
    A, _ = _variable_poisson(5, 6)
    M = make_preconditioner(A, "block_jacobi", block_size=30)
    torch.testing.assert_close(_dense_of(M, 30, "cpu"), torch.linalg.inv(A.to_dense()), rtol=1e-10, atol=1e-12)
    # blocks that do not divide n are padded with the identity
    M7 = make_preconditioner(A, "block_jacobi", block_size=7)
    z = M7(torch.ones(1, 30, 1, dtype=torch.float64))
    blk = A.to_dense()[28:, 28:]
    torch.testing.assert_close(z[0, 28:, 0], torch.linalg.solve(blk, torch.ones(2, dtype=torch.float64)))


@pytest.mark.parametrize("dims", [(9, 10), (8, 7), (5, 6, 7)])
def test_gmg_transfers_and_galerkin(dims):
    n = int(np.prod(dims))
    axes = tuple(range(len(dims)))
    # P as a dense matrix, from prolongation of unit vectors; R must be its transpose
    nc = int(np.prod([d // 2 for d in dims]))
    P = gmg.prolong(torch.eye(nc, dtype=torch.float64), dims, axes)
    R = gmg.restrict(torch.eye(n, dtype=torch.float64), dims, axes)
    torch.testing.assert_close(R, P.T)
    # oracle: Kronecker product of 1-D linear interpolation (coarse I on fine 2I+1)
    ref = torch.ones(1, 1, dtype=torch.float64)
    for d in dims:
        p1 = torch.zeros(d, d // 2, dtype=torch.float64)
        for i in range(d // 2):
            p1[2 * i + 1, i] = 1.0
            p1[2 * i, i] = 0.5
            if 2 * i + 2 < d:
                p1[2 * i + 2, i] = 0.5
        ref = torch.kron(ref, p1)
    torch.testing.assert_close(P, ref)
    g = torch.Generator().manual_seed(1)
    for ax in [axes, axes[:1], axes[-1:]]:  # x += P xc in place, on every axis subset shape
        Pa = gmg.prolong(
            torch.eye(int(np.prod([d // 2 if a in ax else d for a, d in enumerate(dims)])), dtype=torch.float64),
            dims,
            ax,
        )
        xc = torch.randn(Pa.shape[1], 2, generator=g, dtype=torch.float64)
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        expected = x + Pa @ xc
        out = gmg.prolong_add_(x, xc, dims, ax)
        assert out is x
        torch.testing.assert_close(x, expected)
    torch.testing.assert_close(gmg.transfer_matrix(dims, axes, False, torch.float64, "cpu").csr64().to_dense(), ref)
    torch.testing.assert_close(gmg.transfer_matrix(dims, axes, True, torch.float64, "cpu").csr64().to_dense(), ref.T)
    if len(dims) == 2:
        A, S = _variable_poisson(*dims)
    else:
        A = _poisson3d_aniso(dims)
        S = A.to_scipy("csr")
    M = make_preconditioner(A, "gmg", max_coarse=1)  # CPU: stored CSR transfers
    ref = torch.as_tensor(S.toarray())
    level_dims = tuple(dims)
    xs = [list(range(d)) for d in dims]  # each level's points on the fine grid's axes (zero at -1 and d)
    for lv in range(1, len(M.levels)):  # every level is the Galerkin product of the one above
        axes = tuple(a for a, d in enumerate(level_dims) if d >= 4)
        coarse = tuple(d // 2 if a in axes else d for a, d in enumerate(level_dims))
        Pl = torch.ones(1, 1, dtype=torch.float64)  # the oracle: linear interpolation from the geometry
        for a in range(len(dims)):
            p1 = hat_interpolation(xs[a], -1, dims[a]) if a in axes else np.eye(level_dims[a])
            Pl = torch.kron(Pl, torch.as_tensor(p1))
            xs[a] = coarse_points(xs[a]) if a in axes else xs[a]
        eye = torch.eye(int(np.prod(coarse)), dtype=torch.float64)
        torch.testing.assert_close(gmg.prolong(eye, level_dims, axes, M.ends[lv - 1]), Pl)
        torch.testing.assert_close(M.levels[lv - 1].P.to_dense(), Pl)
        ref = Pl.T @ ref @ Pl
        torch.testing.assert_close(M.levels[lv].A.to_dense(), ref, rtol=1e-12, atol=1e-12)
        level_dims = coarse
    assert len(M.levels) >= (3 if len(dims) == 2 else 2)


@pytest.mark.parametrize("n", [1000, 999, 250])
def test_gmg_iterations_do_not_depend_on_the_grid_being_a_power_of_two(n):
    """Levels with an odd number of points after even ones (1000: 1000, 500, 250, 125, 62, ...) take
    the geometric weight at their last point: CG takes 8 iterations, as on 1024^2 (10 with 1/2 there)."""
    A = gallery.poisson2d(n)
    b = torch.ones(n * n, dtype=torch.float64)
    x, info = A.solve(b, backend="pytorch", method="cg", preconditioner="gmg", rtol=1e-8, return_info=True)
    assert info.iterations <= 8, info.iterations
    assert float(torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b)) <= 1e-8


def _poisson3d_aniso(dims):
    L = [gallery.poisson1d(d).to_scipy("csr") for d in dims]
    I = [sp.identity(d, format="csr") for d in dims]
    S = (
        sp.kron(sp.kron(L[0], I[1]), I[2])
        + 3.0 * sp.kron(sp.kron(I[0], L[1]), I[2])
        + 0.2 * sp.kron(sp.kron(I[0], I[1]), L[2])
    )
    A = SparseTensor.from_scipy(S.tocsr())
    A.pattern.cache["grid"] = dims
    return A


def _cg_iterations(A, name):
    M = make_preconditioner(A, name)
    Acsr = A.pattern.csr(A.values)
    b = torch.ones(1, A.shape[0], 1, dtype=A.dtype, device=A.device)
    res = krylov.cg(lambda v: (Acsr @ v[0]).unsqueeze(0), b, precond=M, rtol=1e-8)
    assert bool(res.converged.all())
    return int(res.iterations.max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["amg", "gmg"])
def test_multigrid_iterations_bounded_under_refinement(name, device):
    its = [_cg_iterations(gallery.poisson2d(n, device=device), name) for n in (32, 64, 128, 256)]
    assert max(its) <= 20, its
    assert its[-1] <= 1.5 * its[0] + 2, its
    plain = _cg_iterations(gallery.poisson2d(128, device=device), "jacobi")
    assert plain > 8 * its[2]


@pytest.mark.parametrize("device", DEVICES)
def test_gmg_3d_and_variable_coefficients(device):
    assert _cg_iterations(gallery.poisson3d(24, device=device), "gmg") <= 12
    assert _cg_iterations(gallery.poisson3d(24, device=device), "amg") <= 15
    A, _ = _variable_poisson(60, 70, device=device)
    assert _cg_iterations(A, "gmg") <= 25


def test_amg_aggregates_cached_on_pattern():
    A = gallery.poisson2d(64)
    M1 = make_preconditioner(A, "amg")
    keys = [k for k in A.pattern.cache if isinstance(k, tuple) and k[0] == "amg_aggregates"]
    assert len(keys) == 1
    aggs = A.pattern.cache[keys[0]]
    # new values, same pattern; a power-of-two scale is exact, so no strength-threshold tie of the
    # (value-dependent) coarse MIS(2) levels can flip
    A2 = SparseTensor._make(A.values * 4.0, A.pattern)
    M2 = make_preconditioner(A2, "amg")
    assert A.pattern.cache[keys[0]] is aggs
    r = torch.randn(1, A.shape[0], 1, dtype=torch.float64)
    torch.testing.assert_close(M2(r), M1(r) / 4.0)  # same hierarchy structure, scaled operator


@pytest.mark.parametrize("device", DEVICES)
def test_mis2_aggregates(device):
    # oracle: graph distances computed by SciPy on the strength graph
    import scipy.sparse.csgraph as csg

    A = gallery.poisson2d(30, device=device)
    p = A.pattern
    off = p.row != p.col
    counts = torch.bincount(p.row[off], minlength=p.shape[0])
    crow = torch.zeros(p.shape[0] + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=crow[1:])
    agg, nagg = aggregate.mis2_aggregation(crow, p.col[off], p.shape[0])
    agg = agg.cpu().numpy()
    assert agg.min() == 0 and agg.max() == nagg - 1
    assert len(np.unique(agg)) == nagg  # every aggregate non-empty, every node aggregated
    G = A.cpu().to_scipy("csr")
    D = csg.shortest_path(G != 0, unweighted=True)
    for k in range(nagg):
        nodes = np.nonzero(agg == k)[0]
        assert D[np.ix_(nodes, nodes)].max() <= 4  # grown within distance 2 of one root
        sub = (G != 0)[nodes][:, nodes]
        assert csg.connected_components(sub, directed=False)[0] == 1  # connected
    assert 5 * nagg < A.shape[0] < 15 * nagg  # coarsening ratio of an MIS(2) on a 5-point graph


@pytest.mark.parametrize("device", DEVICES)
def test_amg_mis2_bounded_iterations(device):
    its = []
    for n in (32, 128):
        A = gallery.poisson2d(n, device=device)
        M = make_preconditioner(A, "amg", aggregation="mis2")
        Acsr = A.pattern.csr(A.values)
        b = torch.ones(1, A.shape[0], 1, dtype=torch.float64, device=device)
        res = krylov.cg(lambda v, Acsr=Acsr: (Acsr @ v[0]).unsqueeze(0), b, precond=M, rtol=1e-8)
        assert bool(res.converged.all())
        its.append(int(res.iterations.max()))
    assert its[1] <= 30 and its[1] <= 1.6 * its[0] + 2, its


def test_gmg_stencil_reading_and_rejection():
    for A, dims in [
        (gallery.poisson2d(7, 2), (7, 2)),
        (_variable_poisson(9, 10)[0], (9, 10)),
        (_poisson3d_aniso((5, 6, 7)), (5, 6, 7)),
    ]:
        o1, S1 = gmg._stencil(A.pattern, A.values, dims)
        o2, S2 = gmg._stencil(A.pattern, A.values, dims, exact=True)
        assert o1 == o2 and torch.equal(S1, S2)
        D = A.to_dense()  # every entry where its offset says
        n = D.shape[0]
        idx = torch.arange(n).reshape(dims)
        for o, g in zip(o1, S1):
            lin = sum(e * st for e, st in zip(o, gmg._strides(dims)))
            ok = torch.ones(dims, dtype=torch.bool)
            for a, e in enumerate(o):
                if e > 0:
                    ok.narrow(a, dims[a] - e, e).fill_(False)
                elif e < 0:
                    ok.narrow(a, 0, -e).fill_(False)
            i = idx[ok]
            torch.testing.assert_close(g[ok], D[i, i + lin])
    # a coupling that wraps around a grid line, and one that is not a neighbour at all
    S = gallery.poisson2d(6).to_scipy("csr").tolil()
    S[5, 6] = S[6, 5] = -0.5  # (0, 5) -- (1, 0): adjacent in memory, not on the grid
    wrapped = SparseTensor.from_scipy(S.tocsr())
    wrapped.pattern.cache["grid"] = (6, 6)
    with pytest.raises(ValueError, match="compact stencil"):
        make_preconditioner(wrapped, "gmg", max_coarse=1)
    S = gallery.poisson2d(6).to_scipy("csr").tolil()
    S[0, 14] = S[14, 0] = -0.5  # (0, 0) -- (2, 2)
    far = SparseTensor.from_scipy(S.tocsr())
    far.pattern.cache["grid"] = (6, 6)
    with pytest.raises(ValueError, match="compact stencil"):
        make_preconditioner(far, "gmg", max_coarse=1)


@pytest.mark.parametrize("name", ["amg", "gmg"])
@pytest.mark.parametrize("cycle", ["V", "W"])
def test_cycle_matches_its_dense_recursion(name, cycle):
    """The cycle against its definition in dense algebra, built from the hierarchy's pieces:
    pre-smoothing S b, gamma corrections x += P B_{l+1} R (b - A x), post-smoothing x += S (b - A x)."""
    from sla.solvers.precond.multigrid import _chebyshev

    A, _ = _variable_poisson(20, 22)
    M = make_preconditioner(A, name, max_coarse=4, cycle=cycle)
    h, cinv = M.hierarchies[0], M.coarse[0]
    assert len(h) >= 4
    gamma = {"V": 1, "W": 2}[cycle]

    def dense(f, n):
        return torch.stack([f(e.unsqueeze(1))[:, 0] for e in torch.eye(n, dtype=torch.float64)], 1)

    def B(lvl):  # the cycle on level lvl as a dense matrix
        lv = h[lvl]
        if lvl == len(h) - 1:
            return cinv
        n = lv.n
        Al = lv.A.to_dense()
        S = dense(lambda v: _chebyshev(lv, v, None, M.degree, M.ratio), n)
        P = dense(lambda v: lv.correct(torch.zeros(n, 1, dtype=torch.float64), v), h[lvl + 1].n)
        R = dense(lambda v: lv.restrict(v), n)
        torch.testing.assert_close(R, P.T)
        I = torch.eye(n, dtype=torch.float64)
        X = S
        g = gamma if lvl + 2 < len(h) else 1
        for _ in range(g):
            X = X + P @ B(lvl + 1) @ R @ (I - Al @ X)
        return X + S @ (I - Al @ X)

    torch.testing.assert_close(_dense_of(M, A.shape[0], "cpu"), B(0), rtol=1e-10, atol=1e-12)
    if cycle == "W":  # a W-cycle is a better (more expensive) preconditioner
        V = _dense_of(make_preconditioner(A, name, max_coarse=4, cycle="V"), A.shape[0], "cpu")
        Ad = A.to_dense()
        cond = lambda D: (lambda ev: float(ev.max() / ev.min()))(torch.linalg.eigvals(D @ Ad).real)
        assert cond(B(0)) < cond(V)


def test_errors_name_the_problem():
    A = gallery.poisson2d(8)
    with pytest.raises(ValueError, match="unknown preconditioner"):
        make_preconditioner(A, "ilu")
    B = SparseTensor.from_scipy(A.to_scipy("csr"))  # no grid recorded
    with pytest.raises(ValueError, match="structured grid"):
        make_preconditioner(B, "gmg")
    Z = SparseTensor.from_dense(torch.tensor([[0.0, 1.0], [1.0, 2.0]], dtype=torch.float64))
    with pytest.raises(SingularMatrixError, match="diagonal"):
        make_preconditioner(Z, "jacobi")
    with pytest.raises(ValueError, match="block_size"):
        make_preconditioner(A, "block_jacobi", block_size=0)
    with pytest.raises(TypeError, match="takes no options"):
        make_preconditioner(A, "none", degree=2)
    with pytest.raises(ValueError, match="aggregation must be"):
        make_preconditioner(gallery.poisson2d(40), "amg", aggregation="greedy")
    for name in ("amg", "gmg"):
        with pytest.raises(ValueError, match=r"cycle must be one of \['K', 'V', 'W', 'auto'\], got 'F'"):
            make_preconditioner(A, name, cycle="F")


def test_cycle_auto_is_v():
    A = gallery.poisson2d(40)
    assert make_preconditioner(A, "amg").cycle == "V"
    assert make_preconditioner(A, "gmg").cycle == "V"
    assert "W-cycle" in make_preconditioner(A, "amg", cycle="W").describe()


def test_standard_aggregation_matches_pyamg():
    pyamg = pytest.importorskip("pyamg")
    from sla.solvers.precond.aggregate import standard_aggregation

    L = gallery.poisson2d(30).to_scipy("csr")
    iso = sp.block_diag([L, sp.identity(5, format="csr")], format="csr")  # 5 isolated nodes: left unaggregated
    for S in (L, iso, gallery.poisson3d(7).to_scipy("csr")):
        S = sp.csr_matrix(S)  # older pyamg (5.2) takes csr_matrix only, not csr_array
        S.sort_indices()
        ref, _ = pyamg.aggregation.standard_aggregation(S)
        ref = ref.tocsr()
        expected = np.full(S.shape[0], -1)
        expected[np.repeat(np.arange(S.shape[0]), np.diff(ref.indptr))] = ref.indices
        agg, nagg = standard_aggregation(torch.from_numpy(S.indptr), torch.from_numpy(S.indices), S.shape[0])
        assert nagg == ref.shape[1]
        np.testing.assert_array_equal(agg.numpy(), expected)
    assert (
        int((agg == -1).sum()) == 0
        and int(
            (
                standard_aggregation(torch.from_numpy(iso.indptr), torch.from_numpy(iso.indices), iso.shape[0])[0] == -1
            ).sum()
        )
        == 5
    )


# ----------------------------------------------- near-null space (vector problems)
def _cantilever(nx, ny, device="cpu"):
    """Plane-stress P2 cantilever clamped at x = 0 (the elasticity problem's system): (K, K0, f0)."""
    from sla.assembly import assemble, elasticity
    from sla.assembly.cantilever import cantilever_system, plane_stress_lame

    K0, f0, basis = cantilever_system(nx=nx, ny=ny, device=device)
    lam, mu = plane_stress_lame(1000.0, 0.3)
    return assemble(elasticity, basis, lam=lam, mu=mu), K0, f0


def test_rigid_body_modes_are_the_null_space_of_free_elasticity():
    from sla.assembly import CellBasis, ElementP1, ElementVector, assemble, elasticity, unit_cube
    from sla.solvers.precond.nullspace import rigid_body_modes

    K2 = _cantilever(8, 2)[0]
    basis = CellBasis(unit_cube(3, dtype=torch.float64), ElementVector(ElementP1("tetra")))
    K3 = assemble(elasticity, basis, lam=1.0, mu=0.5)
    for K, k in ((K2, 3), (K3, 6)):
        points, ncomp = K.pattern.cache["dof_points"]  # recorded by the assembly
        B = rigid_body_modes(points, ncomp)
        assert B.shape == (K.shape[0], k)
        assert float((K @ B).abs().max()) < 1e-10 * float(K.values.abs().max())
        assert torch.linalg.matrix_rank(B) == k
    with pytest.raises(ValueError, match="ncomp=3"):
        rigid_body_modes(torch.zeros(4, 2), 3)


def test_fit_candidates_reproduces_them_with_an_orthonormal_tentative_prolongator():
    from sla.solvers.precond.nullspace import fit_candidates, rigid_body_modes

    g = torch.Generator().manual_seed(0)
    points = torch.rand(40, 2, generator=g, dtype=torch.float64)
    B = rigid_body_modes(points)
    node_agg = torch.arange(40) // 2  # aggregates of two nodes (four dofs)
    node_agg[0] = 19  # node 0 joins the last aggregate; aggregate 0 keeps node 1 alone (two dofs:
    node_agg[3] = -1  # one candidate dropped), node 3 belongs to none, leaving node 2 alone in aggregate 1
    agg = node_agg.repeat_interleave(2)
    rows, cols, vals, nc, Bc, cnode = fit_candidates(agg, 20, B)
    T = torch.zeros(80, nc, dtype=torch.float64).index_put_((rows, cols), vals)
    assert nc == 18 * 3 + 2 * 2
    assert torch.allclose(T.T @ T, torch.eye(nc, dtype=torch.float64), atol=1e-12)
    on = agg >= 0
    assert torch.allclose((T @ Bc)[on], B[on], atol=1e-12)
    assert (T[~on] == 0).all()
    assert cnode.tolist() == sorted(cnode.tolist()) and int(cnode.max()) == 19


@pytest.mark.parametrize("device", DEVICES)
def test_amg_with_rigid_body_modes_solves_elasticity_in_few_iterations(device):
    """The assembly records the dof coordinates: AMG takes the rigid-body modes as its
    near-null space by itself; with the constant alone CG needs many times more iterations."""
    import scipy.sparse.linalg as spla

    _, A, b = _cantilever(120, 12, device)
    ref = spla.spsolve(A.to("cpu").to_scipy().tocsc(), b.cpu().numpy())
    x, info = A.solve(b, backend="pytorch", method="cg", preconditioner="amg", return_info=True)
    assert info.iterations <= 40
    assert np.allclose(x.cpu().numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    _, i0 = A.solve(
        b,
        backend="pytorch",
        method="cg",
        preconditioner="amg",
        options={"near_nullspace": "constant"},
        return_info=True,
        maxiter=5000,
    )
    assert i0.iterations > 4 * info.iterations
    M = make_preconditioner(A, "amg")
    assert M.candidates == 3
    # the same modes given explicitly (pyamg's B) give the same hierarchy
    from sla.solvers.precond.nullspace import rigid_body_modes

    B = rigid_body_modes(*A.pattern.cache["dof_points"])
    M2 = make_preconditioner(A, "amg", near_nullspace=B, block_size=2)
    assert [lv.n for lv in M2.levels] == [lv.n for lv in M.levels]


def test_amg_near_nullspace_is_validated():
    A = gallery.poisson2d(8)
    with pytest.raises(ValueError, match="near_nullspace must be"):
        make_preconditioner(A, "amg", near_nullspace="rigid")
    with pytest.raises(ValueError, match="n = 64"):
        make_preconditioner(A, "amg", near_nullspace=torch.ones(63, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="block_size"):
        make_preconditioner(A, "amg", near_nullspace=torch.ones(64, 1, dtype=torch.float64), block_size=5)


def test_amg_says_which_aggregation_built_it(monkeypatch):
    """'auto' aggregation depends on whether pyamg is installed: SolveInfo.notes names the one used."""
    from sla.solvers.precond import amg

    A = gallery.poisson2d(40)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    _, info = A.solve(
        b, backend="pytorch", method="cg", preconditioner="amg", options={"aggregation": "mis2"}, return_info=True
    )
    assert any(n.startswith("amg (") and n.endswith("mis2 aggregation") for n in info.notes)
    monkeypatch.setattr(amg, "_has_pyamg", lambda: False)
    why = "mis2 aggregation (aggregation='auto': pyamg is not installed)"
    assert make_preconditioner(gallery.poisson2d(41), "amg").describe().endswith(why)
    if importlib.util.find_spec("pyamg") is not None:
        monkeypatch.undo()
        assert make_preconditioner(gallery.poisson2d(42), "amg").describe().endswith("standard (pyamg) aggregation")


@pytest.mark.parametrize("layout", ["interleaved", "scattered"])
def test_amalgamate_against_the_scipy_node_graph(layout):
    """The node graph of a dof graph against SciPy's ``N^T |A| N`` pattern (``N`` the dof-to-node
    incidence) without its diagonal: dofs interleaved by node (the assembly's order, where repeated
    pairs are dropped before the sort) and scattered over the nodes."""
    import scipy.sparse as sp

    from sla.solvers.precond.nullspace import amalgamate

    rng = np.random.default_rng(5)
    n, nodes = 90, 30
    A = sp.random(n, n, density=0.08, random_state=rng, format="csr") + sp.eye(n, format="csr")
    A.sort_indices()
    node = np.arange(n) // 3 if layout == "interleaved" else rng.permutation(np.arange(n) // 3)
    N = sp.csr_matrix((np.ones(n), (np.arange(n), node)), shape=(n, nodes))
    ref = (N.T @ abs(A) @ N).tolil()
    ref.setdiag(0)
    ref = ref.tocsr()
    ref.eliminate_zeros()
    ref.sort_indices()
    crow, col = amalgamate(
        torch.from_numpy(A.indptr.astype(np.int64)),
        torch.from_numpy(A.indices.astype(np.int32)),
        torch.from_numpy(node),
        nodes,
    )
    assert crow.tolist() == ref.indptr.tolist() and col.tolist() == ref.indices.tolist()


def test_elasticity_amg_example_takes_the_modes_either_way():
    """examples/elasticity_amg.py: the rigid-body modes recorded by the assembly and passed explicitly
    (``sla.precond.rigid_body_modes`` with a SciPy matrix) give the same CG iterations and the same
    solution, which SciPy's direct solve confirms; the constant alone takes many times more."""
    import sys
    from pathlib import Path

    import scipy.sparse.linalg as spla

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    try:
        import elasticity_amg
    finally:
        sys.path.pop(0)
    out = elasticity_amg.main(4)
    assert out["modes"] == out["explicit"] <= 25 and out["constant"] > 4 * out["modes"]
    from sla.assembly.cantilever import cantilever_system_3d

    K, f, _ = cantilever_system_3d(nx=32, ny=4, nz=4)
    ref = spla.spsolve(K.to_scipy().tocsc(), f.numpy())
    for x in (out["x"], out["x_explicit"]):
        assert np.allclose(x.numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max())
