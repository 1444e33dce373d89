"""Spellings that reuse the kernel families a GPU solve loads anyway.

On CUDA, PyTorch loads an operator's kernels on the operator family's first call in a process,
10-50 ms a family on an H200 (``benchmarks/bench_first_solve.py --only vocabulary``), so the first
solve of a process pays once for every family it touches.  The solvers therefore keep to a small
vocabulary (products, sums, quotients, comparisons, ``where``, ``amax``, the sparse products) and
spell the rest with it.  This module holds the spellings where PyTorch's own is a family apart.
"""

from __future__ import annotations

import torch

__all__ = ["add_at_", "all_", "any_", "count_", "norm2", "reciprocal", "repeat_rows", "unique_inverse"]

_COUNT_CHUNK = 1 << 22  # indices per pass of count_ (their int64 copy: 32 MB)


def norm2(v: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """``torch.linalg.vector_norm(v, dim=dim, keepdim=keepdim)`` (2-norm) as a product, a sum and a
    square root.  Like it, the squares are not rescaled (entries beyond ~1e154 overflow in double)."""
    return (v.conj() * v).real.sum(dim, keepdim=keepdim).sqrt()


def any_(mask: torch.Tensor) -> torch.Tensor:
    """``mask.any()`` (a 0-dim bool tensor; no host look) as a count: the sum family, where
    ``any`` and ``all`` would load one of their own on a GPU (~10 ms)."""
    return mask.sum() > 0


def all_(mask: torch.Tensor) -> torch.Tensor:
    """``mask.all()`` (a 0-dim bool tensor; no host look) as a count (see :func:`any_`)."""
    return mask.sum() == mask.numel()


def reciprocal(t: torch.Tensor) -> torch.Tensor:
    """``1 / t`` as a quotient (PyTorch spells ``1 / t`` as ``t.reciprocal()`` times one)."""
    return torch.div(t.new_ones(()), t)


def add_at_(out: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out.index_add_(dim, index, src)`` (a 1-D ``index`` along ``dim``) as a ``scatter_add_``:
    the scatter-gather family, which PyTorch's own indexing loads anyway, where ``index_add_``
    would load the indexing kernels' largest family (~40 ms)."""
    shape = [1] * src.dim()
    shape[dim] = -1
    return out.scatter_add_(dim, index.long().view(shape).expand_as(src), src)


def count_(out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out += torch.bincount(index, minlength=out.numel())`` (``out`` int64; ``index`` 1-D, its
    values in ``[0, out.numel())``) as a ``scatter_add_`` of ones, where ``bincount`` would load a
    family of its own (~16 ms).  By passes of 4M indices: their int64 copy is the only temporary."""
    one = out.new_ones(())
    for lo in range(0, index.numel(), _COUNT_CHUNK):
        part = index[lo : lo + _COUNT_CHUNK].long()
        out.scatter_add_(0, part, one.expand(part.numel()))
    return out


def unique_inverse(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(key, sorted=True, return_inverse=True)`` for a 1-D ``key``, by a sort, a
    comparison of neighbours and a running count: ``unique`` would load a kernel family of its own
    on a GPU.  The temporaries are those of ``unique`` itself (the sorted keys, their order, the
    running count)."""
    s, order = torch.sort(key)
    new = torch.empty(s.shape, dtype=torch.bool, device=s.device)
    new[:1] = True
    torch.ne(s[1:], s[:-1], out=new[1:])
    ids = torch.cumsum(new, 0)  # 1 + the rank of each sorted key among the distinct ones
    inv = torch.empty_like(ids).scatter_(0, order, ids)
    del ids, order
    return s[new], inv.sub_(1)


def shift_right(x: torch.Tensor, s: int) -> torch.Tensor:
    """``x >> s`` for integers ``0 <= x < 2**53`` (int64), as a power-of-two scaling in double
    precision (exact there) truncated back: PyTorch's shifts are a kernel family of their own on a
    GPU (~8 ms on its first call).  Left shifts are products by ``1 << s``."""
    return x.to(torch.float64).mul_(2.0**-s).to(torch.int64)


def repeat_rows(counts: torch.Tensor, start: int = 0, output_size: int | None = None, dtype=None) -> torch.Tensor:
    """``torch.repeat_interleave(torch.arange(start, start + len(counts)), counts)`` (the row of every
    entry, ``counts`` entries per row; in ``dtype``, default ``counts``'), as the repeats-only form
    plus an offset: PyTorch computes the former as the latter and an ``index_select``, a kernel
    family of its own on a GPU (~20-30 ms on its first call)."""
    out = torch.repeat_interleave(counts if dtype is None else counts.to(dtype), output_size=output_size)
    return out.add_(start) if start else out
