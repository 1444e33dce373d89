"""``torchrun -m sla.run ... dist=on``: the mesh decomposed, assembled and solved per rank, checked
against the exact solution and the single-process run of the same P1 discretisation."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("hydra")
pytest.importorskip("pymetis")
meshio = pytest.importorskip("meshio")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, cwd, env_extra=None):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_dist_on_matches_the_single_process_run(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = _run(
        [*torchrun, "-m", "sla.run", "problem=poisson2d", "dist=on", "problem.n=24", "hydra.run.dir=d"], tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    d = tmp_path / "d"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["unknowns"] == 25 * 25 and summary["preconditioner"] == "distributed_amg"
    pieces = [meshio.read(d / f"solution_{r}.vtu") for r in range(2)]
    assert sum(p.points.shape[0] for p in pieces) >= 25 * 25 and (d / "solution.pvtu").read_text().count("<Piece") == 2
    single = _run(
        [
            sys.executable,
            "-m",
            "sla.run",
            "problem=poisson2d",
            "problem.discretization=fem",
            "problem.n=24",
            "solver=lu",
            "hydra.run.dir=s",
        ],
        tmp_path,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    ref = json.loads((tmp_path / "s" / "summary.json").read_text())
    # same P1 system: the same nodal error against the exact solution (the solves stop at rtol 1e-8)
    assert summary["error"] == pytest.approx(ref["error"], rel=1e-4)
    assert summary["error"] < 1e-3


def test_dist_on_outside_torchrun_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    out = subprocess.run(
        [sys.executable, "-m", "sla.run", "problem=poisson2d", "dist=on", "save=false"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "torchrun" in out.stderr


def test_dist_on_with_another_problem_is_refused(tmp_path):
    out = _run([sys.executable, "-m", "sla.run", "problem=heat", "dist=on", "save=false"], tmp_path)
    assert out.returncode == 2 and "dist=on is not allowed with problem=heat" in out.stderr
