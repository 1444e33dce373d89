"""Steady incompressible Navier--Stokes by Newton's method with a Picard start.

:func:`solve_steady` solves ``-nu Lap u + (u . grad) u + grad p = f, div u = 0`` with velocity
Dirichlet conditions (:class:`~sla.cfd.boundary.VelocityBC`), do-nothing elsewhere, on a
:class:`~sla.assembly.mixed.TaylorHood` space::

    from sla.assembly import unit_square
    from sla.assembly.mixed import TaylorHood
    from sla.cfd import VelocityBC, solve_steady
    mesh = unit_square(16).tag_facets("lid", lambda x: x[:, 1] > 1 - 1e-9)
    V = TaylorHood(mesh)
    res = solve_steady(V, nu=1 / 100, bcs=[VelocityBC("lid", (1.0, 0.0)),
                                          VelocityBC(["xmin", "xmax", "ymin"], 0.0)], pressure="mean")
    u, p = V.split(res.x)

Each step assembles the Jacobian and the residual in one call on the space's cached pattern
(no index work after the first step) and solves the increment with the ``linear`` path:
``'direct'`` (``sla.solve`` with LU: SuperLU on the CPU, cuDSS/cuSOLVER on CUDA) or
``'iterative'`` (FGMRES with the block preconditioner of :mod:`sla.cfd.linear`).  The first
steps are Picard (Oseen) steps until the residual fell by ``picard_drop`` (at most ``picard``
of them), then Newton with a backtracking line search on the residual norm.

Failure: a step that produces a non-finite state, a residual that grew by ``1e8``, or
``maxiter`` steps without reaching the tolerance raise :class:`~sla.ConvergenceError` carrying
``history`` (the residual norms) -- no state is returned.

Gradients: when ``nu``, the boundary values or ``mesh.points`` require grad, the converged
state is returned through one implicit-function step ``x - J^{-1} R(x; theta)`` with ``J``
detached, so ``x`` carries the exact adjoint gradient ``-J^{-T}``-weighted ``dR/dtheta``
(one transposed solve in the backward pass).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

import sla

from ..assembly import apply_dirichlet
from ..assembly.flow import body_force, flow_system
from ..assembly.mixed import TaylorHood
from ..config import ConvergenceError, SolverConfig
from .boundary import VelocityBC, dirichlet_data
from .linear import FlowLinearSolver

__all__ = ["solve_steady", "FlowResult"]

log = logging.getLogger("sla")


@dataclass
class FlowResult:
    """What :func:`solve_steady` returns.

    ``x`` the state ``[n]`` (velocity then pressure; :meth:`TaylorHood.split` splits it);
    ``history`` residual 2-norms (free rows) before each step and at the end;
    ``steps`` list of ``'picard'``/``'newton'``; ``linear_iterations`` per step (0 for direct);
    ``times`` seconds per step (assembly + solve); ``assembly_s`` / ``solve_s`` totals;
    ``factorizations`` LU factorisations of the lagged direct path; ``forcing`` the relative
    tolerance each linear solve was asked for (the Newton forcing terms); ``linear_method`` the
    linear solver in words (:meth:`FlowLinearSolver.describe`).
    """

    x: torch.Tensor
    history: list[float] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    linear_iterations: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    assembly_s: float = 0.0
    solve_s: float = 0.0
    factorizations: int = 0
    forcing: list[float] = field(default_factory=list)
    linear_method: str = ""

    @property
    def newton_steps(self) -> int:
        return len(self.steps)


def _needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in ts)


def _fail(msg: str, history: list[float]) -> ConvergenceError:
    err = ConvergenceError(msg + f"; residual history {[f'{h:.3e}' for h in history]}")
    err.history = list(history)
    return err


def solve_steady(
    space: TaylorHood,
    nu: float | torch.Tensor,
    bcs: Sequence[VelocityBC],
    pressure: str = "none",
    f: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
    linear: str = "direct",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    maxiter: int = 40,
    picard: int = 10,
    picard_drop: float = 0.1,
    viscous: str = "laplace",
    solver: SolverConfig | None = None,
    linear_options: dict | None = None,
    callback: Callable[[int, str, float], None] | None = None,
    forcing: str | float = "eisenstat-walker",
) -> FlowResult:
    """Solve the steady Navier--Stokes equations on ``space``.

    Parameters
    ----------
    space : TaylorHood
    nu : float or tensor
        Kinematic viscosity (``> 0``; ``1 / Re`` for unit speed and length).
    bcs : sequence of VelocityBC
        Velocity Dirichlet conditions (later ones win at shared nodes); other boundaries are
        do-nothing outflows.
    pressure : ``'none'``, ``'pin'`` or ``'mean'``
        How the pressure constant is fixed (``'mean'``/``'pin'`` when the velocity is Dirichlet
        on the whole boundary).
    f : body force (callable ``f(x) -> [..., dim]`` or tensor ``[dim]``), optional
    x0 : initial state ``[n]`` (e.g. a lower-Re solution for continuation), optional
    linear : ``'direct'`` or ``'iterative'``
    rtol, atol : float
        Stop when ``||R|| <= max(rtol ||R_0||, atol)`` (``R_0``: the residual of the Stokes-free
        initial state with its boundary values).
    maxiter : int
        Nonlinear steps at most (Picard + Newton).
    picard : int
        Picard steps at most before switching to Newton (0: Newton from the start).
    picard_drop : float
        Switch to Newton once the residual fell by this factor (0.1: on the cavity at Re = 1000
        continued from Re = 400, 18 steps in all against 25 with 0.01).
    viscous : ``'laplace'`` or ``'symmetric'``
    solver : SolverConfig, optional
        For the direct path (default: LU).
    linear_options : dict, optional
        Options of :class:`~sla.cfd.linear.FlowLinearSolver` (``rtol``, ``restart``,
        ``schur``, ``maxiter``, ...).
    callback : ``callback(step, kind, residual)``, optional
        Called after every nonlinear step (1-based ``step``, ``'picard'`` or ``'newton'``, the
        new residual norm): progress bars, logging, early inspection.
    forcing : ``'eisenstat-walker'``, ``'none'`` or a float in (0, 1)
        Relative tolerance of each inexact linear solve (the iterative path and the lagged-LU
        direct path; an exact direct solve ignores it).  ``'eisenstat-walker'``: Eisenstat and
        Walker's choice 2 (SIAM J. Sci. Comput. 17, 1996), ``eta_k = 0.9 (|R_k| / |R_{k-1}|)^2``
        safeguarded by ``0.9 eta_{k-1}^2``, at most 0.1 (Picard steps: 0.1), and never below
        ``0.5 tol / |R_k|`` (no oversolving near the end); ``'none'``: the linear solver's own tolerance; a float: that
        constant tolerance.  The converged state does not depend on it (the stopping test is on
        the nonlinear residual).

    Returns
    -------
    FlowResult
    """
    if not isinstance(space, TaylorHood):
        raise TypeError(f"space must be a TaylorHood space, got {type(space).__name__}")
    for name, v, lo in (("maxiter", maxiter, 1), ("picard", picard, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if not (0 < rtol < 1) or atol < 0:
        raise ValueError(f"rtol must lie in (0, 1) and atol be >= 0, got rtol={rtol!r}, atol={atol!r}")
    _check_forcing(forcing)
    if isinstance(picard_drop, bool) or not isinstance(picard_drop, (int, float)) or not 0 < picard_drop < 1:
        raise ValueError(f"picard_drop must be a float in (0, 1), got {picard_drop!r}")
    P = space.mesh.points
    dofs, gvals = dirichlet_data(space, bcs, pressure)
    if pressure == "none" and not _has_free_boundary(space, bcs):
        log.warning("velocity is Dirichlet on the whole boundary but pressure='none': the pressure is singular")
    lin = FlowLinearSolver(space, linear, dofs, solver=solver, **(linear_options or {}))
    t_all = time.perf_counter()
    with torch.no_grad():
        x = P.new_zeros(space.n) if x0 is None else x0.detach().to(P.dtype).clone()
        if x.shape != (space.n,):
            raise ValueError(f"x0 must have shape [{space.n}], got {tuple(x.shape)}")
        nu_d = nu.detach() if isinstance(nu, torch.Tensor) else nu
        x[dofs] = gvals.detach()
        free = torch.ones(space.n, dtype=torch.bool, device=P.device)
        free[dofs] = False
        out = FlowResult(x, linear_method=lin.describe())
        r0 = None
        mode = "picard" if picard > 0 else "newton"
        n_picard = 0
        stokes = _StokesPart(space, nu_d, f, viscous)
        J, R, ta = _assemble(space, nu_d, x, mode == "newton", stokes)
        for _ in range(maxiter + 1):
            rn = float(R[free].norm())
            out.history.append(rn)
            if not math.isfinite(rn):
                raise _fail("Navier-Stokes Newton diverged: the residual is not finite", out.history)
            r0 = rn if r0 is None else r0
            tol = max(rtol * r0, atol)
            if rn <= tol:
                break
            if len(out.steps) >= maxiter:
                raise _fail(
                    f"Navier-Stokes Newton did not converge in {maxiter} steps (tolerance {tol:.2e})", out.history
                )
            if rn > 1e8 * max(r0, atol):
                raise _fail("Navier-Stokes Newton diverged (the residual grew by 1e8)", out.history)
            t0 = time.perf_counter()
            Rz = torch.where(free, R, torch.zeros_like(R))
            eta = _forcing(forcing, out.history, out.forcing, tol, picard=mode == "picard")
            dx, its = lin.solve(J, -Rz, state=x, nu=nu_d, newton=mode == "newton", rtol=eta)
            out.forcing.append(float("nan") if eta is None else eta)
            ts = time.perf_counter() - t0
            if not bool(torch.isfinite(dx).all()):
                raise _fail("Navier-Stokes Newton diverged: the linear solve returned a non-finite step", out.history)
            # backtracking on the residual norm (Newton only; Picard steps are taken whole)
            lam, step_mode = 1.0, mode
            if mode == "picard":
                n_picard += 1
                if rn <= picard_drop * r0 or n_picard >= picard:
                    mode = "newton"
            for _ in range(8):
                xt = x + lam * dx
                Jt, Rt, ta2 = _assemble(space, nu_d, xt, mode == "newton", stokes)
                rt = float(Rt[free].norm())
                if step_mode == "picard" or (math.isfinite(rt) and rt < rn) or lam < 1 / 64:
                    break
                lam *= 0.5
            x, J, R = xt, Jt, Rt
            out.steps.append(step_mode)
            out.linear_iterations.append(its)
            out.times.append(ta + ts)
            out.assembly_s += ta
            out.solve_s += ts
            ta = ta2
            log.info("flow step %d (%s, lambda %.3g): residual %.3e -> %.3e", len(out.steps), step_mode, lam, rn, rt)
            if callback is not None:
                callback(len(out.steps), step_mode, rt)
    out.factorizations = lin.lagged.factorizations
    if pressure == "mean":
        x = _shift_mean(space, x)
    if _needs_grad(nu, gvals, P, f if isinstance(f, torch.Tensor) else None):
        x = _implicit_step(space, nu, x, J, dofs, gvals, f, viscous, lin, pressure)
    out.x = x
    log.info("flow solve: %d steps in %.3f s", len(out.steps), time.perf_counter() - t_all)
    return out


FORCING = ("eisenstat-walker", "none")
ETA_MAX = 0.1


def _check_forcing(forcing) -> None:
    if isinstance(forcing, str):
        if forcing not in FORCING:
            raise ValueError(f"forcing must be one of {FORCING} or a float in (0, 1), got {forcing!r}")
    elif isinstance(forcing, bool) or not isinstance(forcing, (int, float)) or not 0 < forcing < 1:
        raise ValueError(f"forcing must be one of {FORCING} or a float in (0, 1), got {forcing!r}")


def _forcing(forcing, history: list[float], etas: list[float], tol: float, picard: bool = False) -> float | None:
    """The relative tolerance of the next linear solve (``None``: the solver's own)."""
    if forcing == "none":
        return None
    rn = history[-1]
    floor = 0.5 * tol / rn  # the step need not solve below what the stopping test asks
    if not isinstance(forcing, str):
        return max(float(forcing), floor)
    if picard or len(history) < 2 or not etas:  # Picard contracts linearly whatever the solve
        eta = ETA_MAX
    else:  # Eisenstat--Walker choice 2 (gamma = 0.9, alpha = 2) with its safeguard
        eta = 0.9 * (rn / history[-2]) ** 2
        prev = 0.9 * etas[-1] ** 2
        if prev > 0.1:
            eta = max(eta, prev)
    return min(max(eta, floor), ETA_MAX)


def _has_free_boundary(space: TaylorHood, bcs) -> bool:
    tags = {t for bc in ([bcs] if isinstance(bcs, VelocityBC) else bcs) for t in bc.tag_list()}
    if "boundary" in tags:
        return False
    m = space.mesh
    if not tags:
        return True
    on = torch.cat([m.facet_sets[t] for t in tags])
    return on.shape[0] < m.boundary_facets.shape[0]


class _StokesPart:
    """The state-independent part of the residual, built on first use: the Stokes matrix ``A_s``
    (viscous + divergence blocks) and the body-force load ``F``."""

    def __init__(self, space, nu, f, viscous):
        self.args, self._parts = (space, nu, f, viscous), None

    def get(self):
        if self._parts is None:
            space, nu, f, viscous = self.args
            F = body_force(space, f) if f is not None else None
            self._parts = (flow_system(space, nu, viscous=viscous), F)
        return self._parts


def _assemble(space, nu, x, newton, stokes: _StokesPart):
    """``(J, R, seconds)``: the Picard or Newton matrix at ``x`` and the residual ``R(x)``.

    Newton: the convection ``b(u, v) = (u . grad) v`` is bilinear and the Jacobian at ``x`` is
    ``A_s + b(x, .) + b(., x)``, so ``J x = A_s x + 2 b(x, x)`` and ``R = A_s x + b(x, x) - F =
    (J x + A_s x) / 2 - F``: one element-matrix pass (the Jacobian's) per step instead of two.
    """
    t0 = time.perf_counter()
    f, viscous = stokes.args[2:]
    if newton:
        J = flow_system(space, nu, x, newton=True, viscous=viscous)
        As, F = stokes.get()
        R = 0.5 * (J @ x + As @ x)
        R = R - F if F is not None else R
    else:
        J, R = flow_system(space, nu, x, newton=False, f=f, viscous=viscous, residual=True)
    return J, R, time.perf_counter() - t0


def _shift_mean(space: TaylorHood, x: torch.Tensor) -> torch.Tensor:
    u, p = x[: space.n_u], x[space.n_u :]
    return torch.cat([u, p - space.pressure_mean(p)])


def _implicit_step(space, nu, x, J, dofs, gvals, f, viscous, lin, pressure):
    """``x* = x - J^{-1} R(x; theta)``: value unchanged at convergence, gradient = implicit function's."""
    x = x.detach()
    with torch.no_grad():  # the exact Jacobian at the solution (the loop may have ended on a Picard matrix)
        nu_d = nu.detach() if isinstance(nu, torch.Tensor) else nu
        J = flow_system(space, nu_d, x, newton=True, viscous=viscous)
    _, R = flow_system(space, nu, x, newton=False, f=f, viscous=viscous, residual=True)
    if pressure == "mean":  # the pinned dof holds the shifted value: pin it at that value
        gvals = torch.cat([gvals[:-1], x[space.n_u : space.n_u + 1]]) if dofs[-1] == space.n_u else gvals
    A, b = apply_dirichlet(J.detach(), -R, dofs, gvals - x[dofs])
    dx = sla.solve(A, b, config=lin.direct_config)
    xs = x + dx
    return _shift_mean(space, xs) if pressure == "mean" else xs
