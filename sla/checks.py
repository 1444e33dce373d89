"""Boundary checks that stay lean on memory.

``torch.isfinite(t).all()`` makes a full-size temporary of ``|t|`` and three
boolean masks; at the size of a matrix's values that is the largest allocation
of a cached multigrid solve.  These checks scan in chunks instead.
"""

from __future__ import annotations

import cmath
import functools
from collections.abc import Callable

import torch

__all__ = ["all_finite", "first_order_only"]

_CHUNK = 1 << 23  # elements per pass (one pass up to a 1M-unknown 2D matrix; ~90 MB of temporaries)


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite (one host synchronisation).

    A finite sum proves every entry finite (a NaN or an infinity makes the sum non-finite) and
    is a reduction, with no temporary of ``t``'s size; only a non-finite sum (such an entry, or an
    overflow of finite ones) takes the exact scan in chunks."""
    if not (t.is_floating_point() or t.is_complex()):
        return True
    flat = t.detach().reshape(-1)
    if cmath.isfinite(flat.sum().item()):  # the sum read on the host: no comparison kernels on a GPU
        return True
    if flat.numel() <= _CHUNK:
        return bool(torch.isfinite(flat).all())
    bad = torch.zeros((), dtype=torch.bool, device=flat.device)
    for lo in range(0, flat.numel(), _CHUNK):
        bad |= ~torch.isfinite(flat[lo : lo + _CHUNK]).all()
    return not bool(bad)


def first_order_only(what: str) -> Callable:
    """Decorate the ``backward`` of an ``autograd.Function`` whose gradient is not itself
    differentiable: under ``create_graph=True`` (grad mode on inside the backward) it raises a
    clear error instead of returning a gradient without a graph -- which would make every
    second derivative silently zero.  Put it above ``once_differentiable``."""

    def deco(backward: Callable) -> Callable:
        @functools.wraps(backward)
        def wrapper(ctx, *grads):
            if torch.is_grad_enabled():
                raise RuntimeError(
                    f"second-order gradients (create_graph=True) of {what} are not supported: its gradient "
                    "is not differentiable here, so higher derivatives would come back as zeros. Differentiate "
                    "once (no create_graph), or use finite differences of the gradient; sla.solve supports "
                    "second-order gradients."
                )
            return backward(ctx, *grads)

        return wrapper

    return deco
