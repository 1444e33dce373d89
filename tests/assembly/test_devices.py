"""One test body per device: assembly on CUDA must equal assembly on the CPU (and stay differentiable)."""

import pytest
import torch
from devices import DEVICES

from sla.assembly import (
    CellBasis,
    ElementP1,
    ElementP2,
    ElementQ1,
    apply_dirichlet,
    assemble,
    boundary_dofs,
    laplace,
    mass,
    neumann,
    source,
    stencil,
    unit_cube,
    unit_square,
)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make, el",
    [
        (lambda d: unit_square(4, device=d), ElementP2()),
        (lambda d: unit_cube(2, "hex", device=d), ElementQ1("hexahedron")),
        (lambda d: unit_cube(2, device=d), ElementP1("tetra")),
    ],
)
def test_assembly_on_device_equals_cpu(device, make, el):
    ref_mesh, mesh = make("cpu"), make(device)
    rb, b = CellBasis(ref_mesh, el), CellBasis(mesh, el)
    k_cpu = torch.rand(ref_mesh.n_cells, dtype=torch.float64) + 0.5
    k = k_cpu.to(device).requires_grad_()
    A = assemble(laplace, b, k=k)
    assert A.device.type == torch.device(device).type
    assert torch.allclose(A.to_dense().detach().cpu(), assemble(laplace, rb, k=k_cpu).to_dense(), atol=1e-13)
    M = assemble(mass, b)
    f = assemble(source, b, f=lambda x: x[..., 0]) + neumann(b, 1.0, "xmin")
    A0, f0 = apply_dirichlet(A + M, f, boundary_dofs(b, "xmax"))
    (A0.values.sum() + f0.sum()).backward()
    assert k.grad is not None and k.grad.device.type == torch.device(device).type
    rf = assemble(source, rb, f=lambda x: x[..., 0]) + neumann(rb, 1.0, "xmin")
    assert torch.allclose(f.cpu(), rf, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
def test_stencils_on_device(device):
    A, b = stencil.poisson2d_system(8, device=device)
    assert A.device.type == torch.device(device).type and A.pattern.cache["grid"] == (8, 8)
    ref, _ = stencil.poisson2d_system(8)
    assert torch.equal(A.to_dense().cpu(), ref.to_dense())
    kk = torch.rand(4, 5, dtype=torch.float64, device=device) + 0.5
    assert torch.allclose(
        stencil.variable_diffusion(kk).to_dense().cpu(), stencil.variable_diffusion(kk.cpu()).to_dense()
    )
