"""Differentiable CFD: gradients of the DFG 2D-1 drag through the Newton adjoint, against central
finite differences of the converged solves (1e-4 relative), w.r.t. the inflow speed, the viscosity
and the mesh node coordinates (shape derivative)."""

import pytest
import torch

pytest.importorskip("gmsh")
pytest.importorskip("meshio")

from sla.assembly import dfg_channel
from sla.assembly.gmsh_meshes import DFG
from sla.assembly.mixed import TaylorHood
from sla.cfd.dfg import solve_2d1

TIGHT = dict(rtol=1e-13, atol=1e-15)


@pytest.fixture(scope="module")
def mesh():
    return dfg_channel(h=0.08, h_cylinder=0.02)


@pytest.fixture(scope="module")
def space(mesh):
    return TaylorHood(mesh)


def c_d(space, u_max=0.3, nu=1e-3):
    return solve_2d1(space, u_max=u_max, nu=nu, **TIGHT)[1]["c_D"]


def test_drag_gradient_wrt_inflow_speed_and_viscosity(space):
    um = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    nu = torch.tensor(1e-3, dtype=torch.float64, requires_grad=True)
    c = c_d(space, um, nu)
    gu, gn = torch.autograd.grad(c, (um, nu))
    e = 1e-5
    fd_u = (c_d(space, 0.3 + e) - c_d(space, 0.3 - e)) / (2 * e)
    fd_n = (c_d(space, nu=1e-3 * (1 + e)) - c_d(space, nu=1e-3 * (1 - e))) / (2e-3 * e)
    assert float(gu) == pytest.approx(float(fd_u), rel=1e-4)
    assert float(gn) == pytest.approx(float(fd_n), rel=1e-4)
    # physics: a faster inflow lowers c_D at this Re (the viscous part falls like 1/Re), more viscosity raises it
    assert float(gu) < 0 < float(gn)


def _bump(points):
    """A smooth field that moves the cylinder's nodes radially outward and fades out at r = 0.15."""
    c0 = torch.tensor(DFG.center, dtype=points.dtype)
    d = points - c0
    r = d.norm(dim=1)
    w = torch.clamp(1 - (r - DFG.radius) / 0.1, min=0.0)
    return d / r[:, None] * w[:, None]


def test_drag_shape_derivative_wrt_node_coordinates(mesh):
    P = mesh.points.clone().requires_grad_(True)
    q = solve_2d1(TaylorHood(mesh.with_points(P)), **TIGHT)[1]
    (gP,) = torch.autograd.grad(q["c_D"], P)
    assert gP.shape == P.shape
    Vf = _bump(mesh.points)
    dd = float((gP * Vf).sum())
    e = 1e-5

    def at(X):
        return solve_2d1(TaylorHood(mesh.with_points(X)), **TIGHT)[1]

    qp, qm = at(mesh.points + e * Vf), at(mesh.points - e * Vf)
    fd = float(qp["c_D"] - qm["c_D"]) / (2 * e)
    assert dd == pytest.approx(fd, rel=1e-4)
    # a larger cylinder has more drag
    assert dd > 0
    # the pressure difference too (the front/back nodes move with the body)
    P2 = mesh.points.clone().requires_grad_(True)
    q2 = solve_2d1(TaylorHood(mesh.with_points(P2)), **TIGHT)[1]
    (gdp,) = torch.autograd.grad(q2["dp"], P2)
    fd_dp = float(qp["dp"] - qm["dp"]) / (2 * e)
    assert float((gdp * Vf).sum()) == pytest.approx(fd_dp, rel=1e-4)
