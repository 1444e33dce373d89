"""Boundary conditions: exact reproduction of polynomial solutions, symmetry, facet geometry."""

import pytest
import torch

import sla
from sla.assembly import (
    CellBasis,
    ElementP1,
    ElementP2,
    ElementQ1,
    FacetBasis,
    apply_dirichlet,
    assemble,
    boundary_dofs,
    l_shape,
    laplace,
    neumann,
    robin,
    source,
    unit_cube,
    unit_square,
)


@pytest.mark.parametrize(
    "make, el, u",
    [
        (lambda: unit_square(4), ElementP1(), lambda x: 1 + 2 * x[..., 0] - x[..., 1]),
        (lambda: l_shape(2), ElementP2(), lambda x: x[..., 0] ** 2 - x[..., 1] ** 2 + x[..., 0] * x[..., 1]),
        (lambda: unit_cube(2, "hex"), ElementQ1("hexahedron"), lambda x: 1 + x[..., 0] * x[..., 1] - 3 * x[..., 2]),
    ],
)
def test_dirichlet_reproduces_harmonic_polynomials(make, el, u):
    m = make()
    b = CellBasis(m, el)
    A = assemble(laplace, b)
    f = torch.zeros(b.ndofs, dtype=torch.float64)
    dofs = boundary_dofs(b)
    exact = u(el.dof_points(m))
    A0, f0 = apply_dirichlet(A, f, dofs, exact[dofs])
    assert A0.pattern is A.pattern
    D = A0.to_dense()
    assert torch.allclose(D, D.T) and float(torch.linalg.eigvalsh(D).min()) > 0  # SPD stays SPD
    assert torch.allclose(sla.solve(A0, f0), exact, atol=1e-11)


def test_dirichlet_equals_condensed_system():
    m = unit_square(3)
    b = CellBasis(m, ElementP2())
    A = assemble(laplace, b, k=lambda x: 1 + x[..., 0])
    f = assemble(source, b, f=lambda x: x[..., 1])
    dofs = boundary_dofs(b, "xmin", "ymax")
    g = torch.linspace(0.0, 1.0, dofs.numel(), dtype=torch.float64)
    u = sla.solve(*apply_dirichlet(A, f, dofs, g))
    K = A.to_dense()
    free = torch.ones(b.ndofs, dtype=torch.bool)
    free[dofs] = False
    ref = torch.zeros(b.ndofs, dtype=torch.float64)
    ref[dofs] = g
    ref[free] = torch.linalg.solve(K[free][:, free], f[free] - K[free][:, ~free] @ g)
    assert torch.allclose(u, ref, atol=1e-12)


def test_neumann_and_robin_reproduce_quadratic():
    # u = x^2 + y, -Laplace u = -2; Dirichlet on ymin/ymax, Neumann du/dn = 2 on xmax, Robin on xmin
    m = unit_square(3)
    b = CellBasis(m, ElementP2())
    u = lambda x: x[..., 0] ** 2 + x[..., 1]
    A = assemble(laplace, b)
    f = assemble(source, b, f=-2.0) + neumann(b, 2.0, "xmax")
    alpha = 3.0
    R, r = robin(b, alpha, lambda x: alpha * u(x), "xmin")  # du/dn = -u_x = 0 on x = 0
    assert R.pattern is A.pattern
    dofs = boundary_dofs(b, "ymin", "ymax")
    exact = u(ElementP2().dof_points(m))
    uh = sla.solve(*apply_dirichlet(A + R, f + r, dofs, exact[dofs]))
    assert torch.allclose(uh, exact, atol=1e-11)


@pytest.mark.parametrize(
    "make, el",
    [
        (lambda: unit_cube(2), ElementP1("tetra")),
        (lambda: unit_cube(2, "hex"), ElementQ1("hexahedron")),
        (lambda: l_shape(2), ElementP1()),
        (lambda: unit_square(2, "quad"), ElementQ1()),
    ],
)
def test_facet_geometry_divergence_theorem(make, el):
    m = make()
    fb = FacetBasis(m, el)
    vol = float(m.cell_volumes().sum())
    # int n ds = 0 and int x . n ds = dim * volume (outward normals)
    assert torch.allclose(
        (fb.normal * fb.dx[..., None]).sum((0, 1)), torch.zeros(m.dim, dtype=torch.float64), atol=1e-13
    )
    assert float(((fb.x * fb.normal).sum(-1) * fb.dx).sum()) == pytest.approx(m.dim * vol)
    area = {2: 4.0 if vol == 1.0 else 8.0, 3: 6.0}[m.dim]
    assert float(neumann(CellBasis(m, el), 1.0).sum()) == pytest.approx(area)


def test_dirichlet_is_differentiable_and_validates():
    m = unit_square(2)
    b = CellBasis(m, ElementP1())
    dofs = boundary_dofs(b, "xmax")
    f = assemble(source, b)
    g = torch.rand(dofs.numel(), dtype=torch.float64, requires_grad=True)
    k = (torch.rand(m.n_cells, dtype=torch.float64) + 1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda k, g: sla.solve(*apply_dirichlet(assemble(laplace, b, k=k), f, dofs, g)), (k, g)
    )
    A = assemble(laplace, b)
    with pytest.raises(IndexError, match="dofs"):
        apply_dirichlet(A, f, torch.tensor([100]))
    with pytest.raises(ValueError, match="values"):
        apply_dirichlet(A, f, dofs, torch.ones(2, dtype=torch.float64))
    with pytest.raises(KeyError, match="unknown facet set"):
        boundary_dofs(b, "top")


def test_one_dimensional_robin_and_neumann():
    from sla.assembly import interval

    m = interval(7)
    b = CellBasis(m, ElementP1("line"))
    A = assemble(laplace, b)
    # -u'' = 0, u(0) = 0, u'(1) + u(1) = 2  ->  u = x
    R, r = robin(b, 1.0, 2.0, "xmax")
    u = sla.solve(*apply_dirichlet(A + R, r, boundary_dofs(b, "xmin")))
    assert torch.allclose(u, m.points[:, 0], atol=1e-12)
    # -u'' = 1, u(0) = 0, u'(1) = 0  ->  u = x - x^2 / 2 (P1 is nodally exact in 1D)
    f = assemble(source, b) + neumann(b, 0.0, "xmax")
    u = sla.solve(*apply_dirichlet(A, f, boundary_dofs(b, "xmin")))
    x = m.points[:, 0]
    assert torch.allclose(u, x - x**2 / 2, atol=1e-12)
