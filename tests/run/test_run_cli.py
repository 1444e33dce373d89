"""``python -m sla.run`` as a user runs it: exit code, the end-of-run table, summary.json,
solution.vtu (read back with meshio) and solution.png (a real picture), --multirun."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("hydra", reason="the runner needs hydra-core (pip install 'sla-torch[run]')")
meshio = pytest.importorskip("meshio", reason="reading solution.vtu needs meshio")

from sla.run import _CONFIGS  # noqa: E402
from sla.run.report import STANDARD  # noqa: E402

ROOT = os.path.dirname(_CONFIGS)

# every problem at a small size, and the field its solution.vtu must hold
SMALL = {
    "poisson2d": (["problem.n=15"], "u"),
    "poisson2d-fem": (["problem=poisson2d", "problem.discretization=fem", "problem.element=Q1", "problem.n=6"], "u"),
    "poisson3d": (["problem.n=5"], "u"),
    "heat": (["problem.n=8", "problem.steps=3"], "u"),
    "elasticity": (["problem.nx=8", "problem.ny=2"], "displacement"),
    "elasticity-3d": (
        ["problem=elasticity", "problem.dim=3", "problem.nx=16", "problem.ny=2", "solver=amg"],
        "displacement",
    ),
    "inverse_conductivity": (["problem.n=6", "problem.steps=3"], "k"),
}


def sla_run(*args, cwd=ROOT, timeout=300):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "sla.run", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def check_outputs(folder, problem, field):
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["problem"] == problem
    assert list(summary)[: len(STANDARD)] == list(STANDARD)
    assert summary["unknowns"] > 0 and summary["error"] >= 0 and summary["solve_s"] >= 0
    mesh = meshio.read(folder / "solution.vtu")
    data = {**mesh.point_data, **{k: v[0] for k, v in mesh.cell_data.items()}}
    assert field in data and len(mesh.points) > 0
    png = (folder / "solution.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000  # a drawn picture, not an empty canvas
    return summary


def check_table(stdout, problem):
    for key in ("problem", "unknowns", "nonzeros", "backend", "method", "residual", "solve_s", "error"):
        assert any(line.startswith(key + " ") and "|" in line for line in stdout.splitlines()), key
    assert f"| {problem}" in stdout


def _run_problem(case, tmp_path):
    args, field = SMALL[case]
    problem = case.split("-")[0]
    if not any(a.startswith("problem=") for a in args):
        args = [f"problem={problem}", *args]
    proc = sla_run(*args, f"hydra.run.dir={tmp_path}", "plot=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_table(proc.stdout, problem)
    return check_outputs(tmp_path, problem, field)


def test_poisson2d_run_writes_table_vtu_png(tmp_path):
    s = _run_problem("poisson2d", tmp_path)
    assert s["max_nodal_error"] < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in SMALL if c != "poisson2d"])
def test_every_problem_runs(case, tmp_path):
    _run_problem(case, tmp_path)


@pytest.mark.slow
def test_multirun_sweep(tmp_path):
    proc = sla_run(
        "--multirun",
        "problem.n=7,15",
        "solver=lu,cg",
        "plot=false",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweep.subdir=${hydra.job.num}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(tmp_path.glob("*/summary.json"))
    assert len(runs) == 4
    summaries = [json.loads(p.read_text()) for p in runs]
    assert sorted((s["unknowns"], s["method"]) for s in summaries) == [(49, "cg"), (49, "lu"), (225, "cg"), (225, "lu")]
    # same grid, two solvers: the same discretisation error
    for n in (49, 225):
        e = [s["error"] for s in summaries if s["unknowns"] == n]
        assert abs(e[0] - e[1]) < 1e-6 * e[0]
    assert all((p.parent / "solution.vtu").exists() for p in runs)
