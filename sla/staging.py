"""Large copies between a GPU and host memory through a small reused pinned stage.

A copy between device memory and ordinary (pageable) host memory runs at a fraction of the
bus's speed, and a page-locked buffer of the whole array is fast only once it exists: locking
fresh host pages costs more than the copy.  H200 host, 320 MB of int32 to the host
(``benchmarks/bench_staging.py``, after the process's first copy): pageable 212-280 ms every
time; a whole pinned buffer 208 ms the first time at that size, 6 ms once torch's host cache
holds it (and it stays locked for the process); this stage 49-60 ms the first time (the stage's
own allocation), then 21 ms.  So the array goes through two pinned buffers of
:data:`STAGE_BYTES` each, in turn: the bus copy of one block overlaps the host copy (torch's
threaded ``copy_``) of the block before.  The stage is allocated by torch's caching host
allocator, which keeps it for the process; host memory held is two stages, not the array.

Other devices (and CPU tensors) copy directly.
"""

from __future__ import annotations

import torch

__all__ = ["STAGE_BYTES", "to_device", "to_host"]

STAGE_BYTES = 1 << 25
"""Bytes of each of the two pinned buffers a staged copy goes through (32 MB)."""


def _blocks(n: int, block: int):
    return [(lo, min(n, lo + block)) for lo in range(0, n, block)]


def _staged(n: int, dtype: torch.dtype, block: int, enqueue, drain) -> None:
    """Drive a double-buffered copy of ``n`` elements in blocks: ``enqueue(lo, hi, stage)`` starts
    a block's transfer on the current stream, ``drain(lo, hi, stage)`` finishes it on the host
    after its transfer has completed."""
    blocks = _blocks(n, block)
    stages = [torch.empty(min(block, n), dtype=dtype, pin_memory=True) for _ in range(min(2, len(blocks)))]
    done = [torch.cuda.Event() for _ in stages]
    pending: list[tuple[int, int, int]] = []
    for k, (lo, hi) in enumerate(blocks):
        s = k % len(stages)
        if len(pending) == len(stages):  # the stage is free once its last block has drained
            plo, phi, ps = pending.pop(0)
            done[ps].synchronize()
            drain(plo, phi, stages[ps])
        enqueue(lo, hi, stages[s])
        done[s].record()
        pending.append((lo, hi, s))
    for plo, phi, ps in pending:
        done[ps].synchronize()
        drain(plo, phi, stages[ps])


def to_host(t: torch.Tensor) -> torch.Tensor:
    """``t`` in host memory, contiguous (like ``t.cpu()``: ``t`` itself when it is already there);
    from a CUDA device through the pinned stage."""
    if t.device.type != "cuda":
        return t.cpu().contiguous()
    src = t.detach().contiguous().view(-1)
    out = torch.empty(t.shape, dtype=t.dtype)
    if src.numel():
        flat = out.view(-1)
        block = max(1, STAGE_BYTES // t.element_size())
        with torch.cuda.device(t.device):
            _staged(
                src.numel(),
                t.dtype,
                block,
                lambda lo, hi, st: st[: hi - lo].copy_(src[lo:hi], non_blocking=True),
                lambda lo, hi, st: flat[lo:hi].copy_(st[: hi - lo]),
            )
    return out


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device`` (like ``t.to(device)``: ``t`` itself when it is already there); from
    host memory to a CUDA device through the pinned stage, the copy complete (``t`` free to
    change) when this returns."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    src = t.detach().contiguous().view(-1)
    out = torch.empty(t.shape, dtype=t.dtype, device=device)
    if src.numel():
        flat = out.view(-1)
        block = max(1, STAGE_BYTES // t.element_size())
        with torch.cuda.device(device):
            _staged(
                src.numel(),
                t.dtype,
                block,
                lambda lo, hi, st: flat[lo:hi].copy_(st[: hi - lo].copy_(src[lo:hi]), non_blocking=True),
                lambda lo, hi, st: None,
            )
    return out
