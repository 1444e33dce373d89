"""point_evaluation: exact on polynomials the element reproduces, equal to matplotlib's triangle
interpolator on the same triangles, differentiable, and a point outside the mesh is named."""

import numpy as np
import pytest
import torch

from sla.assembly import CellBasis, ElementP1, ElementP2, rectangle, unit_cube, unit_square
from sla.design import point_evaluation


@pytest.mark.parametrize(
    "mesh,element,f",
    [
        (unit_square(6), ElementP1(), lambda x: 1 + 2 * x[:, 0] - 3 * x[:, 1]),
        (unit_square(4), ElementP2(), lambda x: x[:, 0] ** 2 - x[:, 0] * x[:, 1] + 0.5 * x[:, 1]),
        (unit_cube(3), ElementP1("tetra"), lambda x: 1 + x[:, 0] - 2 * x[:, 1] + 3 * x[:, 2]),
    ],
)
def test_exact_on_reproduced_polynomials(mesh, element, f):
    basis = CellBasis(mesh, element)
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(200, mesh.points.shape[1], generator=g, dtype=torch.float64)
    pts[:4] = mesh.points[:4]  # vertices (on cell boundaries) too
    O = point_evaluation(basis, pts)
    u = f(element.dof_points(mesh))
    np.testing.assert_allclose((O @ u).numpy(), f(pts).numpy(), atol=1e-13)


def test_equals_matplotlib_linear_tri_interpolator():
    tri = pytest.importorskip("matplotlib.tri")
    mesh = rectangle(0, 2, 0, 1, 7, 5)
    basis = CellBasis(mesh, ElementP1())
    P = mesh.points.numpy()
    u = np.sin(3 * P[:, 0]) * np.cos(2 * P[:, 1])
    pts = np.random.default_rng(0).uniform([0, 0], [2, 1], size=(100, 2))
    ref = tri.LinearTriInterpolator(tri.Triangulation(P[:, 0], P[:, 1], mesh.cells.numpy()), u)(pts[:, 0], pts[:, 1])
    got = point_evaluation(basis, torch.from_numpy(pts)) @ torch.from_numpy(u)
    np.testing.assert_allclose(got.numpy(), np.asarray(ref), atol=1e-12)


def test_gradient_flows_to_the_field():
    basis = CellBasis(unit_square(3), ElementP1())
    O = point_evaluation(basis, torch.tensor([[0.5, 0.5], [0.1, 0.2]], dtype=torch.float64))
    u = torch.zeros(basis.ndofs, dtype=torch.float64, requires_grad=True)
    (O @ u).sum().backward()
    np.testing.assert_allclose(u.grad.numpy(), O.to_dense().sum(0).numpy())


def test_a_point_outside_the_mesh_is_named():
    basis = CellBasis(unit_square(3), ElementP1())
    with pytest.raises(ValueError, match=r"points\[1\] = \[1\.2, 0\.3\] lies outside the mesh"):
        point_evaluation(basis, torch.tensor([[0.5, 0.5], [1.2, 0.3]], dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        point_evaluation(basis, torch.zeros(3, 3, dtype=torch.float64))
