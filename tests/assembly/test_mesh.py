"""Meshes: generators, topology, refinement, meshio round trips and bad files."""

import ast
import pathlib

import pytest
import torch

import sla.assembly
from sla.assembly import (
    Mesh,
    box,
    geometry,
    interval,
    l_shape,
    read_mesh,
    rectangle,
    refine,
    unit_cube,
    unit_square,
    write_mesh,
)


@pytest.mark.parametrize(
    "make, cells, points, bfacets, volume",
    [
        (lambda: unit_square(4), 32, 25, 16, 1.0),
        (lambda: unit_square(3, "quad"), 9, 16, 12, 1.0),
        (lambda: rectangle(0, 2, 0, 1, 4, 2), 16, 15, 12, 2.0),
        (lambda: unit_cube(2), 48, 27, 48, 1.0),
        (lambda: unit_cube(2, "hex"), 8, 27, 24, 1.0),
        (lambda: box(0, 2, 0, 1, 0, 3, 2, 1, 3, "hex"), 6, 24, 2 * (2 + 6 + 3), 6.0),
        (lambda: l_shape(2), 24, 21, 16, 3.0),
        (lambda: interval(5, 0.0, 2.0), 5, 6, 2, 2.0),
    ],
)
def test_generators(make, cells, points, bfacets, volume):
    m = make()
    assert (m.n_cells, m.n_points, m.boundary_facets.shape[0]) == (cells, points, bfacets)
    vol = m.cell_volumes()
    assert bool((vol > 0).all())
    assert float(vol.sum()) == pytest.approx(volume, rel=1e-12)
    # the side sets of a box partition its boundary (the L-shape's re-entrant sides are untagged)
    tagged = sum(v.shape[0] for v in m.facet_sets.values())
    assert tagged == bfacets if volume != 3.0 else tagged < bfacets


def _shoelace(p):
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float((x * y.roll(-1) - x.roll(-1) * y).sum()))


@pytest.mark.parametrize(
    "cell_type, points, reference",
    [
        ("line", [[0.5], [2.0]], lambda p: 1.5),
        ("triangle", [[0.0, 0.0], [3.0, 1.0], [1.0, 2.0]], _shoelace),
        ("quad", [[0.0, 0.0], [3.0, 0.0], [2.0, 2.0], [0.0, 1.0]], _shoelace),  # not a parallelogram
        ("tetra", [[0, 0, 0], [2, 0, 0], [0, 3, 0], [1, 1, 4]], lambda p: abs(float(torch.det(p[1:] - p[0]))) / 6),
        # a frustum: base [0, 2]^2, top [0, 1]^2 at height 1 (trilinear, planar faces): h/3 (A1 + A2 + sqrt(A1 A2))
        (
            "hexahedron",
            [[0, 0, 0], [2, 0, 0], [2, 2, 0], [0, 2, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]],
            lambda p: (4 + 1 + 2) / 3,
        ),
    ],
)
def test_cell_volume_of_a_distorted_cell(cell_type, points, reference):
    p = torch.tensor(points, dtype=torch.float64)
    m = Mesh(p, torch.arange(p.shape[0])[None], cell_type)
    assert float(m.cell_volumes()[0]) == pytest.approx(reference(p), rel=1e-13)
    q = p.clone().requires_grad_()  # volumes are differentiable in the node coordinates
    assert torch.autograd.gradcheck(lambda q: geometry.cell_volumes(q, m.cells, cell_type), (q,))


def test_assembly_modules_import_each_other_without_cycles():
    root = pathlib.Path(sla.assembly.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function-local imports count too
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
        graph[path.stem] = deps

    def visit(name, stack):
        assert name not in stack, "import cycle: " + " -> ".join([*stack, name])
        for dep in graph.get(name, ()):
            visit(dep, [*stack, name])

    for name in graph:
        visit(name, [])


def test_boundary_facets_are_outer_faces_of_the_cube():
    m = unit_cube(3)
    x = m.points[m.boundary_facets].mean(1)
    on_side = ((x < 1e-12) | (x > 1 - 1e-12)).any(1)
    assert bool(on_side.all())
    assert m.boundary_facets.shape[0] == 6 * 9 * 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: unit_square(3),
        lambda: unit_square(3, "quad"),
        lambda: unit_cube(2),
        lambda: unit_cube(2, "hex"),
        lambda: interval(3),
        lambda: l_shape(2),
    ],
)
def test_refine_is_conforming_and_keeps_tags(make):
    m = make()
    m.tag_cells("left", lambda x: x[:, 0] < 0.5)
    r = refine(m)
    d = m.dim
    assert r.n_cells == m.n_cells * 2**d
    assert float(r.cell_volumes().sum()) == pytest.approx(float(m.cell_volumes().sum()), rel=1e-12)
    # conforming: the boundary is refined, not torn (interior facets would show up as boundary otherwise)
    assert r.boundary_facets.shape[0] == m.boundary_facets.shape[0] * max(1, 2 ** (d - 1))
    for k, v in m.facet_sets.items():
        assert r.facet_sets[k].shape[0] == v.shape[0] * max(1, 2 ** (d - 1))
        r.facet_ids(k)  # every refined facet is a facet of the refined mesh
    assert r.cell_sets["left"].numel() == m.cell_sets["left"].numel() * 2**d
    assert float(r.cell_volumes()[r.cell_sets["left"]].sum()) == pytest.approx(
        float(m.cell_volumes()[m.cell_sets["left"]].sum())
    )


def test_mesh_validation():
    p = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(IndexError, match="node 3"):
        Mesh(p, torch.tensor([[0, 1, 3]]))
    with pytest.raises(ValueError, match="cell_type"):
        Mesh(p, torch.tensor([[0, 1, 2]]), "prism")
    with pytest.raises(ValueError, match="points of dimension 3"):
        Mesh(p, torch.tensor([[0, 1, 2, 0]]), "tetra")
    with pytest.raises(TypeError, match="integer"):
        Mesh(p, torch.tensor([[0.0, 1.0, 2.0]]))
    with pytest.raises(KeyError, match="unknown facet set 'top'"):
        unit_square(2).facet_ids("top")


@pytest.mark.parametrize("ext", [".msh", ".vtu", ".vtk"])
@pytest.mark.parametrize("make", [lambda: unit_square(3), lambda: unit_cube(2, "hex"), lambda: unit_cube(2)])
def test_meshio_round_trip(tmp_path, ext, make):
    m = make()
    m.tag_cells("low", lambda x: x[:, 1] < 0.5)
    path = tmp_path / f"m{ext}"
    u = torch.sin(m.points[:, 0])
    write_mesh(path, m, point_data={"u": u})
    r = read_mesh(path)
    assert r.cell_type == m.cell_type
    assert torch.allclose(r.points, m.points) and torch.equal(r.cells, m.cells)
    if ext == ".msh":  # Gmsh physical groups carry the tags
        assert sorted(r.facet_sets) == sorted(m.facet_sets)
        for k in m.facet_sets:
            assert torch.equal(r.facet_sets[k], m.facet_sets[k])
        assert torch.equal(r.cell_sets["low"], m.cell_sets["low"])
    import meshio

    assert meshio.read(path).point_data["u"] == pytest.approx(u.numpy())


def test_write_cell_data_vtu(tmp_path):
    import meshio

    m = unit_square(2)
    k = torch.arange(m.n_cells, dtype=torch.float64)
    write_mesh(tmp_path / "k.vtu", m, cell_data={"k": k})
    assert meshio.read(tmp_path / "k.vtu").cell_data["k"][0] == pytest.approx(k.numpy())
    with pytest.raises(ValueError, match="cell_data"):
        write_mesh(tmp_path / "k2.vtu", m, cell_data={"k": k[:3]})


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.msh"):
        read_mesh(tmp_path / "nope.msh")
    bad = tmp_path / "bad.msh"
    bad.write_text("$MeshFormat\ngarbage\n")
    with pytest.raises(ValueError, match="bad.msh"):
        read_mesh(bad)
    badvtu = tmp_path / "bad.vtu"
    badvtu.write_text("<VTKFile broken")
    with pytest.raises(ValueError, match="bad.vtu"):
        read_mesh(badvtu)
    other = tmp_path / "mesh.xyz"
    other.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="mesh.xyz.*unsupported extension"):
        read_mesh(other)


GMSH41 = """$MeshFormat
4.1 0 8
$EndMeshFormat
$PhysicalNames
2
1 1 "left"
2 2 "domain"
$EndPhysicalNames
$Entities
0 1 1 0
1 0 0 0 0 1 0 1 1 0
1 0 0 0 1 1 0 1 2 0
$EndEntities
$Nodes
1 4 1 4
2 1 0 4
1
2
3
4
0 0 0
1 0 0
1 1 0
0 1 0
$EndNodes
$Elements
2 3 1 3
1 1 1 1
1 1 4
2 1 2 2
2 1 2 3
3 1 3 4
$EndElements
"""


def test_read_gmsh41_physical_groups(tmp_path):
    """A Gmsh 4.1 file (as Gmsh writes it): physical groups become named sets."""
    path = tmp_path / "square.msh"
    path.write_text(GMSH41)
    m = read_mesh(path)
    assert m.cell_type == "triangle" and m.n_cells == 2
    assert torch.equal(m.cell_sets["domain"], torch.tensor([0, 1]))
    assert torch.equal(m.facet_sets["left"], torch.tensor([[0, 3]]))
    assert torch.equal(m.nodes_of("left"), torch.tensor([0, 3]))
    assert float(m.cell_volumes().sum()) == pytest.approx(1.0)


def test_embedded_surface_mesh_is_refused(tmp_path):
    import meshio

    pts = [[0, 0, 0], [1, 0, 0], [0, 1, 1.0]]
    meshio.write(tmp_path / "surf.vtu", meshio.Mesh(pts, [("triangle", [[0, 1, 2]])]))
    with pytest.raises(ValueError, match="surf.vtu.*embedded"):
        read_mesh(tmp_path / "surf.vtu")
