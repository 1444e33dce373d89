"""Sums and means of a :class:`~sla.SparseTensor` over any of its dimensions, without a dense copy.

The result is what ``A.to_dense().sum(dim, keepdim)`` would give (implicit zeros
count in a mean), except that ``dim=None`` reduces each matrix (a ``[*batch]``
tensor, like ``A.norm()``) and a reduction over batch dimensions only keeps the
pattern and returns a SparseTensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # annotations only: sparse.py imports this module
    from .sparse import SparseTensor

__all__ = ["abs_max", "reduce_sum", "reduce_mean", "normalize_dims", "sum_method", "mean_method"]

_ABS_CHUNK = 1 << 20


def abs_max(v: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """``v.abs().amax(dim, keepdim)`` without a ``|v|`` temporary of ``v``'s size (the size of a
    matrix's values, which set the peak of a GPU solve's type checks): a sixteenth of ``dim`` (at
    least 1M) at a time.  ``abs`` and ``amax``, which every solve uses: ``aminmax`` would load a
    kernel family of its own on a GPU."""
    chunk = max(_ABS_CHUNK, -(-v.shape[dim] // 16))
    parts = [c.abs().amax(dim, keepdim=True) for c in torch.split(v, chunk, dim)]
    out = torch.cat(parts, dim).amax(dim, keepdim=True)
    return out if keepdim else out.squeeze(dim)


def normalize_dims(A: SparseTensor, dim: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """Non-negative, sorted, unique dimensions of ``A`` (None stays None), or a clear error."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    nd = A.ndim
    out = set()
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool) or not -nd <= d < nd:
            raise ValueError(
                f"dim must be an int in [{-nd}, {nd - 1}] (or a tuple of them) for shape {tuple(A.shape)}, got {dim!r}"
            )
        out.add(d % nd)
    if len(out) != len(dims):
        raise ValueError(f"dim names a dimension twice: {dim!r}")
    return tuple(sorted(out))


def reduce_sum(
    A: SparseTensor, dim: int | Sequence[int] | None = None, keepdim: bool = False
) -> torch.Tensor | SparseTensor:
    """``A.to_dense().sum(dim, keepdim)``; batch-only reductions stay sparse."""
    dims = normalize_dims(A, dim)
    if dims is None:  # every entry of each matrix, like norm(): [*batch]
        return A.values.sum(-1)
    nb = len(A.batch_shape)
    batch_dims = tuple(d for d in dims if d < nb)
    v = A.values.sum(batch_dims, keepdim=keepdim) if batch_dims else A.values
    rows, cols = nb in dims, nb + 1 in dims
    if not (rows or cols):
        return type(A)._make(v, A.pattern)
    M, N = A.pattern.shape
    if rows and cols:
        out = v.sum(-1)
        return out[..., None, None] if keepdim else out
    idx, size = (A.col, N) if rows else (A.row, M)
    out = v.new_zeros(*v.shape[:-1], size).index_add(-1, idx, v)
    return out.unsqueeze(-2 if rows else -1) if keepdim else out


def reduce_mean(
    A: SparseTensor, dim: int | Sequence[int] | None = None, keepdim: bool = False
) -> torch.Tensor | SparseTensor:
    """``A.to_dense().mean(dim, keepdim)`` (implicit zeros count); batch-only reductions stay sparse."""
    dims = normalize_dims(A, dim)
    shape = tuple(A.shape)
    count = 1
    for d in range(len(shape) - 2, len(shape)) if dims is None else dims:
        count *= shape[d]
    total = reduce_sum(A, dims, keepdim)
    return total / count if count else total * float("nan")


def _axis_alias(dim, axis):
    if axis is not None and dim is not None and axis != dim:
        raise ValueError(f"give dim or its alias axis, not both (dim={dim!r}, axis={axis!r})")
    return dim if axis is None else axis


Dims = int | Sequence[int] | None


def sum_method(
    A: SparseTensor, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None
) -> torch.Tensor | SparseTensor:
    """Sum like ``to_dense().sum(dim, keepdim)``, without the dense tensor (``A.sum``).

    ``dim`` (or ``axis``, the seed project's name): None (every entry of each
    matrix: ``[*batch]``, like :meth:`~sla.SparseTensor.norm`; ``A.sum((-2, -1))``
    says the same), an int or a tuple of batch and matrix dimensions.  A sum over
    batch dimensions only stays sparse (a SparseTensor); one over a matrix
    dimension is a dense tensor.
    """
    return reduce_sum(A, _axis_alias(dim, axis), keepdim)


def mean_method(
    A: SparseTensor, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None
) -> torch.Tensor | SparseTensor:
    """Mean like ``to_dense().mean(dim, keepdim)`` (implicit zeros count; ``A.mean``); ``dim``/``axis``: see ``sum``."""
    return reduce_mean(A, _axis_alias(dim, axis), keepdim)
