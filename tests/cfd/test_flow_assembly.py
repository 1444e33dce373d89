"""The flow kernel (reference-element products, blocks of cells) against a quadrature-point
reference: the element matrices summed over the quadrature points with the physical gradients of
:class:`~sla.assembly.CellBasis` (the pre-factorisation code path), scattered by the plan."""

import pytest
import torch

import sla.assembly.flow as flow
from sla.assembly import unit_cube, unit_square
from sla.assembly.flow import flow_element_matrices, flow_system
from sla.assembly.mixed import TaylorHood

TOL = 1e-13


def _reference(V, nu, x=None, newton=False, sigma=0.0, viscous="laplace"):
    """``(values of A, A_picard x)`` by quadrature: ``sum_q w_q |det J| (...)`` with ``G = grad phi``."""
    ub, pb = V.ubasis, V.pbasis
    G, W = ub._gT, ub._dxT  # [Q, a, d, E], [Q, E]
    phi, psi = ub.phi[0], pb.phi[0]
    d, E = V.dim, V.mesh.n_cells
    na, nk = phi.shape[1], psi.shape[1]
    nu_t = nu if not isinstance(nu, torch.Tensor) or nu.dim() == 0 else nu.reshape(1, -1)

    def element(newton_part):
        scal = torch.einsum("qadE,qbdE,qE->abE", G, G, W) * nu_t + sigma * torch.einsum("qa,qb,qE->abE", phi, phi, W)
        if x is not None:
            we = x[: V.n_u].reshape(-1, d)[ub.dofs.T]  # [a, E, c]
            wq = torch.einsum("qa,aEc->qcE", phi, we)
            scal = scal + torch.einsum("qE,qa,qbE->abE", W, phi, torch.einsum("qcE,qbcE->qbE", wq, G))
        Kuu = torch.einsum("abE,cf->acbfE", scal, torch.eye(d, dtype=G.dtype))
        if viscous == "symmetric":
            Kuu = Kuu + torch.einsum("qE,qafE,qbcE->acbfE", W, G, G) * (
                nu_t if not isinstance(nu_t, torch.Tensor) or nu_t.dim() == 0 else nu_t[None, None, None]
            )
        if newton_part:
            gw = torch.einsum("aEc,qafE->qcfE", we, G)
            Kuu = Kuu + torch.einsum("qE,qa,qb,qcfE->acbfE", W, phi, phi, gw)
        Bk = -torch.einsum("qE,qk,qbfE->kbfE", W, psi, G).reshape(nk, na * d, E)
        top = torch.cat([Kuu.reshape(na * d, na * d, E), Bk.transpose(0, 1)], 1)
        return torch.cat([top, torch.cat([Bk, Bk.new_zeros(nk, nk, E)], 1)], 0)

    ke = element(newton)
    index = V.plan["index_t"]
    values = ke.new_zeros(V.pattern.nnz).index_add(0, index.reshape(-1), ke.reshape(-1))
    if x is None:
        return values, None
    kp = element(False)
    dofs = V.dofs().T
    re = torch.einsum("ijE,jE->iE", kp, x[dofs])
    return values, x.new_zeros(V.n).index_add(0, dofs.reshape(-1), re.reshape(-1))


def _space(kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = unit_square(5) if kind == "tri" else unit_cube(2)
    P = m.points.clone()
    inner = ((P > 1e-9) & (P < 1 - 1e-9)).all(1)
    P[inner] += 0.08 / 5 * (2 * torch.rand(int(inner.sum()), m.dim, generator=g, dtype=P.dtype) - 1)
    m.points = P  # distorted cells: every cell has its own geometry
    return TaylorHood(m), g


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


CASES = [
    dict(),
    dict(state=True),
    dict(state=True, newton=True),
    dict(state=True, newton=True, sigma=3.0),
    dict(state=True, viscous="symmetric"),
    dict(state=True, newton=True, viscous="symmetric", sigma=0.5),
]


@pytest.mark.parametrize("kind", ["tri", "tet"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("per_cell_nu", [False, True])
def test_kernel_matches_quadrature_reference(kind, case, per_cell_nu, monkeypatch):
    monkeypatch.setattr(flow, "BLOCK_ENTRIES", 7 * 144)  # several (uneven) blocks of cells
    V, g = _space(kind)
    kw = dict(CASES[case])
    x = torch.randn(V.n, generator=g, dtype=torch.float64) if kw.pop("state", False) else None
    nu = 0.01 + torch.rand(V.mesh.n_cells, generator=g, dtype=torch.float64) if per_cell_nu else 0.03
    ref_A, ref_R = _reference(V, nu, x, **kw)
    if x is None:
        A = flow_system(V, nu, **kw)
    else:
        A, R = flow_system(V, nu, x, residual=True, **kw)
        assert _rel(R, ref_R) < TOL
    assert A.pattern is V.pattern
    assert _rel(A.values, ref_A) < TOL
    ke = flow_element_matrices(V, nu, x, **kw)  # the public element matrices, elements last
    idx = V.plan["index_t"]
    assert _rel(ke.new_zeros(V.pattern.nnz).index_add(0, idx.reshape(-1), ke.reshape(-1)), ref_A) < TOL


@pytest.mark.parametrize("kind", ["tri", "tet"])
def test_differentiated_kernel_matches_reference(kind):
    """The autograd path (one graph over all cells) in values and in gradients w.r.t. the node
    coordinates, the state, the viscosity and the mass coefficient."""
    V, g = _space(kind, seed=1)
    P = V.mesh.points.clone().requires_grad_()
    V.mesh.points = P
    x = torch.randn(V.n, generator=g, dtype=torch.float64).requires_grad_()
    nu = torch.tensor(0.02, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    wA = torch.randn(V.pattern.nnz, generator=g, dtype=torch.float64)
    wR = torch.randn(V.n, generator=g, dtype=torch.float64)
    A, R = flow_system(V, nu, x, newton=True, sigma=sigma, viscous="symmetric", residual=True)
    ref_A, ref_R = _reference(V, nu, x, newton=True, sigma=sigma, viscous="symmetric")
    assert _rel(A.values.detach(), ref_A.detach()) < TOL and _rel(R.detach(), ref_R.detach()) < TOL
    got = torch.autograd.grad((A.values * wA).sum() + (R * wR).sum(), (P, x, nu, sigma))
    want = torch.autograd.grad((ref_A * wA).sum() + (ref_R * wR).sum(), (P, x, nu, sigma))
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-12


def test_residual_is_the_picard_matrix_times_the_state():
    V, g = _space("tri", seed=2)
    x = torch.randn(V.n, generator=g, dtype=torch.float64)
    J, R = flow_system(V, 0.05, x, newton=True, residual=True)
    A = flow_system(V, 0.05, x)
    assert _rel(R, A @ x) < TOL
    assert J.pattern is A.pattern and _rel(J.values, A.values) > 1e-3  # the Newton part is there


def test_per_cell_nu_shape_is_checked():
    V, _ = _space("tri")
    with pytest.raises(ValueError, match=r"nu must be a scalar or one value per cell \[50\], got shape \(7,\)"):
        flow_system(V, torch.full((7,), 0.1, dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
@pytest.mark.parametrize("kind", ["tri", "tet"])
def test_kernel_on_cuda_matches_the_cpu_reference(kind):
    """The whole-mesh (GPU) layout of the kernel against the quadrature reference on the CPU."""
    V, g = _space(kind, seed=3)
    x = torch.randn(V.n, generator=g, dtype=torch.float64)
    ref_A, ref_R = _reference(V, 0.02, x, newton=True, sigma=1.5, viscous="symmetric")
    Vc = TaylorHood(V.mesh.to("cuda"))
    A, R = flow_system(Vc, 0.02, x.cuda(), newton=True, sigma=1.5, viscous="symmetric", residual=True)
    assert A.values.is_cuda
    assert _rel(A.values.cpu(), ref_A) < TOL and _rel(R.cpu(), ref_R) < TOL
