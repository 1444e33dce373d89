"""``A.spy()``: a picture of a sparsity pattern.

Drawn by :mod:`sla.viz` when that module provides ``spy``; otherwise here, with
matplotlib (imported only when a plot is asked for: ``pip install matplotlib``).
Each stored entry is one pixel coloured by ``|value|``; nothing stored is white.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from .sparse import SparseTensor

__all__ = ["spy"]

_IMAGE_LIMIT = 4_000_000  # pixels of the exact image; larger matrices are drawn as markers


def _viz_spy():
    if importlib.util.find_spec("sla.viz") is None:
        return None
    return getattr(importlib.import_module("sla.viz"), "spy", None)


def spy(
    A: SparseTensor,
    batch_idx: int | Sequence[int] | None = None,
    ax: Any = None,
    title: str | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
    **kwargs: Any,
) -> Any:
    """Plot the sparsity pattern of ``A`` (one member of a batched tensor: ``batch_idx``).

    Parameters
    ----------
    A : SparseTensor
    batch_idx : int or tuple, optional
        Required for a batched tensor: which member to draw.
    ax : matplotlib Axes, optional
        Axes to draw into (a new figure otherwise).
    title, cmap, colorbar
        Title (default: shape and nnz), colour map of ``|value|``, whether to add a colour bar.
    **kwargs
        Passed to ``sla.viz.spy`` when that exists, else to ``ax.imshow``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if not isinstance(A, SparseTensor):
        raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
    if A.batch_shape:
        if batch_idx is None:
            raise ValueError(f"A is batched (batch shape {A.batch_shape}): pass batch_idx to pick a member")
        idx = (batch_idx,) if isinstance(batch_idx, int) else tuple(batch_idx)
        if len(idx) != len(A.batch_shape) or any(not 0 <= i < s for i, s in zip(idx, A.batch_shape)):
            raise IndexError(f"batch_idx {batch_idx!r} does not name a member of batch shape {A.batch_shape}")
        A = SparseTensor._make(A.values[idx], A.pattern)
    elif batch_idx is not None:
        raise ValueError(f"batch_idx={batch_idx!r} given for an unbatched tensor")
    viz = _viz_spy()
    if viz is not None:
        return viz(A, ax=ax, title=title, cmap=cmap, colorbar=colorbar, **kwargs)
    try:
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("A.spy() needs matplotlib: pip install matplotlib") from exc
    M, N = A.sparse_shape
    mag = A.values.detach().abs().cpu().double().numpy()
    top = mag.max() if mag.size else 0.0
    mag = mag / top if top > 0 else mag
    row, col = A.row.cpu().numpy(), A.col.cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    if M * N <= _IMAGE_LIMIT:  # pixel-exact image
        image = np.full((M, N), np.nan)
        image[row, col] = mag
        im = ax.imshow(image, cmap=cmap, interpolation="nearest", vmin=0.0, vmax=1.0, **kwargs)
    else:  # a large matrix: one marker per entry, no M x N image
        im = ax.scatter(col, row, c=mag, s=kwargs.pop("markersize", 1.0), marker="s", cmap=cmap, vmin=0.0, vmax=1.0)
        ax.set_xlim(-0.5, N - 0.5)
        ax.set_ylim(M - 0.5, -0.5)
        ax.set_aspect("equal")
    ax.set_title(title if title is not None else f"{M} x {N}, nnz = {A.nnz}")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label="|value| / max")
    return ax
