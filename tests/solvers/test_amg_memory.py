"""A lean AMG setup: the smoothed prolongator by row blocks (no sparse-sparse product, no matrix
of A's size), R = P^H by a transpose, int32 aggregates, and the peak memory of the setup."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from devices import DEVICES
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from sla import gallery
from sla.solvers.precond import amg, chebyshev, multigrid, spgemm, transfers
from sla.solvers.precond.amg import SmoothedAggregation
from sla.solvers.precond.multigrid import Mat
from sla.solvers.precond.transfers import _smoothed


def _scipy(M: Mat) -> sp.csr_matrix:
    return sp.csr_matrix((M.val.numpy(), M.col.long().numpy(), M.crow.long().numpy()), shape=M.shape)


def _mat(S: sp.csr_matrix) -> Mat:
    """The setup form of a SciPy CSR matrix (int64 arrays, as given)."""
    S.sort_indices()
    return Mat(
        torch.from_numpy(S.indptr.astype(np.int64)),
        torch.from_numpy(S.indices.astype(np.int64)),
        torch.from_numpy(S.data),
        S.shape,
    )


def _csr(M: torch.Tensor) -> sp.csr_matrix:
    return sp.csr_matrix(
        (M.values().numpy(), M.col_indices().long().numpy(), M.crow_indices().long().numpy()), shape=M.shape
    )


def _random_spd(n: int, dtype, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    B = sp.random(n, n, density=4.0 / n, random_state=rng, format="csr")
    if np.dtype(dtype).kind == "c":
        B = B + 1j * sp.random(n, n, density=4.0 / n, random_state=rng, format="csr")
    A = B @ B.conj().T + sp.identity(n) * 2.0
    return A.tocsr()


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk", [5, None])
def test_smoothed_prolongator_matches_scipy(dtype, k, chunk):
    n, nagg = 60, 11
    A = _random_spd(n, dtype)
    C = _mat(A)
    rng = np.random.default_rng(1)
    # T: row i has up to k entries in the columns of its aggregate (some rows none: unaggregated)
    rows, cols, vals = [], [], []
    for i in range(n):
        if i % 13 == 5:
            continue
        a = rng.integers(nagg)
        for j in range(k):
            rows.append(i)
            cols.append((a * k + j) % (nagg * k))
            vals.append(rng.standard_normal() + (1j * rng.standard_normal() if np.dtype(dtype).kind == "c" else 0))
    T_sp = sp.csr_matrix((np.array(vals, dtype=dtype), (rows, cols)), shape=(n, nagg * k))
    T = _mat(T_sp)
    w = 0.37
    P = _smoothed(C, T, w, chunk=chunk)
    d = A.diagonal()
    ref = ((sp.identity(n) - w * sp.diags(1.0 / d) @ A) @ T_sp).tocsr()
    ref.eliminate_zeros()
    got = _scipy(P)
    assert P.col.dtype == torch.int32
    assert got.nnz == ref.nnz
    assert np.array_equal(got.indptr, ref.indptr)
    for i in range(n):  # columns ascending within every row
        c = got.indices[got.indptr[i] : got.indptr[i + 1]]
        assert np.all(np.diff(c) > 0)
    assert abs(got - ref).max() <= 1e-14 * abs(ref).max()


@pytest.mark.parametrize("device", DEVICES)
def test_restriction_is_the_conjugate_transpose_of_the_prolongator(device):
    A = gallery.poisson2d(60, device=device)
    M = SmoothedAggregation(A, aggregation="standard" if amg._has_pyamg() else "mis2")
    assert len(M.levels) >= 3
    for lv in M.levels[:-1]:
        P, R = _csr(lv.P.cpu()), _csr(lv.R.cpu())
        assert R.shape == P.shape[::-1]
        assert abs(R - P.conj().T).max() == 0  # the same numbers, transposed
        assert lv.P.col_indices().dtype == torch.int32 and lv.R.col_indices().dtype == torch.int32


def test_vector_hierarchy_restriction_is_the_transpose():
    from sla.assembly.cantilever import cantilever_system

    A, _ = cantilever_system(nx=20, ny=4)[:2]
    M = SmoothedAggregation(A)
    assert M.candidates == 3
    for lv in M.levels[:-1]:
        assert abs(_csr(lv.R) - _csr(lv.P).T).max() == 0


def test_cached_aggregates_are_int32():
    A = gallery.poisson2d(40)
    SmoothedAggregation(A)
    cached = [v for k, v in A.pattern.cache.items() if isinstance(k, tuple) and k[0] == "amg_aggregates"]
    assert cached and all(agg.dtype == torch.int32 for level in cached[0] if level for agg in level[:1])


class _Peak(TorchDispatchMode):
    """Peak of the live tensor bytes created inside the mode, and the largest single float allocation."""

    def __init__(self, *existing: torch.Tensor):
        super().__init__()
        self.existing = {t.untyped_storage().data_ptr() for t in existing}  # views of these are not new
        self.live: dict = {}
        self.cur = self.peak = self.largest_float = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for k in [k for k, (w, _) in self.live.items() if w.expired()]:
            self.cur -= self.live.pop(k)[1]
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                s = t.untyped_storage()
                if s.data_ptr() and s.data_ptr() not in self.live and s.data_ptr() not in self.existing:
                    self.live[s.data_ptr()] = (StorageWeakRef(s), s.nbytes())
                    self.cur += s.nbytes()
                    if t.is_floating_point():
                        self.largest_float = max(self.largest_float, s.nbytes())
        self.peak = max(self.peak, self.cur)
        return out


def test_setup_makes_no_matrix_of_the_fine_size_and_stays_lean(monkeypatch):
    """The smoothing matrix S = I - w D^-1 A and the SpGEMM products were nnz(A)-sized float arrays
    (the setup's peak: 278.5 B/unknown with the matrix on the 5-point 1M, 40 of them S); now the
    largest float array the setup makes is a transfer operator's values, and the setup's peak above
    the matrix stays below what the hierarchy keeps plus small row-block temporaries."""
    monkeypatch.setattr(transfers, "PRODUCT_CHUNK", 1 << 12)
    monkeypatch.setattr(spgemm, "GALERKIN_CHUNK", 1 << 14)
    monkeypatch.setattr(chebyshev, "_GERSHGORIN_CHUNK", 1 << 12)
    A = gallery.poisson2d(150)
    p = A.pattern
    n, nnz = A.shape[0], A.nnz
    with _Peak(A.values, p.crow, p.ccol) as pk:
        M = SmoothedAggregation(A, hermitian=True, max_coarse=50)
    assert pk.largest_float < 8 * nnz * 0.6  # P's values: ~2.5 entries per row, A has 5
    kept = sum(
        t.numel() * t.element_size()
        for lv in M.levels
        for T in (lv.P, lv.R)
        if T is not None
        for t in (T.crow_indices(), T.col_indices(), T.values())
    )
    kept += sum(lv.dinv.numel() * lv.dinv.element_size() for lv in M.levels)
    kept += sum(lv.A.values().numel() * 12 for lv in M.levels[1:])
    # measured 139.0 B/unknown of peak for 107.5 kept: the temporaries are those of the coarse operator
    # (the Galerkin blocks, R's row array, the selection of the uncancelled couplings); S alone was 40
    assert pk.peak / n < kept / n + 40, (pk.peak / n, kept / n)


def test_vector_setup_makes_no_float_array_of_the_fine_size(monkeypatch):
    """A vector problem's setup (strength threshold, amalgamated node graph, fitted candidates): the
    strength test ran on whole arrays, four float arrays of A's entries at once (the setup's peak on
    P2 elasticity: ~1,170 bytes/unknown with the matrix on a GPU); now in blocks, and the node graph's
    index work in int32."""
    from sla.assembly.cantilever import cantilever_system

    monkeypatch.setattr(transfers, "PRODUCT_CHUNK", 1 << 12)
    monkeypatch.setattr(spgemm, "GALERKIN_CHUNK", 1 << 14)
    monkeypatch.setattr(chebyshev, "_GERSHGORIN_CHUNK", 1 << 12)
    A = cantilever_system(nx=60, ny=8)[0]
    p = A.pattern
    assert SmoothedAggregation(A).options["theta"] > 0  # the strength test runs
    with _Peak(A.values, p.crow, p.ccol) as pk:
        M = SmoothedAggregation(A, max_coarse=100)  # a small coarsest inverse (it is a dense float array)
    assert M.candidates == 3
    assert pk.largest_float < 8 * A.nnz * 0.5  # measured 0.32; was 1.0 (|a_ij|, its square, d_i d_j, ...)
    # measured 2.37x A's values (the hierarchy it keeps included; rows of A, the strength graph); was 4.89x
    assert pk.peak < 8 * A.nnz * 3.0, pk.peak / (8 * A.nnz)


def _p1_tets(n: int, device: str = "cpu"):
    from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, unit_cube

    basis = CellBasis(unit_cube(n, dtype=torch.float64, device=device), ElementP1("tetra"))
    A = assemble(laplace, basis)
    return apply_dirichlet(A, torch.ones(A.shape[0], dtype=A.dtype, device=device), boundary_dofs(basis))[0]


def _mixed_cases(device):
    from sla.assembly.cantilever import cantilever_system

    A, f = cantilever_system(nx=40, ny=8)[:2]
    return {  # (A, b, rtol): the clamped cantilever's CG attains ~3e-10 in double precision alone
        "5-point": (gallery.poisson2d(120, device=device), None, 1e-10),
        "P1 tetrahedra": (_p1_tets(16, device), None, 1e-10),
        "elasticity, rigid-body modes": (A.to(device), f.to(device), 1e-8),
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cycle", ["V", "K"])
def test_single_precision_coarse_levels_keep_the_iterations_and_the_accuracy(device, cycle):
    """coarse_dtype=float32: transfers, coarse operators, inverse diagonals and the coarsest inverse in
    single precision (the K-cycle's coarse Krylov steps too), the fine operator and CG in double: the
    same CG iterations (+1) to the same rtol (checked on the true residual), and the fine transfers'
    values take half the memory."""
    import sla

    for name, (A, b, rtol) in _mixed_cases(device).items():
        b = torch.ones(A.shape[0], dtype=A.dtype, device=device) if b is None else b
        its, nbytes = {}, {}
        for cd in (torch.float64, torch.float32):
            M = SmoothedAggregation(A, coarse_dtype=cd, cycle=cycle)
            x, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner=M, rtol=rtol, return_info=True)
            assert float((b - A @ x).norm() / b.norm()) <= rtol, (name, cd)
            its[cd] = info.iterations
            fine = M.levels[0]
            assert fine.A.values().dtype == torch.float64  # the fine operator is A's own
            assert all(lv.dinv.dtype == cd for lv in M.levels)
            assert all(lv.A.values().dtype == cd for lv in M.levels[1:]) and M.coarse[0].dtype == cd
            nbytes[cd] = {T.values().element_size() for T in (fine.P, fine.R)}
        assert its[torch.float32] <= its[torch.float64] + 1, (name, its)
        assert nbytes == {torch.float64: {8}, torch.float32: {4}}, name
    assert "coarse levels and transfers in torch.float32" in M.describe()


def test_single_precision_coarse_levels_of_a_complex_matrix():
    import sla

    S = _random_spd(300, np.complex128, seed=4)
    A = sla.SparseTensor.from_scipy(S)
    b = torch.ones(300, dtype=torch.complex128)
    M = SmoothedAggregation(A, coarse_dtype=torch.complex64, max_coarse=20, cycle="V")
    assert M.levels[1].A.values().dtype == torch.complex64 and len(M.levels) >= 2
    x = sla.solve(A, b, backend="pytorch", method="cg", preconditioner=M, rtol=1e-10)
    assert np.abs(S @ x.numpy() - b.numpy()).max() <= 1e-9 * np.abs(b.numpy()).max() * np.abs(S).max() * 300


def test_coarse_dtype_is_checked():
    A = gallery.poisson2d(64)
    assert SmoothedAggregation(A).coarse_dtype == torch.float64  # 'auto' on the CPU: A's dtype
    for bad in (torch.int32, torch.complex64, "single"):
        with pytest.raises(ValueError, match="coarse_dtype must be 'auto' or a floating dtype"):
            SmoothedAggregation(A, coarse_dtype=bad)
    big = A.with_values(A.values * 1e300)  # coarse entries beyond float32's range
    with pytest.raises(ValueError, match="do not fit its range"):
        SmoothedAggregation(big, coarse_dtype=torch.float32)
    tiny = A.with_values(A.values * 1e-300)  # inverse diagonals beyond it
    with pytest.raises(ValueError, match="do not fit its range"):
        SmoothedAggregation(tiny, coarse_dtype=torch.float32)
    # cycle='auto' under CG takes the K-cycle on the CPU, single-precision coarse levels too
    M = SmoothedAggregation(A, coarse_dtype=torch.float32)
    assert M.flexible().cycle == "K" and M.flexible().coarse_dtype == torch.float32
    with pytest.raises(ValueError, match="coarse_dtype must be 'auto' or a torch dtype"):
        from sla.precond import AMG

        AMG(coarse_dtype="float32")


@pytest.mark.parametrize("device", DEVICES)
def test_diagonal_fits_against_its_range_by_min_and_max(device):
    """``_diagonal_fits`` (``amax`` of ``|d|`` and of ``1 / |d|``) against the smallest and largest
    ``|d_i|`` by NumPy: both and their inverses inside float32's range with a margin of 8."""
    f = np.finfo(np.float32)
    big, tiny = float(f.max) / 8, float(f.tiny) * 8
    cases = {
        "ordinary": [1.0, -4.0, 0.25],
        "a zero": [1.0, 0.0, 2.0],
        "a NaN": [1.0, float("nan")],
        "tiny": [1.0, 1e-40],
        "small enough": [1.0, tiny * 2],
        "huge": [1.0, -1e39],
        "large enough": [1.0, big / 2],
        "complex": [1 + 1j, -2j],
    }
    for name, vals in cases.items():
        a = np.abs(np.array(vals))
        lo, hi = a.min(), a.max()
        ref = bool(hi < big and lo > tiny and lo > 1 / big and hi < 1 / tiny)
        d = torch.tensor(vals, device=device, dtype=torch.complex128 if name == "complex" else torch.float64)
        assert bool(amg._diagonal_fits(d, torch.float32)) is ref, name
    assert bool(amg._diagonal_fits(torch.tensor([1e-40], dtype=torch.float64), torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_coarse_dtype_auto_on_gpus(monkeypatch):
    """'auto' on a GPU: single precision from MIXED_MIN unknowns, with every cycle; A's dtype below.
    The K-cycle (cycle='auto' under CG from AUTO_FLEXIBLE rows) needs no more CG iterations in
    single precision."""
    import sla

    big = gallery.poisson2d(1024, device="cuda")
    assert big.shape[0] >= multigrid.MIXED_MIN
    assert SmoothedAggregation(big).coarse_dtype == torch.float32
    assert SmoothedAggregation(big, cycle="K").coarse_dtype == torch.float32
    assert SmoothedAggregation(gallery.poisson2d(256, device="cuda")).coarse_dtype == torch.float64
    monkeypatch.setitem(multigrid.AUTO_FLEXIBLE["amg"], "cuda", 1 << 18)
    b = torch.ones(big.shape[0], dtype=big.dtype, device="cuda")
    its = {}
    for cd in (torch.float64, torch.float32):
        M = SmoothedAggregation(big, coarse_dtype=cd)
        assert M.flexible().cycle == "K"
        x, info = sla.solve(big, b, backend="pytorch", method="cg", preconditioner=M, rtol=1e-10, return_info=True)
        assert float((b - big @ x).norm() / b.norm()) <= 1e-10
        its[cd] = info.iterations
    assert its[torch.float32] <= its[torch.float64] + 1, its


def test_rows_of_a_block_of_entries_match_the_row_array():
    """Mat.rows(lo, hi): the rows of entries lo:hi made on demand (empty rows, blocks that start or
    end inside a row) equal the slices of the row array, and the scans built on it (the diagonal,
    the Gershgorin bound) equal SciPy's."""
    rng = np.random.default_rng(5)
    S = sp.random(200, 200, density=0.05, random_state=rng, format="lil")
    S.setdiag(rng.random(200) + 1.0)
    S[10:20, :] = 0  # empty rows, diagonal included: they are dropped below
    S = S.tocsr()
    S.eliminate_zeros()
    S.sort_indices()
    M = Mat(torch.from_numpy(S.indptr).int(), torch.from_numpy(S.indices).int(), torch.from_numpy(S.data), S.shape)
    full = torch.from_numpy(np.repeat(np.arange(200), np.diff(S.indptr))).int()
    nnz = S.nnz
    for lo, hi in [(0, nnz), (0, 1), (nnz - 1, nnz), (3, 97), (101, 102), (57, nnz - 5)]:
        assert torch.equal(M.rows(lo, hi), full[lo:hi]), (lo, hi)
    assert M._row is None  # no row array was built
    d = S.diagonal()
    torch.testing.assert_close(M.diag(), torch.from_numpy(d))
    on = d != 0
    expected = (np.abs(S).sum(1).A1[on] / np.abs(d[on])).max()
    bound = chebyshev.gershgorin_bound(M.rows, M.val, torch.from_numpy(np.where(on, d, 1.0)))
    assert abs(float(bound) - expected) <= 1e-12 * expected
    assert M._row is None


def _isolated_row(A):
    """A with row and column 7 decoupled (only its diagonal): an unaggregated node, a row of T without entries."""
    import sla

    S = A.to_scipy().tolil()
    S[7, :] = 0
    S[:, 7] = 0
    S[7, 7] = 4.0
    return sla.SparseTensor.from_scipy(S.tocsr())


def _problems():
    import sla
    from sla.assembly.cantilever import cantilever_system

    yield "5-point", gallery.poisson2d(40), {}
    # pyamg's aggregation leaves the isolated node out of every aggregate (mis2 makes it one of its own)
    if importlib.util.find_spec("pyamg") is None:
        yield pytest.param("5-point, an isolated row", None, {}, marks=pytest.mark.skip(reason="needs pyamg"))
    else:
        yield "5-point, an isolated row", _isolated_row(gallery.poisson2d(40)), {"aggregation": "standard"}
    yield "5-point, improved candidate", gallery.poisson2d(40), {"improve": 2}
    try:
        import skfem  # noqa: F401
    except ImportError:  # collected anyway: the other problems run, this one says why it did not
        yield pytest.param("P1 tetrahedra", None, {}, marks=pytest.mark.skip(reason="needs scikit-fem"))
    else:
        yield "P1 tetrahedra", sla.SparseTensor.from_scipy(_p1_cube_scipy(8)), {}
    yield "elasticity, rigid-body modes", cantilever_system(nx=24, ny=6)[0], {}


def _p1_cube_scipy(n: int) -> sp.csr_matrix:
    """P1 Laplacian on the unit cube (scikit-fem), Dirichlet rows kept as identity rows."""
    import skfem
    from skfem.helpers import dot, grad

    m = skfem.MeshTet.init_tensor(*(np.linspace(0, 1, n + 1),) * 3)
    basis = skfem.Basis(m, skfem.ElementTetP1())
    K = skfem.BilinearForm(lambda u, v, w: dot(grad(u), grad(v))).assemble(basis).tolil()
    for i in basis.get_dofs().all():
        K[i, :] = 0
        K[:, i] = 0
        K[i, i] = 1.0
    return K.tocsr()


@pytest.mark.parametrize("name, A, opts", list(_problems()), ids=lambda v: v if isinstance(v, str) else "")
def test_implicit_prolongation_applies_the_stored_prolongator(name, A, opts):
    """prolongation='implicit' applies P = (I - w D^-1 A) T without storing it: its correction x + P xc
    equals the stored P's (made by the row-block product, itself checked against SciPy above), with a
    gather for one candidate (isolated rows gather zero, an improved candidate carries its values) and
    T's product for several; the same CG iterations; the fine level keeps R and T only."""
    import sla

    stored = SmoothedAggregation(A, prolongation="stored", **opts)
    implicit = SmoothedAggregation(A, prolongation="implicit", **opts)
    fs, fi = stored.levels[0], implicit.levels[0]
    assert fi.P is None and fi.T is not None and fs.T is None
    assert all(lv.P is not None for lv in implicit.levels[1:-1])  # coarse levels keep theirs
    assert torch.equal(fi.R.values(), fs.R.values()) and torch.equal(fi.R.col_indices(), fs.R.col_indices())
    if name.endswith("isolated row"):
        assert int(fi.T.idx[7]) == fs.R.shape[0]  # T's empty row gathers the appended zero
    if "rigid-body" in name:
        assert fi.T.csr is not None
    g = torch.Generator().manual_seed(0)
    xc = torch.randn(fs.R.shape[0], 2, generator=g, dtype=A.dtype)
    x = torch.randn(A.shape[0], 2, generator=g, dtype=A.dtype)
    want = fs.correct(x.clone(), xc)
    got = fi.correct(x.clone(), xc)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13 * float(want.abs().max()))
    p_bytes = sum(t.numel() * t.element_size() for t in (fs.P.crow_indices(), fs.P.col_indices(), fs.P.values()))
    assert fi.nbytes() == fs.nbytes() - p_bytes + fi.T.nbytes()  # P's arrays replaced by T's
    assert fi.T.nbytes() < p_bytes / 2
    b = torch.ones(A.shape[0], dtype=A.dtype)
    its = {}
    for M in (stored, implicit):
        x, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner=M, rtol=1e-8, return_info=True)
        assert float((b - A @ x).norm() / b.norm()) <= 1e-8
        its[M is implicit] = info.iterations
    assert its[True] == its[False], (name, its)
    assert "not stored" in implicit.describe() and "not stored" not in stored.describe()


def test_implicit_prolongation_with_single_precision_transfers():
    """Single-precision coarse levels (the GPU default from 1M rows): T's values and R in float32,
    the correction in the fine vectors' float64; CG iterations within one of the stored P's."""
    import sla
    from sla.assembly import CellBasis, ElementP1, apply_dirichlet, assemble, boundary_dofs, laplace, unit_cube

    basis = CellBasis(unit_cube(10, dtype=torch.float64), ElementP1("tetra"))
    K = assemble(laplace, basis)
    A = apply_dirichlet(K, torch.zeros(K.shape[0], dtype=K.dtype), boundary_dofs(basis))[0]
    b = torch.ones(A.shape[0], dtype=A.dtype)
    its = {}
    for pro in ("stored", "implicit"):
        M = SmoothedAggregation(A, coarse_dtype=torch.float32, prolongation=pro, improve=1, cycle="V")
        fine = M.levels[0]
        assert fine.R.values().dtype == torch.float32 and fine.dinv.dtype == torch.float32
        if pro == "implicit":
            assert fine.T.val.dtype == torch.float32
        x, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner=M, rtol=1e-10, return_info=True)
        assert float((b - A @ x).norm() / b.norm()) <= 1e-10
        its[pro] = info.iterations
    assert its["implicit"] <= its["stored"] + 1, its


def test_prolongation_is_checked_and_auto_stores_it_on_the_cpu():
    from sla.precond import AMG
    from sla.solvers.precond.transfers import prolongation_for

    A = gallery.poisson2d(32)
    assert prolongation_for("auto", A) == "stored"
    assert SmoothedAggregation(A).levels[0].P is not None
    for bad in ("lazy", None, 1):
        with pytest.raises(ValueError, match="prolongation must be one of"):
            SmoothedAggregation(A, prolongation=bad)
        with pytest.raises(ValueError, match="prolongation must be one of"):
            AMG(prolongation=bad)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_prolongation_auto_on_gpus():
    """'auto' on a GPU: implicit from MIXED_MIN unknowns (stored below); the solve reaches its
    tolerance with the same iterations as the stored prolongator."""
    import sla

    big = gallery.poisson2d(1024, device="cuda")
    M = SmoothedAggregation(big)
    assert M.levels[0].P is None and M.levels[0].T is not None
    assert SmoothedAggregation(gallery.poisson2d(256, device="cuda")).levels[0].P is not None
    b = torch.ones(big.shape[0], dtype=big.dtype, device="cuda")
    its = {}
    for pro in ("stored", "implicit"):
        pc = SmoothedAggregation(big, prolongation=pro)
        x, info = sla.solve(big, b, backend="pytorch", method="cg", preconditioner=pc, rtol=1e-10, return_info=True)
        assert float((b - big @ x).norm() / b.norm()) <= 1e-10
        its[pro] = info.iterations
    assert its["implicit"] <= its["stored"] + 1, its


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
@pytest.mark.parametrize("chunk", [1, 1 << 18])
def test_transpose_by_blocks_matches_scipy(monkeypatch, dtype, chunk):
    """R = P^T by a counting sort a block of entries at a time (eight blocks, or one): SciPy's
    transpose, every column's entries in row order (CSR columns ascending), empty rows and columns."""
    monkeypatch.setattr(transfers, "PRODUCT_CHUNK", chunk)
    rng = np.random.default_rng(7)
    S = sp.random(300, 40, density=0.08, random_state=rng, format="lil", dtype=np.float64)
    S[50:60, :] = 0
    S[:, 5] = 0
    S = S.tocsr().astype(dtype)
    if np.dtype(dtype).kind == "c":
        S = S + 1j * S
    P = _mat(S)
    R = transfers._transpose(P, P.val)
    want = S.T.tocsr()
    want.sort_indices()
    got = _scipy(R)
    assert got.shape == want.shape
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)
