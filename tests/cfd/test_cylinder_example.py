"""examples/drag_optimisation.py runs: Newton on the inflow profile reaches the target drag with
zero lift, converging quadratically, and keeps the flow rate."""

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("gmsh")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import drag_optimisation as ex


def test_drag_optimisation_reaches_the_target():
    a, cd, cl, hist = ex.optimise(target=5.2, h=0.08, h_cylinder=0.02, tol=1e-9, maxiter=6)
    assert abs(cd - 5.2) < 1e-9 and abs(cl) < 1e-9
    assert len(hist) <= 5
    errs = [abs(h[2] - 5.2) + abs(h[3]) for h in hist]
    assert errs[-2] < 1e-2 * errs[-3]  # quadratic (Newton with the adjoint Jacobian)
    # the shape factor keeps the mean inflow speed 0.2
    y = torch.linspace(0, 0.41, 4001, dtype=torch.float64)
    u = 4 * 0.3 * y * (0.41 - y) / 0.41**2 * ex.profile(a)(y)
    assert float(torch.trapezoid(u, y)) / 0.41 == pytest.approx(0.2, rel=1e-6)
