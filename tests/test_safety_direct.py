"""Direct solves: reciprocal condition estimates and ill-conditioning warnings; the numeric
cache is exact at every size (issue: no silent wrong answers)."""

import warnings

import pytest
import torch

import sla
from sla.solvers.backends.scipy import has_cholmod

NEAR_SINGULAR = ([1.0, 1.0, 1.0, 1.0 + 1e-15], [0, 0, 1, 1], [0, 1, 0, 1])
METHODS = ["lu"] + (["cholesky"] if has_cholmod() else [])


@pytest.mark.parametrize("method", METHODS + ["auto"])
def test_near_singular_is_not_silent(method):
    v, r, c = NEAR_SINGULAR
    A = sla.SparseTensor(torch.tensor(v, dtype=torch.float64), r, c, (2, 2))
    with pytest.warns(sla.IllConditionedWarning, match="ill-conditioned"):
        x, info = A.solve(torch.tensor([2.0, 1.0], dtype=torch.float64), method=method, return_info=True)
    assert info.rcond is not None and info.rcond < 1e-13
    assert any("ill-conditioned" in n for n in info.notes)


def test_rcond_estimate_matches_dense_condition_number():
    A = sla.gallery.poisson2d(15)
    _, info = A.solve(torch.ones(225, dtype=torch.float64), backend="scipy", method="lu", return_info=True)
    exact = float(1 / torch.linalg.cond(A.to_dense(), 1))
    # Hager/Higham estimates ||A^-1||_1 from below: rcond from above, usually within a factor 3
    assert exact <= info.rcond * (1 + 1e-12) and info.rcond <= 3 * exact
    with warnings.catch_warnings():
        warnings.simplefilter("error", sla.IllConditionedWarning)  # a well-conditioned matrix: no warning
        A.solve(torch.ones(225, dtype=torch.float64), backend="scipy", method="lu")


def test_rcond_can_be_skipped():
    A = sla.gallery.poisson2d(5)
    _, info = A.solve(torch.ones(25, dtype=torch.float64), method="lu", options={"rcond": False}, return_info=True)
    assert info.rcond is None


def _diagonal_and_counter(n: int):
    """A diagonal matrix of n distinct values, and a build() returning how often it ran."""
    A = sla.SparseTensor(torch.arange(1.0, n + 1, dtype=torch.float64), torch.arange(n), torch.arange(n), (n, n))
    built = []

    def build():
        built.append(1)
        return len(built)

    return A.pattern, A.values, build


def test_numeric_cache_is_exact_above_four_million_values():
    p, v, build = _diagonal_and_counter((1 << 22) + 3)
    assert p.numeric(v, "k", build) == 1
    assert p.numeric(v, "k", build) == 1  # a hit
    # swap two entries through .data: same sum, same sum of squares, no version bump
    v.data[[0, 1]] = v.data[[1, 0]]
    assert p.numeric(v, "k", build) == 2  # a miss: the old work is stale
    assert p.numeric(v.clone(), "k", build) == 2  # equal values in a new tensor: a hit


def test_numeric_cache_keeps_one_copy_per_distinct_values():
    """Structure checks and the solver setup cached on the same values share one stored copy (each key
    used to clone the values: up to three copies of the matrix), and stay exact per key."""
    A = sla.gallery.poisson2d(20)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    A.solve(b, backend="pytorch", method="cg", preconditioner="jacobi")
    keys = [k for k, _, _ in A.pattern._numeric]
    copies = {id(c) for _, c, _ in A.pattern._numeric}
    assert len(keys) >= 2 and len(copies) == 1, keys
    A2 = sla.SparseTensor._make(2 * A.values, A.pattern)  # other values on the same pattern: a copy of their own
    A2.solve(b, backend="pytorch", method="cg", preconditioner="jacobi")
    assert len({id(c) for _, c, _ in A.pattern._numeric}) == 2
    x = A.solve(b, backend="pytorch", method="cg", preconditioner="jacobi")
    assert float((A @ x - b).norm() / b.norm()) < 1e-7


def test_direct_failure_message_names_the_real_cause():
    info = sla.SolveInfo(backend="scipy", method="lu", iterations=None, converged=False, residual=1e-3)
    with pytest.raises(sla.ConvergenceError) as e:
        info.fail(sla.SolverConfig.resolve())
    msg = str(e.value)
    assert "nearly singular or badly scaled" in msg and "maxiter" not in msg and "None" not in msg


def test_overflowing_solution_is_named():
    # a tiny pivot: the solution overflows float32 although A is not singular
    A = sla.SparseTensor(torch.tensor([1e-30, 1.0], dtype=torch.float32), [0, 1], [0, 1], (2, 2))
    with pytest.raises(sla.SingularMatrixError, match="overflowed"):
        A.solve(torch.tensor([1e10, 1.0], dtype=torch.float32), backend="scipy", method="lu")


@pytest.fixture
def digest_cache(monkeypatch):
    """The numeric cache as on a GPU beyond COPY_MAX values: a digest of the values instead of a copy."""
    from sla import numeric_cache

    monkeypatch.setattr(numeric_cache, "COPY_DEVICES", set())
    monkeypatch.setattr(numeric_cache, "COPY_MAX", 0)
    return numeric_cache


def test_numeric_cache_digest_is_exact_across_chunks(digest_cache):
    n = digest_cache._DIGEST_CHUNK + 3  # two chunks
    p, v, build = _diagonal_and_counter(n)
    assert p.numeric(v, "k", build) == 1
    (_, stored, _) = p._numeric[-1]
    assert stored.copy is None and stored.digest.numel() == 2  # no copy of the values is kept
    assert p.numeric(v, "k", build) == 1
    v.data[[0, n - 1]] = v.data[[n - 1, 0]]  # a swap across the chunks, through .data: no version bump
    assert p.numeric(v, "k", build) == 2
    v.data[5] = torch.nextafter(v.data[5], torch.tensor(1e300, dtype=torch.float64))  # one ulp
    assert p.numeric(v, "k", build) == 3
    assert p.numeric(v.clone(), "k", build) == 3  # equal values in a new tensor: a hit
    assert p.numeric(v.to(torch.float32), "k", build) == 4  # another dtype: a miss


def test_digest_tells_apart_what_a_sum_would_not():
    from sla.numeric_cache import _digest

    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    seen = {tuple(_digest(x).tolist())}
    for y in (
        x.flip(0),
        x[[1, 0, 2, 3]],
        torch.tensor([1.0, 2.0, 3.0, -4.0]).double(),
        torch.tensor([0.0, 3, 3, 4]).double(),
    ):
        d = tuple(_digest(y).tolist())
        assert d not in seen
        seen.add(d)
    assert tuple(_digest(x.clone()).tolist()) in seen  # deterministic
    z = torch.zeros(3, dtype=torch.complex128)
    assert not torch.equal(_digest(z), _digest(torch.tensor([0, 1j, 0])))
    assert not torch.equal(_digest(torch.zeros(4)), _digest(torch.tensor([0.0, -0.0, 0.0, 0.0])))  # bits, not values


def test_solves_reuse_the_setup_under_the_digest(digest_cache):
    A = sla.gallery.poisson2d(30)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    x1, i1 = A.solve(b, backend="pytorch", method="cg", preconditioner="amg", return_info=True)
    x2, i2 = A.solve(b, backend="pytorch", method="cg", preconditioner="amg", return_info=True)
    assert i1.setup_time > 0 and i2.setup_time == 0  # the second solve found the hierarchy
    assert all(s.copy is None for _, s, _ in A.pattern._numeric)
    A.values.data.mul_(2)  # through .data: the cached hierarchy is stale and must not be reused
    x3, i3 = A.solve(b, backend="pytorch", method="cg", preconditioner="amg", return_info=True)
    assert i3.setup_time > 0 and torch.allclose(x3, x1 / 2, rtol=1e-6)


def test_one_digest_per_solve(digest_cache, monkeypatch):
    """The type checks and the setup lookup of one solve digest the values once; every solve again."""
    calls = []
    real = digest_cache._digest
    monkeypatch.setattr(digest_cache, "_digest", lambda v: calls.append(1) or real(v))
    A = sla.gallery.poisson2d(12)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    A.solve(b, backend="pytorch", method="cg", preconditioner="jacobi")
    first = len(calls)
    A.solve(b, backend="pytorch", method="cg", preconditioner="jacobi")
    assert first == 1 and len(calls) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
@pytest.mark.parametrize("kept", ["copy", "digest"])
def test_numeric_cache_on_a_gpu_stays_exact(kept, monkeypatch):
    """Up to COPY_MAX values the GPU keeps an exact copy (compared by a count of differences), beyond
    it a digest (here forced by COPY_MAX = 0); either way an edit through .data is never missed."""
    from sla import numeric_cache

    if kept == "digest":
        monkeypatch.setattr(numeric_cache, "COPY_MAX", 0)
    A = sla.gallery.poisson2d(40, device="cuda")
    b = torch.ones(A.shape[0], dtype=torch.float64, device="cuda")
    x1, i1 = A.solve(b, backend="pytorch", method="cg", preconditioner="amg", return_info=True)
    _, i2 = A.solve(b, backend="pytorch", method="cg", preconditioner="amg", return_info=True)
    assert i1.setup_time > 0 and i2.setup_time == 0
    for _, s, _ in A.pattern._numeric:
        assert (s.digest is None and s.copy.is_cuda) if kept == "copy" else (s.copy is None and s.digest.is_cuda)
    A.values.data.mul_(3)  # through .data (no version bump): a new setup, the right answer
    x3, i3 = A.solve(b, backend="pytorch", method="cg", preconditioner="amg", return_info=True)
    assert i3.setup_time > 0
    assert torch.allclose(x3, x1 / 3, rtol=1e-6)
    A.values.data[7] = torch.nextafter(A.values.data[7], torch.tensor(1e300, device="cuda", dtype=torch.float64))
    _, i4 = A.solve(b, backend="pytorch", method="cg", preconditioner="amg", return_info=True)
    assert i4.setup_time > 0  # one ulp of one entry
