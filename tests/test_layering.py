"""Architecture rules: the import-linter contracts in pyproject.toml hold (layering points one way,
the core needs no optional package), and `import sla` stays light and leaves global state alone."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

pytest.importorskip("importlinter", reason="needs import-linter (pip install 'sla[dev]')")


def _lint_imports(cwd: pathlib.Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {**os.environ, "PYTHONPATH": str(cwd), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", "--no-logo"], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_import_contracts_hold():
    out = _lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(
    "module,line,contract",
    [
        ("sla/pattern.py", "from sla.dist import partition", "Layers point one way"),
        ("sla/solvers/linear/solve.py", "import sla.assembly", "Layers point one way"),
        ("sla/structure.py", "import pyamg", "The core needs no optional package"),
        ("sla/solvers/linear/registry.py", "import matplotlib", "Only the runner"),
    ],
)
def test_import_contracts_catch_a_violation(tmp_path, module, line, contract):
    for part in ("sla", "problems"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}\n")
    out = _lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    broken = [ln for ln in out.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(ln.startswith(contract) for ln in broken), out.stdout


def test_import_sla_is_light():
    heavy = [
        "cupy",
        "nvmath",
        "pyamg",
        "meshio",
        "safetensors",
        "hydra",
        "matplotlib",
        "pyvista",
        "sksparse",
        "pymetis",
        "skfem",
        "torch_sla",
    ]
    code = f"import sys, sla; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import sla pulled in: {out.stdout.strip()}"


def test_import_sla_leaves_the_warnings_filter_alone():
    code = (
        "import warnings, torch; before = list(warnings.filters); import sla; "
        "print(len(warnings.filters) - len(before), [f for f in warnings.filters if f not in before])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0 []", f"import sla changed warnings.filters: {out.stdout.strip()}"


def test_sla_csr_products_do_not_warn():
    # torch warns once per process that CSR support is "beta"; sla's own products stay quiet
    code = (
        "import torch, sla; A = sla.gallery.poisson2d(4); "
        "y = A @ torch.ones(16, dtype=A.dtype); x = A.solve(y, backend='pytorch', method='cg')"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _markdown_files():
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode == 0 and tracked.stdout.strip():
        return [REPO / f for f in tracked.stdout.split()]
    return [p for p in REPO.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(REPO).parts)]


def test_documents_link_only_files_in_the_repository():
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    bad = []
    for md in _markdown_files():
        text = md.read_text()
        for target in link.findall(text):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (md.parent / target).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                bad.append(f"{md.relative_to(REPO)} -> {target}")
        bad += [f"{md.relative_to(REPO)} names {s!r}" for s in ("../shared", "/work/") if s in text]
    assert not bad, "links outside the repository or to missing files:\n" + "\n".join(bad)
