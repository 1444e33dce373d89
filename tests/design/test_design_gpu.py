"""The design pieces on a CUDA GPU give the CPU's numbers (run on the GPU machine)."""

import pytest
import torch

import sla
from sla.design import SIMP, cantilever, density_filter, mbb_beam

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)"),
]


@pytest.mark.parametrize("dims", [(12, 4, None), (6, 3, 3)])
def test_simp_sensitivities_match_the_cpu(dims):
    nelx, nely, nelz = dims
    out = {}
    for dev in ("cpu", "cuda"):
        case = mbb_beam(nelx, nely, device=dev) if nelz is None else cantilever(nelx, nely, nelz, device=dev)
        opt = SIMP(case.mesh, case.fixed, case.load, volfrac=0.4, rmin=1.5)
        x = torch.linspace(0.1, 0.9, case.mesh.n_cells, dtype=torch.float64, device=dev)
        c, dc, dv = opt.sensitivities(x)
        out[dev] = (c, dc.cpu(), dv.cpu())
    assert abs(out["cpu"][0] - out["cuda"][0]) <= 1e-8 * abs(out["cpu"][0])
    torch.testing.assert_close(out["cuda"][1], out["cpu"][1], rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(out["cuda"][2], out["cpu"][2])


def test_simp_3d_with_amg_cg_on_the_gpu():
    case = cantilever(16, 8, 4, device="cuda")
    solver = dict(backend="pytorch", method="cg", preconditioner="amg", rtol=1e-8)
    res = SIMP(case.mesh, case.fixed, case.load, volfrac=0.2, solver=solver).optimize(maxiter=5)
    ref_case = cantilever(16, 8, 4)
    ref = SIMP(ref_case.mesh, ref_case.fixed, ref_case.load, volfrac=0.2).optimize(maxiter=5)
    for a, b in zip(res.compliance, ref.compliance):
        assert abs(a - b) <= 1e-5 * abs(b)


def test_filter_and_rebuilt_pattern_on_the_gpu():
    H = density_filter(mbb_beam(10, 5, device="cuda").mesh, 1.5)
    Hc = density_filter(mbb_beam(10, 5).mesh, 1.5)
    torch.testing.assert_close(H.to_dense().cpu(), Hc.to_dense())
    A = sla.gallery.poisson2d(20).to("cuda")
    row, col = A.row.clone(), A.col.clone()
    B = sla.SparseTensor(A.values, row, col, A.shape)
    assert sla.SparseTensor(2 * A.values, row, col, A.shape).pattern is B.pattern
