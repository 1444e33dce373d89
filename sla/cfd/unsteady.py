"""Unsteady incompressible Navier--Stokes: BDF2 with an extrapolated convecting velocity.

:func:`solve_unsteady` advances ``u_t - nu Lap u + (u . grad) u + grad p = f, div u = 0`` on a
:class:`~sla.assembly.mixed.TaylorHood` space with the linearly implicit, second-order scheme
(semi-implicit BDF2, e.g. Varnhorn; John, *Finite Element Methods for Incompressible Flow
Problems*, 2016, Sect. 7.3)::

    (3 u^{n+1} - 4 u^n + u^{n-1}) / (2 dt) + (w . grad) u^{n+1} - nu Lap u^{n+1} + grad p^{n+1} = f,
    div u^{n+1} = 0,        w = 2 u^n - u^{n-1},

one Oseen system per step (no Newton loop; second order in ``dt``, the extrapolation keeps the
convection implicit in ``u^{n+1}``, so there is no convective CFL limit).  The first step is
backward Euler with ``w = u^0`` (its local error ``O(dt^2)`` keeps the scheme second order).

Reuse across steps:

1. the system is re-assembled each step on the space's cached pattern (the plan: no index
   work after the first step);
2. it is solved by GMRES preconditioned with an LU factorisation of an *earlier* step's
   matrix -- the matrices differ only in the convecting field ``w``, which changes by
   ``O(dt)`` per step, so the held factors stay an excellent preconditioner and are rebuilt
   only when GMRES needs more than ``refactor_after`` iterations (``refactor_after=0``: a
   direct solve with fresh factors every step).

Failure (a non-finite state, GMRES failing even after a refactorisation) raises
:class:`~sla.ConvergenceError` -- no NaN state is handed to the callback or returned.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..assembly import apply_dirichlet, assemble, mass
from ..assembly.flow import body_force, flow_system
from ..assembly.mixed import TaylorHood
from ..config import ConvergenceError
from .boundary import VelocityBC, dirichlet_data
from .linear import LaggedLU

__all__ = ["solve_unsteady", "UnsteadyResult", "Step"]

log = logging.getLogger("sla")


@dataclass
class Step:
    """What the callback of :func:`solve_unsteady` sees after step ``k`` (time ``t``).

    ``x`` the new state ``[n]``; ``dudt`` its BDF2 time derivative ``[n_u]``; ``reaction`` the
    residual ``A x - b`` of the step's system *before* the Dirichlet rows were eliminated
    (zero on free rows, the boundary reactions on constrained ones): minus its sum over a
    body's velocity nodes is the force on the body by the volume-integral form, consistent with
    the time discretisation (:func:`~sla.cfd.forces.reaction_force`).
    """

    k: int
    t: float
    x: torch.Tensor
    dudt: torch.Tensor
    reaction: torch.Tensor


@dataclass
class UnsteadyResult:
    """What :func:`solve_unsteady` returns: the final state ``x``, the times of the steps,
    GMRES iterations per step, how many LU factorisations ran, and wall-clock totals."""

    x: torch.Tensor
    times: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    factorizations: int = 0
    assembly_s: float = 0.0
    solve_s: float = 0.0


def _check_time(name: str, v, lo_open: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def velocity_mass(space: TaylorHood):
    """``v -> M v`` for velocity vectors ``[n_u]`` (the scalar P2 mass applied per component)."""
    Ms = space.mesh.memo(("velocity-mass", space.key), lambda: assemble(mass, space.ubasis))
    d = space.dim

    def apply(v: torch.Tensor) -> torch.Tensor:
        return (Ms @ v.reshape(-1, d)).reshape(-1)

    return apply


def solve_unsteady(
    space: TaylorHood,
    nu: float,
    bcs: Sequence[VelocityBC],
    dt: float,
    t_end: float,
    x0: torch.Tensor | None = None,
    f: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None = None,
    callback: Callable[[Step], None] | None = None,
    rtol: float = 1e-10,
    refactor_after: int = 8,
    maxiter: int = 60,
    pressure: str = "none",
) -> UnsteadyResult:
    """Advance the flow from ``x0`` (default: rest with the boundary values) to ``t_end``.

    Parameters
    ----------
    space : TaylorHood
    nu : float
        Kinematic viscosity (``> 0``).
    bcs : sequence of VelocityBC
        Time-independent velocity Dirichlet conditions (other boundaries: do-nothing).
    dt, t_end : float
        Time step and final time (``> 0``; ``ceil(t_end / dt)`` steps, the last one ends at
        ``n dt >= t_end``).
    x0 : tensor ``[space.n]``, optional
        Initial state; its boundary values are overwritten by ``bcs``.
    f : body force, optional
    callback : ``callback(step)``, optional
        Called after every step with a :class:`Step` (the new state, its BDF2 time derivative
        ``(3 u^{n+1} - 4 u^n + u^{n-1}) / (2 dt)`` -- ``(u^1 - u^0) / dt`` after the first step --
        and the boundary reactions).
    rtol : float
        GMRES tolerance (relative residual of each step's system).
    refactor_after : int
        Rebuild the LU preconditioner when GMRES needs more iterations than this
        (``0``: a fresh direct solve every step).
    maxiter : int
        GMRES iterations at most per step (beyond: refactor and retry once).
    pressure : ``'none'``, ``'pin'`` or ``'mean'``
        As in :func:`~sla.cfd.steady.solve_steady`.
    """
    if not isinstance(space, TaylorHood):
        raise TypeError(f"space must be a TaylorHood space, got {type(space).__name__}")
    dt, t_end = _check_time("dt", dt), _check_time("t_end", t_end)
    if isinstance(nu, torch.Tensor):
        nu = float(nu.detach())
    _check_time("nu", nu)
    if isinstance(refactor_after, bool) or not isinstance(refactor_after, int) or refactor_after < 0:
        raise ValueError(f"refactor_after must be an int >= 0, got {refactor_after!r}")
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must lie in (0, 1), got {rtol!r}")
    P = space.mesh.points.detach()
    n_u = space.n_u
    dofs, gvals = dirichlet_data(space, bcs, pressure)
    gvals = gvals.detach()
    x = P.new_zeros(space.n) if x0 is None else x0.detach().to(P.dtype).clone()
    if x.shape != (space.n,):
        raise ValueError(f"x0 must have shape [{space.n}], got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x0 contains NaN or Inf")
    x[dofs] = gvals
    M = velocity_mass(space)
    F = body_force(space, f) if f is not None else None
    sigma = 1.5 / dt
    steps = math.ceil(t_end / dt - 1e-9)
    out = UnsteadyResult(x)
    x_old = x.clone()
    lagged = LaggedLU(refactor_after=refactor_after, maxiter=maxiter)
    with torch.no_grad():
        for k in range(1, steps + 1):
            t0 = time.perf_counter()
            if k == 1:  # BDF1 start (second-order accurate globally: one step of local error dt^2)
                w, sig, hist = x, 1.0 / dt, x[:n_u] / dt
            else:
                w, sig, hist = 2 * x - x_old, sigma, (4 * x[:n_u] - x_old[:n_u]) / (2 * dt)
            A = flow_system(space, nu, w, sigma=sig)  # w: the convecting velocity (its pressure part unused)
            rhs = P.new_zeros(space.n)
            rhs[:n_u] = M(hist)
            if F is not None:
                rhs = rhs + F
            A0, b0 = apply_dirichlet(A, rhs, dofs, gvals)
            t1 = time.perf_counter()
            y, its = lagged.solve(A0, b0, x0=w, rtol=rtol)
            out.factorizations = lagged.factorizations
            t2 = time.perf_counter()
            if not bool(torch.isfinite(y).all()):
                raise ConvergenceError(f"unsteady flow diverged at step {k} (t = {k * dt:.6g}): non-finite state")
            dudt = sig * y[:n_u] - hist
            x_old, x = x, y
            out.times.append(k * dt)
            out.iterations.append(its)
            out.assembly_s += t1 - t0
            out.solve_s += t2 - t1
            if callback is not None:
                callback(Step(k, k * dt, x, dudt, A @ x - rhs))
    if pressure == "mean":
        x = torch.cat([x[:n_u], x[n_u:] - space.pressure_mean(x[n_u:])])
    out.x = x
    log.info(
        "unsteady flow: %d steps, %d factorisations, %.1f GMRES iterations per step",
        steps,
        out.factorizations,
        sum(out.iterations) / max(1, len(out.iterations)),
    )
    return out
