"""DFG 2D-1 (Schäfer & Turek 1996, steady Re = 20): drag, lift and pressure difference against
the published reference values, their convergence under refinement, and the force functional
against an independent boundary integral."""

import math

import pytest
import torch

pytest.importorskip("gmsh")
pytest.importorskip("meshio")

from sla.assembly import dfg_channel
from sla.assembly.mixed import TaylorHood
from sla.cfd.dfg import REFERENCE, TOLERANCE_2D1, dfg_quantities, inflow_profile, solve_2d1
from sla.cfd.forces import boundary_force, point_pressure

REF = REFERENCE["2d1"]


def rel(q, name):
    return abs(float(q[name]) - REF[name]) / abs(REF[name])


@pytest.fixture(scope="module")
def medium():
    """h = 0.04 with h_cylinder = 0.005 (64 segments on the circle, ~10k unknowns)."""
    V = TaylorHood(dfg_channel(h=0.04, h_cylinder=0.005))
    res, q = solve_2d1(V)
    return V, res, q


def test_2d1_within_the_issue_tolerances(medium):
    """Already this mesh meets the issue's targets: c_D 0.5%, c_L 5%, dp 0.5%."""
    V, res, q = medium
    assert res.history[-1] <= 1e-10 * res.history[0]
    assert "newton" in res.steps
    for name, tol in TOLERANCE_2D1.items():
        assert rel(q, name) < tol, (name, float(q[name]), REF[name])


def test_2d1_converges_towards_the_reference(medium):
    """Coarse mesh (h = 0.08, 16-gon cylinder): c_D within 3%, dp within 1.5%; the medium mesh is
    closer in all three quantities."""
    Vc = TaylorHood(dfg_channel(h=0.08, h_cylinder=0.02))
    _, qc = solve_2d1(Vc)
    assert rel(qc, "c_D") < 0.03 and rel(qc, "dp") < 0.015
    _, _, qm = medium
    for name in ("c_D", "c_L", "dp"):
        assert rel(qm, name) < rel(qc, name), name


def test_force_matches_the_boundary_integral(medium):
    """The volume-integral force equals the surface integral of -(nu du/dn - p n) over the cylinder,
    evaluated independently from the facet traces (to the discretisation error of the latter)."""
    from sla.assembly import FacetBasis

    V, res, q = medium
    x, nu = res.x, 1e-3
    mesh = V.mesh
    fb = FacetBasis(mesh, V.p2, "cylinder", intorder=4)
    fp = FacetBasis(mesh, V.pressure, "cylinder", intorder=4)
    u = x[: V.n_u].reshape(-1, 2)
    # n: outward normal of the fluid domain (into the cylinder)
    n = fb.normal
    F = torch.zeros(2, dtype=torch.float64)
    p_q = (fp.phi * x[V.n_u :][fp.dofs][:, None, :]).sum(-1)
    for c in range(2):
        grad_c = torch.einsum("eqnd,en->eqd", fb.grad, u[:, c][fb.dofs])
        traction = nu * (grad_c * n).sum(-1) - p_q * n[..., c]
        F[c] = -(traction * fb.dx).sum()
    Fv = boundary_force(V, x, nu, "cylinder")
    assert torch.allclose(Fv, q["F"])
    assert float(F[0]) == pytest.approx(float(Fv[0]), rel=0.02)
    assert float(F[1]) == pytest.approx(float(Fv[1]), abs=0.05 * abs(float(Fv[1])) + 1e-4 * float(Fv[0]))


def test_point_pressure_interpolates_linearly(medium):
    V, res, _ = medium
    x = torch.zeros(V.n, dtype=torch.float64)
    pts = V.mesh.points
    x[V.n_u :] = 1.0 + 2.0 * pts[:, 0] - 3.0 * pts[:, 1]  # a P1 pressure reproduced exactly
    q = torch.tensor([[0.15, 0.2], [1.234, 0.321], [2.2, 0.41], [0.0, 0.0]], dtype=torch.float64)
    got = point_pressure(V, x, q)
    assert torch.allclose(got, 1.0 + 2.0 * q[:, 0] - 3.0 * q[:, 1], atol=1e-12)
    with pytest.raises(ValueError, match=r"points\[0\].*outside the mesh"):
        point_pressure(V, x, [[0.2, 0.2]])  # inside the cylinder


def test_inflow_profile_flux():
    """The parabola carries the mean speed 2 U_m / 3 through the inlet."""
    g = inflow_profile(0.3)
    y = torch.linspace(0, 0.41, 20001, dtype=torch.float64)
    ux = g(torch.stack([torch.zeros_like(y), y], -1))[:, 0]
    mean = float(torch.trapezoid(ux, y)) / 0.41
    assert mean == pytest.approx(0.2, rel=1e-8)
    assert float(ux.max()) == pytest.approx(0.3, rel=1e-6)
    with pytest.raises(TypeError, match="u_max"):
        inflow_profile("fast")


def test_missing_tag_is_named():
    from sla.assembly import unit_square

    m = unit_square(4)
    m.tag_facets("inlet", lambda x: x[:, 0] < 1e-9)
    V = TaylorHood(m)
    with pytest.raises(ValueError, match=r"lacks \['outlet', 'walls', 'cylinder'\]"):
        dfg_quantities(V, torch.zeros(V.n, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        boundary_force(V, torch.full((V.n,), math.nan, dtype=torch.float64), 1e-3, "inlet")


@pytest.mark.slow
def test_2d1_full_accuracy_fine_mesh():
    """h = 0.02, h_cylinder = 0.0025 (128-gon, ~38k unknowns): c_D 0.05%, c_L 0.5%, dp 0.05%."""
    V = TaylorHood(dfg_channel(h=0.02, h_cylinder=0.0025))
    _, q = solve_2d1(V)
    assert rel(q, "c_D") < 5e-4
    assert rel(q, "c_L") < 5e-3
    assert rel(q, "dp") < 5e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_2d1_and_a_few_bdf2_steps_on_cuda_match_the_cpu():
    from sla.cfd.dfg import dfg_bcs
    from sla.cfd.unsteady import solve_unsteady

    out = {}
    for dev in ("cpu", "cuda"):
        V = TaylorHood(dfg_channel(h=0.08, h_cylinder=0.02, device=dev))
        res, q = solve_2d1(V)
        r = solve_unsteady(V, 5e-4, dfg_bcs(0.3), dt=0.02, t_end=0.06, x0=res.x)
        out[dev] = (q, r.x.cpu())
    for name in ("c_D", "c_L", "dp"):
        assert float(out["cuda"][0][name]) == pytest.approx(float(out["cpu"][0][name]), rel=1e-8)
    assert torch.allclose(out["cuda"][1], out["cpu"][1], rtol=1e-8, atol=1e-10)
