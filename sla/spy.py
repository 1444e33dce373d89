"""``A.spy()``: the picture of a sparsity pattern, drawn by :func:`sla.viz.spy`.

This module only adapts the seed project's method (``A.spy(batch_idx=...,
save_path=...)``, returning the matplotlib Axes) to :func:`sla.viz.spy`; it is
imported when a plot is asked for (``import sla`` does not load matplotlib).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .sparse import SparseTensor

__all__ = ["spy"]


def spy(
    A: SparseTensor,
    batch_idx: int | Sequence[int] | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    markersize: float | None = None,
    save_path: str | os.PathLike | None = None,
) -> Any:
    """Plot the sparsity pattern of ``A`` (one member of a batched tensor: ``batch_idx``).

    Parameters
    ----------
    A : SparseTensor
    batch_idx : int or tuple, optional
        Required for a batched tensor: which member to draw.
    path, save_path : str or os.PathLike, optional
        Write a PNG there (``save_path`` is the seed project's name) and return the path.
    title, markersize
        As for :func:`sla.viz.spy`.

    Returns
    -------
    matplotlib.axes.Axes, or the path written
    """
    if not isinstance(A, SparseTensor):
        raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
    if path is not None and save_path is not None and os.fspath(path) != os.fspath(save_path):
        raise ValueError(f"give path or its alias save_path, not both ({path!r}, {save_path!r})")
    if A.batch_shape:
        if batch_idx is None:
            raise ValueError(f"A is batched (batch shape {A.batch_shape}): pass batch_idx to pick a member")
        idx = (batch_idx,) if isinstance(batch_idx, int) else tuple(batch_idx)
        if len(idx) != len(A.batch_shape) or any(not 0 <= i < s for i, s in zip(idx, A.batch_shape)):
            raise IndexError(f"batch_idx {batch_idx!r} does not name a member of batch shape {A.batch_shape}")
        A = SparseTensor._make(A.values[idx], A.pattern)
    elif batch_idx is not None:
        raise ValueError(f"batch_idx={batch_idx!r} given for an unbatched tensor")
    from .viz import spy as draw

    out = draw(A, path=path if path is not None else save_path, title=title, markersize=markersize)
    return out if isinstance(out, (str, os.PathLike)) else out.axes[0]
