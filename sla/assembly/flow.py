"""Incompressible flow forms on a :class:`~sla.assembly.mixed.TaylorHood` space.

One batched kernel computes, per cell, the block element matrix of

.. math::

    \\begin{bmatrix} \\sigma M + \\nu K + C(w) + [N(w)] & B^T \\\\ B & 0 \\end{bmatrix}

* ``nu K``  viscous term: ``nu int grad u : grad v`` (``viscous='laplace'``, the form whose natural
  boundary condition is the do-nothing outflow of the DFG benchmarks) or
  ``2 nu int eps(u) : eps(v)`` (``viscous='symmetric'``);
* ``C(w)``  Oseen/Picard convection ``int (w . grad u) . v``;
* ``N(w)``  the rest of the Newton Jacobian of the convection, ``int (u . grad w) . v``
  (``newton=True``);
* ``B``     divergence ``-int q div u``; ``B^T`` the gradient ``-int p div v``;
* ``sigma M`` the velocity mass (time stepping: ``sigma = 1.5 / dt`` for BDF2).

:func:`flow_system` scatters it into one :class:`~sla.SparseTensor` on the space's cached
pattern (same :class:`~sla.Pattern` object every call: no index work after the first) and,
given the current state ``x``, also returns the steady residual
``R(x) = [sigma M u + nu K u + (u . grad) u + B^T p - f ; B u]`` (``sigma`` included).
Everything is torch: results are differentiable w.r.t. ``nu``, ``sigma``, the state, the body
force and the mesh node coordinates (make ``mesh.points`` require grad).

>>> import torch
>>> from sla.assembly import unit_square
>>> from sla.assembly.mixed import TaylorHood
>>> from sla.assembly.flow import flow_system
>>> V = TaylorHood(unit_square(4))
>>> A = flow_system(V, nu=1.0)                       # Stokes
>>> B = V.block(A, "pu"); round(float(B.values.sum()), 12)   # -int div(u) of all basis functions
0.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..sparse import SparseTensor
from .mixed import TaylorHood
from .plan import ScatterAdd, plan_index

__all__ = ["flow_system", "flow_element_matrices", "pressure_operators", "VISCOUS"]

VISCOUS = ("laplace", "symmetric")


def _check_nu(nu) -> None:
    v = nu.detach() if isinstance(nu, torch.Tensor) else nu
    if isinstance(v, bool) or not isinstance(v, (int, float, torch.Tensor)):
        raise TypeError(f"nu must be a positive number or tensor, got {type(nu).__name__}")
    if isinstance(v, torch.Tensor):
        if not bool(torch.isfinite(v).all()) or not bool((v > 0).all()):
            raise ValueError("nu must be positive and finite (nu = U L / Re; Re must be > 0)")
    elif not (v > 0 and v < float("inf")):
        raise ValueError(f"nu must be positive and finite (nu = U L / Re; Re must be > 0), got {nu!r}")


def _state(space: TaylorHood, x: torch.Tensor | None, dtype, device):
    if x is None:
        return None
    if not isinstance(x, torch.Tensor) or x.shape != (space.n,):
        raise ValueError(f"x (the flow state) must be a vector of shape [{space.n}], got {getattr(x, 'shape', x)}")
    return x.to(dtype=dtype, device=device)


def flow_element_matrices(
    space: TaylorHood,
    nu: float | torch.Tensor,
    w: torch.Tensor | None = None,
    newton: bool = False,
    sigma: float | torch.Tensor = 0.0,
    viscous: str = "laplace",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Element matrices ``[n_local, n_local, E]`` (elements last) and the velocity at the
    quadrature points ``[Q, dim, E]`` of the state ``w`` (``None`` without one)."""
    _check_nu(nu)
    if viscous not in VISCOUS:
        raise ValueError(f"viscous must be one of {VISCOUS}, got {viscous!r}")
    ub, pb = space.ubasis, space.pbasis
    G, W = ub._gT, ub._dxT  # [Q, a, d, E], [Q, E]
    phi = ub.phi[0]  # [Q, a]
    psi = pb.phi[0]  # [Q, k]
    d, E = space.dim, space.mesh.n_cells
    na, nk = phi.shape[1], psi.shape[1]
    nu_t = nu if not isinstance(nu, torch.Tensor) or nu.dim() == 0 else nu.reshape(1, -1)  # scalar or per cell
    K = torch.einsum("qadE,qbdE,qE->abE", G, G, W)
    scal = K * nu_t
    if not (isinstance(sigma, (int, float)) and sigma == 0):
        scal = scal + sigma * torch.einsum("qa,qb,qE->abE", phi, phi, W)
    wq = None
    if w is not None:
        we, wq = _velocity_at_qp(space, w)
        adv = torch.einsum("qcE,qbcE->qbE", wq, G)  # w . grad phi_b
        scal = scal + torch.einsum("qE,qa,qbE->abE", W, phi, adv)
    I = torch.eye(d, dtype=G.dtype, device=G.device)
    Kuu = torch.einsum("abE,cf->acbfE", scal, I)  # [a, c, b, f, E]
    if viscous == "symmetric":  # 2 eps:eps = grad:grad + grad^T:grad
        Kuu = Kuu + torch.einsum("qE,qafE,qbcE->acbfE", W, G, G) * (
            nu_t if not isinstance(nu_t, torch.Tensor) or nu_t.dim() == 0 else nu_t[None, None, None]
        )
    if newton and w is not None:
        gw = torch.einsum("aEc,qafE->qcfE", we, G)  # d w_c / d x_f
        Kuu = Kuu + torch.einsum("qE,qa,qb,qcfE->acbfE", W, phi, phi, gw)
    nu_l = na * d
    Bk = -torch.einsum("qE,qk,qbfE->kbfE", W, psi, G).reshape(nk, nu_l, E)
    Kuu = Kuu.reshape(nu_l, nu_l, E)
    top = torch.cat([Kuu, Bk.transpose(0, 1)], 1)
    bot = torch.cat([Bk, Bk.new_zeros(nk, nk, E)], 1)
    return torch.cat([top, bot], 0), wq


def _velocity_at_qp(space: TaylorHood, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell velocity dofs ``[a, E, dim]`` and the velocity at the quadrature points ``[Q, dim, E]``."""
    ub = space.ubasis
    we = x[: space.n_u].reshape(-1, space.dim)[ub.dofs.T]  # [a, E, d]
    return we, torch.einsum("qa,aEc->qcE", ub.phi[0], we)


def flow_system(
    space: TaylorHood,
    nu: float | torch.Tensor,
    x: torch.Tensor | None = None,
    newton: bool = False,
    sigma: float | torch.Tensor = 0.0,
    f: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None = None,
    viscous: str = "laplace",
    residual: bool = False,
):
    """Assemble the flow matrix on ``space``'s cached pattern.

    Parameters
    ----------
    space : TaylorHood
    nu : float or tensor
        Kinematic viscosity (``1 / Re`` for unit speed and length), a scalar or per cell ``[E]``.
    x : tensor ``[space.n]``, optional
        The state whose velocity is the convecting field (``None``: Stokes).
    newton : bool
        Add the Newton part ``int (u . grad w) . v`` (full Jacobian) instead of the Picard/Oseen
        linearisation alone.
    sigma : float or tensor
        Coefficient of the velocity mass matrix (``1/dt``-like terms of time stepping).
    f : callable ``f(x) -> [..., dim]`` or tensor ``[dim]``, optional
        Body force (enters the residual only).
    viscous : ``'laplace'`` or ``'symmetric'``
    residual : bool
        Also return ``R(x) = A_picard(x) x - F`` (``x`` required), the steady (or
        ``sigma``-shifted) residual of the nonlinear equations.

    Returns
    -------
    SparseTensor ``(n, n)``, or ``(SparseTensor, residual [n])`` with ``residual=True``.
    """
    if not isinstance(space, TaylorHood):
        raise TypeError(f"space must be a TaylorHood space, got {type(space).__name__}")
    P = space.mesh.points
    x = _state(space, x, P.dtype, P.device)
    if residual and x is None:
        raise ValueError("residual=True needs the state x")
    if newton and x is None:
        raise ValueError("newton=True needs the state x (the velocity to linearise about)")
    plan = space.plan
    pattern = plan["pattern"].to(P.device)
    index = plan_index(plan, P.device)
    if not residual or not newton:
        ke, _ = flow_element_matrices(space, nu, x, newton, sigma, viscous)
        A = SparseTensor._make(ScatterAdd.apply(ke.reshape(-1), index.reshape(-1), pattern.nnz), pattern)
        if not residual:
            return A
        kp = ke
    else:
        kj, _ = flow_element_matrices(space, nu, x, True, sigma, viscous)
        A = SparseTensor._make(ScatterAdd.apply(kj.reshape(-1), index.reshape(-1), pattern.nnz), pattern)
        kp, _ = flow_element_matrices(space, nu, x, False, sigma, viscous)
    dofs = space.dofs().T  # [n_local, E]
    xe = x[dofs]  # [n_local, E]
    re = torch.einsum("ijE,jE->iE", kp, xe)
    R = x.new_zeros(space.n).index_add(0, dofs.reshape(-1), re.reshape(-1))
    if f is not None:
        R = R - body_force(space, f)
    return A, R


def body_force(space: TaylorHood, f: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Load vector ``int f . v dx`` of a body force (``[n]``, zero in the pressure rows)."""
    ub = space.ubasis
    d = space.dim
    fx = f(ub.x) if callable(f) else torch.as_tensor(f, dtype=ub.dx.dtype, device=ub.dx.device).expand(*ub.x.shape)
    if fx.shape != ub.x.shape:
        raise ValueError(f"f(x) must return [..., {d}] (one vector per point), got {tuple(fx.shape)}")
    fe = torch.einsum("eq,qa,eqc->eac", ub.dx, ub.phi[0], fx)  # [E, a, c]
    vdofs = space.velocity.dofs(space.mesh)
    F = fe.new_zeros(space.n)
    return F.index_add(0, vdofs.reshape(-1), fe.reshape(-1))


def pressure_operators(
    space: TaylorHood, nu: float | torch.Tensor = 1.0, x: torch.Tensor | None = None
) -> dict[str, SparseTensor]:
    """P1 pressure-space operators of the block preconditioners: ``'mass'`` ``Mp``, ``'laplace'``
    ``Ap`` and (with a state ``x``) the convection--diffusion ``'convection_diffusion'``
    ``Fp = nu Ap + int (w . grad p) q`` of pressure convection--diffusion (PCD)."""
    from .fem import assemble
    from .models import advection, laplace, mass

    pb = space.pbasis
    out = {"mass": assemble(mass, pb), "laplace": assemble(laplace, pb)}
    if x is not None:
        x = _state(space, x, pb.dx.dtype, pb.dx.device)
        _, wq = _velocity_at_qp(space, x)  # the velocity at the (shared) quadrature points
        Cp = assemble(advection, pb, b=wq.permute(2, 0, 1).contiguous())
        out["convection_diffusion"] = out["laplace"] * nu + Cp
    return out
