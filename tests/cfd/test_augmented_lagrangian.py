"""Augmented-Lagrangian (grad-div) block preconditioner: the Newton Jacobian at Re = 1000 solved by
FGMRES in nearly the same number of iterations on three meshes, to the direct solution."""

import math

import pytest
import torch

from sla.assembly import unit_square
from sla.assembly.flow import flow_system
from sla.assembly.mixed import TaylorHood
from sla.cfd import FlowLinearSolver, VelocityBC, dirichlet_data, solve_steady

BCS = [VelocityBC("lid", (1.0, 0.0)), VelocityBC("walls", 0.0)]


def _cavity(n):
    m = unit_square(n)
    m.tag_facets("lid", lambda x: (x[:, 1] - 1).abs() < 1e-9)
    m.tag_facets("walls", lambda x: (x[:, 1] - 1).abs() >= 1e-9)
    return TaylorHood(m)


def _vortex_newton_system(n, re):
    """The cavity's Newton system linearised about a divergence-free vortex of unit speed
    (stream function sin^2(pi x) sin^2(pi y)) with the lid's boundary values."""
    V = _cavity(n)
    dofs, g = dirichlet_data(V, BCS, "pin")
    P = V.velocity_points()
    X, Y, pi = P[:, 0], P[:, 1], math.pi
    u = torch.sin(pi * X) ** 2 * torch.sin(2 * pi * Y)
    v = -(torch.sin(pi * Y) ** 2) * torch.sin(2 * pi * X)
    x = torch.zeros(V.n, dtype=torch.float64)
    x[: V.n_u] = torch.stack([u, v], 1).reshape(-1)
    x[dofs] = g
    J, R = flow_system(V, 1 / re, x, newton=True, residual=True)
    free = torch.ones(V.n, dtype=torch.bool)
    free[dofs] = False
    return V, dofs, x, J, torch.where(free, -R, torch.zeros_like(R))


def test_augmented_lagrangian_counts_flat_over_three_refinements_at_re1000():
    """Measured (rtol 1e-9) 29, 32, 34 on 8^2, 16^2, 32^2 with gamma = 1 (20, 22, 23 with gamma = 10); the
    least-squares commutator with the same exact velocity solve needs 82, 177, 277 (rtol 1e-8)."""
    its = []
    for n in (8, 16, 32):
        V, dofs, x, J, rhs = _vortex_newton_system(n, 1000.0)
        ref, _ = FlowLinearSolver(V, "direct", dofs, refactor_after=0).solve(J, rhs)
        lin = FlowLinearSolver(V, "iterative", dofs, rtol=1e-9, schur="al", velocity="lu", maxiter=200, restart=200)
        dx, k = lin.solve(J, rhs, state=x, nu=1e-3)
        assert float((dx - ref).norm() / ref.norm()) < 1e-6
        its.append(k)
    assert max(its) <= 40 and max(its) <= 1.3 * min(its), its


def test_augmented_lagrangian_bad_input():
    V = _cavity(2)
    dofs, _ = dirichlet_data(V, BCS, "pin")
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="gamma"):
            FlowLinearSolver(V, "iterative", dofs, schur="al", gamma=bad)
    lin = FlowLinearSolver(V, "iterative", dofs, schur="al")
    with pytest.raises(ValueError, match="schur='al'"):
        lin.preconditioner(flow_system(V, 0.1), None, 0.1)


@pytest.mark.slow
def test_iterative_newton_at_re400_flat_fgmres_per_step_over_three_refinements():
    """The whole Newton solve (Re = 100 -> 400) on the iterative path with the augmented-Lagrangian
    preconditioner: FGMRES iterations per nonlinear step (Eisenstat--Walker forcing) stay nearly
    flat over 8^2, 16^2, 32^2 (measured at Re = 400: 6.4, 6.7, 6.6), and the flow is the direct path's."""
    per_step = []
    for n in (8, 16, 32):
        V = _cavity(n)
        x, xd = None, None
        for re in (100.0, 400.0):
            opts = dict(schur="al", velocity="lu")
            it = solve_steady(V, 1 / re, BCS, pressure="mean", x0=x, linear="iterative", linear_options=opts)
            d = solve_steady(V, 1 / re, BCS, pressure="mean", x0=xd)
            x, xd = it.x, d.x
        torch.testing.assert_close(x, xd, rtol=0, atol=1e-7)
        per_step.append(sum(it.linear_iterations) / it.newton_steps)
    assert max(per_step) <= 1.5 * min(per_step) and max(per_step) < 20, per_step
