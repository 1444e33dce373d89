"""Scatter plans and the cached coefficient map: every code path against an independent one
(the pair-sorted plan against the all-keys sort, the scipy map against torch's CSR and the
element kernel), plus a mixed (P2 x P1) operator against scikit-fem."""

import numpy as np
import pytest
import torch

from sla.assembly import (
    BilinearForm,
    CellBasis,
    ElementP1,
    ElementP2,
    ElementQ1,
    assemble,
    laplace,
    mass,
    unit_cube,
    unit_square,
)
from sla.assembly.plan import CoefficientMap, _plan_pairs, _plan_sorted, plan_index, scatter_plan


@pytest.mark.parametrize(
    "make, el",
    [
        (lambda: unit_square(3), ElementP2()),
        (lambda: unit_cube(2), ElementP1("tetra")),
        (lambda: unit_square(3, "quad"), ElementQ1()),
    ],
)
@pytest.mark.parametrize("use_numpy", [True, False])
def test_pair_plan_equals_full_sort(make, el, use_numpy):
    m = make()
    d = el.dofs(m)
    N = el.ndofs(m)
    crow, col, idx = _plan_pairs(d.numpy(), N)
    row2, col2, idx2 = _plan_sorted(d, d, N, use_numpy=use_numpy)
    row = np.repeat(np.arange(N), np.diff(crow))
    assert np.array_equal(row, row2.numpy()) and np.array_equal(col, col2.numpy())
    assert np.array_equal(idx, idx2.numpy())


@pytest.mark.parametrize("use_scipy", [True, False])
def test_coefficient_map_equals_element_kernel(use_scipy):
    m = unit_square(3)
    b = CellBasis(m, ElementP2())
    k = torch.rand(m.n_cells, b.nqp, dtype=torch.float64) + 0.5
    generic = BilinearForm(lambda u, v, w: w.k * (u.grad * v.grad).sum(-1))
    ref = assemble(generic, b, k=k).values
    assert torch.allclose(assemble(laplace, b, k=k).values, ref)  # cached map (scipy on the CPU)
    # the torch CSR map (what CUDA runs) on the same units
    from sla.assembly.models import _gram, _layout

    _, G, dx = _layout(b)
    units = torch.stack([_gram(G[q : q + 1], G[q : q + 1], dx[q : q + 1]) for q in range(b.nqp)], 2)
    plan = scatter_plan(m, b.element, b.element)
    op = CoefficientMap(
        units.reshape(-1, b.nqp, m.n_cells), plan_index(plan, "cpu"), plan["pattern"].nnz, use_scipy=use_scipy
    )
    assert torch.allclose(op.apply(k.T.contiguous()), ref)
    g = torch.rand(plan["pattern"].nnz, dtype=torch.float64)
    kk = k.T.contiguous().reshape(-1)
    assert float(op.apply_t(g) @ kk) == pytest.approx(float(g @ op.apply(kk)))  # adjoint identity


def test_map_and_kernel_paths_agree_per_cell_and_with_grad():
    m = unit_square(4, "quad")
    b = CellBasis(m, ElementQ1())
    c = torch.rand(m.n_cells, dtype=torch.float64) + 0.5
    fast = assemble(mass, b, c=c).values  # map path
    p = m.points.clone().requires_grad_()
    b2 = CellBasis(m.with_points(p), ElementQ1())  # geometry requires grad: element kernel path
    assert torch.allclose(fast, assemble(mass, b2, c=c).values.detach())
    assert torch.allclose(assemble(laplace, b, k=c).values, assemble(laplace, b2, k=c).values.detach())


def test_mixed_operator_equals_scikit_fem():
    skfem = pytest.importorskip("skfem")
    from scipy.spatial import cKDTree

    m = unit_square(3)
    ub, vb = CellBasis(m, ElementP1(), intorder=2), CellBasis(m, ElementP2(), intorder=2)
    B = assemble(BilinearForm(lambda u, v, w: u.grad[..., 0] * v.value), ub, vb)  # int d_x u v
    assert B.shape == (vb.ndofs, ub.ndofs)
    skm = skfem.MeshTri(m.points.numpy().T.copy(), m.cells.numpy().T.copy())
    su = skfem.Basis(skm, skfem.ElementTriP1(), intorder=2)
    sv = skfem.Basis(skm, skfem.ElementTriP2(), intorder=2)
    Bs = skfem.asm(skfem.BilinearForm(lambda u, v, w: u.grad[0] * v), su, sv).toarray()
    iu = cKDTree(su.doflocs.T).query(ElementP1().dof_points(m).numpy())[1]
    iv = cKDTree(sv.doflocs.T).query(ElementP2().dof_points(m).numpy())[1]
    assert np.abs(B.to_dense().numpy() - Bs[np.ix_(iv, iu)]).max() < 1e-14


@pytest.mark.parametrize(
    "make, el", [(lambda: unit_square(3), ElementP2()), (lambda: unit_cube(2, "hex"), ElementQ1("hexahedron"))]
)
def test_streamed_blocks_and_cached_map_equal_the_generic_form(monkeypatch, make, el):
    from sla.assembly import CellBasis as CB

    monkeypatch.setattr(CB, "CHUNK", 5)  # many ragged blocks
    m = make()
    generic_k = BilinearForm(lambda u, v, w: w.k * (u.grad * v.grad).sum(-1))
    generic_c = BilinearForm(lambda u, v, w: w.c * u.value * v.value)
    b = CellBasis(m, el)
    ref_b = CellBasis(m, el)
    kc = torch.rand(m.n_cells, dtype=torch.float64) + 0.5
    kq = torch.rand(m.n_cells, b.nqp, dtype=torch.float64) + 0.5
    f = lambda x: 1 + x[..., 0] * x[..., 1]
    for coef in (1.0, kc, kq, f, kc, kq):  # the repeated tensors go through the cached map
        assert torch.allclose(assemble(laplace, b, k=coef).values, assemble(generic_k, ref_b, k=coef).values)
        assert torch.allclose(assemble(mass, b, c=coef).values, assemble(generic_c, ref_b, c=coef).values)
    assert "geometry" not in b._cache  # never materialised the whole basis
    # gradients w.r.t. the coefficient through the streamed pass and through the map
    kk = kc.clone().requires_grad_()
    x = torch.rand(b.ndofs, dtype=torch.float64)
    for _ in range(2):
        (g,) = torch.autograd.grad(x @ (assemble(laplace, b, k=kk) @ x), kk)
        (ref,) = torch.autograd.grad(x @ (assemble(generic_k, ref_b, k=kk) @ x), kk)
        assert torch.allclose(g, ref)


def test_geometry_cached_without_grad_is_recomputed_with_grad():
    m = unit_square(2)
    p = m.points.clone().requires_grad_()
    b = CellBasis(m.with_points(p), ElementP1())
    with torch.no_grad():
        _ = b.dx  # cached without a graph
    assemble(laplace, b).values.sum().backward()  # must still reach the coordinates
    A = assemble(BilinearForm(lambda u, v, w: (u.grad * v.grad).sum(-1) * w.x[..., 0]), b)
    (g,) = torch.autograd.grad(A.values.square().sum(), p)
    assert p.grad is not None and float(g.abs().sum()) > 0


def test_streamed_user_forms_equal_whole_mesh_evaluation(monkeypatch):
    from sla.assembly import CellBasis as CB
    from sla.assembly import advection, dot, grad

    monkeypatch.setattr(CB, "CHUNK", 7)
    m = unit_square(4)
    p1, p2 = CellBasis(m, ElementP1(), intorder=4), CellBasis(m, ElementP2(), intorder=4)
    whole1, whole2 = CellBasis(m, ElementP1(), intorder=4), CellBasis(m, ElementP2(), intorder=4)
    _ = whole1.dx, whole2.dx  # geometry cached: evaluated in one piece
    u = whole2.interpolate(torch.rand(p2.ndofs, dtype=torch.float64))  # a field at the quadrature points
    kc = torch.rand(m.n_cells, dtype=torch.float64, requires_grad=True)
    vel = lambda x: torch.stack([x[..., 1], -x[..., 0]], -1)
    nonlinear = BilinearForm(
        lambda du, v, w: w.k * (1 + w.u.value**2) * dot(grad(du), grad(v)) + w.x[..., 0] * du.value * v.value
    )
    mixed = BilinearForm(lambda q, v, w: q.value * v.grad[..., 1])
    cases = [
        (advection, (p2, p2), (whole2, whole2), dict(b=vel)),
        (nonlinear, (p2, p2), (whole2, whole2), dict(k=kc, u=u)),
        (mixed, (p1, p2), (whole1, whole2), {}),
    ]
    for form, streamed_bases, whole_bases, w in cases:
        assert torch.allclose(assemble(form, *streamed_bases, **w).values, assemble(form, *whole_bases, **w).values)
    # gradients w.r.t. a per-cell coefficient flow through the blocks
    g = torch.autograd.grad(assemble(nonlinear, p2, k=kc, u=u).values.sum(), kc)[0]
    r = torch.autograd.grad(assemble(nonlinear, whole2, k=kc, u=u).values.sum(), kc)[0]
    assert torch.allclose(g, r)
    assert "geometry" not in p1._cache and "geometry" not in p2._cache  # the streamed bases never held it
