"""sla.warmup: small solves that pay a process's one-off costs; clear errors; no effect on results."""

import pytest
import torch
from devices import DEVICES

import sla


@pytest.mark.parametrize("device", DEVICES)
def test_warmup_runs_and_leaves_results_alone(device):
    A = sla.gallery.poisson2d(40, device=device)
    b = torch.rand(A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(device)
    before = sla.solve(A, b, backend="pytorch", method="cg", preconditioner="amg", rtol=1e-10)
    seconds = sla.warmup(device, preconditioners=("amg", "gmg", "jacobi", "none"))
    assert isinstance(seconds, float) and seconds > 0
    assert sla.warmup(device, torch.float32, preconditioners="jacobi") > 0
    after = sla.solve(A, b, backend="pytorch", method="cg", preconditioner="amg", rtol=1e-10)
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(A @ after, b, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": torch.complex128}, "dtype must be"),
        ({"dtype": torch.int64}, "dtype must be"),
        ({"preconditioners": ("amg", "ilu")}, r"among .*\['ilu'\]"),
    ],
)
def test_warmup_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sla.warmup("cpu", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_warmup_without_cuda_says_so():
    with pytest.raises(ValueError, match="CUDA is not available"):
        sla.warmup("cuda")
