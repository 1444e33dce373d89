"""Partitions (no process group needed) and the torchrun example; the operations on
2 and 4 gloo ranks are in test_api.py."""

import importlib.util
import os

import pytest
import torch
import torch.distributed as dist

from sla import gallery
from sla.dist import DSparseTensor, partition

pytestmark = [
    pytest.mark.skipif(not dist.is_gloo_available(), reason="torch.distributed without gloo"),
    pytest.mark.skipif(
        importlib.util.find_spec("pymetis") is None, reason="pymetis not installed (pip install 'sla-torch[dist]')"
    ),
]


def test_metis_partition_balanced_with_small_cut():
    A = gallery.poisson2d(40)
    p = partition(A, 4, "metis")
    sizes = p.sizes()
    assert sum(sizes) == 1600 and max(sizes) <= 1.1 * 400
    contiguous = partition(A, 4, "contiguous")
    assert p.edge_cut <= contiguous.edge_cut  # METIS never cuts more than row blocks here
    assert torch.equal(torch.sort(p.perm).values, torch.arange(1600))
    assert partition(A, 4, "metis") is p  # cached on the pattern
    with pytest.raises(ValueError, match="method"):
        partition(A, 2, "spectral")
    with pytest.raises(ValueError, match="nparts"):
        partition(A, 0)


def test_partition_needs_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        DSparseTensor.partition(gallery.poisson2d(4))


@pytest.mark.slow
def test_torchrun_example():
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        os.path.join(root, "examples", "distributed_solve.py"),
        "--side",
        "30",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    # a rank's own message comes before the launcher's summary: both ends of stderr
    assert out.returncode == 0, out.stderr[:4000] + "\n...\n" + out.stderr[-2000:]
    assert "error vs single process" in out.stderr + out.stdout


def test_rcb_partition_balanced_boxes():
    side = 16
    coords = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    A = gallery.poisson2d(side)
    p = partition(A, 4, "rcb", coords=coords)
    assert p.sizes() == [64, 64, 64, 64]
    box = p.parts.reshape(side, side)
    assert len(torch.unique(box[:8, :8])) == 1  # quadrants (longest extent split first)
    assert p.edge_cut <= partition(A, 4, "contiguous").edge_cut
    with pytest.raises(ValueError, match="coords"):
        partition(A, 4, "rcb")


def test_reduced_dot_asks_cg_inner_products_together():
    """The distributed inner product in one process (the identity as the sum over holders):
    same iterates as the local one, two reductions per CG / GMRES iteration (bicgstab three)."""
    from sla.products import spmm_nograd
    from sla.solvers.krylov import ReducedDot, bicgstab, cg, gmres

    A = gallery.poisson2d(10)
    d = A.diagonal()

    def matvec(v):
        return spmm_nograd(A.pattern, A.values[None], v)

    b = torch.linspace(-1, 1, 100, dtype=torch.float64)[None, :, None]
    calls = []

    def reduce(t):
        calls.append(tuple(t.shape))
        return t

    for method, per_it in ((cg, 2), (bicgstab, 3), (gmres, 2)):
        ref = method(matvec, b, precond=lambda r: r / d[None, :, None], rtol=1e-10)
        got = method(matvec, b, precond=lambda r: r / d[None, :, None], dot=ReducedDot(reduce), rtol=1e-10)
        torch.testing.assert_close(got.x, ref.x, rtol=1e-12, atol=1e-12)
        assert got.stats()["iterations"] == ref.stats()["iterations"]
        counts = []
        for it in (4, 8):
            calls.clear()
            method(matvec, b, precond=lambda r: r / d[None, :, None], dot=ReducedDot(reduce), rtol=0.0, maxiter=it)
            counts.append(len(calls))
        assert (counts[1] - counts[0]) / 4 == per_it


def test_lobpcg_reduce_hook_in_one_process():
    """LOBPCG with the sharded-rows code path (SVQB, reduced Gram matrices; one holder) agrees with dense eigh."""
    from sla.products import spmm_nograd
    from sla.solvers.spectral.lobpcg import block_size, lobpcg

    A = gallery.poisson2d(12)
    n, k = A.shape[0], 4
    X0 = torch.randn(1, n, block_size(n, k), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lam, V, st = lobpcg(
        lambda X: spmm_nograd(A.pattern, A.values[None], X), n, k, 1, torch.float64, "cpu", X0=X0, reduce=lambda t: t
    )
    assert st["converged"]
    torch.testing.assert_close(lam[0], torch.linalg.eigvalsh(A.to_dense())[:k], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(V[0].T @ V[0], torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="X0"):
        lobpcg(lambda X: X, n, k, 1, torch.float64, "cpu", reduce=lambda t: t)
