"""density_filter against a brute-force NumPy construction: the lattice walk (quads, hexahedra) and
the k-d tree (triangles: an unstructured set of centres), cell volumes as weights, rows summing to 1."""

import numpy as np
import pytest
import torch

from sla.assembly import box, l_shape, rectangle, unit_square
from sla.design import cell_centres, cell_volumes, density_filter


def _brute(mesh, rmin):
    c = cell_centres(mesh).numpy()
    v = cell_volumes(mesh).numpy()
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    w = np.maximum(0.0, rmin - d) * v[None]
    return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize(
    "mesh,rmin",
    [
        (rectangle(0, 7, 0, 3, 7, 3, "quad"), 1.5),
        (rectangle(0, 2, 0, 1, 8, 3, "quad"), 0.6),  # anisotropic cells
        (box(0, 4, 0, 3, 0, 2, 4, 3, 2, "hex"), 1.8),
        (unit_square(5), 0.35),  # triangles: k-d tree
        (l_shape(3), 0.4),
    ],
)
def test_filter_equals_brute_force(mesh, rmin):
    H = density_filter(mesh, rmin)
    np.testing.assert_allclose(H.to_dense().numpy(), _brute(mesh, rmin), atol=1e-14)


def test_filter_is_differentiable_and_its_adjoint_is_the_transpose():
    mesh = rectangle(0, 6, 0, 4, 6, 4, "quad")
    H = density_filter(mesh, 2.0)
    x = torch.rand(mesh.n_cells, dtype=torch.float64, requires_grad=True)
    w = torch.rand(mesh.n_cells, dtype=torch.float64)
    ((H @ x) * w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), H.to_dense().T.numpy() @ w.numpy(), atol=1e-14)


@pytest.mark.parametrize("rmin", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_radius_is_named(rmin):
    with pytest.raises(ValueError, match="rmin"):
        density_filter(unit_square(2), rmin)
