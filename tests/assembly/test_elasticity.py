"""Linear elasticity: a cantilever under an end shear load against Timoshenko beam theory."""

import torch

import sla
from sla.assembly import (
    CellBasis,
    ElementP2,
    ElementQ1,
    ElementVector,
    apply_dirichlet,
    assemble,
    boundary_dofs,
    elasticity,
    neumann,
    rectangle,
)

L, H, E, NU, P = 10.0, 1.0, 1000.0, 0.3, 1.0


def _tip(nx, ny, cell, el):
    lam = E * NU / ((1 + NU) * (1 - 2 * NU))
    mu = E / (2 * (1 + NU))
    lam_ps = 2 * lam * mu / (lam + 2 * mu)  # plane stress
    m = rectangle(0, L, 0, H, nx, ny, cell)
    b = CellBasis(m, el)
    lam_cell = torch.full((m.n_cells,), lam_ps, dtype=torch.float64)  # Lamé per cell
    K = assemble(elasticity, b, lam=lam_cell, mu=mu)
    f = neumann(b, [0.0, -P / H], "xmax")  # uniform shear traction, resultant P
    u = sla.solve(*apply_dirichlet(K, f, boundary_dofs(b, "xmin"))).reshape(-1, 2)
    x = el.dof_points(m)
    tip = torch.nonzero(((x[:, 0] - L).abs() < 1e-12) & ((x[:, 1] - H / 2).abs() < 1e-12)).flatten()
    return -float(u[tip, 1])


def test_cantilever_tip_deflection_converges_to_timoshenko():
    inertia = H**3 / 12
    mu = E / (2 * (1 + NU))
    timoshenko = P * L**3 / (3 * E * inertia) + P * L / (5 / 6 * mu * H)  # 4.0312
    p2 = [_tip(nx, ny, "tri", ElementVector(ElementP2())) for nx, ny in [(10, 2), (20, 4), (40, 8)]]
    err = [abs(d - timoshenko) / timoshenko for d in p2]
    assert err[0] > err[1] > err[2] and err[2] < 0.005
    q1 = [_tip(nx, ny, "quad", ElementVector(ElementQ1())) for nx, ny in [(20, 4), (40, 8), (80, 16)]]
    err = [abs(d - timoshenko) / timoshenko for d in q1]
    assert err[0] > err[1] > err[2] and err[2] < 0.01  # Q1 locks in shear on coarse meshes, then converges


def test_rigid_motions_are_the_kernel():
    m = rectangle(0, 2, 0, 1, 3, 2, "quad")
    b = CellBasis(m, ElementVector(ElementQ1()))
    K = assemble(elasticity, b, lam=1.5, mu=0.7).to_dense()
    x = m.points
    rigid = torch.stack(
        [
            torch.stack([torch.ones_like(x[:, 0]), torch.zeros_like(x[:, 0])], 1).reshape(-1),
            torch.stack([torch.zeros_like(x[:, 0]), torch.ones_like(x[:, 0])], 1).reshape(-1),
            torch.stack([-x[:, 1], x[:, 0]], 1).reshape(-1),
        ],
        1,
    )
    assert float((K @ rigid).abs().max()) < 1e-12
    ev = torch.linalg.eigvalsh(K)
    assert int((ev.abs() < 1e-10).sum()) == 3


def test_gradcheck_lame_parameters_to_displacement():
    m = rectangle(0, 2, 0, 1, 2, 1)
    b = CellBasis(m, ElementVector(ElementP2()))
    f = neumann(b, [0.0, -1.0], "xmax")
    fixed = boundary_dofs(b, "xmin")

    def solve(lam, mu):
        K = assemble(elasticity, b, lam=lam, mu=mu)
        return sla.solve(*apply_dirichlet(K, f, fixed))

    lam = (torch.rand(m.n_cells, dtype=torch.float64) + 1).requires_grad_()
    mu = (torch.rand(m.n_cells, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(solve, (lam, mu), fast_mode=True)


def test_3d_cantilever_tip_deflection_approaches_beam_theory():
    """``cantilever_system_3d`` (P1 tetrahedra, a unit square section, length 8, traction 1 at the
    end): the mean tip deflection against Timoshenko's 2.048 + 0.025.  P1 tetrahedra lock in bending,
    so it approaches from below: measured 0.51, 0.80, 0.94 of it at 2, 4, 8 cubes across."""
    from sla.assembly.cantilever import cantilever_system_3d, lame

    lam, mu = lame(E, NU)
    theory = 1.0 * 8.0**3 / (3 * E / 12) + 8.0 / (5 / 6 * mu)
    tips = []
    for m in (2, 4, 8):
        K, f, basis = cantilever_system_3d(nx=8 * m, ny=m, nz=m)
        u = sla.solve(K, f, backend="pytorch", method="cg", preconditioner="amg", rtol=1e-10).reshape(-1, 3)
        points = basis.mesh.points
        tips.append(-float(u[(points[:, 0] - 8.0).abs() < 1e-12, 2].mean()) / theory)
    assert tips[0] < tips[1] < tips[2] < 1.0 and tips[2] > 0.9, tips
    assert abs(tips[2] - 1) < 0.5 * abs(tips[1] - 1), tips  # the error at least halves per refinement
