"""DFG pressure difference on reshaped bodies (node coordinates moved, as in a shape derivative):
the front/back points stay on the body, the value and its gradient against exact/finite-difference
references; point evaluation differentiable in the node coordinates."""

import math

import pytest
import torch

pytest.importorskip("gmsh")
pytest.importorskip("meshio")

from sla.assembly import dfg_channel
from sla.assembly.gmsh_meshes import DFG
from sla.assembly.mixed import TaylorHood
from sla.cfd.dfg import body_axis_pressure, dfg_quantities
from sla.cfd.forces import point_pressure


@pytest.fixture(scope="module")
def mesh():
    return dfg_channel(h=0.08, h_cylinder=0.02)


def _fade(P):
    """1 on the cylinder, 0 beyond 0.1 from it: moves the body and its neighbourhood smoothly."""
    r = (P - torch.tensor(DFG.center, dtype=P.dtype)).norm(dim=1)
    return torch.clamp(1 - (r - DFG.radius) / 0.1, min=0.0)


def _radial(P, e):
    d = P - torch.tensor(DFG.center, dtype=P.dtype)
    return P + e * d / d.norm(dim=1, keepdim=True) * _fade(P)[:, None]


def _shift(P, dx, dy):
    return P + torch.tensor([dx, dy], dtype=P.dtype) * _fade(P)[:, None]


def _rotate(P, angle):
    c = torch.tensor(DFG.center, dtype=P.dtype)
    a = angle * _fade(P)
    d = P - c
    return c + torch.stack([d[:, 0] * a.cos() - d[:, 1] * a.sin(), d[:, 0] * a.sin() + d[:, 1] * a.cos()], 1)


def _linear_state(V, P):
    """A state whose P1 pressure is ``2 x + 3 y`` at the current nodes (exact along every facet)."""
    x = torch.zeros(V.n, dtype=P.dtype)
    x[V.n_u :] = 2 * P[:, 0] + 3 * P[:, 1]
    return x


def _axis_crossings(mesh):
    """Reference: x of the body's boundary crossings of y = 0.2 by segment intersection, by brute force."""
    xs = []
    P = mesh.points.detach()
    for a, b in mesh.facet_sets["cylinder"].tolist():
        (xa, ya), (xb, yb) = P[a].tolist(), P[b].tolist()
        if (ya - 0.2) * (yb - 0.2) <= 0 and ya != yb:
            xs.append(xa + (0.2 - ya) / (yb - ya) * (xb - xa))
    return min(xs), max(xs)


@pytest.mark.parametrize(
    "move, front, back",
    [
        (lambda P: P, 0.15, 0.25),
        (lambda P: _radial(P, 0.005), 0.145, 0.255),  # grown: (0.15, 0.2) is inside the body
        (lambda P: _radial(P, -0.005), 0.155, 0.245),  # shrunk: (0.15, 0.2) is in the fluid
        (lambda P: _shift(P, 0.003, 0.0), 0.153, 0.253),  # moved downstream: (0.25, 0.2) is inside
        (lambda P: _shift(P, 0.0, 0.004), None, None),  # moved up: the axis cuts facets
        (lambda P: _rotate(P, math.pi / 16), None, None),  # half a facet: no vertex on the axis
    ],
)
def test_dp_on_reshaped_bodies(mesh, move, front, back):
    m = mesh.with_points(move(mesh.points.clone()))
    V = TaylorHood(m)
    x = _linear_state(V, m.points)
    if front is None:
        front, back = _axis_crossings(m)
        assert abs(front - 0.15) > 1e-4 or abs(back - 0.25) > 1e-4  # the points really moved
    pf, pb = body_axis_pressure(V, x)
    assert float(pf) == pytest.approx(2 * front + 0.6, abs=1e-13)
    assert float(pb) == pytest.approx(2 * back + 0.6, abs=1e-13)
    q = dfg_quantities(V, x)
    assert float(q["dp"]) == pytest.approx(2 * (front - back), abs=1e-13)


@pytest.mark.parametrize("move", [lambda P: _rotate(P, math.pi / 16), lambda P: _radial(P, 0.004)])
def test_dp_gradient_wrt_node_coordinates(mesh, move):
    """A fixed nodal pressure field, the body moved: autograd of dp in the node coordinates against
    central differences along a smooth displacement field (on the radially grown body the axis passes
    through two vertices, where dp has a kink: the gradient is the mean of the one-sided slopes, which
    the central difference measures to O(e))."""
    P0 = move(mesh.points.clone())
    g = torch.Generator().manual_seed(0)
    V0 = TaylorHood(mesh.with_points(P0))
    x = torch.zeros(V0.n, dtype=torch.float64)
    x[V0.n_u :] = torch.sin(7 * P0[:, 0]) + torch.cos(11 * P0[:, 1]) + 0.1 * torch.rand(P0.shape[0], generator=g)

    def dp(P):
        pf, pb = body_axis_pressure(TaylorHood(mesh.with_points(P)), x)
        return pf - pb

    P = P0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(dp(P), P)
    W = torch.stack([torch.sin(9 * P0[:, 1]), torch.cos(5 * P0[:, 0])], 1) * _fade(P0)[:, None]
    e = 1e-6
    fd = float(dp(P0 + e * W) - dp(P0 - e * W)) / (2 * e)
    assert float((grad * W).sum()) == pytest.approx(fd, rel=1e-5)
    assert abs(fd) > 1e-3  # the direction does move the crossings


def test_body_off_the_axis_is_a_clear_error(mesh):
    V = TaylorHood(mesh.with_points(_shift(mesh.points.clone(), 0.0, 0.06)))
    with pytest.raises(ValueError, match=r"does not cross the axis y = 0.2 .* dp is undefined"):
        body_axis_pressure(V, torch.zeros(V.n, dtype=torch.float64))
    with pytest.raises(ValueError, match="boundary tag 'body' is not on the mesh"):
        body_axis_pressure(V, torch.zeros(V.n, dtype=torch.float64), tag="body")


def test_point_pressure_differentiable_in_node_coordinates(mesh):
    """The P1 pressure at fixed points moves with the cells: autograd against central differences."""
    V0 = TaylorHood(mesh)
    P0 = mesh.points
    x = torch.zeros(V0.n, dtype=torch.float64)
    x[V0.n_u :] = torch.sin(13 * P0[:, 0]) * torch.cos(17 * P0[:, 1])
    pts = torch.tensor([[0.1, 0.1], [0.3, 0.27], [0.6, 0.2]], dtype=torch.float64)

    def p(P):
        return point_pressure(TaylorHood(mesh.with_points(P)), x, pts).sum()

    P = P0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(p(P), P)
    W = torch.stack([torch.cos(3 * P0[:, 1]), torch.sin(4 * P0[:, 0])], 1)
    e = 1e-6
    fd = float(p(P0 + e * W) - p(P0 - e * W)) / (2 * e)
    assert float((grad * W).sum()) == pytest.approx(fd, rel=1e-6)
    assert abs(fd) > 1e-3
