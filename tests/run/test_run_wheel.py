"""The built wheel works: problems/ and configs/ ship inside the sla namespace, the Eigen
source is package data, no top-level ``problems`` package, and the installed runner runs
from another folder (.ci/run also installs it into a fresh virtual environment)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

pytest.importorskip("hydra", reason="the runner needs hydra-core (pip install 'sla-torch[run]')")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tracked_copy(dest):
    """The repository's files (tracked and new, not ignored): no stale build/ folder."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if f.startswith(("tests/", "benchmarks/", "examples/", "docs/")) or not os.path.isfile(os.path.join(ROOT, f)):
            continue
        os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))


def _setuptools_major():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("needs a git checkout")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    _tracked_copy(src)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    if _setuptools_major() >= 77:  # the installed setuptools builds it: no isolated build environment to fetch
        cmd.insert(4, "--no-build-isolation")
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    (path,) = out.glob("*.whl")
    return path


@pytest.mark.slow
def test_wheel_contents(wheel):
    assert wheel.name.startswith("sla_torch-")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"sla", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for must in ("sla/configs/config.yaml", "sla/configs/problem/poisson2d.yaml", "sla/configs/solver/cg.yaml"):
        assert must in names
    assert "sla/problems/__init__.py" in names and "sla/problems/heat.py" in names
    assert "sla/solvers/backends/eigen_ext.cpp" in names
    problems = {n.split("/")[-1][:-5] for n in names if n.startswith("sla/configs/problem/")}
    modules = {n.split("/")[-1][:-3] for n in names if n.startswith("sla/problems/")}
    assert problems <= modules  # every configured problem has its module


@pytest.mark.slow
def test_installed_wheel_runs_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = "import sla.run.schema as s; print(s.configs_dir()); print(s.problems_package().__file__)"
    where = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True).stdout
    assert all(line.startswith(str(target / "sla")) for line in where.splitlines()), where  # the installed copies
    cmd = [sys.executable, "-m", "sla.run", "problem=heat", "problem.n=8", "problem.steps=2", "hydra.run.dir=out"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((work / "out" / "summary.json").read_text())
    assert summary["problem"] == "heat" and (work / "out" / "solution.vtu").stat().st_size > 0
    bad = subprocess.run(
        [sys.executable, "-m", "sla.run", "problem.n=-5"], cwd=work, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip() == "error: problem.n=-5 is not allowed: expected an integer >= 2"
