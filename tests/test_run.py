"""The Hydra runner and the model problems, each checked against its independent reference."""

import math
import os

import pytest

hydra = pytest.importorskip("hydra", reason="the runner needs hydra-core (pip install 'sla-torch[run]')")
from hydra import compose, initialize_config_dir  # noqa: E402

from sla.run import _CONFIGS, execute  # noqa: E402
from sla.run.report import STANDARD  # noqa: E402
from sla.run.schema import ConfigError, register  # noqa: E402

ROOT = os.path.dirname(_CONFIGS)


def run(*overrides):
    register()
    with initialize_config_dir(config_dir=_CONFIGS, version_base=None):
        cfg = compose(config_name="config", overrides=["save=false", *overrides])
    summary = execute(cfg)
    assert list(summary)[: len(STANDARD)] == list(STANDARD)  # the table's standard rows, in order
    assert summary["unknowns"] > 0 and summary["nonzeros"] >= summary["unknowns"]
    assert summary["assembly_s"] >= 0 and summary["solve_s"] >= 0 and summary["error"] >= 0
    return summary


@pytest.mark.parametrize("solver", ["auto", "lu", "cg", "amg", "gmg"])
def test_poisson2d_fd_second_order(solver):
    s1 = run("problem=poisson2d", "problem.n=31", f"solver={solver}")
    s2 = run("problem=poisson2d", "problem.n=63", f"solver={solver}")
    rate = math.log(s1["max_nodal_error"] / s2["max_nodal_error"]) / math.log(s1["h"] / s2["h"])
    assert 1.9 < rate < 2.1
    assert s2["residual"] < 1e-7


@pytest.mark.parametrize("element,rate", [("P1", 2), ("Q1", 2), ("P2", 3)])
def test_poisson2d_fem_nodal_convergence(element, rate):
    e = [
        run("problem=poisson2d", "problem.discretization=fem", f"problem.element={element}", f"problem.n={n}")
        for n in (8, 16)
    ]
    measured = math.log(e[0]["max_nodal_error"] / e[1]["max_nodal_error"]) / math.log(2)
    assert measured > rate - 0.3


def test_manufactured_source_is_minus_the_laplacian():
    """The Poisson problems' f against autograd's Laplacian of their u (an independent computation)."""
    import torch

    from sla.run.schema import problems_package

    problems_package()
    from sla.problems._common import bubble, bubble_source

    for d in (2, 3):
        x = torch.rand(7, d, dtype=torch.float64, requires_grad=True)
        g = torch.autograd.grad(bubble(x).sum(), x, create_graph=True)[0]
        lap = sum(torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(d))
        assert torch.allclose(-lap, bubble_source(x).detach(), atol=1e-12)


def test_iterative_solvers_do_real_work():
    """The manufactured solution is no eigenvector of the stencil: CG needs many iterations."""
    s = run("problem=poisson2d", "problem.n=31", "solver=cg", "solver.preconditioner=none")
    assert s["iterations"] > 20 and s["residual"] < 1e-7


def test_poisson3d_fd_and_fem():
    fd = run("problem=poisson3d", "problem.n=15")
    # truncation error <= h^2/12 * d * max|g| * max|g|^(d-1) (g = t(1-t)e^t: |g| <= 16e, |g| <= 0.44),
    # divided by the smallest eigenvalue d pi^2 of the discrete Laplacian (bounded below by 8 d)
    assert fd["max_nodal_error"] < fd["h"] ** 2 / 12 * 3 * 16 * math.e * 0.44**2 / (3 * 8)
    fem = run("problem=poisson3d", "problem.discretization=fem", "problem.n=6")
    assert fem["max_nodal_error"] < 0.05


def test_heat_matches_exact_decay_and_reuses_setup():
    s = run("problem=heat", "problem.n=32", "problem.steps=20", "problem.dt=0.0005")
    assert s["relative_error"] < 0.01
    assert s["steps_with_cached_setup"] == 19


def test_elasticity_close_to_timoshenko():
    s = run("problem=elasticity", "problem.nx=20", "problem.ny=4")
    assert s["relative_error"] < 0.01


def test_3d_elasticity_approaches_timoshenko_with_amg():
    """``problem.dim=3``: P1 tetrahedra lock in bending, so the tip deflection approaches Timoshenko's
    from below; measured relative errors 0.50, 0.21 and 0.070 at 2, 4 and 8 cells across (length 10);
    AMG-CG with the rigid-body modes in 16-19 iterations."""
    s = [
        run("problem=elasticity", "problem.dim=3", f"problem.nx={10 * m}", f"problem.ny={m}", "solver=amg")
        for m in (2, 4, 8)
    ]
    d = [x["tip_deflection"] for x in s]
    assert d[0] < d[1] < d[2] < s[2]["timoshenko"]
    e = [x["relative_error"] for x in s]
    assert e[1] < 0.5 * e[0] and e[2] < 0.5 * e[1] and e[2] < 0.1
    assert s[2]["unknowns"] == 3 * 81 * 81 and max(x["iterations"] for x in s) <= 25


def test_inverse_conductivity_recovers_the_field():
    s = run("problem=inverse_conductivity", "problem.n=12", "problem.steps=60", "problem.lr=0.08")
    assert s["loss_last"] < 1e-2 * s["loss_first"]
    assert s["k_relative_error_last"] < 0.2 * s["k_relative_error_first"]


def test_unknown_problem_and_bad_dtype():
    with pytest.raises(ConfigError, match="dtype='float16' is not allowed: expected one of float32, float64"):
        run("dtype=float16")
    with pytest.raises(Exception, match="problem"):
        run("problem=nope")


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
@pytest.mark.parametrize(
    "problem", [("problem=poisson2d", "problem.n=63"), ("problem=heat", "problem.n=16", "problem.steps=5")]
)
def test_same_answer_on_cuda(problem):
    cpu = run(*problem, "solver=cg")
    gpu = run(*problem, "solver=cg", "device=cuda")
    assert gpu["device"] == "cuda" and gpu["backend"] in ("pytorch", "cupy", "cudss")
    assert abs(gpu["error"] - cpu["error"]) <= 1e-6 * cpu["error"] + 1e-12
