"""DSparseTensor on 2 and 4 gloo ranks (one machine): products, solves and gradients
against the single-process SparseTensor and SciPy."""

import importlib.util
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sla
from sla import SparseTensor, gallery
from sla.dist import DSparseTensor, partition

pytestmark = [
    pytest.mark.skipif(not dist.is_gloo_available(), reason="torch.distributed without gloo"),
    pytest.mark.skipif(
        importlib.util.find_spec("pymetis") is None, reason="pymetis not installed (pip install 'sla[dist]')"
    ),
]


def _nonsymmetric(n):
    A = gallery.poisson2d(n)
    skew = 0.3 * (A.col > A.row).double() - 0.3 * (A.col < A.row).double()  # convection-like part
    return SparseTensor(A.values + skew, A.row, A.col, A.shape)


def _worker(rank, world, init, out, method):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        A = gallery.poisson2d(12) if method in ("cg", "minres") else _nonsymmetric(12)
        n = A.shape[0]
        g = torch.Generator().manual_seed(1)
        xg = torch.randn(n, 2, generator=g, dtype=torch.float64)
        b = torch.randn(n, generator=g, dtype=torch.float64)
        D = DSparseTensor.partition(A, method="metis")
        res = {"matvec": D.gather(D @ D.scatter(xg)), "matvecT": D.gather(D.matvec(D.scatter(xg), transpose=True))}
        pc = "amg" if method == "cg" else "jacobi"
        x, info = sla.solve(D, D.scatter(b), method=method, preconditioner=pc, rtol=1e-11, return_info=True)
        res["x"], res["iterations"], res["residual"] = D.gather(x), info.iterations, info.residual
        # gradients: loss = sum(w * x) over the global x, w fixed
        w = torch.linspace(-1, 1, n, dtype=torch.float64)
        Ag = A.detach().requires_grad_()
        Dg = DSparseTensor.partition(Ag, method="metis")
        bl = D.scatter(b).clone().requires_grad_()
        xl = sla.solve(Dg, bl, method=method, preconditioner=pc, rtol=1e-12)
        (D.scatter(w) * xl).sum().backward()
        res["grad_b"] = D.gather(bl.grad)
        # each rank's local values come from its rows of the global values: sum the pieces
        gv = Ag.values.grad.clone()
        dist.all_reduce(gv)
        res["grad_values"] = gv
        res["cut"] = D.part.edge_cut
        if rank == 0:
            torch.save(res, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("method", ["cg", "gmres"])
def test_distributed_matches_single_process(world, method):
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        out = os.path.join(tmp, "out.pt")
        mp.spawn(_worker, args=(world, init, out, method), nprocs=world, join=True)
        res = torch.load(out)
    A = gallery.poisson2d(12) if method == "cg" else _nonsymmetric(12)
    n = A.shape[0]
    g = torch.Generator().manual_seed(1)
    xg = torch.randn(n, 2, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    D = A.to_dense()
    torch.testing.assert_close(res["matvec"], D @ xg)
    torch.testing.assert_close(res["matvecT"], D.T @ xg)
    torch.testing.assert_close(res["x"], torch.linalg.solve(D, b), rtol=1e-8, atol=1e-9)
    assert res["residual"] < 1e-10 and res["iterations"] > 0
    # gradients against the single-process adjoint
    v = A.values.clone().requires_grad_()
    bb = b.clone().requires_grad_()
    x = A.with_values(v).solve(bb)
    (torch.linspace(-1, 1, n, dtype=torch.float64) * x).sum().backward()
    torch.testing.assert_close(res["grad_b"], bb.grad, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(res["grad_values"], v.grad, rtol=1e-6, atol=1e-8)
    assert 0 < res["cut"] < A.nnz


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
    assert out.returncode == 0, out.stderr[-2000:]
    assert "error vs single process" in out.stderr + out.stdout
