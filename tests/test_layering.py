"""Architecture rules: layering points one way, and `import sla` stays light."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1] / "sla"

# a module in layer i may import only layers <= i
LAYERS = [
    {"checks", "config", "mtx", "pattern", "products", "structure", "sparse", "gallery", "sparse_list", "io"},
    {"solvers"},
    {"assembly"},
    {"dist"},
    {"viz", "run", "problems"},
]


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    return -1


def _imports(path: pathlib.Path, package: str):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            yield from names
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_layers_point_one_way():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) < 2:
            continue  # sla/__init__.py re-exports everything
        own = _layer(parts[1])
        package = ".".join(parts if path.name == "__init__.py" else parts[:-1])
        for mod in _imports(path, package):
            if not mod.startswith("sla."):
                continue
            target = _layer(mod.split(".")[1])
            if target > own >= 0:
                bad.append(f"{'.'.join(parts)} imports {mod}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


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
