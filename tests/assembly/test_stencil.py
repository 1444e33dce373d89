"""Finite-difference stencils against independent references (sla.gallery, pyamg, exact polynomials)."""

import math

import numpy as np
import pytest
import torch

from sla import gallery
from sla.assembly import stencil
from sla.assembly.stencil import grid_points


@pytest.mark.parametrize("dims", [(7,), (5, 6), (3, 4, 5)])
def test_laplacian_equals_gallery(dims):
    A = stencil.laplacian(dims)
    ref = gallery._laplacian(dims, torch.float64, "cpu")
    assert torch.equal(A.to_dense(), ref.to_dense())
    assert A.pattern.cache["grid"] == dims


@pytest.mark.parametrize("make, n", [(stencil.poisson2d_system, 6), (stencil.poisson3d_system, 4)])
def test_poisson_gallery_scaled_and_tagged(make, n):
    A, b = make(n)
    nd = 2 if make is stencil.poisson2d_system else 3
    ref = (gallery.poisson2d(n) if nd == 2 else gallery.poisson3d(n)).to_dense() * (n + 1) ** 2
    assert torch.allclose(A.to_dense(), ref, rtol=1e-14)
    assert A.pattern.cache["grid"] == (n,) * nd
    assert torch.equal(b, torch.ones(n**nd, dtype=torch.float64))


def test_indices_built_sorted():
    A = stencil.laplacian((40, 30), points=9)
    key = A.row * A.sparse_shape[1] + A.col
    assert bool((key[1:] > key[:-1]).all())
    # construction skipped the coalescing sort: the values are the stencil weights in row-major order
    assert A.nnz == 9 * 38 * 28 + 2 * (6 * 38 + 6 * 28) + 4 * 4


def test_poisson2d_second_order():
    errs = []
    for n in (15, 31, 63):
        u = lambda x: torch.sin(math.pi * x[:, 0]) * torch.sin(2 * math.pi * x[:, 1])
        A, b = stencil.poisson2d_system(n, f=lambda x: 5 * math.pi**2 * u(x))
        uh = A.solve(b)
        errs.append(float((uh - u(grid_points((n, n)))).abs().max()))
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert rates == pytest.approx([2.0, 2.0], abs=0.1)


def test_nine_point_is_fourth_order_on_harmonic_free_rhs():
    # compact 9-point (Mehrstellen) stencil: A u = f + h^2/12 Laplace f exactly for quartic u, f = -Laplace u
    n = 9
    h = 1.0 / (n + 1)
    A = stencil.laplacian((n, n), h=h, points=9)
    x = grid_points((n, n))
    u = lambda x: x[:, 0] ** 4 + x[:, 1] ** 4
    # apply to the full polynomial: rows away from the boundary see no missing neighbours
    Au = A @ u(x)
    f = -12 * (x[:, 0] ** 2 + x[:, 1] ** 2)
    lap_f = -48.0
    interior = ((x > 1.5 * h) & (x < 1 - 1.5 * h)).all(1)
    assert torch.allclose(Au[interior], (f + h**2 / 12 * lap_f)[interior], atol=1e-9)


def test_anisotropic_matches_pyamg():
    pyamg = pytest.importorskip("pyamg")
    for eps, theta in [(0.1, 0.3), (0.01, math.pi / 4), (1e-3, 0.0)]:
        st = pyamg.gallery.diffusion_stencil_2d(epsilon=eps, theta=theta, type="FD")
        A = stencil.anisotropic((5, 5), (1.0, eps), theta=theta)
        ref = pyamg.gallery.stencil_grid(st, (5, 5), format="csr")
        assert np.abs(A.to_scipy().toarray() - ref.toarray()).max() < 1e-13


def test_variable_diffusion_reduces_and_is_spd_and_differentiable():
    k1 = torch.ones(4, 5, dtype=torch.float64)
    assert torch.allclose(stencil.variable_diffusion(k1, h=0.5).to_dense(), stencil.laplacian((4, 5), h=0.5).to_dense())
    k = torch.rand(3, 4, 2, dtype=torch.float64) + 0.5
    D = stencil.variable_diffusion(k).to_dense()
    assert torch.allclose(D, D.T) and float(torch.linalg.eigvalsh(D).min()) > 0
    # a face between i and j carries the harmonic mean of k_i and k_j
    i, j = 0, 1  # neighbours along the last axis
    kf = k.reshape(-1)
    assert float(D[i, j]) == pytest.approx(-2 * kf[i] * kf[j] / (kf[i] + kf[j]))
    kk = (torch.rand(3, 3, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.rand(9, dtype=torch.float64)
    torch.autograd.gradcheck(lambda k: stencil.variable_diffusion(k).solve(b), (kk,))


def test_convection_diffusion_schemes():
    v = (3.0, -2.0)
    up = stencil.convection_diffusion((6, 6), v, eps=0.1, scheme="upwind").to_dense()
    ce = stencil.convection_diffusion((6, 6), v, eps=0.1, scheme="central").to_dense()
    lap = 0.1 * stencil.laplacian((6, 6)).to_dense()
    # upwind is an M-matrix (nonpositive off-diagonals, weakly diagonally dominant rows)
    off = up - torch.diag(torch.diag(up))
    assert bool((off <= 1e-15).all()) and bool((torch.diag(up) + off.sum(1) >= -1e-12).all())
    # central: symmetric part is the diffusion, skew part the (antisymmetric) convection
    assert torch.allclose((ce + ce.T) / 2, lap)
    # central is second order: applied to a linear function away from the boundary it gives v . grad u
    h = 1.0 / 7
    A = stencil.convection_diffusion((6, 6), v, eps=0.0, h=h, scheme="central")
    x = grid_points((6, 6))
    u = 2 * x[:, 0] + 5 * x[:, 1]
    interior = ((x > 1.5 * h) & (x < 1 - 1.5 * h)).all(1)
    assert torch.allclose((A @ u)[interior], torch.full_like(u, 2 * 3.0 - 5 * 2.0)[interior])


def test_long_offsets_against_dense_reference():
    shape, offs = (4, 3), [(0, 0), (0, 4), (2, -1), (-3, 2), (5, 0)]
    A = stencil.stencil_operator(shape, offs, [1.0, 2.0, 3.0, 4.0, 5.0]).to_dense()
    ref = torch.zeros(12, 12, dtype=torch.float64)
    for i, j in np.ndindex(*shape):
        for w, (a, b) in zip([1.0, 2.0, 3.0, 4.0, 5.0], offs):
            if 0 <= i + a < shape[0] and 0 <= j + b < shape[1]:
                ref[i * 3 + j, (i + a) * 3 + j + b] = w
    assert torch.equal(A, ref)


def test_stencil_errors():
    with pytest.raises(ValueError, match="points must be 5 or 9"):
        stencil.laplacian((4, 4), points=7)
    with pytest.raises(ValueError, match="shape"):
        stencil.laplacian((0, 4))
    with pytest.raises(ValueError, match="weights"):
        stencil.stencil_operator((3,), [(0,), (1,)], [1.0])
    with pytest.raises(ValueError, match="velocity"):
        stencil.convection_diffusion((3, 3), (1.0,))


def test_stencils_feed_geometric_multigrid():
    """The recorded grid lets GMG-preconditioned CG converge in a handful of iterations."""
    import sla

    for A, b in [
        stencil.poisson2d_system(31),
        stencil.poisson3d_system(15),
        (
            stencil.variable_diffusion(torch.rand(31, 31, dtype=torch.float64) + 0.5),
            torch.ones(961, dtype=torch.float64),
        ),
    ]:
        x, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner="gmg", return_info=True, rtol=1e-10)
        assert info.converged and info.iterations <= 20
        assert float((A @ x - b).norm() / b.norm()) < 1e-9
