"""The README's tour runs as written (a stale README is a bug)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_tour_runs(capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    tour = [b for b in blocks if "from sla import gallery" in b]
    assert tour, "the README lost its tour"
    scope: dict = {}
    exec(compile(tour[0], "README.md", "exec"), scope)
    assert scope["info"].residual < 1e-10
    assert scope["v"].grad is not None and scope["vals"].shape == (6,)
    assert "scipy" in capsys.readouterr().out
