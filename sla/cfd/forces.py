"""Forces on immersed boundaries by the volume-integral (residual) form, and point pressures.

The force the fluid exerts on a no-slip boundary ``S`` is read off the weak momentum residual
tested with a velocity field ``v_c`` that equals the unit vector ``e_c`` on ``S`` and vanishes on
every other Dirichlet boundary (John & Matthies 2001; Braack & Richter 2006):

.. math::

    F_c = -\\Big[ (\\partial_t u, v_c) + \\nu (\\nabla u, \\nabla v_c) + ((u \\cdot \\nabla) u, v_c)
          - (p, \\nabla \\cdot v_c) - (f, v_c) \\Big],

which is ``\\int_S (-\\nu \\partial_n u + p n) \\cdot e_c`` for smooth solutions (``n`` the
fluid's outward normal); as an integral over the whole domain it converges markedly faster than
the boundary integral of the discrete stress, which needs derivatives of ``u_h`` on ``S``
(both are compared in ``tests/cfd/test_cylinder.py``).
With ``v_c`` the nodal interpolant of ``e_c`` on ``S`` (one at the velocity nodes on ``S``,
zero elsewhere), the bracket is the sum of the assembled momentum residual over the ``c``
components of the nodes on ``S``: one residual assembly, no extra form, and differentiable
w.r.t. the state, ``nu`` and the node coordinates like the residual itself.

:func:`point_pressure` evaluates the P1 pressure at given points (exact nodal values when a
point is a mesh vertex, else the linear interpolant in the containing cell).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..assembly.flow import flow_system
from ..assembly.mixed import TaylorHood

__all__ = ["boundary_force", "reaction_force", "point_pressure"]


def _tag_nodes(space: TaylorHood, tag: str) -> torch.Tensor:
    """Velocity nodes (P2: vertices and edge midpoints) on the facet set ``tag``."""
    return space.facet_velocity_dofs([tag], components=[0]) // space.dim


def boundary_force(
    space: TaylorHood,
    x: torch.Tensor,
    nu: float | torch.Tensor,
    tag: str = "cylinder",
    dudt: torch.Tensor | None = None,
    f: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None = None,
    viscous: str = "laplace",
) -> torch.Tensor:
    """Force ``[dim]`` of the fluid on the boundary ``tag`` by the volume-integral form.

    Parameters
    ----------
    space : TaylorHood
    x : tensor ``[space.n]``
        The flow state (velocity, then pressure) -- a converged solution, whose residual
        vanishes at every free dof.
    nu : float or tensor
        The kinematic viscosity the state was computed with.
    tag : str
        The facet set of the body (a no-slip boundary); a missing tag is a ``ValueError``
        naming it.
    dudt : tensor ``[space.n_u]`` or ``[space.n]``, optional
        The discrete time derivative of the velocity (unsteady flows: the same difference
        quotient the time stepper used, e.g. ``(3 u^{n+1} - 4 u^n + u^{n-1}) / (2 dt)``).
    f : body force, optional
        As in :func:`~sla.assembly.flow.flow_system`.
    viscous : ``'laplace'`` or ``'symmetric'``
        The viscous form of the solve (the force is consistent with it).

    Returns
    -------
    tensor ``[dim]``
        ``(F_x, F_y[, F_z])``; the drag and lift coefficients are ``2 F / (rho U^2 D)``.
    """
    if not isinstance(space, TaylorHood):
        raise TypeError(f"space must be a TaylorHood space, got {type(space).__name__}")
    if not isinstance(x, torch.Tensor) or x.shape != (space.n,):
        raise ValueError(f"x must be a flow state of shape [{space.n}], got {getattr(x, 'shape', type(x).__name__)}")
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError("x contains NaN or Inf: no force of a diverged state")
    nodes = _tag_nodes(space, tag)
    _, R = flow_system(space, nu, x, f=f, viscous=viscous, residual=True)
    d = space.dim
    F = -R[: space.n_u].reshape(-1, d)[nodes].sum(0)
    if dudt is not None:
        if not isinstance(dudt, torch.Tensor) or dudt.shape[-1] not in (space.n_u, space.n) or dudt.dim() != 1:
            raise ValueError(
                f"dudt must be a velocity vector of shape [{space.n_u}] (or a state [{space.n}]), "
                f"got {getattr(dudt, 'shape', type(dudt).__name__)}"
            )
        F = F - _mass_against_indicator(space, dudt[: space.n_u], nodes)
    return F


def reaction_force(space: TaylorHood, reaction: torch.Tensor, tag: str = "cylinder") -> torch.Tensor:
    """Force ``[dim]`` on the boundary ``tag`` from the residual ``A x - b`` of an assembled step
    system before its Dirichlet rows were eliminated (what a time stepper has at hand: the
    volume-integral form of :func:`boundary_force`, with the stepper's own time discretisation,
    for the price of one matrix-vector product)."""
    if not isinstance(space, TaylorHood):
        raise TypeError(f"space must be a TaylorHood space, got {type(space).__name__}")
    if not isinstance(reaction, torch.Tensor) or reaction.shape != (space.n,):
        raise ValueError(
            f"reaction must be a residual vector of shape [{space.n}], got {getattr(reaction, 'shape', reaction)}"
        )
    nodes = _tag_nodes(space, tag)
    return -reaction[: space.n_u].reshape(-1, space.dim)[nodes].sum(0)


def _mass_against_indicator(space: TaylorHood, a: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """``(a, chi e_c)`` for each component ``c``: ``chi`` the P2 function that is 1 at ``nodes``."""
    ub = space.ubasis
    chi = a.new_zeros(a.shape[0] // space.dim)
    chi[nodes] = 1.0
    chi_q, _ = ub.interpolate(chi)  # [E, Q]
    w = chi_q * ub.dx
    comps = a.reshape(-1, space.dim)
    return torch.stack([(ub.interpolate(comps[:, c])[0] * w).sum() for c in range(space.dim)])


def point_pressure(
    space: TaylorHood, x: torch.Tensor, points: Sequence[Sequence[float]] | torch.Tensor
) -> torch.Tensor:
    """The P1 pressure of the state ``x`` at ``points`` ``[k, dim]`` (differentiable in ``x``;
    :meth:`TaylorHood.evaluate` locates the points).  A point outside the mesh is a
    ``ValueError`` naming it."""
    if not isinstance(space, TaylorHood):
        raise TypeError(f"space must be a TaylorHood space, got {type(space).__name__}")
    if not isinstance(x, torch.Tensor) or x.shape != (space.n,):
        raise ValueError(f"x must be a flow state of shape [{space.n}], got {getattr(x, 'shape', type(x).__name__)}")
    P = space.mesh.points.detach()
    pts = torch.as_tensor(points, dtype=P.dtype, device=P.device)
    if pts.dim() != 2 or pts.shape[1] != space.dim:
        raise ValueError(f"points must have shape [k, {space.dim}], got {tuple(pts.shape)}")
    try:
        return space.evaluate(x, pts)[1]
    except ValueError:
        for i, q in enumerate(pts):
            try:
                space.evaluate(x, q[None])
            except ValueError:
                raise ValueError(f"point {tuple(float(v) for v in q)} (points[{i}]) lies outside the mesh") from None
        raise
