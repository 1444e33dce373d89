"""Copies through the pinned stage (sla.staging): every element arrives, in every block layout."""

import pytest
import torch

from sla import staging

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")


def test_cpu_tensors_are_not_copied():
    t = torch.arange(10)
    assert staging.to_host(t) is t and staging.to_device(t, "cpu") is t
    s = torch.arange(20.0)[::2]  # a non-contiguous view comes back contiguous, the source unchanged
    h = staging.to_host(s)
    assert h.is_contiguous() and torch.equal(h, s) and s.stride() == (2,)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("stage", [8, 64, 4000, 1 << 25])  # many blocks, a ragged last block, one block
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float64, torch.bool, torch.complex64])
def test_round_trip(monkeypatch, stage, dtype):
    monkeypatch.setattr(staging, "STAGE_BYTES", stage)
    g = torch.Generator().manual_seed(0)
    src = (torch.randn(3, 1001, generator=g) * 1000).to(dtype)
    d = staging.to_device(src, "cuda")
    assert d.device.type == "cuda" and d.shape == src.shape and d.dtype == dtype
    src_copy = src.clone()
    src.zero_()  # the copy is complete on return: changing the source changes nothing
    assert torch.equal(d.cpu(), src_copy)
    back = staging.to_host(d.t())  # a transposed (non-contiguous) device view
    assert back.device.type == "cpu" and back.is_contiguous() and torch.equal(back, src_copy.t())


@pytest.mark.gpu
@cuda
def test_empty_and_scalar():
    for t in (torch.empty(0, 5), torch.tensor(3.5)):
        d = staging.to_device(t, "cuda")
        assert d.shape == t.shape and torch.equal(staging.to_host(d), t)
