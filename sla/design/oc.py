"""Optimality-criteria update of a density design under one volume constraint.

The classic heuristic update of SIMP topology optimisation (Bendsøe 1995;
Sigmund 2001; Andreassen et al. 2011):

``x_new = clamp(x sqrt(-dc / (lambda dv)), x - move, x + move) ∩ [0, 1]``

with the Lagrange multiplier ``lambda`` found by bisection so that the volume
of ``x_new`` (as measured by the caller: typically of the filtered densities)
meets the target.  Sensitivities ``dc``/``dv`` come from autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["oc_update"]


def oc_update(
    x: torch.Tensor,
    dc: torch.Tensor,
    dv: torch.Tensor,
    volume: Callable[[torch.Tensor], torch.Tensor | float],
    target: float,
    move: float = 0.2,
    tol: float = 1e-3,
    max_bisections: int = 200,
) -> torch.Tensor:
    """One optimality-criteria step.

    Parameters
    ----------
    x : torch.Tensor
        Current design ``[E]`` in ``[0, 1]``.
    dc, dv : torch.Tensor
        Sensitivities of the objective (``<= 0`` for compliance) and of the volume (``> 0``).
    volume : callable
        ``volume(x_new)`` -> the constrained volume of a candidate design (same units as ``target``).
    target : float
        Volume to meet.
    move : float
        Largest change of a density in one step (``> 0``).
    tol : float
        Relative width of the bisection bracket on the multiplier at which it stops.

    Returns
    -------
    torch.Tensor
        The new design (no gradient).
    """
    if not move > 0:
        raise ValueError(f"move must be > 0, got {move!r}")
    x, dc, dv = x.detach(), dc.detach(), dv.detach()
    if bool((dv <= 0).any()):
        raise ValueError("dv (the volume sensitivities) must be positive")
    ratio = (-dc).clamp_min(0) / dv
    scale = float(ratio.mean()) or 1.0
    l1, l2 = 0.0, 1e9 * scale
    lo, hi = (x - move).clamp_min(0), (x + move).clamp_max(1)
    xnew = x
    for _ in range(max_bisections):
        if (l2 - l1) / (l1 + l2) <= tol:
            break
        lmid = 0.5 * (l1 + l2)
        xnew = torch.minimum(torch.maximum(x * torch.sqrt(ratio / lmid), lo), hi)
        if float(volume(xnew)) > target:
            l1 = lmid
        else:
            l2 = lmid
    return xnew
