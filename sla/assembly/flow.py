"""Incompressible flow forms on a :class:`~sla.assembly.mixed.TaylorHood` space.

The flow matrix is, per cell, the block element matrix

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

On the affine cells of a Taylor--Hood space every block is a reference-element integral times a
few per-cell coefficients (geometry, viscosity, the convecting velocity), so the kernel is a
handful of matrix products ``[cells, coefficients] @ [coefficients, local pairs]``, run over
cache-sized blocks of cells on the CPU and over all cells at once on a GPU.
:func:`flow_system` scatters the blocks into one :class:`~sla.SparseTensor` on the space's cached
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
from .geometry import det_inv_cf
from .mixed import TaylorHood
from .plan import plan_index

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


class _Reference:
    """Reference-element integrals of the flow forms (one per space, dtype and device).

    On an affine cell the physical gradients are ``G[q, a, f] = sum_r dphi[q, a, r] inv[r, f]``
    with ``inv`` constant, so every form is a small reference tensor contracted with a few
    per-cell coefficients: the element kernel is a handful of skinny matrix products
    ``[E, slots] @ [slots, (a, b)]`` instead of quadrature loops.  Each tensor is stored
    transposed, ``[coefficient slots, local pairs]``, the right operand of those products.
    """

    def __init__(self, space: TaylorHood):
        ub, pb = space.ubasis, space.pbasis
        W, dphi, phi, psi = ub.W, ub._dref, ub.phi[0], pb.phi[0]  # [Q], [Q, a, r], [Q, a], [Q, k]
        na, nk, rd = phi.shape[1], psi.shape[1], dphi.shape[2]
        #: viscous ``sum_q w dphi_{a,r} dphi_{b,s}``: ``[(r, s), (a, b)]``
        self.K = torch.einsum("q,qar,qbs->rsab", W, dphi, dphi).reshape(rd * rd, na * na)
        #: mass ``sum_q w phi_a phi_b``: ``[1, (a, b)]``
        self.M = torch.einsum("q,qa,qb->ab", W, phi, phi).reshape(1, na * na)
        #: Oseen ``sum_q w phi_a phi_e dphi_{b,r}`` (``(w . grad) phi_b`` tested by ``phi_a``): ``[(e, r), (a, b)]``
        self.T = torch.einsum("q,qa,qe,qbr->erab", W, phi, phi, dphi).reshape(na * rd, na * na)
        #: Newton ``sum_q w phi_a phi_b dphi_{e,r}`` (``(phi_b . grad) w`` tested by ``phi_a``): ``[(e, r), (a, b)]``
        self.S = torch.einsum("q,qa,qb,qer->erab", W, phi, phi, dphi).reshape(na * rd, na * na)
        #: divergence ``-sum_q w psi_k dphi_{b,r}``: ``[r, (k, b)]``
        self.D = -torch.einsum("q,qk,qbr->rkb", W, psi, dphi).reshape(rd, nk * na)


def _reference(space: TaylorHood) -> _Reference:
    P = space.mesh.points
    key = (P.dtype, str(P.device))
    ref = space._kernel_cache.get(key)
    if ref is None:
        ref = space._kernel_cache[key] = _Reference(space)
    return ref


def _geometry(space: TaylorHood, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inv [e, r, f], |det J| [e])`` of the affine maps of the cells ``sl``, from ``mesh.points``
    (differentiable; ``inv[e, r, f] = dX_r / dx_f``)."""
    m = space.mesh
    xt = m.points.T[:, m.cells[sl].T]  # [d, k, e]
    det, inv = det_inv_cf(xt[:, 1:] - xt[:, :1])  # inv [r, f, E]
    return inv.permute(2, 0, 1), det.abs()


def _indices(space: TaylorHood, device) -> dict[str, torch.Tensor]:
    """The plan's element -> nonzero index split by block, elements first (each cell's writes
    land close together) in the layouts the kernel produces; built once per device, so
    re-assembly does no index work.

    ``uu`` ``[E, (c, f, a, b)]``: component ``c`` of velocity node ``a`` (row) against component
    ``f`` of node ``b``; ``diag`` ``[c][E, (a, b)]`` its ``c = f`` entries; ``pu`` / ``up``
    ``[E, (f, k, b)]`` the divergence and gradient blocks; ``u`` ``[E, a, c]`` / ``p`` ``[E, k]``
    the global velocity / pressure dofs of each cell."""
    plan = space.plan
    key = ("flow-index", str(device))
    out = plan.get(key)
    if out is not None:
        return out
    na, d, nk, E = space.ubasis.phi.shape[2], space.dim, space.pbasis.phi.shape[2], space.mesh.n_cells
    nl, nv = space.n_local, na * d
    idx = plan_index(plan, device).reshape(nl, nl, E).permute(2, 0, 1)  # [E, row, col]
    if plan["pattern"].nnz < 2**31:  # int32 scatter indices: half the memory (and traffic) of the plan's
        idx = idx.to(torch.int32)
    uu = idx[:, :nv, :nv].reshape(E, na, d, na, d).permute(0, 2, 4, 1, 3)  # [E, c, f, a, b]
    dofs = space.dofs().to(device)  # [E, n_local]
    out = {
        "uu": uu.reshape(E, -1).contiguous(),
        "diag": [uu[:, c, c].reshape(E, -1).contiguous() for c in range(d)],
        "pu": idx[:, nv:, :nv].reshape(E, nk, na, d).permute(0, 3, 1, 2).reshape(E, -1).contiguous(),
        "up": idx[:, :nv, nv:].reshape(E, na, d, nk).permute(0, 2, 3, 1).reshape(E, -1).contiguous(),
        "u": dofs[:, :nv].reshape(E, na, d).contiguous(),
        "p": dofs[:, nv:].contiguous(),
    }
    plan[key] = out
    return out


class _ScatterMany(torch.autograd.Function):
    """``values[index_i] += v_i`` for several (values, index) pairs into one ``[nnz]`` vector
    (chained index_add, no concatenation); the backward pass gathers."""

    @staticmethod
    def forward(ctx, nnz: int, indices: tuple, *vals: torch.Tensor) -> torch.Tensor:
        ctx.indices, ctx.shapes = indices, [v.shape for v in vals]
        out = vals[0].new_zeros(nnz)
        for v, i in zip(vals, indices):
            out.index_add_(0, i, v.reshape(-1))
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return (None, None, *(g[i].reshape(s) for i, s in zip(ctx.indices, ctx.shapes)))


def _check_form(space, nu, viscous) -> None:
    _check_nu(nu)
    if viscous not in VISCOUS:
        raise ValueError(f"viscous must be one of {VISCOUS}, got {viscous!r}")
    E = space.mesh.n_cells
    if isinstance(nu, torch.Tensor) and nu.dim() > 0 and tuple(nu.shape) != (E,):
        raise ValueError(f"nu must be a scalar or one value per cell [{E}], got shape {tuple(nu.shape)}")


def _kernel(space, nu, x, newton, sigma, viscous, sl: slice = slice(None)):
    """The element blocks of the flow matrix on the cells ``sl``, elements first: ``scal [e, (a, b)]``
    (the part ``sigma M + nu K + C(w)`` shared by the velocity components), ``sym`` and ``newt``
    ``[e, (c, f, a, b)]`` (or ``None``) and the divergence ``B [e, (f, k, b)]``."""
    ref, d = _reference(space), space.dim
    inv, adet = _geometry(space, sl)  # [e, r, f], [e]
    E = adet.shape[0]
    ga = inv * adet[:, None, None]  # |det| inv
    if isinstance(nu, torch.Tensor) and nu.dim() > 0:
        nu = nu[sl]
    nu_a = (adet * nu)[:, None, None]
    coef, right = [(inv[:, :, None] * inv[:, None]).sum(3) * nu_a], [ref.K]  # nu |det| inv inv^T [e, r, s]
    if not (isinstance(sigma, (int, float)) and sigma == 0):
        coef.append((adet * sigma)[:, None])
        right.append(ref.M)
    we = None
    if x is not None:
        we = x[_indices(space, x.device)["u"][sl]]  # [e, a, c]
        coef.append(torch.bmm(we, ga.transpose(1, 2)))  # |det| w_a . inv_r: [e, a, r]
        right.append(ref.T)
    coef = [c.reshape(E, -1) for c in coef]
    scal = torch.cat(coef, 1) @ torch.cat(right, 0) if len(coef) > 1 else coef[0] @ ref.K
    sym = newt = None
    if viscous == "symmetric":  # 2 eps:eps = grad:grad + grad^T:grad: nu |det| inv[r, f] inv[s, c]
        it = inv.transpose(1, 2)  # [e, f, r]
        cs = (it * nu_a)[:, None, :, :, None] * it[:, :, None, None, :]  # [e, c, f, r, s]
        sym = (cs.reshape(E * d * d, -1) @ ref.K).reshape(E, -1)
    if newton and we is not None:  # |det| w[a, c] inv[r, f]
        cn = we.transpose(1, 2)[:, :, None, :, None] * ga.transpose(1, 2)[:, None, :, None, :]  # [e, c, f, a, r]
        newt = (cn.reshape(E * d * d, -1) @ ref.S).reshape(E, -1)
    B = (ga.transpose(1, 2).reshape(E * d, d) @ ref.D).reshape(E, -1)  # [e, (f, k, b)]
    return scal, sym, newt, B


def _pieces(space, parts, ix, sl: slice) -> tuple[list, list]:
    """The (values, index) pairs that scatter the blocks ``parts`` of the cells ``sl``."""
    scal, sym, newt, B = parts
    uu = newt if sym is None else sym if newt is None else sym + newt
    if uu is None:  # Oseen/Stokes: the velocity blocks are scal on each component's diagonal block
        vals, index = [scal] * space.dim, [i[sl] for i in ix["diag"]]
    else:  # one pass over the whole velocity block: scal added into its c = f entries
        d = space.dim
        uu = uu.clone() if uu is sym else uu  # sym is kept for the residual
        uu.reshape(uu.shape[0], d, d, -1).diagonal(dim1=1, dim2=2).add_(scal[:, :, None])
        vals, index = [uu], [ix["uu"][sl]]
    return [*vals, B, B], [*index, ix["pu"][sl], ix["up"][sl]]


def flow_element_matrices(
    space: TaylorHood,
    nu: float | torch.Tensor,
    w: torch.Tensor | None = None,
    newton: bool = False,
    sigma: float | torch.Tensor = 0.0,
    viscous: str = "laplace",
) -> torch.Tensor:
    """Element matrices ``[n_local, n_local, E]`` (elements last, the local numbering of
    :meth:`TaylorHood.dofs`: velocity ``a * dim + c`` then pressure) of the flow matrix at the state
    ``w`` (``None``: Stokes).  :func:`flow_system` scatters the same blocks without building these."""
    w = _state(space, w, space.mesh.points.dtype, space.mesh.points.device)
    _check_form(space, nu, viscous)
    scal, sym, newt, B = _kernel(space, nu, w, newton and w is not None, sigma, viscous)
    na, d, nk, E = space.ubasis.phi.shape[2], space.dim, space.pbasis.phi.shape[2], space.mesh.n_cells
    eye = torch.eye(d, dtype=scal.dtype, device=scal.device)
    uu = scal.reshape(E, 1, 1, na, na) * eye[:, :, None, None]  # [E, c, f, a, b]
    for part in (sym, newt):
        if part is not None:
            uu = uu + part.reshape(E, d, d, na, na)
    uu = uu.permute(3, 1, 4, 2, 0).reshape(na * d, na * d, E)
    Bk = B.reshape(E, d, nk, na).permute(2, 3, 1, 0).reshape(nk, na * d, E)
    top = torch.cat([uu, Bk.transpose(0, 1)], 1)
    return torch.cat([top, torch.cat([Bk, Bk.new_zeros(nk, nk, E)], 1)], 0)


def _velocity_at_qp(space: TaylorHood, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell velocity dofs ``[E, a, dim]`` and the velocity at the quadrature points ``[Q, dim, E]``."""
    we = x[_indices(space, x.device)["u"]]  # [E, a, c]
    return we, torch.einsum("qa,Eac->qcE", space.ubasis.phi[0], we)


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

    Notes
    -----
    Cost: the element blocks come from reference-element integrals contracted with per-cell
    geometry and state coefficients (a few matrix products over the cells), scattered by
    index lists cached on the plan; the velocity blocks are stored once per component pair
    (the ``c = f`` part once per component), the gradient block is the divergence block's
    values scattered a second time.
    """
    if not isinstance(space, TaylorHood):
        raise TypeError(f"space must be a TaylorHood space, got {type(space).__name__}")
    P = space.mesh.points
    x = _state(space, x, P.dtype, P.device)
    if residual and x is None:
        raise ValueError("residual=True needs the state x")
    if newton and x is None:
        raise ValueError("newton=True needs the state x (the velocity to linearise about)")
    _check_form(space, nu, viscous)
    pattern = space.plan["pattern"].to(P.device)
    ix = _indices(space, P.device)
    tensors = (P, x, nu, sigma)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
        parts = _kernel(space, nu, x, newton, sigma, viscous)  # one graph over all cells
        vals, index = _pieces(space, parts, ix, slice(None))
        A = SparseTensor._make(_ScatterMany.apply(pattern.nnz, tuple(i.reshape(-1) for i in index), *vals), pattern)
        R = _picard_residual(space, x, parts, ix, slice(None), x.new_zeros(space.n), False) if residual else None
    else:  # blocks of cells: the temporaries stay in cache and are reused, the values are written once
        values = P.new_zeros(pattern.nnz)
        R = x.new_zeros(space.n) if residual else None
        for sl in _blocks(space):
            parts = _kernel(space, nu, x, newton, sigma, viscous, sl)
            for v, i in zip(*_pieces(space, parts, ix, sl)):
                values.index_add_(0, i.reshape(-1), v.reshape(-1))
            if residual:
                _picard_residual(space, x, parts, ix, sl, R, True)
        A = SparseTensor._make(values, pattern)
    if not residual:
        return A
    if f is not None:
        R = R - body_force(space, f)
    return A, R


#: velocity-block entries per block of cells of the CPU kernel (1024 triangles, 163 tetrahedra: the
#: temporaries, ~4 KB a triangle, stay in the L2 cache and are reused block after block)
BLOCK_ENTRIES = 1024 * 144


def _blocks(space: TaylorHood) -> list[slice]:
    E = space.mesh.n_cells
    if space.mesh.points.device.type != "cpu":
        return [slice(None)]
    size = max(64, BLOCK_ENTRIES // space.n_local_u**2)
    return [slice(lo, min(lo + size, E)) for lo in range(0, E, size)]


def _picard_residual(space, x, parts, ix, sl, R, inplace: bool) -> torch.Tensor:
    """``R + A_picard(x) x`` restricted to the cells ``sl``, from their element blocks."""
    scal, sym, _, B = parts
    na, d, nk = space.ubasis.phi.shape[2], space.dim, space.pbasis.phi.shape[2]
    iu, ip = ix["u"][sl], ix["p"][sl]
    xu, xp = x[iu], x[ip]  # [e, b, f], [e, k]
    E = xu.shape[0]
    Bk = B.reshape(E, d, nk, na)  # [e, f, k, b]
    ru = torch.bmm(scal.reshape(E, na, na), xu) + (Bk * xp[:, None, :, None]).sum(2).mT  # [e, a, c]
    if sym is not None:  # [e, c, f, a, b] x [e, b, f] -> [e, a, c]
        ru = ru + (sym.reshape(E, d, d, na, na) * xu.mT[:, None, :, None, :]).sum((2, 4)).mT
    rp = (Bk * xu.mT[:, :, None]).sum((1, 3))  # [e, k]
    add = R.index_add_ if inplace else R.index_add
    R = add(0, iu.reshape(-1), ru.reshape(-1))
    return (R.index_add_ if inplace else R.index_add)(0, ip.reshape(-1), rp.reshape(-1))


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
