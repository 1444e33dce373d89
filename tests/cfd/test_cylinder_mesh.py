"""The DFG channel-with-cylinder mesh from gmsh: tags, geometry, refinement, bad input."""

import math

import pytest
import torch

pytest.importorskip("gmsh")
pytest.importorskip("meshio")

from sla.assembly import read_mesh
from sla.assembly.gmsh_meshes import DFG, dfg_channel

AREA = 2.2 * 0.41 - math.pi * 0.05**2


@pytest.fixture(scope="module")
def coarse():
    return dfg_channel(h=0.08)


def test_tags_and_sets(coarse):
    assert set(coarse.facet_sets) == {"inlet", "outlet", "walls", "cylinder"}
    assert set(coarse.cell_sets) == {"fluid"}
    assert coarse.cell_sets["fluid"].shape[0] == coarse.n_cells
    x = coarse.points
    mid = {k: x[v].mean(1) for k, v in coarse.facet_sets.items()}
    assert torch.allclose(mid["inlet"][:, 0], torch.zeros(1, dtype=x.dtype))
    assert torch.allclose(mid["outlet"][:, 0], torch.full((1,), 2.2, dtype=x.dtype))
    wy = mid["walls"][:, 1]
    assert bool(((wy.abs() < 1e-12) | ((wy - 0.41).abs() < 1e-12)).all())
    # cylinder facet endpoints lie on the circle
    r = (x[coarse.facet_sets["cylinder"]] - torch.tensor(DFG.center, dtype=x.dtype)).norm(dim=-1)
    assert torch.allclose(r, torch.full_like(r, DFG.radius), atol=1e-12)
    # the tagged facets are exactly the boundary
    n_tagged = sum(v.shape[0] for v in coarse.facet_sets.values())
    assert n_tagged == coarse.boundary_facets.shape[0]


def test_front_and_back_points_are_nodes(coarse):
    for p in (DFG.front, DFG.back):
        d = (coarse.points - torch.tensor(p, dtype=torch.float64)).norm(dim=1)
        assert float(d.min()) < 1e-14


def test_area_converges_to_the_domain():
    """Polygonal cylinder: the area error falls like h_cylinder^2 (inscribed polygon)."""
    errs = []
    for hc in (0.02, 0.01, 0.005):
        m = dfg_channel(h=0.08, h_cylinder=hc)
        errs.append(float(m.cell_volumes().sum()) - AREA)
        n = m.facet_sets["cylinder"].shape[0]
        # inscribed n-gon misses pi r^2 (1 - sin(2pi/n) n / (2pi)) of the disc; exactly the excess area
        missing = math.pi * DFG.radius**2 * (1 - n * math.sin(2 * math.pi / n) / (2 * math.pi))
        assert errs[-1] == pytest.approx(missing, abs=1e-11)  # round-off of the area sum
    assert errs[0] > errs[1] > errs[2] > 0
    assert errs[1] / errs[2] > 3.0


def test_refinement_and_wake():
    a = dfg_channel(h=0.08, h_cylinder=0.02)
    b = dfg_channel(h=0.08, h_cylinder=0.01)
    c = dfg_channel(h=0.08, h_cylinder=0.01, h_wake=0.02)
    assert b.facet_sets["cylinder"].shape[0] > a.facet_sets["cylinder"].shape[0]
    assert c.n_cells > b.n_cells
    mid = c.points[c.cells].mean(1)
    wake = (mid[:, 0] > 0.4) & (mid[:, 0] < 1.1) & (mid[:, 1] > 0.12) & (mid[:, 1] < 0.28)
    # the wake cells are small: mean area ~ h_wake^2 * sqrt(3)/4 (well below h^2 sqrt(3)/4)
    assert float(c.cell_volumes()[wake].mean()) < 0.02**2


def test_deterministic_and_kept_file(tmp_path):
    p = tmp_path / "dfg.msh"
    m1 = dfg_channel(h=0.08, path=p)
    assert p.is_file()
    m2 = read_mesh(p)
    assert torch.equal(m1.cells, m2.cells) and torch.equal(m1.points, m2.points)
    m3 = dfg_channel(h=0.08)
    assert torch.equal(m1.points, m3.points)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(h=0), "h must be a positive"),
        (dict(h=float("nan")), "h must be a positive"),
        (dict(h=0.5), "at most 0.205"),
        (dict(h=0.05, h_cylinder=0.1), "h_cylinder must not exceed h"),
        (dict(h=0.1, h_cylinder=0.06), "cylinder radius"),
        (dict(h=0.05, h_wake=0.1), "h_wake must not exceed h"),
        (dict(h=0.05, h_cylinder=1e-5), "below 1e-4"),
        (dict(h=0.05, path="x.vtu"), "must end with .msh"),
    ],
)
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        dfg_channel(**kw)
