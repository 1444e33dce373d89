"""Errors from deep inside torch / SciPy become clear errors at the boundary."""

import pytest
import torch

import sla


def test_eigsh_of_an_empty_matrix():
    e = torch.zeros(0, dtype=torch.long)
    E = sla.SparseTensor(torch.zeros(0, dtype=torch.float64), e, e, (0, 0))
    with pytest.raises(ValueError, match="non-empty matrix"):
        E.eigsh(k=1)


def test_vmap_over_solve_says_unsupported_and_the_batched_way_works():
    A = sla.gallery.poisson2d(3)
    B = torch.arange(18, dtype=torch.float64).reshape(2, 9)
    with pytest.raises(NotImplementedError, match="vmap"):
        torch.func.vmap(lambda b: A.solve(b))(B)
    X = A.solve(B.T).T  # the suggested way: K right-hand sides as columns
    torch.testing.assert_close(X, torch.linalg.solve(A.to_dense(), B.T).T)


def test_zero_area_cell_is_named_at_assembly():
    from sla.assembly import CellBasis, ElementP1, Mesh, assemble, laplace, unit_square

    m = unit_square(2)
    pts = m.points.clone()
    c = m.cells[3]
    pts[c[2]] = 0.5 * (pts[c[0]] + pts[c[1]])  # cell 3 collapses onto an edge
    bad = Mesh(pts, m.cells, m.cell_type)
    with pytest.raises(ValueError, match=r"mesh cell 3 is degenerate \(zero area"):
        assemble(laplace, CellBasis(bad, ElementP1()))
    assemble(laplace, CellBasis(m, ElementP1()))  # the good mesh assembles
