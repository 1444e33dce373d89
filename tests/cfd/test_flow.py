"""Taylor-Hood flow core: mixed space, forms, BCs, Newton, block preconditioner, lid-driven cavity vs Ghia."""

import math

import pytest
import torch

import sla
from sla.assembly import unit_square
from sla.assembly.flow import flow_system
from sla.assembly.mixed import TaylorHood
from sla.cfd import FlowLinearSolver, VelocityBC, dirichlet_data, solve_steady
from sla.pattern import Pattern


def _cavity(n):
    m = unit_square(n)
    m.tag_facets("lid", lambda x: (x[:, 1] - 1).abs() < 1e-9)
    m.tag_facets("walls", lambda x: (x[:, 1] - 1).abs() >= 1e-9)
    return TaylorHood(m)


BCS = [VelocityBC("lid", (1.0, 0.0)), VelocityBC("walls", 0.0)]


def test_space_offsets_and_blocks():
    V = _cavity(4)
    n2 = V.mesh.n_points + V.mesh.edges.shape[0]
    assert V.offsets == (0, 2 * n2, 2 * n2 + V.mesh.n_points)
    A = flow_system(V, 0.5)
    dense = A.to_dense()
    uu, up, pu = V.block(A, "uu"), V.block(A, "up"), V.block(A, "pu")
    torch.testing.assert_close(uu.to_dense(), dense[: V.n_u, : V.n_u])
    torch.testing.assert_close(up.to_dense(), dense[: V.n_u, V.n_u :])
    torch.testing.assert_close(pu.to_dense(), up.to_dense().T)  # B^T is the transpose of B
    # divergence of the linear field u = (x, y) is 2: -int q div u = -2 int q
    x = torch.zeros(V.n, dtype=torch.float64)
    x[: V.n_u] = V.velocity_points().reshape(-1)
    torch.testing.assert_close((pu @ x[: V.n_u]).sum(), torch.tensor(-2.0, dtype=torch.float64))
    # the viscous block annihilates constants, the velocity mass integrates to |Omega| per component
    c = torch.zeros(V.n_u, dtype=torch.float64)
    c[0::2] = 1.0
    assert float((V.block(flow_system(V, 1.0), "uu") @ c).abs().max()) < 1e-12
    M = V.block(flow_system(V, 1e-300, sigma=1.0), "uu")
    assert abs(float(c @ (M @ c)) - 1.0) < 1e-9
    with pytest.raises(ValueError, match="pattern"):
        V.block(
            sla.SparseTensor(torch.ones(V.n, dtype=torch.float64), torch.arange(V.n), torch.arange(V.n), (V.n, V.n)),
            "uu",
        )
    with pytest.raises(ValueError, match="block"):
        V.block(A, "vv")


def test_reassembly_reuses_the_pattern(monkeypatch):
    V = _cavity(4)
    x = torch.rand(V.n, dtype=torch.float64)
    J1, _ = flow_system(V, 0.1, x, newton=True, residual=True)
    built = []
    orig = Pattern.__init__

    def spy(self, *a, **k):
        built.append(1)
        orig(self, *a, **k)

    monkeypatch.setattr(Pattern, "__init__", spy)
    J2, _ = flow_system(V, 0.05, 2 * x, newton=True, residual=True)
    A3 = flow_system(V, 0.05, x)
    assert J2.pattern is J1.pattern and A3.pattern is J1.pattern
    assert not built


def test_newton_jacobian_matches_autograd():
    V = _cavity(3)
    x = torch.rand(V.n, dtype=torch.float64)
    J, _ = flow_system(V, 0.3, x, newton=True, residual=True)
    Jad = torch.autograd.functional.jacobian(lambda y: flow_system(V, 0.3, y, residual=True)[1], x)
    torch.testing.assert_close(J.to_dense(), Jad)


def test_stokes_analytic_solution():
    """u = (y^2, x^2) - something divergence free: u = (sin, ...) manufactured; here the exact P2 case
    u = (y^2, x^2), p = x + y - 1 solves -Lap u + grad p = f with f = (-2 + 1, -2 + 1)."""
    m = unit_square(6)
    V = TaylorHood(m)

    def exact(x):
        return torch.stack([x[:, 1] ** 2, x[:, 0] ** 2], 1)

    res = solve_steady(
        V, 1.0, [VelocityBC("boundary", exact)], pressure="mean", f=lambda x: torch.full_like(x, -1.0), maxiter=5
    )
    # Stokes only: the convection of this field is not zero, so subtract it by solving Stokes directly
    A = flow_system(V, 1.0)
    dofs, g = dirichlet_data(V, [VelocityBC("boundary", exact)], "pin")
    from sla.assembly import apply_dirichlet
    from sla.assembly.flow import body_force

    full = torch.zeros(V.n, dtype=torch.float64)
    full[dofs] = g
    x = sla.solve(*apply_dirichlet(A, body_force(V, lambda x: torch.full_like(x, -1.0)), dofs, full))
    u, p = V.split(x)
    torch.testing.assert_close(u, exact(V.velocity_points()), atol=1e-10, rtol=0)
    pts = m.points
    pe = pts[:, 0] + pts[:, 1]
    torch.testing.assert_close(p - p.mean(), pe - pe.mean(), atol=1e-9, rtol=0)
    assert res.history[-1] < 1e-9


def test_missing_tag_and_bad_input_errors():
    V = _cavity(2)
    with pytest.raises(ValueError, match="'inlet'"):
        dirichlet_data(V, [VelocityBC("inlet", 1.0)])
    with pytest.raises(ValueError, match="nu"):
        solve_steady(V, -1.0, BCS, pressure="mean")
    with pytest.raises(ValueError, match="pressure"):
        dirichlet_data(V, BCS, pressure="zero")
    with pytest.raises(ValueError, match="quad"):
        TaylorHood(unit_square(2, cell="quad"))
    m = unit_square(2)
    m.points[4] = m.points[0]  # collapse cells
    with pytest.raises(ValueError, match="degenerate"):
        TaylorHood(m)
    from problems.cavity import check_re

    with pytest.raises(ValueError, match="re"):
        check_re(0.0)


def test_newton_divergence_is_a_convergence_error():
    V = _cavity(4)
    with pytest.raises(sla.ConvergenceError) as e:
        solve_steady(V, 1 / 5000, BCS, pressure="mean", maxiter=2, picard=0)
    assert len(e.value.history) >= 2 and all(math.isfinite(h) for h in e.value.history)


def test_gradient_wrt_viscosity_matches_finite_differences():
    V = _cavity(4)

    def probe(nu):
        res = solve_steady(V, nu, BCS, pressure="mean")
        u, _ = V.evaluate(res.x, torch.tensor([[0.5, 0.3]], dtype=torch.float64))
        return u[0, 0]

    nu = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    g = torch.autograd.grad(probe(nu), nu)[0]
    h = 1e-5
    with torch.no_grad():
        fd = (probe(torch.tensor(0.05 + h)) - probe(torch.tensor(0.05 - h))) / (2 * h)
    assert abs(float(g) - float(fd)) <= 1e-4 * abs(float(fd))


def _block_iterations(sizes, velocity, nu=1.0, state=False):
    its = []
    for n in sizes:
        V = _cavity(n)
        dofs, g = dirichlet_data(V, BCS, "pin")
        x = torch.zeros(V.n, dtype=torch.float64)
        x[dofs] = g
        if state:  # linearise about the Stokes solution
            x = (
                x
                + FlowLinearSolver(V, "direct", dofs).solve(
                    flow_system(V, nu), -flow_system(V, nu, x, residual=True)[1]
                )[0]
            )
        A, R = flow_system(V, nu, x, newton=state, residual=True)
        free = torch.ones(V.n, dtype=torch.bool)
        free[dofs] = False
        rhs = torch.where(free, -R, torch.zeros_like(R))
        d_dir, _ = FlowLinearSolver(V, "direct", dofs).solve(A, rhs)
        lin = FlowLinearSolver(V, "iterative", dofs, rtol=1e-10, velocity=velocity)
        d_it, k = lin.solve(A, rhs, state=x if state else None, nu=nu)
        u_dir, u_it = d_dir[: V.n_u], d_it[: V.n_u]
        assert float((u_dir - u_it).norm() / u_dir.norm()) < 1e-6
        its.append(k)
    return its


def test_block_preconditioner_schur_is_mesh_independent():
    """Stokes, pressure-mass Schur complement, exact velocity block: the counts nearly flat (27, 29, 32)."""
    its = _block_iterations((8, 16, 32), "lu")
    assert max(its) <= 1.3 * min(its), its


def test_block_preconditioner_with_amg_matches_direct():
    its = _block_iterations((8, 16), "amg")
    assert max(its) < 80, its


@pytest.mark.slow
def test_block_preconditioner_amg_nearly_flat_over_three_refinements():
    its = _block_iterations((16, 32, 64), "amg")
    assert max(its) <= 1.5 * min(its), its


@pytest.mark.slow
def test_block_preconditioner_lsc_navier_stokes():
    """Newton Jacobian at Re = 100 (about the Stokes state), least-squares commutator Schur: converges to
    the direct solution; the counts grow with the mesh (measured 31, 50, 88 on 8^2, 16^2, 32^2 -- LSC
    without boundary weighting on an enclosed flow), so only a bound is asserted."""
    its = _block_iterations((8, 16, 32), "amg", nu=0.01, state=True)
    assert max(its) < 150, its


def test_cavity_re100_matches_ghia():
    from problems.cavity import centrelines, ghia_deviation, solve_cavity

    V, res = solve_cavity(16, 100.0)
    u, v = centrelines(V, res[-1].x)
    du, dv = ghia_deviation(100.0, u, v)
    assert du <= 0.02 and dv <= 0.02, (du, dv)
    assert res[-1].steps[-1] == "newton" and res[-1].history[-1] < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("re,n", [(400.0, 32), (1000.0, 64)])
def test_cavity_matches_ghia_full_accuracy(re, n):
    from problems.cavity import centrelines, ghia_deviation, solve_cavity

    V, res = solve_cavity(n, re)
    u, v = centrelines(V, res[-1].x)
    du, dv = ghia_deviation(re, u, v)
    assert du <= 0.02 and dv <= 0.02, (du, dv)


def test_runner_cavity_small(tmp_path):
    """``python -m sla.run problem=cavity``'s problem function: summary with the Ghia comparison."""
    from omegaconf import OmegaConf

    from problems.cavity import run

    cfg = OmegaConf.create({"name": "cavity", "re": 100.0, "n": 8, "linear": "direct", "picture": False})
    out = run(cfg, sla.SolverConfig(), torch.device("cpu"), torch.float64)
    assert out.summary["ghia_max_dev_u"] < 0.03 and out.summary["linear"] == "direct"
    assert set(out.point_data) == {"velocity", "pressure", "speed"}
    assert all(bool(torch.isfinite(t).all()) for t in out.point_data.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
@pytest.mark.parametrize("linear", ["direct", "iterative"])
def test_cavity_on_cuda_matches_cpu(linear):
    from problems.cavity import centrelines, solve_cavity

    Vc, rc = solve_cavity(16, 100.0, "direct")
    Vg, rg = solve_cavity(16, 100.0, linear, device="cuda")
    assert rg[-1].x.device.type == "cuda"
    uc, vc = centrelines(Vc, rc[-1].x)
    ug, vg = centrelines(Vg, rg[-1].x)
    torch.testing.assert_close(ug.cpu(), uc, atol=1e-6, rtol=0)
    torch.testing.assert_close(vg.cpu(), vc, atol=1e-6, rtol=0)


def test_shape_derivative_matches_finite_differences():
    """d(kinetic energy)/d(node coordinates) along a smooth interior deformation, by the Newton adjoint."""
    base = _cavity(4).mesh
    P0 = base.points.detach()
    dirn = (torch.sin(math.pi * P0[:, :1]) * torch.sin(math.pi * P0[:, 1:])) * torch.tensor([1.0, 0.5], dtype=P0.dtype)

    def energy(points):
        V = TaylorHood(base.with_points(points))
        res = solve_steady(V, 0.02, BCS, pressure="mean")
        u = res.x[: V.n_u]
        M = V.block(flow_system(V, 1e-300, sigma=1.0), "uu")  # velocity mass (viscous part negligible)
        return 0.5 * u @ (M @ u)

    t = torch.zeros((), dtype=P0.dtype, requires_grad=True)
    g = torch.autograd.grad(energy(P0 + t * dirn), t)[0]
    h = 1e-5
    with torch.no_grad():
        fd = (energy(P0 + h * dirn) - energy(P0 - h * dirn)) / (2 * h)
    assert abs(float(g) - float(fd)) <= 1e-4 * abs(float(fd)), (float(g), float(fd))


def test_stokes_exact_on_tetrahedra():
    """u = (y^2, z^2, x^2) (divergence free, in P2), p = 0: -Lap u = (-2, -2, -2) reproduced exactly."""
    from sla.assembly import apply_dirichlet, unit_cube
    from sla.assembly.flow import body_force

    V = TaylorHood(unit_cube(2, cell="tet"))

    def exact(x):
        return torch.stack([x[:, 1] ** 2, x[:, 2] ** 2, x[:, 0] ** 2], 1)

    dofs, g = dirichlet_data(V, [VelocityBC("boundary", exact)], "pin")
    full = torch.zeros(V.n, dtype=torch.float64)
    full[dofs] = g
    x = sla.solve(*apply_dirichlet(flow_system(V, 1.0), body_force(V, torch.full((3,), -2.0)), dofs, full))
    u, p = V.split(x)
    torch.testing.assert_close(u, exact(V.velocity_points()), atol=1e-10, rtol=0)
    assert float(p.abs().max()) < 1e-9


def test_steady_callback_sees_every_step():
    """solve_steady's callback (the runner's Newton progress bar) gets each step's kind and residual."""
    from problems.cavity import cavity_bcs, cavity_mesh

    V = TaylorHood(cavity_mesh(6))
    seen = []
    res = solve_steady(V, 1.0 / 50, cavity_bcs(), pressure="mean", picard=2, callback=lambda *a: seen.append(a))
    assert [k for k, _, _ in seen] == list(range(1, len(res.steps) + 1))
    assert [kind for _, kind, _ in seen] == res.steps
    assert [r for _, _, r in seen] == pytest.approx(res.history[1:], rel=1e-12)
