"""The distributed solve on NCCL, one GPU a rank (as many ranks as GPUs, at most 4)."""

import os
import subprocess
import sys

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("preconditioner", ["distributed_amg", "schwarz"])
def test_nccl_example_matches_single_process(preconditioner):
    n = min(torch.cuda.device_count(), 4)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        os.path.join(ROOT, "examples", "distributed_solve.py"),
        "--device",
        "cuda",
        "--side",
        "200",
        "--preconditioner",
        preconditioner,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "error vs single process" in out.stderr + out.stdout
