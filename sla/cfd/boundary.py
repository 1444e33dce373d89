"""Flow boundary conditions on tagged boundaries of a :class:`~sla.assembly.mixed.TaylorHood` space.

* :class:`VelocityBC` -- velocity Dirichlet on facet sets: no-slip (``0``), a moving lid
  (``(1, 0)``), a parabolic inflow (a callable ``g(x) -> [..., dim]``).  Later conditions win at
  shared nodes (list walls after the lid for a lid whose corners do not move).
* Boundaries without a condition are do-nothing outflows (the natural condition of the
  ``viscous='laplace'`` form).
* Pressure: ``'none'`` (an outflow fixes it), ``'pin'`` (one pinned dof, value 0) or ``'mean'``
  (pinned while solving, then shifted to zero mean) -- needed when the velocity is Dirichlet on
  the whole boundary.

:func:`dirichlet_data` turns them into ``(dofs, values)`` for
:func:`~sla.assembly.apply_dirichlet` on the whole block system; the values are torch functions
of the callables' outputs, so they may carry gradients (inflow speed, node coordinates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..assembly.mixed import TaylorHood

__all__ = ["VelocityBC", "dirichlet_data", "PRESSURE_MODES"]

PRESSURE_MODES = ("none", "pin", "mean")


@dataclass
class VelocityBC:
    """Velocity Dirichlet condition ``u = value`` on the facet sets ``tags``.

    ``value``: a number (every component), a sequence of ``dim`` numbers or a tensor ``[dim]``,
    or a callable ``g(x [k, dim]) -> [k, dim]`` evaluated at the velocity nodes.
    """

    tags: str | Sequence[str]
    value: float | Sequence[float] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] = 0.0

    def tag_list(self) -> list[str]:
        return [self.tags] if isinstance(self.tags, str) else list(self.tags)


def _values(bc: VelocityBC, pts: torch.Tensor, dim: int) -> torch.Tensor:
    v = bc.value
    if callable(v):
        out = v(pts)
        if not isinstance(out, torch.Tensor) or out.shape != pts.shape:
            raise ValueError(
                f"the velocity of the condition on {bc.tags!r} must return [k, {dim}] for points [k, {dim}], "
                f"got {getattr(out, 'shape', type(out).__name__)}"
            )
        return out.to(pts.dtype)
    t = torch.as_tensor(v, dtype=pts.dtype, device=pts.device)
    if t.dim() == 0:
        t = t.expand(dim)
    if t.shape != (dim,):
        raise ValueError(f"the velocity on {bc.tags!r} must be a number or {dim} components, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"the velocity on {bc.tags!r} must be finite, got {v!r}")
    return t.expand(pts.shape[0], dim)


def dirichlet_data(
    space: TaylorHood, bcs: Sequence[VelocityBC], pressure: str = "none"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dofs, values)`` of all velocity conditions (and a pinned pressure dof).

    A tag missing from the mesh is a ``ValueError`` naming it; ``pressure`` must be one of
    :data:`PRESSURE_MODES`.
    """
    if pressure not in PRESSURE_MODES:
        raise ValueError(f"pressure must be one of {PRESSURE_MODES}, got {pressure!r}")
    if isinstance(bcs, VelocityBC):
        bcs = [bcs]
    for bc in bcs:
        if not isinstance(bc, VelocityBC):
            raise TypeError(f"bcs must be VelocityBC conditions, got {type(bc).__name__}")
    d = space.dim
    P = space.mesh.points
    parts_dofs, parts_vals = [], []
    for bc in bcs:
        dofs = space.facet_velocity_dofs(bc.tag_list(), components=[0])  # node * d + 0
        nodes = dofs // d
        pts = space.velocity_points()[nodes]
        vals = _values(bc, pts, d)  # [k, d]
        idx = (nodes[:, None] * d + torch.arange(d, device=nodes.device)).reshape(-1)
        parts_dofs.append(idx)
        parts_vals.append(vals.reshape(-1))
    if pressure in ("pin", "mean"):
        parts_dofs.append(torch.tensor([space.n_u], device=P.device))
        parts_vals.append(P.new_zeros(1))
    if not parts_dofs:
        return torch.zeros(0, dtype=torch.int64, device=P.device), P.new_zeros(0)
    dofs = torch.cat(parts_dofs)
    vals = torch.cat(parts_vals)
    # later conditions win: keep the last occurrence of each dof
    order = torch.arange(dofs.numel(), device=dofs.device)
    last = torch.full((space.n,), -1, dtype=torch.int64, device=dofs.device).scatter_reduce(
        0, dofs, order, reduce="amax"
    )
    keep = last[dofs] == order
    dofs, vals = dofs[keep], vals[keep]
    perm = torch.argsort(dofs)
    return dofs[perm], vals[perm]
