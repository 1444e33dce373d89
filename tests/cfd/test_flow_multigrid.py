"""Monolithic geometric multigrid with Vanka smoothing (sla.cfd.multigrid): exact transfers on nested
meshes, the smoother against dense patch solves, FGMRES counts flat over refinements, the same flow
as the direct path."""

import math

import pytest
import torch
from devices import DEVICES

from sla.assembly import apply_dirichlet, refine, unit_cube, unit_square
from sla.assembly.flow import flow_system
from sla.assembly.mixed import TaylorHood
from sla.cfd import FlowLinearSolver, VelocityBC, dirichlet_data, solve_steady
from sla.cfd.multigrid import FlowHierarchy, FlowMultigrid, Vanka, prolongation, refined_spaces

BCS = [VelocityBC("lid", (1.0, 0.0)), VelocityBC("walls", 0.0)]


def _cavity_mesh(n, device="cpu"):
    m = unit_square(n, device=device)
    m.tag_facets("lid", lambda x: (x[:, 1] - 1).abs() < 1e-9)
    m.tag_facets("walls", lambda x: (x[:, 1] - 1).abs() >= 1e-9)
    return m


def _fields(V, quad, lin):
    """System vector of a vector field ``quad(points) [k, d]`` and pressure ``lin(vertices) [k]``."""
    return torch.cat([quad(V.velocity_points()).reshape(-1), lin(V.mesh.points)])


@pytest.mark.parametrize("mesh", [unit_square(3), unit_cube(1)], ids=["triangles", "tetrahedra"])
def test_prolongation_interpolates_p2_p1_fields_exactly(mesh):
    """P2 velocity and P1 pressure on the coarse mesh are reproduced node by node on refine(mesh)."""
    coarse, fine = TaylorHood(mesh), TaylorHood(refine(mesh))
    d = coarse.dim

    def quad(x):
        return torch.stack(
            [x[:, 0] ** 2 - 3 * x[:, 1] * x[:, -1] + 1, *[x[:, 0] * x[:, i] + x[:, i] for i in range(1, d)]], 1
        )

    def lin(x):
        return 2 * x[:, 0] - x[:, 1] + 0.5

    P = prolongation(coarse, fine)
    assert P.shape == (fine.n, coarse.n)
    err = (P @ _fields(coarse, quad, lin) - _fields(fine, quad, lin)).abs().max()
    assert float(err) < 1e-13


def test_prolongation_rejects_meshes_that_are_not_a_refinement():
    with pytest.raises(ValueError, match="refine"):
        prolongation(TaylorHood(unit_square(4)), TaylorHood(unit_square(8)))  # 4x the cells, other numbering
    with pytest.raises(ValueError, match="refinement"):
        prolongation(TaylorHood(unit_square(4)), TaylorHood(unit_square(5)))


def test_vanka_is_the_patch_averaged_dense_solves():
    """Each patch: the dense solve of A restricted to (the velocity dofs around a vertex, its pressure
    dof); the smoother returns their sum divided by the number of patches holding each dof."""
    V = TaylorHood(_cavity_mesh(2))
    dofs, _ = dirichlet_data(V, BCS, "pin")
    x = torch.linspace(0.1, 1.0, V.n, dtype=torch.float64)
    J = flow_system(V, 0.05, x, newton=True)
    A, _ = apply_dirichlet(J, torch.zeros(V.n, dtype=torch.float64), dofs, 0.0)
    S = Vanka(V, A.pattern)
    S.update(A.values)
    r = torch.randn(V.n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dense = A.to_dense()
    total = torch.zeros_like(r)
    count = torch.zeros(V.n, dtype=torch.float64)
    cells_of = [set() for _ in range(V.n_p)]
    for e, c in enumerate(V.mesh.cells.tolist()):
        for v in c:
            cells_of[v].add(e)
    nodes = V.p2.dofs(V.mesh)
    for v in range(V.n_p):
        nd = sorted({int(k) for e in cells_of[v] for k in nodes[e]})
        q = torch.tensor([k * 2 + c for k in nd for c in range(2)] + [V.n_u + v])
        total[q] += torch.linalg.solve(dense[q][:, q], r[q])
        count[q] += 1
    assert float((S(r) - total / count[:, None]).abs().max()) < 1e-12


def _vortex_system(V, re):
    dofs, g = dirichlet_data(V, BCS, "pin")
    P = V.velocity_points()
    X, Y, pi = P[:, 0], P[:, 1], math.pi
    x = torch.zeros(V.n, dtype=torch.float64)
    u = torch.sin(pi * X) ** 2 * torch.sin(2 * pi * Y)
    v = -(torch.sin(pi * Y) ** 2) * torch.sin(2 * pi * X)
    x[: V.n_u] = torch.stack([u, v], 1).reshape(-1)
    x[dofs] = g
    J, R = flow_system(V, 1 / re, x, newton=True, residual=True)
    free = torch.ones(V.n, dtype=torch.bool)
    free[dofs] = False
    return dofs, x, J, torch.where(free, -R, torch.zeros_like(R))


def _flat_counts(levels, **mg):
    """Newton system at Re = 200 about a unit vortex, W(2,2) cycles from the 8^2 mesh up; each
    increment equals the direct solve."""
    spaces = refined_spaces(_cavity_mesh(8), max(levels))
    its = []
    for lv in levels:
        V = spaces[lv]
        dofs, x, J, rhs = _vortex_system(V, 200.0)
        ref, _ = FlowLinearSolver(V, "direct", dofs, refactor_after=0).solve(J, rhs)
        lin = FlowLinearSolver(
            V, "iterative", dofs, rtol=1e-8, hierarchy=spaces[: lv + 1], multigrid={"cycle": "W", "omega": 0.6, **mg}
        )
        dx, k = lin.solve(J, rhs, state=x, nu=1 / 200)
        assert float((dx - ref).norm() / ref.norm()) < 1e-6
        its.append(k)
    return its


def test_multigrid_fgmres_counts_flat_and_match_the_direct_solution():
    """16^2, 32^2 (measured 24, 26 FGMRES iterations to rtol 1e-8)."""
    its = _flat_counts((1, 2))
    assert max(its) <= 30 and max(its) <= 1.2 * min(its), its


def test_single_precision_smoother_keeps_the_counts_and_the_double_precision_answer():
    """float32 patch inverses (the CUDA default): the FGMRES answer stays the direct one (checked inside)
    at nearly the same count."""
    its64 = _flat_counts((2,))
    its32 = _flat_counts((2,), smoother_dtype=torch.float32)
    assert its32[0] <= its64[0] + 2, (its32, its64)


@pytest.mark.slow
def test_multigrid_fgmres_counts_flat_over_three_refinements():
    """16^2, 32^2, 64^2 (37,507 unknowns; measured 24, 26, 26)."""
    its = _flat_counts((1, 2, 3))
    assert max(its) <= 30 and max(its) <= 1.2 * min(its), its


def test_steady_cavity_on_the_multigrid_path_is_the_direct_paths_flow():
    spaces = refined_spaces(_cavity_mesh(4), 2)
    V = spaces[-1]
    opts = {"hierarchy": spaces, "multigrid": {"cycle": "W", "omega": 0.6}}
    it = solve_steady(V, 1 / 100, BCS, pressure="mean", linear="iterative", linear_options=opts)
    d = solve_steady(V, 1 / 100, BCS, pressure="mean")
    assert float((it.x - d.x).abs().max()) < 1e-8
    assert sum(it.linear_iterations) > 0


def test_multigrid_bad_input():
    spaces = refined_spaces(_cavity_mesh(2), 1)
    V = spaces[-1]
    dofs, _ = dirichlet_data(V, BCS, "pin")
    with pytest.raises(ValueError, match="levels"):
        refined_spaces(_cavity_mesh(2), 0)
    with pytest.raises(ValueError, match="ending with `space`"):
        FlowLinearSolver(V, "iterative", dofs, hierarchy=spaces[:1])
    with pytest.raises(ValueError, match="at least two"):
        FlowHierarchy(spaces[-1:], dofs)
    J = flow_system(V, 0.1)
    A, _ = apply_dirichlet(J, torch.zeros(V.n, dtype=torch.float64), dofs, 0.0)
    H = FlowHierarchy(spaces, dofs)
    bad = [({"omega": 0.0}, "omega"), ({"steps": 0}, "steps"), ({"cycle": "F"}, "cycle")]
    for kw, msg in bad + [({"smoother_dtype": torch.int32}, "smoother_dtype")]:
        with pytest.raises(ValueError, match=msg):
            FlowMultigrid(H, A, **kw)


@pytest.mark.parametrize("device", DEVICES)
def test_multigrid_path_on_each_device_is_the_cpu_direct_flow(device):
    """The whole Re = 100 cavity on 32^2 (coarsest 16^2) by FGMRES + multigrid on ``device``: the flow of
    the direct path on the CPU (same mesh), to the nonlinear tolerance."""
    spaces = refined_spaces(_cavity_mesh(16), 1)
    ref = solve_steady(spaces[-1], 1 / 100, BCS, pressure="mean").x
    spaces = refined_spaces(_cavity_mesh(16, device), 1)
    opts = {"hierarchy": spaces}
    it = solve_steady(spaces[-1], 1 / 100, BCS, pressure="mean", linear="iterative", linear_options=opts)
    assert it.x.device.type == torch.device(device).type
    assert float((it.x.cpu() - ref).abs().max()) < 1e-8


def test_cavity_hierarchy_picks_the_coarsest_mesh_and_names_bad_sizes():
    from problems.cavity import MG_COARSEST_MIN, cavity_hierarchy

    sizes = lambda spaces: [int(round(s.mesh.n_cells / 2) ** 0.5) for s in spaces]
    assert MG_COARSEST_MIN == 24
    assert sizes(cavity_hierarchy(96)) == [24, 48, 96]
    assert sizes(cavity_hierarchy(100)) == [25, 50, 100]
    assert cavity_hierarchy(47) is None and cavity_hierarchy(40) is None  # odd; 20 < 24
    assert sizes(cavity_hierarchy(48, coarsest=12)) == [12, 24, 48]
    fine = cavity_hierarchy(48)[-1].mesh
    assert {"lid", "walls"} <= set(fine.facet_sets) and fine.facet_sets["lid"].shape[0] == 48
    with pytest.raises(ValueError, match="power of two"):
        cavity_hierarchy(48, coarsest=10)
    with pytest.raises(ValueError, match="coarsest"):
        cavity_hierarchy(48, coarsest=0)


def test_cavity_iterative_without_nested_meshes_takes_the_augmented_lagrangian():
    """n = 10 has no coarsest mesh of >= 24 cells: the runner's iterative path falls back to the
    augmented-Lagrangian block preconditioner (robust at Re = 1000) and gives the direct flow."""
    from problems.cavity import solve_cavity

    V, it = solve_cavity(10, 100.0, "iterative")
    _, d = solve_cavity(10, 100.0, "direct")
    assert "schur=al" in it[-1].linear_method and "LU" in d[-1].linear_method
    assert float((it[-1].x - d[-1].x).abs().max()) < 1e-8
    V, mg = solve_cavity(48, 100.0, "iterative")
    assert "multigrid" in mg[-1].linear_method and V.n == 21219
