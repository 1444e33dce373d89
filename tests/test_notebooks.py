"""Every notebook in notebooks/ runs top to bottom (small sizes: ``SLA_NB_SMALL=1``), and none is
committed with outputs (they are stripped in git; see CONTRIBUTING.md)."""

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _ids(paths):
    return [p.name for p in paths]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs; strip them before committing "
        f"(jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)})"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_linked_from_the_readme(path):
    link = f"](notebooks/{path.name})"
    assert link in (ROOT / "README.md").read_text(), f"README.md does not link {path.name} (add [...]{link})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_has_a_small_mode(path):
    """The test run below sets ``SLA_NB_SMALL=1``: a notebook that ignores it runs its full sizes in CI."""
    nb = json.loads(path.read_text())
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "SLA_NB_SMALL" in "".join(first_code["source"]), f"{path.name}: read SLA_NB_SMALL in the first code cell"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="needs nbformat (pip install 'sla[test]')")
    nbclient = pytest.importorskip("nbclient", reason="needs nbclient and ipykernel (pip install 'sla[test]')")
    pytest.importorskip("ipykernel", reason="needs ipykernel (pip install 'sla[test]')")
    pytest.importorskip("matplotlib", reason="the notebooks draw with matplotlib")
    monkeypatch.setenv("SLA_NB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
