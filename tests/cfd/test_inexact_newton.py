"""Inexact Newton for steady flow: lagged LU factors as a GMRES preconditioner, Eisenstat--Walker
forcing terms, the one-pass Newton residual -- each against an exact reference."""

import pytest
import torch

from sla.assembly import apply_dirichlet, unit_square
from sla.assembly.flow import flow_system
from sla.assembly.mixed import TaylorHood
from sla.cfd import VelocityBC, dirichlet_data, solve_steady
from sla.cfd.linear import LaggedLU
from sla.cfd.steady import _assemble, _StokesPart

BCS = [VelocityBC("lid", (1.0, 0.0)), VelocityBC("walls", 0.0)]


CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)"),
    ],
)


def _cavity(n, device="cpu"):
    m = unit_square(n, device=device)
    m.tag_facets("lid", lambda x: (x[:, 1] - 1).abs() < 1e-9)
    m.tag_facets("walls", lambda x: (x[:, 1] - 1).abs() >= 1e-9)
    return TaylorHood(m)


def _system(V, nu, x):
    dofs, _ = dirichlet_data(V, BCS, "mean")
    J, R = flow_system(V, nu, x, newton=True, residual=True)
    return apply_dirichlet(J, -R, dofs, 0.0)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_lagged_lu_solves_later_systems_to_the_asked_tolerance(device):
    V = _cavity(6, device)
    torch.manual_seed(0)
    x0 = torch.rand(V.n, dtype=torch.float64).to(device)
    lag = LaggedLU(refactor_after=30)
    for k, (nu, scale) in enumerate([(0.01, 1.0), (0.01, 1.2), (0.005, 1.5)]):
        A, b = _system(V, nu, scale * x0)
        x, its = lag.solve(A, b, rtol=1e-10)
        ref = torch.linalg.solve(A.to_dense(), b)  # dense LAPACK reference
        assert float((x - ref).norm() / ref.norm()) < 1e-8
        assert float((A @ x - b).norm() / b.norm()) <= 1e-10
        if k > 0:  # a later matrix: GMRES with the first matrix's factors, no new factorisation
            assert its > 1
    assert lag.factorizations == 1
    # a loose tolerance is met, not more (the forcing term decides the work)
    lag = LaggedLU(refactor_after=100)
    lag.factor(_system(V, 0.01, x0)[0])
    A, b = _system(V, 0.01, 1.2 * x0)
    x, its_loose = lag.solve(A, b, rtol=1e-2)
    assert float((A @ x - b).norm() / b.norm()) <= 1e-2
    _, its_tight = lag.solve(A, b, rtol=1e-10)
    assert its_loose < its_tight and lag.factorizations == 1


def test_lagged_lu_refactors_when_gmres_needs_many_iterations():
    V = _cavity(6)
    torch.manual_seed(1)
    x0 = torch.rand(V.n, dtype=torch.float64)
    lag = LaggedLU(refactor_after=1)
    A, b = _system(V, 0.01, x0)
    lag.solve(A, b)
    A2, b2 = _system(V, 0.008, 1.1 * x0)  # another matrix: > 1 iteration -> stale
    lag.solve(A2, b2)
    assert lag.stale and lag.factorizations == 1
    x, its = lag.solve(A2, b2)  # fresh factors of this very matrix: GMRES converges at once
    assert lag.factorizations == 2 and its <= 2
    torch.testing.assert_close(x, torch.linalg.solve(A2.to_dense(), b2), rtol=1e-8, atol=1e-10)
    direct = LaggedLU(refactor_after=0)  # a fresh direct solve per system
    x0d, its0 = direct.solve(A2, b2)
    assert its0 == 0 and direct.factorizations == 1
    torch.testing.assert_close(x0d, x, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kw,match", [(dict(refactor_after=-1), "refactor_after"), (dict(maxiter=0), "maxiter")])
def test_lagged_lu_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        LaggedLU(**kw)


@pytest.mark.parametrize("viscous", ["laplace", "symmetric"])
def test_one_pass_newton_residual_matches_the_assembled_residual(viscous):
    V = _cavity(5)
    torch.manual_seed(2)
    x = torch.randn(V.n, dtype=torch.float64)

    def f(p):
        return torch.stack([p[..., 1], -(p[..., 0] ** 2)], -1)

    J, R = flow_system(V, 0.02, x, newton=True, f=f, viscous=viscous, residual=True)
    J2, R2, _ = _assemble(V, 0.02, x, True, _StokesPart(V, 0.02, f, viscous))
    torch.testing.assert_close(R2, R, rtol=0, atol=1e-13 * float(R.abs().max()))
    torch.testing.assert_close(J2.values, J.values)


@pytest.mark.parametrize("forcing", ["eisenstat-walker", 1e-3])
def test_inexact_newton_reaches_the_exact_newton_solution(forcing):
    V = _cavity(8)
    nu = 1 / 400
    exact = solve_steady(V, nu, BCS, pressure="mean", linear_options=dict(refactor_after=0), forcing="none")
    inexact = solve_steady(V, nu, BCS, pressure="mean", forcing=forcing)
    assert exact.factorizations == exact.newton_steps  # one per step
    assert inexact.factorizations < inexact.newton_steps  # factors held across steps
    assert inexact.history[-1] <= 1e-10 * inexact.history[0]
    torch.testing.assert_close(inexact.x, exact.x, rtol=0, atol=1e-8)
    if forcing == "eisenstat-walker":  # loose early, tight late, never beyond the safeguard's cap
        assert max(inexact.forcing) <= 0.1 and min(inexact.forcing) < 1e-2


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(forcing="tight"), "forcing"),
        (dict(forcing=1.5), "forcing"),
        (dict(forcing=True), "forcing"),
        (dict(picard_drop=0.0), "picard_drop"),
        (dict(picard_drop=2), "picard_drop"),
        (dict(linear_options=dict(factors="lu")), "factors"),
    ],
)
def test_bad_forcing_and_picard_options(kw, match):
    V = _cavity(2)
    with pytest.raises((ValueError, TypeError), match=match):
        solve_steady(V, 0.01, BCS, pressure="mean", **kw)
