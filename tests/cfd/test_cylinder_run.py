"""``python -m sla.run problem=cylinder``: the DFG quantities next to the published values, the
fields and the picture written, bad keys refused before any work."""

import os

import pytest

pytest.importorskip("hydra", reason="the runner needs hydra-core (pip install 'sla[run]')")
pytest.importorskip("gmsh")
from hydra import compose, initialize_config_dir

from sla.run import _CONFIGS, execute
from sla.run.schema import ConfigError, register


def run(*overrides):
    register()
    with initialize_config_dir(config_dir=_CONFIGS, version_base=None):
        cfg = compose(config_name="config", overrides=["save=false", *overrides])
    return execute(cfg)


def test_cylinder_2d1_coarse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the picture goes to the working directory outside Hydra's run
    s = run("problem=cylinder", "problem.case=2d1", "problem.h=0.08", "problem.h_cylinder=0.02")
    assert s["unknowns"] > 2000 and s["nonzeros"] > s["unknowns"]
    assert s["c_D_reference"] == "5.57953523384"
    assert abs(float(s["c_D"]) / 5.57953523384 - 1) < 0.03  # coarse mesh: 3%
    assert abs(float(s["dp"]) / 0.11752016697 - 1) < 0.015
    assert "target 0.5%" in s["c_D_rel_error"]
    assert os.path.isfile(s["picture"]) and s["picture"].endswith("cylinder_2d1.png")


@pytest.mark.parametrize(
    "override, match",
    [
        ("problem.case=3d1", r"problem.case='3d1' is not allowed: expected one of 2d1, 2d2"),
        ("problem.h=0", r"problem.h=0.0 is not allowed: expected a number > 0"),
        ("problem.dt=-1", r"problem.dt=-1.0 is not allowed"),
    ],
)
def test_cylinder_bad_keys(override, match):
    with pytest.raises(ConfigError, match=match):
        run("problem=cylinder", override)
