"""``python -m sla.run problem=topology``: a small 2D run through the runner, and its config checks."""

import pytest

hydra = pytest.importorskip("hydra", reason="the runner needs hydra-core (pip install 'sla[run]')")
from hydra import compose, initialize_config_dir  # noqa: E402

from sla.run import _CONFIGS, execute  # noqa: E402
from sla.run.schema import ConfigError, register  # noqa: E402


def _run(*overrides):
    register()
    with initialize_config_dir(config_dir=_CONFIGS, version_base=None):
        cfg = compose(config_name="config", overrides=["save=false", "problem=topology", *overrides])
    return execute(cfg)


def test_topology_problem_meets_the_volume_and_lowers_compliance():
    s = _run("problem.nelx=24", "problem.nely=8", "problem.maxiter=12")
    assert s["design_iterations"] == 12 or s["converged"]
    assert s["error"] < 2e-3 and s["volume_target"] == 0.5
    assert s["compliance_last"] < 0.6 * s["compliance_first"]
    assert s["unknowns"] == 2 * 25 * 9


def test_topology_problem_3d_runs():
    s = _run("problem.case=cantilever3d", "problem.nelx=6", "problem.nely=3", "problem.nelz=2", "problem.maxiter=3")
    assert s["unknowns"] == 3 * 7 * 4 * 3 and s["compliance_last"] < s["compliance_first"]


@pytest.mark.parametrize(
    "key,value", [("volfrac", 1.5), ("volfrac", 0), ("penal", 0.5), ("rmin", 0), ("case", "bridge")]
)
def test_bad_values_are_named(key, value):
    with pytest.raises((ConfigError, ValueError), match=key):
        _run(f"problem.{key}={value}")
