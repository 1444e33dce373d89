"""Bad configuration values and failed solves: one line naming the key, the value and what is
allowed (or the error and a hint), exit code 2, no traceback -- checked before any work."""

import os
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("hydra", reason="the runner needs hydra-core (pip install 'sla-torch[run]')")

from sla.run import _CONFIGS, main
from sla.run.schema import ConfigError

ROOT = os.path.dirname(_CONFIGS)

BAD = [
    (["problem.n=-5"], "problem.n=-5 is not allowed: expected an integer >= 2"),
    (["problem.n=abc"], "problem.n='abc' is not allowed: expected an integer >= 2"),
    (["problem=heat", "problem.dt=-1"], "problem.dt=-1.0 is not allowed: expected a number > 0"),
    (["problem=heat", "problem.n=abc"], "problem.n='abc' is not allowed: expected an integer >= 1"),
    (["problem.element=P3"], "problem.element='P3' is not allowed: expected one of P1, P2, Q1"),
    (["problem.discretization=fv"], "problem.discretization='fv' is not allowed: expected one of fd, fem"),
    (["solver.rtol=-1"], "solver.rtol=-1.0 is not allowed: expected a number > 0 and < 1"),
    (["solver.rtol=1"], "solver.rtol=1.0 is not allowed: expected a number > 0 and < 1"),
    (["solver.rtol=2.5"], "solver.rtol=2.5 is not allowed: expected a number > 0 and < 1"),
    (["solver.maxiter=0"], "solver.maxiter=0 is not allowed: expected an integer >= 1"),
    (["solver.method=cgg"], "solver.method='cgg' is not allowed: expected one of auto,"),
    (["solver.backend=petsc"], "solver.backend='petsc' is not allowed: expected one of auto,"),
    (["threads=0"], "threads=0 is not allowed: expected an integer >= 1"),
    (["dtype=float16"], "dtype='float16' is not allowed: expected one of float32, float64"),
    (["device=tpu"], "device='tpu' is not allowed: expected cpu or cuda[:index]"),
    (["+problem.nn=64"], "problem.nn is not a key of problem 'poisson2d': expected one of n, discretization, element"),
    (["problem.nn=64"], "problem.nn is not a key of problem 'poisson2d': expected one of n, discretization, element"),
    (
        ["problem=heat", "+problem.stepz=3"],
        "problem.stepz is not a key of problem 'heat': expected one of n, dt, steps",
    ),
    (["+solver.rtoll=1e-3"], "solver.rtoll is not a key of the solver config"),
    (["foo=1"], "foo is not a key of the runner's config"),
    (["problem=nope"], "problem='nope' is not allowed: expected one of "),
    (["solver=nope"], "solver='nope' is not allowed: expected one of "),
    (["problem.n=8,16"], "Ambiguous value for argument 'problem.n=8,16'"),
    # a sweep is checked job by job before the first job runs
    (["--multirun", "problem.n=8,-1"], "problem.n=-1 is not allowed: expected an integer >= 2"),
]
if not torch.cuda.is_available():
    BAD.append((["device=cuda"], "device='cuda' is not allowed here: torch sees no CUDA device (use device=cpu)"))


def _main(argv, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["sla.run"])
    with pytest.raises(SystemExit) as exc:
        main(["save=false", *argv])
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_value_one_line_exit_2(argv, message, capsys, monkeypatch):
    code, err = _main(argv, capsys, monkeypatch)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_full_error_shows_the_exception(monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["sla.run"])
    with pytest.raises(ConfigError, match="problem.n=-5 is not allowed"):
        main(["save=false", "problem.n=-5"])


def test_library_error_one_line_with_hint(capsys, monkeypatch):
    """A solve that cannot converge in its iteration cap: ConvergenceError as one line plus a hint."""
    argv = ["problem=elasticity", "problem.nx=10", "problem.ny=2", "solver=cg", "solver.maxiter=2"]
    code, err = _main(argv, capsys, monkeypatch)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ConvergenceError:") and "hint: try" in lines[0] and "solver=" in lines[0]


def test_cli_bad_value_exit_code_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "sla.run", "problem=heat", "problem.dt=-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: problem.dt=-1.0 is not allowed: expected a number > 0"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_slow_iterative_solve_fails_within_its_time_limit(capsys, monkeypatch):
    """An unpreconditioned GMRES on the cantilever crawls; the wall-clock limit stops it with one line."""
    argv = ["problem=elasticity", "problem.nx=20", "problem.ny=4", "solver=gmres", "solver.maxiter=100000"]
    t0 = time.perf_counter()
    code, err = _main([*argv, "solver.timeout=1"], capsys, monkeypatch)
    assert time.perf_counter() - t0 < 60
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "ConvergenceError" in line and "timeout" in line and "hint: try" in line


@pytest.mark.slow
def test_elasticity_with_gmres_fails_fast():
    """The issue's case: problem=elasticity solver=gmres (322 s of silence before) now stops at the solver
    config's bounds (maxiter 500, 30 s) with one line and a hint."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sla.run", "problem=elasticity", "solver=gmres", "save=false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 2 and time.perf_counter() - t0 < 180
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ConvergenceError:") and "solver=lu" in line
