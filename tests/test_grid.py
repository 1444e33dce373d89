"""Stencil arrays of grid matrices (sla.grid) and the symmetry check read from them."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from devices import DEVICES, cuda

from sla import SparseTensor, structure
from sla.grid import read_stencil, stencil_symmetric


def _grid_matrix(dims, dtype, case, seed=0):
    """A matrix with a random compact stencil on ``dims``: Hermitian, then spoilt by ``case``."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(dims))
    idx = np.arange(n).reshape(dims)
    rows, cols = [], []
    for o in itertools.product((-1, 0, 1), repeat=len(dims)):
        src = tuple(slice(max(0, -k), dims[a] - max(0, k)) for a, k in enumerate(o))
        dst = tuple(slice(max(0, k), dims[a] - max(0, -k)) for a, k in enumerate(o))
        rows.append(idx[src].ravel()), cols.append(idx[dst].ravel())
    r, c = np.concatenate(rows), np.concatenate(cols)
    v = rng.uniform(-1, 1, r.size)
    if np.dtype(dtype) == np.complex128:
        v = v + 1j * rng.uniform(-1, 1, r.size)
    M = sp.csr_matrix((v, (r, c)), shape=(n, n))
    M = (M + M.conj().T).tocsr()  # Hermitian, every stencil offset and its opposite stored
    M.sort_indices()
    if case == "perturbed":  # one off-diagonal entry, far beyond rounding
        k = M.indptr[n // 2] + 1
        M.data[k] += 1e-6
    elif case == "rounding":  # within 100 eps of max|A|
        M.data[M.indptr[n // 2] + 1] += 10 * np.finfo(np.float64).eps
    elif case == "nan":
        M.data[M.indptr[1]] = np.nan
    elif case == "one-sided":  # an entry whose mirror is not stored
        lower = sp.tril(M, -1).tocoo()
        keep = np.ones(lower.nnz, bool)
        keep[lower.nnz // 2] = False
        M = (sp.triu(M) + sp.coo_matrix((lower.data[keep], (lower.row[keep], lower.col[keep])), shape=M.shape)).tocsr()
        M.sort_indices()
    A = SparseTensor.from_scipy(M)
    A.pattern.cache["grid"] = tuple(dims)
    return A, M


def _dense_symmetric(M, conjugate, rtol=None):
    D = M.toarray()
    rtol = 100 * np.finfo(np.float64).eps if rtol is None else rtol
    T = D.conj().T if conjugate else D.T
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(D - T) <= rtol * np.nanmax(np.abs(D))))


CASES = ["symmetric", "rounding", "perturbed", "nan", "one-sided"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dims", [(5, 6), (4, 3, 5)])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("case", CASES)
def test_stencil_symmetric_agrees_with_the_dense_check(device, dims, dtype, case):
    A, M = _grid_matrix(dims, dtype, case)
    A = A.to(device)
    v = A.values
    tol = 100 * torch.finfo(torch.float64).eps * v.abs().nan_to_num(0).amax()
    offs, S = read_stencil(A.pattern, v, dims)
    for conjugate in (False, True):
        got = bool(stencil_symmetric(offs, S, tol, conjugate))
        assert got == _dense_symmetric(M, conjugate), (case, conjugate)


@pytest.mark.parametrize("dims", [(5, 6), (4, 3, 5)])
@pytest.mark.parametrize("case", CASES)
def test_symmetric_by_stencil_agrees_with_the_search(dims, case):
    """The helper is_symmetric takes on GPUs, here on the CPU: the same answer as the mirror search."""
    A, M = _grid_matrix(dims, np.complex128, case)
    v = A.values
    tol = 100 * torch.finfo(torch.float64).eps * v.abs().nan_to_num(0).amax().reshape(1)
    for conjugate in (False, True):
        by_stencil = structure._symmetric_by_stencil(A.pattern, v, dims, conjugate, tol)
        assert by_stencil == structure._symmetric_by_search(A.pattern, v, conjugate, tol)
        assert by_stencil == _dense_symmetric(M, conjugate)


def test_symmetric_by_stencil_declines_what_is_no_compact_stencil():
    """A coupling two points apart (or a wrong grid) is no compact stencil: None, so the caller searches."""
    A, _ = _grid_matrix((6, 6), np.float64, "symmetric")
    M = A.to_scipy("csr") + sp.csr_matrix(([1.0, 1.0], ([0, 2], [2, 0])), shape=A.shape)
    B = SparseTensor.from_scipy(M.tocsr())
    tol = torch.tensor([1e-12], dtype=torch.float64)
    assert structure._symmetric_by_stencil(B.pattern, B.values, (6, 6), False, tol) is None
    assert structure._symmetric_by_stencil(A.pattern, A.values, (4, 9), False, tol) is None  # wraps


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_is_symmetric_on_the_gpu_reads_the_stencil(case, monkeypatch):
    """On a GPU a grid matrix's symmetry comes from its stencil (from _STENCIL_MIN entries): the same
    answers as the CPU's exact check, batched members included."""
    monkeypatch.setattr(structure, "_STENCIL_MIN", 0)
    calls = []
    real = structure._symmetric_by_stencil
    monkeypatch.setattr(structure, "_symmetric_by_stencil", lambda *a: calls.append(1) or real(*a))
    A, M = _grid_matrix((7, 6), np.complex128, case)
    G = A.to("cuda")
    G.pattern.cache["grid"] = (7, 6)
    for conjugate in (False, True):
        assert structure.is_symmetric(G, conjugate=conjugate) == _dense_symmetric(M, conjugate)
    assert calls
    batch = SparseTensor._make(torch.stack([G.values, G.values.conj()]), G.pattern)
    assert structure.is_symmetric(batch, conjugate=True) == _dense_symmetric(M, True)


def test_hand_over_lives_only_in_a_scope_that_asked_for_it():
    from sla.numeric_cache import hand_over, scope_wants, take_over, values_scope

    v = torch.arange(6.0)
    assert not scope_wants("stencil")
    with values_scope(keep=("stencil",)):
        assert scope_wants("stencil")
        with values_scope():  # an inner scope is the outer one
            assert scope_wants("stencil")
    assert not scope_wants("stencil")
    assert not hand_over("stencil", v, (2, 3), "work")  # no scope
    with values_scope():
        assert not hand_over("stencil", v, (2, 3), "work")  # not asked for
    with values_scope(keep=("stencil",)):
        assert hand_over("stencil", v, (2, 3), "work")
        assert take_over("stencil", v, (3, 2)) is None  # another grid
        assert take_over("stencil", v.clone(), (2, 3)) is None  # other values
        assert take_over("stencil", v, (2, 3)) == "work"
        assert take_over("stencil", v, (2, 3)) is None  # taken once
        hand_over("stencil", v, (2, 3), "work")
        v.add_(1)  # changed in place: what was read from the old values is not handed on
        assert take_over("stencil", v, (2, 3)) is None
    with values_scope(keep=("stencil",)):
        pass
    assert take_over("stencil", v, (2, 3)) is None


@cuda
@pytest.mark.gpu
def test_gmg_takes_the_stencil_its_type_check_read(monkeypatch):
    """A GMG solve whose matrix type is detected reads the stencil arrays once (whatever its size): the
    type check's are handed to the setup.  Same iterations and solution as with the type declared."""
    import sla
    from sla import gallery
    from sla.solvers.precond import gmg

    reads = {"check": 0, "setup": 0}

    def counted(where, fn):
        def f(*a, **k):
            reads[where] += 1
            return fn(*a, **k)

        return f

    monkeypatch.setattr(structure, "read_stencil", counted("check", structure.read_stencil))
    monkeypatch.setattr(gmg, "read_stencil", counted("setup", gmg.read_stencil))
    A = gallery.poisson2d(60, device="cuda")
    b = torch.ones(A.shape[0], dtype=torch.float64, device="cuda")
    opts = dict(backend="pytorch", method="cg", preconditioner=sla.precond.GMG(), rtol=1e-10, return_info=True)
    x, info = sla.solve(A, b, **opts)
    assert reads == {"check": 1, "setup": 0}
    y, ref = sla.solve(gallery.poisson2d(60, device="cuda"), b, matrix_type="spd", **opts)
    assert reads == {"check": 1, "setup": 1}
    assert info.iterations == ref.iterations
    torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
