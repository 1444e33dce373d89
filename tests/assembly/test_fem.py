"""Finite elements against independent references: scikit-fem matrices, exact integrals,
manufactured solutions (convergence rates) and finite differences (gradcheck)."""

import math

import numpy as np
import pytest
import torch

import sla
from sla.assembly import (
    BilinearForm,
    CellBasis,
    ElementP1,
    ElementP2,
    ElementQ1,
    ElementVector,
    LinearForm,
    advection,
    apply_dirichlet,
    assemble,
    boundary_dofs,
    div,
    dot,
    elasticity,
    grad,
    integrate,
    l_shape,
    laplace,
    mass,
    quadrature,
    rectangle,
    source,
    sym_grad,
    unit_cube,
    unit_square,
)

skfem = pytest.importorskip("skfem")

# (our mesh, our element, skfem element, skfem mesh class, node order of skfem's cell)
CASES = {
    "P1-tri": (lambda: unit_square(3), ElementP1(), "ElementTriP1", "MeshTri", None),
    "P2-tri": (lambda: unit_square(3), ElementP2(), "ElementTriP2", "MeshTri", None),
    "Q1-quad": (lambda: rectangle(0, 2, 0, 1, 3, 2, "quad"), ElementQ1(), "ElementQuad1", "MeshQuad", None),
    "P1-tet": (lambda: unit_cube(2), ElementP1("tetra"), "ElementTetP1", "MeshTet", None),
    "P2-tet": (lambda: unit_cube(2), ElementP2("tetra"), "ElementTetP2", "MeshTet", None),
    "Q1-hex": (
        lambda: unit_cube(2, "hex"),
        ElementQ1("hexahedron"),
        "ElementHex1",
        "MeshHex",
        [0, 4, 3, 1, 7, 5, 2, 6],
    ),
}


def _distort(m, amount=0.15):
    """Move interior nodes (so quads/hexes are not parallelograms); keep the boundary."""
    g = torch.Generator().manual_seed(1)
    p = m.points.clone()
    inner = torch.ones(m.n_points, dtype=torch.bool)
    inner[m.boundary_nodes] = False
    h = 1.0 / round(m.n_cells ** (1 / m.dim))
    p[inner] += amount * h * (torch.rand(int(inner.sum()), m.dim, generator=g, dtype=p.dtype) - 0.5)
    return m.with_points(p)


@pytest.mark.parametrize("case", list(CASES))
def test_matrices_equal_scikit_fem(case):
    from scipy.spatial import cKDTree
    from skfem.models.poisson import laplace as sk_laplace
    from skfem.models.poisson import mass as sk_mass

    make, el, sk_el, sk_mesh, order = CASES[case]
    m = _distort(make())
    cells = m.cells.numpy() if order is None else m.cells.numpy()[:, order]
    skm = getattr(skfem, sk_mesh)(m.points.numpy().T.copy(), cells.T.copy())
    sk_element = getattr(skfem, sk_el)()
    sb = skfem.Basis(skm, sk_element)
    b = CellBasis(m, el, intorder=2 * sk_element.maxdeg)  # skfem's default; non-affine Q1 stiffness is rational
    dist, idx = cKDTree(sb.doflocs.T).query(el.dof_points(m).numpy())
    assert dist.max() < 1e-12
    for ours, theirs in [(laplace, sk_laplace), (mass, sk_mass)]:
        K = assemble(ours, b).to_scipy().toarray()
        Ks = skfem.asm(theirs, sb).toarray()[np.ix_(idx, idx)]
        assert np.abs(K - Ks).max() <= 1e-13 * np.abs(Ks).max()


MEASURES = [
    ("P1-square", lambda: unit_square(4), ElementP1(), 1.0),
    ("P2-square", lambda: unit_square(4), ElementP2(), 1.0),
    ("P1-L", lambda: l_shape(3), ElementP1(), 3.0),
    ("P2-L", lambda: l_shape(3), ElementP2(), 3.0),
    ("Q1-rect", lambda: rectangle(0, 3, 0, 2, 3, 2, "quad"), ElementQ1(), 6.0),
    ("P1-cube", lambda: unit_cube(2), ElementP1("tetra"), 1.0),
    ("P2-cube", lambda: unit_cube(2), ElementP2("tetra"), 1.0),
    ("Q1-cube", lambda: unit_cube(2, "hex"), ElementQ1("hexahedron"), 1.0),
]


@pytest.mark.parametrize("name, make, el, vol", MEASURES, ids=[c[0] for c in MEASURES])
def test_mass_sums_to_measure(name, make, el, vol):
    m = make()
    M = assemble(mass, CellBasis(_distort(m), el))
    assert float(M.values.sum()) == pytest.approx(vol, rel=1e-13)
    assert float(assemble(source, CellBasis(m, el)).sum()) == pytest.approx(vol, rel=1e-13)


@pytest.mark.parametrize("cell, rd", [("line", 1), ("triangle", 2), ("quad", 2), ("tetra", 3), ("hexahedron", 3)])
def test_quadrature_exact_on_monomials(cell, rd):
    for deg in range(0, 7):
        X, W = quadrature(cell, deg)
        for powers in np.ndindex(*([deg + 1] * rd)):
            if (sum(powers) > deg) if cell in ("triangle", "tetra") else (max(powers) > deg):
                continue
            val = float((W * torch.prod(X ** torch.tensor(powers, dtype=X.dtype), -1)).sum())
            if cell in ("triangle", "tetra"):  # int x^a y^b (z^c) = a! b! (c!) / (a+b+c+d)!
                exact = math.prod(math.factorial(p) for p in powers) / math.factorial(sum(powers) + rd)
            else:
                exact = math.prod(1.0 / (p + 1) for p in powers)
            assert val == pytest.approx(exact, rel=1e-12, abs=1e-15), (cell, deg, powers)


def test_ready_made_forms_equal_generic_forms():
    m = _distort(unit_square(3, "quad"))
    b = CellBasis(m, ElementQ1())
    k = torch.rand(m.n_cells, b.nqp, dtype=torch.float64) + 0.5
    generic = BilinearForm(lambda u, v, w: w.k * dot(grad(u), grad(v)))
    assert torch.allclose(assemble(laplace, b, k=k).values, assemble(generic, b, k=k).values, rtol=1e-13)
    vb = CellBasis(_distort(unit_square(3)), ElementVector(ElementP2()))
    lam, mu = torch.rand(vb.n_elements, dtype=torch.float64) + 1, 2.0
    gen = BilinearForm(lambda u, v, w: 2 * w.mu * (sym_grad(u) * sym_grad(v)).sum((-2, -1)) + w.lam * div(u) * div(v))
    assert torch.allclose(assemble(elasticity, vb, lam=lam, mu=mu).values, assemble(gen, vb, lam=lam, mu=mu).values)


def test_reassembly_shares_the_pattern():
    m = unit_square(4)
    b = CellBasis(m, ElementP1())
    A1 = assemble(laplace, b, k=torch.ones(m.n_cells, dtype=torch.float64))
    A2 = assemble(laplace, CellBasis(m, ElementP1(), intorder=2), k=lambda x: 1 + x[..., 0])
    assert A1.pattern is A2.pattern


def test_advection_is_skew_for_divergence_free_flow():
    # int (b . grad u) v + int (b . grad v) u = int_boundary (b.n) u v = 0 when b is tangential; b = (y-1/2, 1/2-x)
    m = unit_square(4)
    b = CellBasis(m, ElementP2())
    vel = lambda x: torch.stack([x[..., 1] - 0.5, 0.5 - x[..., 0]], -1)
    C = assemble(advection, b, b=vel).to_dense()
    inner = torch.ones(b.ndofs, dtype=torch.bool)
    inner[boundary_dofs(b)] = False
    S = (C + C.T)[inner][:, inner]
    assert float(S.abs().max()) < 1e-13
    assert float(C.abs().max()) > 1e-3


def _errors(mesh, el):
    dim = mesh.dim
    u = lambda x: torch.prod(torch.sin(math.pi * x), -1)

    def du(x):
        s, c = torch.sin(math.pi * x), torch.cos(math.pi * x)
        return torch.stack(
            [math.pi * c[..., d] * torch.prod(s[..., [e for e in range(dim) if e != d]], -1) for d in range(dim)], -1
        )

    b = CellBasis(mesh, el)
    A, f = assemble(laplace, b), assemble(source, b, f=lambda x: dim * math.pi**2 * u(x))
    uh = sla.solve(*apply_dirichlet(A, f, boundary_dofs(b)))
    be = CellBasis(mesh, el, intorder=2 * el.degree + 3)
    val, gr = be.interpolate(uh)
    l2 = integrate(lambda w: (w.uh - u(w.x)) ** 2, be, uh=val).sqrt()
    h1 = (((gr - du(be.x)) ** 2).sum(-1) * be.dx).sum().sqrt()
    return float(l2), float(h1)


RATES = [
    ("P1-tri", lambda n: unit_square(n), ElementP1(), [4, 8, 16, 32], (2, 1)),
    ("P2-tri", lambda n: unit_square(n), ElementP2(), [4, 8, 16, 32], (3, 2)),
    ("Q1-quad", lambda n: unit_square(n, "quad"), ElementQ1(), [4, 8, 16, 32], (2, 1)),
    ("P1-tet", lambda n: unit_cube(n), ElementP1("tetra"), [2, 4, 8, 16], (2, 1)),
    ("P2-tet", lambda n: unit_cube(n), ElementP2("tetra"), [2, 3, 4, 6], (3, 2)),
    ("Q1-hex", lambda n: unit_cube(n, "hex"), ElementQ1("hexahedron"), [2, 4, 8, 16], (2, 1)),
]


@pytest.mark.parametrize("name, make, el, ns, expected", RATES, ids=[r[0] for r in RATES])
def test_convergence_rates(name, make, el, ns, expected):
    e = np.array([_errors(make(n), el) for n in ns])
    rates = np.log(e[:-1] / e[1:]) / np.log(np.array(ns[1:]) / np.array(ns[:-1]))[:, None]
    # the finest pair is asymptotic; coarser ones may be a little off but never below
    assert rates[-1] == pytest.approx(expected, abs=0.12), rates
    assert (rates >= np.array(expected) - 0.6).all(), rates


def test_gradcheck_coefficient_to_solution():
    m = unit_square(2)
    b = CellBasis(m, ElementP1())
    f = assemble(source, b, f=1.0)
    dofs = boundary_dofs(b, "xmin", "ymin")

    def solve(k):
        A = assemble(laplace, b, k=k)
        return sla.solve(*apply_dirichlet(A, f, dofs, 0.25))

    k = (torch.rand(m.n_cells, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(solve, (k,))
    kq = (torch.rand(m.n_cells, b.nqp, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(solve, (kq,))


@pytest.mark.parametrize(
    "make, el, fast",
    [
        (lambda: unit_square(2), ElementP1(), False),
        (lambda: unit_square(2, "quad"), ElementQ1(), False),
        (lambda: unit_cube(1), ElementP2("tetra"), True),  # ~1000 outputs: projected check
        (lambda: unit_cube(1, "hex"), ElementQ1("hexahedron"), True),
    ],
)
def test_gradcheck_coordinates_to_matrix(make, el, fast):
    m = _distort(make(), 0.1)
    p = m.points.clone().requires_grad_()

    def matrices(p):
        b = CellBasis(m.with_points(p), el)
        return (
            assemble(laplace, b, k=lambda x: 1 + x[..., 0] ** 2).values,
            assemble(mass, b).values,
            assemble(source, b, f=lambda x: x[..., -1]),
        )

    assert torch.autograd.gradcheck(matrices, (p,), fast_mode=fast)


def test_linear_form_user_function_and_errors():
    b = CellBasis(unit_square(2), ElementP1())
    g = assemble(LinearForm(lambda v, w: w.x[..., 0] * v.value), b)
    assert float(g.sum()) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="coefficient 'k'"):
        assemble(laplace, b, k=torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs a tetra mesh"):
        CellBasis(unit_square(2), ElementP1("tetra"))
    with pytest.raises(TypeError, match="form must be"):
        assemble(lambda u, v, w: u, b)


def test_load_from_a_field_equals_mass_times_dofs():
    m = unit_cube(2)
    b = CellBasis(m, ElementP2("tetra"))
    u = torch.rand(b.ndofs, dtype=torch.float64)
    M = assemble(mass, b)
    assert torch.allclose(assemble(source, b, f=b.interpolate(u)), M @ u)
    # a user form reading the field's value and gradient: int u * grad(u) . grad(v) = d/du of ...
    nonlinear = BilinearForm(lambda du, v, w: (1 + w.u.value**2) * dot(grad(du), grad(v)))
    A = assemble(nonlinear, b, u=b.interpolate(u))
    val, _ = b.interpolate(u)
    assert torch.allclose(A.values, assemble(laplace, b, k=1 + val**2).values)
