"""Krylov solves end: stagnation, breakdown, rtol=0, wall-clock limit, bounded default budget,
and the residual history / callback they report (issue: no silent wrong answers)."""

import time

import pytest
import torch
from devices import DEVICES

import sla
from sla.solvers import krylov
from sla.solvers.krylov.base import DEFAULT_MAXITER, _Ctx

METHODS = ["cg", "bicgstab", "gmres", "minres"]


@pytest.mark.parametrize("method", METHODS)
def test_rtol_zero_stops_as_stagnated(method):
    A = sla.gallery.poisson2d(12)
    b = torch.ones(144, dtype=A.dtype)
    t0 = time.perf_counter()
    with pytest.raises(sla.ConvergenceError, match="stagnated") as e:
        A.solve(b, backend="pytorch", method=method, rtol=0, maxiter=10**9)
    assert time.perf_counter() - t0 < 20
    assert "direct method" in str(e.value)  # names a better solver
    # on_failure='warn': the last iterate comes back, accurate to rounding
    with pytest.warns(sla.ConvergenceWarning, match="stagnated"):
        x, info = A.solve(
            b, backend="pytorch", method=method, rtol=0, maxiter=10**9, on_failure="warn", return_info=True
        )
    ref = torch.linalg.solve(A.to_dense(), b)
    assert torch.allclose(x, ref, rtol=1e-10, atol=1e-10)
    assert info.reason.startswith("stagnated") and not info.converged


def _neumann_1d(n=100):
    """The singular 1D Neumann Laplacian (constants in its null space)."""
    i = torch.arange(n)
    d = torch.full((n,), 2.0, dtype=torch.float64)
    d[0] = d[-1] = 1
    off = -torch.ones(n - 1, dtype=torch.float64)
    rows, cols = torch.cat([i, i[:-1], i[1:]]), torch.cat([i, i[1:], i[:-1]])
    return sla.SparseTensor(torch.cat([d, off, off]), rows, cols, (n, n))


@pytest.mark.parametrize("method", METHODS)
def test_inconsistent_singular_system_ends_with_a_clear_error(method):
    # b is not in the range of A: no method can converge; each must say so, within a bounded time
    A = _neumann_1d(40)
    b = torch.linspace(0, 1, 40, dtype=torch.float64) + 0.3
    mtype = "spd" if method == "cg" else "symmetric"
    t0 = time.perf_counter()
    with pytest.raises(sla.ConvergenceError, match="stagnated|breakdown") as e:
        A.solve(b, backend="pytorch", method=method, matrix_type=mtype, maxiter=10**9, preconditioner="none")
    assert time.perf_counter() - t0 < 60
    assert "direct method" in str(e.value)  # names a better solver
    with pytest.warns(sla.ConvergenceWarning):
        x, info = A.solve(
            b,
            backend="pytorch",
            method=method,
            matrix_type=mtype,
            maxiter=10**9,
            preconditioner="none",
            on_failure="warn",
            return_info=True,
        )
    assert not info.converged and info.reason.startswith(("stagnated", "breakdown"))


@pytest.mark.parametrize("method", METHODS)
def test_history_and_callback(method):
    A = sla.gallery.poisson2d(10)
    b = torch.arange(100, dtype=A.dtype).sin()
    seen = []
    x, info = A.solve(
        b, backend="pytorch", method=method, rtol=1e-9, callback=lambda k, r: seen.append((k, r)), return_info=True
    )
    assert info.converged and info.history is not None
    h = info.history
    assert h[0] == pytest.approx(1.0)  # zero initial guess: ||r0|| = ||b||
    assert len(h) >= info.iterations + 1
    assert min(h) <= 1e-8
    assert [k for k, _ in seen] == list(range(1, len(seen) + 1))
    assert [r for _, r in seen] == pytest.approx(h[1 : len(seen) + 1])


def test_long_history_is_complete():
    """A long solve's history holds every estimate, in order: the callback's, after the initial one."""
    A = sla.gallery.poisson2d(40)
    b = torch.arange(1600, dtype=A.dtype).sin()
    seen = []
    _, info = A.solve(
        b, backend="pytorch", method="cg", preconditioner="none", rtol=1e-10, return_info=True,
        callback=lambda k, r: seen.append(r),
    )  # fmt: skip
    h = info.history
    assert info.converged and len(seen) > 64 and len(h) == len(seen) + 1
    assert h[1:] == pytest.approx(seen, rel=1e-15)


def test_timeout_stops_with_a_clear_error():
    A = sla.gallery.poisson2d(60)
    b = torch.ones(3600, dtype=A.dtype)
    with pytest.raises(sla.ConvergenceError, match="timeout"):
        A.solve(b, backend="pytorch", method="gmres", preconditioner="none", rtol=1e-14, timeout=1e-3)
    with pytest.raises(ValueError, match="timeout"):
        sla.SolverConfig(timeout=-1)
    with pytest.raises(TypeError, match="callback"):
        sla.SolverConfig(callback=3)


def test_default_budget_is_bounded():
    b = torch.ones(1, 10**6, 1, dtype=torch.float64)
    ctx = _Ctx(lambda v: v, b, None, None, 1e-8, 0.0, None, None, None, None, None)
    assert ctx.maxiter == DEFAULT_MAXITER
    assert _Ctx(lambda v: v, b[:, :30], None, None, 1e-8, 0.0, None, None, None, None, None).maxiter == 300


def test_breakdown_of_the_recursion_stops_not_runs_forever():
    # CG on an indefinite matrix: the energy norm is not a norm, the iteration wanders
    d = torch.tensor([1.0, -1.0] * 50, dtype=torch.float64)
    b = torch.ones(1, 100, 1, dtype=torch.float64)
    res = krylov.cg(lambda v: d[None, :, None] * v, b, rtol=0, maxiter=10**9)
    assert not bool(res.converged.all())
    assert res.reason is not None and res.steps < 2000
    assert res.stats()["reason"] == res.reason


def test_spd_claimed_for_a_nonsymmetric_matrix_is_named():
    n = 50
    i = torch.arange(n)
    rows = torch.cat([i, i[:-1]])
    cols = torch.cat([i, i[:-1] + 1])
    vals = torch.cat([torch.full((n,), 1.0), torch.full((n - 1,), 3.0)]).double()
    A = sla.SparseTensor(vals, rows, cols, (n, n))
    b = torch.ones(n, dtype=torch.float64)
    with pytest.raises((sla.ConvergenceError, sla.SingularMatrixError), match="not symmetric"):
        A.solve(b, backend="pytorch", method="cg", matrix_type="spd", preconditioner="none", maxiter=500)


@pytest.mark.parametrize("device", DEVICES)
def test_spd_claimed_for_nonsymmetric_values_on_a_symmetric_pattern_is_named(device):
    # the diagnosis compares each entry with its mirror (on GPUs without a copy of A^H)
    n = 200
    i = torch.arange(n)
    rows = torch.cat([i, i[1:], i[:-1]])
    cols = torch.cat([i, i[:-1], i[1:]])
    vals = torch.cat([torch.full((n,), 2.0), torch.full((n - 1,), -1.9), torch.full((n - 1,), -0.1)]).double()
    A = sla.SparseTensor(vals, rows, cols, (n, n)).to(device)
    b = torch.ones(n, dtype=torch.float64, device=device)
    with pytest.raises(sla.ConvergenceError, match="A is not symmetric but matrix_type='spd'"):
        A.solve(b, backend="pytorch", method="cg", matrix_type="spd", maxiter=60)


def test_scipy_bicgstab_breakdown_falls_back_and_differentiates():
    # [[0, 1], [1, 0]] with b = e1: rhat . A p = 0 at the first step (SciPy: info=-11)
    v = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    A = sla.SparseTensor(v, [0, 1], [1, 0], (2, 2))
    b = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x, info = A.solve(b, backend="scipy", method="bicgstab", preconditioner="none", return_info=True)
    torch.testing.assert_close(x, torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert info.converged and any("broke down" in n for n in info.notes)
    (g,) = torch.autograd.grad(x[1], v)  # the adjoint solve breaks down the same way
    torch.testing.assert_close(g, torch.tensor([-1.0, 0.0], dtype=torch.float64))  # x[1] = 1 / A[0, 1]


def test_scipy_rtol_zero_ends():
    A = sla.gallery.poisson2d(8)
    with pytest.raises(sla.ConvergenceError):
        A.solve(torch.ones(64, dtype=A.dtype), backend="scipy", method="cg", rtol=0)
