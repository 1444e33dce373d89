"""The geometric multigrid cycle: the lean Chebyshev smoother against the general one, the
CUDA-graph replay against the eager cycle (GPU), and the options that choose them."""

from __future__ import annotations

import pytest
import torch
from devices import DEVICES

import sla
from sla import gallery
from sla.solvers.precond import make_preconditioner
from sla.solvers.precond.chebyshev import chebyshev_iteration
from sla.solvers.precond.graphed import GraphedApply, check_graph

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")


@pytest.mark.parametrize("degree", [1, 2, 3, 5])
@pytest.mark.parametrize("start", ["zero", "given"])
def test_chebyshev_one_interval_equals_the_per_member_form(degree, start):
    """The smoother's float-interval path (pending scale) is the same polynomial as the tensor-
    interval path (Saad Alg. 12.1 as written), to rounding."""
    A = gallery.poisson2d(12)
    C = A.pattern.csr(A.values)

    def residual(b, x):
        return b - C @ x

    g = torch.Generator().manual_seed(0)
    b = torch.randn(144, 3, generator=g, dtype=torch.float64)
    dinv = torch.full((144, 1), 0.25, dtype=torch.float64)
    x0 = None if start == "zero" else torch.randn(144, 3, generator=g, dtype=torch.float64)
    lo, hi = 0.2, 2.0
    x1 = chebyshev_iteration(residual, dinv, b, None if x0 is None else x0.clone(), lo, hi, degree)

    def t(v):
        return torch.tensor(v, dtype=torch.float64)

    x2 = chebyshev_iteration(residual, dinv, b, None if x0 is None else x0.clone(), t(lo), t(hi), degree)
    torch.testing.assert_close(x1, x2, rtol=1e-13, atol=1e-13)
    # the polynomial reduces the error of A x = b over the interval: a smoother, not a no-op
    xs = torch.linalg.solve(A.to_dense(), b)
    e0 = (xs if x0 is None else xs - x0).norm()
    assert (xs - x1).norm() < e0


def test_graph_option_is_checked():
    with pytest.raises(ValueError, match="graph must be True, False or 'auto', got 'yes'"):
        check_graph("yes", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a CUDA matrix, got one on cpu"):
        make_preconditioner(gallery.poisson2d(16), "gmg", graph=True)
    M = make_preconditioner(gallery.poisson2d(16), "gmg")  # 'auto' on the CPU: eager
    assert M._graph is None
    calls = []
    G = GraphedApply(lambda r: calls.append(1) or 2 * r)
    torch.testing.assert_close(G(torch.ones(3)), 2 * torch.ones(3))  # CPU input: eager, every call
    G(torch.ones(3))
    assert len(calls) == 2 and not G.graphs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cycle", ["V", "W"])
def test_gmg_cg_converges_with_the_lean_cycle(device, cycle):
    """GMG-CG on 2D and 3D Poisson reaches rtol 1e-8 with the true residual checked here."""
    for A in (gallery.poisson2d(64, device=device), gallery.poisson3d(16, device=device)):
        b = torch.ones(A.shape[0], dtype=A.dtype, device=device)
        x, info = sla.solve(
            A, b, backend="pytorch", method="cg", preconditioner="gmg", options={"cycle": cycle}, return_info=True
        )
        res = float(torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b))
        assert res <= 1e-8 and info.iterations <= 12


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("shape", [(256, 256), (30, 33, 35)])
@pytest.mark.parametrize("K", [1, 3])
def test_graphed_cycle_equals_the_eager_cycle(shape, K):
    """The cycle with its coarse levels replayed from a CUDA graph computes the eager cycle: the
    same kernels, so the same numbers (1e-12), on new inputs after the capture too."""
    A = gallery.poisson2d(*shape, device="cuda") if len(shape) == 2 else _poisson3d(shape)
    Mg = make_preconditioner(A, "gmg", graph=True)
    Me = make_preconditioner(A, "gmg", graph=False)
    g = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(4):  # eager, capture + replay, replay, replay
        r = torch.randn(1, A.shape[0], K, generator=g, dtype=A.dtype, device="cuda")
        z, ze = Mg(r), Me(r)
        torch.testing.assert_close(z, ze, rtol=1e-12, atol=1e-12 * float(ze.abs().max()))
    assert Mg.graph_status() == ["captured"]
    assert Me.graph_status() == ["eager"]
    z2 = Mg(r)
    assert z2.data_ptr() != z.data_ptr()  # each call returns its own tensor


@pytest.mark.gpu
@cuda
def test_graphed_cg_solve_matches_eager():
    A = gallery.poisson2d(512, device="cuda")
    b = torch.ones(A.shape[0], dtype=A.dtype, device="cuda")
    kw = dict(backend="pytorch", method="cg", rtol=1e-8, return_info=True)
    xg, ig = sla.solve(A, b, preconditioner=sla.precond.GMG(graph=True), **kw)
    xe, ie = sla.solve(A, b, preconditioner=sla.precond.GMG(graph=False), **kw)
    assert ig.iterations == ie.iterations
    torch.testing.assert_close(xg, xe, rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.vector_norm(b - A @ xg) / torch.linalg.vector_norm(b)) <= 1e-8


@pytest.mark.gpu
@cuda
def test_a_capture_that_fails_falls_back_to_eager():
    """A function with a host synchronisation cannot be captured: the wrapper says why, runs it
    eagerly from then on, and the device stays usable."""

    def syncing(r):
        return r * float(r.abs().max())

    G = GraphedApply(syncing)
    r = torch.arange(4.0, device="cuda")
    for _ in range(3):
        torch.testing.assert_close(G(r), r * 3.0)
    assert G.failed is not None and not G.graphs
    torch.testing.assert_close((r + 1).sum().cpu(), torch.tensor(10.0))


def _poisson3d(shape):
    from sla.gallery import stencil_operator

    offs = [(0, 0, 0), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
    return stencil_operator(shape, offs, [6.0] + [-1.0] * 6, device="cuda")


@pytest.mark.parametrize("cycle", ["V", "W", "K"])
def test_coarse_levels_go_through_the_graph_wrapper(cycle):
    """The cycle below the fine level is what the CUDA graph captures: routed through the wrapper
    (eager on the CPU), the cycle is unchanged, and the wrapper is asked once per coarse visit."""
    from sla.solvers.precond.multigrid import Multigrid

    A = gallery.poisson2d(40)
    M = make_preconditioner(A, "gmg", cycle=cycle, max_coarse=10)
    g = torch.Generator().manual_seed(2)
    r = torch.randn(1, A.shape[0], 2, generator=g, dtype=A.dtype)
    ref = M(r)
    calls = []
    h, c = M.hierarchies[0], M.coarse[0]
    M._graph = {id(h): GraphedApply(lambda b: calls.append(b.shape) or Multigrid._cycle(M, h, c, 1, b))}
    torch.testing.assert_close(M(r), ref, rtol=0, atol=0)
    assert calls and all(s == (M.levels[1].n, 2) for s in calls)
    # V once; W twice; K once or twice (its second Krylov step is skipped on the CPU when the first
    # one already reduced the coarse residual enough)
    assert len(calls) in {"V": (1,), "W": (2,), "K": (1, 2)}[cycle]


def _aniso3d(dims, scale=1.0):
    import scipy.sparse as sp

    L = [gallery.poisson1d(d).to_scipy("csr") for d in dims]
    eye = [sp.identity(d, format="csr") for d in dims]
    S = (
        sp.kron(sp.kron(L[0], eye[1]), eye[2])
        + 3.0 * sp.kron(sp.kron(eye[0], L[1]), eye[2])
        + 0.2 * sp.kron(sp.kron(eye[0], eye[1]), L[2])
    )
    A = sla.SparseTensor.from_scipy((scale * S).tocsr())
    A.pattern.cache["grid"] = dims
    return A


def _contrast2d(n, c, seed=0):
    """Finite volumes with coefficients 1 or ``c`` in random 8 x 8 blocks, plus a small reaction."""
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    blk = rng.integers(0, 2, size=(n // 8 + 1, n // 8 + 1))
    k = np.where(np.kron(blk, np.ones((8, 8)))[: n + 1, : n + 1] > 0, c, 1.0)
    idx = np.arange(n * n).reshape(n, n)
    rows, cols, vals = [], [], []
    diag = 1e-3 * k[1:, 1:].ravel().copy()
    for di, dj in ((1, 0), (0, 1)):
        a, b = idx[: n - di, : n - dj].ravel(), idx[di:, dj:].ravel()
        w = 0.5 * (k[1 : n + 1 - di, 1 : n + 1 - dj] + k[1 + di : n + 1, 1 + dj : n + 1]).ravel()
        rows += [a, b]
        cols += [b, a]
        vals += [-w, -w]
        np.add.at(diag, a, w)
        np.add.at(diag, b, w)
    rows.append(idx.ravel()), cols.append(idx.ravel()), vals.append(diag)
    S = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n))
    A = sla.SparseTensor.from_scipy(S)
    A.pattern.cache["grid"] = (n, n)
    return A


@pytest.mark.parametrize(
    "make",
    [lambda: gallery.poisson2d(96, 80), lambda: _aniso3d((20, 18, 22)), lambda: _contrast2d(96, 1e9)],
    ids=["poisson2d", "anisotropic3d", "contrast1e9"],
)
def test_single_precision_coarse_levels_keep_the_iterations(make):
    """Coarse levels in float32 (the fine level and CG in float64): the same CG iterations as the
    all-double cycle to rtol 1e-10, the true residual checked in double -- also with coefficient
    jumps of 1e9 (relative rounding of an M-matrix's entries barely moves its coarse solves)."""
    from sla.solvers import krylov

    A = make()
    C = A.pattern.csr(A.values)
    b = torch.ones(1, A.shape[0], 1, dtype=A.dtype)
    its = {}
    for cd in (torch.float64, torch.float32):
        M = make_preconditioner(A, "gmg", coarse_dtype=cd, transfers="stencil")
        assert M.coarse_dtype == cd and M.levels[0].A.dtype == torch.float64
        assert all(lv.A.dtype == cd and lv.dinv.dtype == cd for lv in M.levels[1:])
        assert M.coarse[0].dtype == cd and M(b).dtype == torch.float64
        res = krylov.cg(lambda v: (C @ v[0]).unsqueeze(0), b, precond=M, rtol=1e-10, maxiter=500)
        x = res.x[0]
        assert float((b[0] - C @ x).norm() / b.norm()) <= 1e-10
        its[cd] = int(res.iterations.max())
    assert its[torch.float32] <= its[torch.float64] + 1


def test_coarse_dtype_is_checked():
    A = gallery.poisson2d(32)
    assert make_preconditioner(A, "gmg").coarse_dtype == torch.float64  # 'auto' on the CPU: A's dtype
    with pytest.raises(ValueError, match="coarse_dtype must be 'auto' or a floating dtype"):
        make_preconditioner(A, "gmg", coarse_dtype=torch.int32)
    with pytest.raises(ValueError, match="coarse_dtype must be 'auto' or a floating dtype"):
        make_preconditioner(A, "gmg", coarse_dtype=torch.complex64)
    with pytest.raises(ValueError, match="do not fit its range"):
        make_preconditioner(_aniso3d((8, 8, 8), scale=1e300), "gmg", coarse_dtype=torch.float32, max_coarse=10)


@pytest.mark.gpu
@cuda
def test_coarse_dtype_auto_on_gpus():
    """'auto': single-precision coarse levels from MIXED_MIN unknowns on a GPU (the K-cycle's too),
    double below; the graphed mixed-precision cycle equals the eager one."""
    from sla.solvers.precond.multigrid import MIXED_MIN

    big = gallery.poisson2d(1024, device="cuda")
    assert big.shape[0] >= MIXED_MIN
    assert make_preconditioner(big, "gmg").coarse_dtype == torch.float32
    assert make_preconditioner(big, "gmg", cycle="K").coarse_dtype == torch.float32
    assert make_preconditioner(gallery.poisson2d(256, device="cuda"), "gmg").coarse_dtype == torch.float64
    Mg = make_preconditioner(big, "gmg", graph=True)
    Me = make_preconditioner(big, "gmg", graph=False)
    g = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(3):
        r = torch.randn(1, big.shape[0], 1, generator=g, dtype=big.dtype, device="cuda")
        z, ze = Mg(r), Me(r)
        # single-precision coarse levels: the two runs agree to float32 rounding of the coarse correction
        # (atomic scatter-adds sum in a run-dependent order; measured on an H200: 3e-7 of max |z|)
        torch.testing.assert_close(z, ze, rtol=0, atol=1e-5 * float(ze.abs().max()))
    assert Mg.graph_status() == ["captured"]


def test_a_constant_diagonal_is_kept_as_one_number():
    """The 5-point Laplacian's diagonal is constant: one number instead of a vector, and the cycle
    is the one with the full inverse diagonal."""
    A = gallery.poisson2d(63)  # odd sides: every Galerkin level keeps a constant diagonal too
    M = make_preconditioner(A, "gmg", max_coarse=10)
    assert all(lv.dinv.numel() == 1 for lv in M.levels)
    r = torch.randn(1, A.shape[0], 2, generator=torch.Generator().manual_seed(3), dtype=A.dtype)
    z = M(r)
    for lv in M.levels:
        lv.dinv = lv.dinv.expand(lv.n, 1).clone()
    torch.testing.assert_close(M(r), z, rtol=0, atol=0)
    B = gallery.poisson2d(64)  # even sides: the coarse boundary rows differ
    assert make_preconditioner(B, "gmg", max_coarse=10).levels[1].dinv.numel() == B.shape[0] // 4


@pytest.mark.gpu
@cuda
def test_graph_auto_only_below_graph_max():
    """'auto' captures the coarse cycle of smaller grids (launch-bound), not from GRAPH_MAX unknowns."""
    from sla.solvers.precond.gmg import GRAPH_MAX

    small, big = gallery.poisson2d(512, device="cuda"), gallery.poisson2d(2048, device="cuda")
    assert small.shape[0] < GRAPH_MAX <= big.shape[0]
    assert make_preconditioner(small, "gmg").graph_status() == ["not captured yet"]
    assert make_preconditioner(big, "gmg").graph_status() == ["eager"]
    assert make_preconditioner(big, "gmg", graph=True).graph_status() == ["not captured yet"]
