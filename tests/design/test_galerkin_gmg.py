"""Element-wise Galerkin geometric multigrid (sla.assembly.galerkin) and its use in SIMP.

References: the coarse matrices against ``P^T A P`` formed with an explicit global
prolongation built here (SciPy), the SIMP results against the direct (CHOLMOD) path.
"""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import sla
from sla.assembly import apply_dirichlet, box, rectangle
from sla.assembly.galerkin import GridHierarchy, grid_shape
from sla.design import SIMP, cantilever, mbb_beam


def _interp(n):
    """1-D linear interpolation, coarse nodes 0..n/2 onto fine nodes 0..n (written out, dense)."""
    P = np.zeros((n + 1, n // 2 + 1))
    for i in range(n + 1):
        if i % 2 == 0:
            P[i, i // 2] = 1.0
        else:
            P[i, (i - 1) // 2] = P[i, (i + 1) // 2] = 0.5
    return P


def _global_p(counts, ncomp, fixed):
    """Explicit P = kron(P_z, P_y, P_x, I) with the rows of fixed fine dofs zeroed."""
    P = np.eye(ncomp)
    for n in counts:
        P = np.kron(_interp(n), P)
    P[fixed] = 0.0
    return P


def _simp(case, solver="direct"):
    return SIMP(case.mesh, case.fixed, case.load, volfrac=0.3, rmin=1.5, solver=solver)


def _moduli(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 10.0 ** (-9 * torch.rand(n, generator=g, dtype=torch.float64))  # contrast 1e-9 .. 1


def _stiffness(opt, E):
    from sla.assembly.plan import LinearScatter

    K = opt._K0.with_values(LinearScatter.apply(E, opt._map))
    return apply_dirichlet(K, opt.load, opt.fixed, 0.0)[0]


def _dense(pattern, values):
    A = np.zeros(pattern.shape)
    np.add.at(A, (pattern.row.numpy(), pattern.col.numpy()), values.numpy())
    return A


def _check_levels(opt, hier, E):
    A = _stiffness(opt, E).to_dense().numpy()
    fixed = opt.fixed.numpy()
    counts = hier.counts
    for lv, vals in zip(hier.levels, hier.coarse_values(E, opt._unit)):
        P = _global_p(counts, hier.ncomp, fixed)
        ref = P.T @ A @ P
        dead = np.abs(P).sum(0) == 0
        ref[dead, dead] = 1.0  # coarse dofs that interpolate only into fixed ones: identity rows
        mine = _dense(lv.pattern, vals)
        assert np.abs(mine - ref).max() <= 1e-12 * np.abs(ref).max()
        A, counts, fixed = mine, lv.counts, np.flatnonzero(dead)
    return len(hier.levels)


@pytest.mark.parametrize("dims", [(16, 8), (8, 4, 4)])
def test_element_galerkin_equals_the_global_product(dims):
    case = cantilever(*dims)
    opt = _simp(case)
    hier = GridHierarchy(case.mesh, len(dims), case.fixed, max_coarse=40)
    assert _check_levels(opt, hier, _moduli(case.mesh.n_cells)) == 2


def test_element_galerkin_with_dofs_that_die_on_the_coarse_grid():
    # two columns of clamped nodes: the coarse nodes at x = 0 interpolate only into fixed dofs
    case = cantilever(16, 8)
    P = case.mesh.points
    fixed = torch.cat([2 * torch.nonzero(P[:, 0] < 1.5).flatten() + c for c in (0, 1)]).sort().values
    opt = SIMP(case.mesh, fixed, case.load, volfrac=0.3, solver="direct")
    hier = GridHierarchy(case.mesh, 2, fixed, max_coarse=40)
    assert hier.levels[0].dead.sum() == 2 * 5  # 5 coarse nodes on x = 0, both components
    _check_levels(opt, hier, _moduli(case.mesh.n_cells, 1))


def _design(mesh):
    """Moduli of a lattice of solid bars in void (contrast 1e-9), the same shape on every refinement."""
    c = mesh.points[mesh.cells].mean(1)
    L = mesh.points.amax(0)
    s = c / L  # unit coordinates
    bars = (torch.sin(6 * math.pi * s[:, 0]) > 0.3) | (torch.sin(4 * math.pi * s[:, 1]) > 0.5)
    return torch.where(bars, 1.0, 1e-9).to(torch.float64)


def _pcg_iterations(dims):
    case = cantilever(*dims)
    opt = _simp(case)
    E = _design(case.mesh)
    A = _stiffness(opt, E)
    M = GridHierarchy(case.mesh, len(dims), case.fixed).preconditioner(A, E, opt._unit)
    x, info = sla.solve(A, opt.load, backend="pytorch", method="cg", preconditioner=M, rtol=1e-8, return_info=True)
    # the solution against SciPy's direct solve
    As = sp.csr_matrix(A.to_dense().numpy())
    ref = spla.spsolve(As.tocsc(), opt.load.numpy())
    assert np.abs(x.numpy() - ref).max() <= 1e-6 * np.abs(ref).max()
    return info.iterations


@pytest.mark.parametrize("family", [[(32, 16), (64, 32), (128, 64)], [(8, 4, 4), (16, 8, 8)]])
def test_pcg_iterations_stay_flat_under_refinement_and_contrast(family):
    its = [_pcg_iterations(d) for d in family]
    assert max(its) <= 40, its
    assert max(its) <= 1.6 * min(its) + 2, its


@pytest.mark.parametrize("case", [mbb_beam(32, 16), cantilever(16, 8, 8)], ids=["mbb2d", "cantilever3d"])
def test_simp_with_gmg_equals_the_direct_path(case):
    ref = _simp(case, "direct").optimize(maxiter=4, tol=1e-12)
    opt = _simp(case, dict(preconditioner="gmg", rtol=1e-11))
    res = opt.optimize(maxiter=4, tol=1e-12)
    assert opt.hierarchy is not None and opt.last_info.preconditioner == "gmg"
    for a, b in zip(res.compliance, ref.compliance):
        assert abs(a - b) <= 1e-8 * abs(b)
    torch.testing.assert_close(res.x, ref.x, rtol=0, atol=1e-7)


def test_simp_solver_choices():
    case3 = cantilever(16, 8, 8)
    assert _simp(case3, "auto").hierarchy is not None  # a 3D hexahedral grid that coarsens: gmg
    assert _simp(cantilever(6, 3, 3), "auto").hierarchy is None  # nothing to coarsen: direct
    assert _simp(mbb_beam(16, 8), "auto").hierarchy is None  # 2D: the direct path
    assert _simp(mbb_beam(16, 8), "gmg").hierarchy is not None
    opt = _simp(case3, sla.SolverConfig(preconditioner=sla.precond.GMG(max_coarse=1000, cycle="W")))
    assert opt.hierarchy.cycle == "W" and len(opt.hierarchy.sizes) == 2
    with pytest.raises(ValueError, match="solver must be one of"):
        _simp(case3, "multigrid")
    with pytest.raises(ValueError, match="pytorch backend"):
        _simp(case3, dict(preconditioner="gmg", method="gmres"))


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match=r"25 x 12 cells cannot be coarsened.*divisible by 2\^"):
        GridHierarchy(rectangle(0, 25, 0, 12, 25, 12, "quad"), 2, max_coarse=100)
    with pytest.raises(ValueError, match="odd count"):
        _simp(cantilever(50, 25, 25), "gmg")
    with pytest.raises(ValueError, match="structured quad or hexahedron"):
        GridHierarchy(rectangle(0, 4, 0, 4, 4, 4, "tri"), 2)
    m = box(0, 4, 0, 2, 0, 2, 4, 2, 2, "hex")
    shuffled = type(m)(m.points, m.cells.flip(0), m.cell_type)
    with pytest.raises(ValueError, match="not one"):
        grid_shape(shuffled)
    assert grid_shape(m) == (4, 2, 2)
    with pytest.raises(ValueError, match="ncomp"):
        GridHierarchy(m, 0)
    with pytest.raises(IndexError, match="fixed dofs"):
        GridHierarchy(m, 3, torch.tensor([10**6]))
    case = cantilever(16, 8)
    opt = _simp(case)
    hier = GridHierarchy(case.mesh, 2, case.fixed)
    E = torch.ones(case.mesh.n_cells, dtype=torch.float64)
    with pytest.raises(ValueError, match="one value per cell"):
        hier.coarse_values(E[:-1], opt._unit)
    # a built preconditioner: checked against the matrix, refused by backends that cannot use it
    A = _stiffness(opt, E)
    M = hier.preconditioner(A, E, opt._unit)
    other = _stiffness(_simp(cantilever(8, 4)), torch.ones(32, dtype=torch.float64))
    with pytest.raises(ValueError, match="built for a"):
        sla.solve(
            other, torch.ones(other.shape[0], dtype=torch.float64), backend="pytorch", method="cg", preconditioner=M
        )
    with pytest.raises(TypeError, match="pytorch backend only"):
        sla.solve(A, opt.load, backend="scipy", method="cg", preconditioner=M)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_simp_with_gmg_on_the_gpu_equals_the_cpu_direct_path():
    ref = _simp(cantilever(16, 8, 8), "direct").optimize(maxiter=3, tol=1e-12)
    case = cantilever(16, 8, 8, device="cuda")
    opt = _simp(case, dict(preconditioner="gmg", rtol=1e-11))
    res = opt.optimize(maxiter=3, tol=1e-12)
    assert opt.last_info.preconditioner == "gmg" and opt.last_info.backend == "pytorch"
    for a, b in zip(res.compliance, ref.compliance):
        assert abs(a - b) <= 1e-8 * abs(b)


def test_runner_solver_gmg_and_auto_pick_the_multigrid_in_3d():
    pytest.importorskip("hydra", reason="the runner needs hydra-core (pip install 'sla[run]')")
    from hydra import compose, initialize_config_dir

    from sla.run import _CONFIGS, execute
    from sla.run.schema import register

    def run(*overrides):
        register()
        with initialize_config_dir(config_dir=_CONFIGS, version_base=None):
            over = ["save=false", "problem=topology", "problem.case=cantilever3d", "problem.maxiter=3"]
            cfg = compose(config_name="config", overrides=[*over, *overrides])
        return execute(cfg)

    dims = ("problem.nelx=8", "problem.nely=4", "problem.nelz=4")
    gmg, auto, chol = run(*dims, "solver=gmg"), run(*dims), run(*dims, "solver=cholesky")
    assert gmg["preconditioner"] == auto["preconditioner"] == "gmg" and gmg["multigrid_levels"] == "675 / 135"
    assert chol["method"] == "cholesky" and "multigrid_levels" not in chol
    assert abs(gmg["compliance_last"] - chol["compliance_last"]) <= 1e-7 * chol["compliance_last"]


def test_solve_takes_a_built_preconditioner():
    from sla.gallery import poisson2d
    from sla.solvers.precond import make_preconditioner

    A = poisson2d(24)
    b = torch.linspace(-1, 1, A.shape[0], dtype=torch.float64)
    M = make_preconditioner(A, "gmg")
    x, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner=M, rtol=1e-10, return_info=True)
    ref = spla.spsolve(sp.csr_matrix(A.to_dense().numpy()).tocsc(), b.numpy())
    assert info.preconditioner == "gmg" and info.iterations < 20
    assert np.abs(x.numpy() - ref).max() <= 1e-8 * np.abs(ref).max()
    with pytest.raises(ValueError, match="carries its own"):
        sla.solve(A, b, backend="pytorch", method="cg", preconditioner=M, options={"max_coarse": 10})
