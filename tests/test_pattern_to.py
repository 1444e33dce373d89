"""Structural metadata of a pattern (grid shape, dof coordinates) survives ``.to(device)``; solver state does not."""

import pytest
import torch

import sla
from sla.assembly import CellBasis, ElementP1, ElementVector, assemble, elasticity, rectangle
from sla.pattern import PORTABLE_KEYS

DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


def _elasticity():
    m = rectangle(0, 2, 0, 1, 6, 3, "tri")
    el = ElementVector(ElementP1())
    K = assemble(elasticity, CellBasis(m, el), lam=1.5, mu=0.7)
    return K, el.dof_points(m)


def test_portable_keys_name_the_metadata():
    assert set(PORTABLE_KEYS) == {"grid", "dof_points"}


@pytest.mark.parametrize("device", DEVICES)
def test_grid_survives_to_and_back(device):
    A = sla.gallery.poisson2d(6)
    A.pattern.cache[("solver", "plan")] = object()  # stands for device-specific solver state
    B = A.to(device)
    assert B.device.type == device and B.pattern is not A.pattern
    assert B.pattern.cache["grid"] == (6, 6)
    assert ("solver", "plan") not in B.pattern.cache
    assert B.pattern.to(A.device) is A.pattern  # back: the original, its own cache untouched
    assert A.pattern.cache["grid"] == (6, 6) and ("solver", "plan") in A.pattern.cache


@pytest.mark.parametrize("device", DEVICES)
def test_dof_points_move_with_the_pattern(device):
    K, points = _elasticity()
    assert K.pattern.cache["dof_points"][1] == 2
    M = K.to(device)
    moved, ncomp = M.pattern.cache["dof_points"]
    assert ncomp == 2 and moved.device.type == device and moved.shape == points.shape
    if device != "meta":
        torch.testing.assert_close(moved.cpu(), points, rtol=0, atol=0)
        assert M.cpu().pattern is K.pattern


def test_metadata_set_after_the_first_move_follows_and_copy_own_value_wins():
    A = sla.gallery.poisson1d(8)
    assert "grid" not in A.pattern.cache or A.pattern.cache["grid"] == (8,)
    A.pattern.cache.pop("grid", None)
    B = A.to("meta")
    assert "grid" not in B.pattern.cache
    A.pattern.cache["grid"] = (8,)
    assert A.to("meta").pattern.cache["grid"] == (8,)  # carried at the next move
    A.pattern.cache["grid"] = (2, 4)
    assert A.to("meta").pattern.cache["grid"] == (2, 4)  # replaced on the source: carried again
    B.pattern.cache["grid"] = (4, 2)
    assert A.to("meta").pattern.cache["grid"] == (4, 2)  # set on the copy itself: kept


def test_dtype_change_keeps_the_pattern_and_its_metadata():
    K, _ = _elasticity()
    assert K.to(torch.float32).pattern is K.pattern


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_matrix_moved_to_cuda_keeps_gmg_and_amg_rigid_body_modes():
    from sla.solvers.precond.factory import make_preconditioner

    A = sla.gallery.poisson2d(64).cuda()  # built on the CPU, then moved
    b = torch.ones(A.shape[0], dtype=A.dtype, device="cuda")
    x, info = A.solve(b, backend="pytorch", method="cg", preconditioner="gmg", rtol=1e-10, return_info=True)
    assert info.iterations <= 15
    assert float((b - A @ x).norm() / b.norm()) < 1e-9
    K, _ = _elasticity()
    M = make_preconditioner(K.cuda(), "amg")
    assert M.candidates == 3  # the rigid-body modes of the recorded points, not the constant fallback
