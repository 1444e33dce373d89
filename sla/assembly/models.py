"""Ready-made forms: diffusion, mass, linear elasticity, advection, source.

Each is a :class:`~sla.assembly.fem.BilinearForm` (or ``LinearForm``) written as
the maths reads -- usable with :func:`~sla.assembly.assemble` like any user
form -- plus, for the hot ones, a batched ``local`` that computes all element
matrices with one ``bmm`` instead of broadcasting over (i, j, q).

Coefficients: ``k`` (diffusion), ``c`` (mass), ``lam``/``mu`` (elasticity,
Lamé parameters), ``b`` (advection velocity ``[..., dim]``), ``f`` (source);
each a number, a per-cell ``[E]`` or per-quadrature-point ``[E, Q]`` tensor, or
a callable ``f(x)``.

>>> from sla.assembly import unit_square, CellBasis, ElementP1, assemble, mass
>>> M = assemble(mass, CellBasis(unit_square(4), ElementP1()))
>>> round(float(M.values.sum()), 12)
1.0
"""

from __future__ import annotations

import torch

from .fem import BilinearForm, Field, LinearForm, ddot, dot, div, grad, sym_grad

__all__ = ["laplace", "diffusion", "mass", "elasticity", "advection", "source"]


def _scalar(w: dict, name: str, basis, default=1.0):
    """A scalar coefficient as ``[E, Q]`` (or a number)."""
    c = w.get(name, default)
    if isinstance(c, Field):
        c = c.value
    if isinstance(c, tuple):
        c = c[0]
    if callable(c):
        c = c(basis.x)
    if isinstance(c, (int, float)):
        return c
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"coefficient {name!r} must be a number, tensor or callable, got {type(c).__name__}")
    E, Q = basis.dx.shape
    if c.dim() == 0:
        return c
    if c.dim() == 1 and c.shape[0] == E:
        return c[:, None]
    if c.shape == (E, Q):
        return c
    raise ValueError(f"coefficient {name!r} must be per cell [{E}] or per quadrature point [{E}, {Q}], got {tuple(c.shape)}")


class _Fast(BilinearForm):
    def __init__(self, fn, fast):
        super().__init__(fn)
        self._fast = fast

    def local(self, ubasis, vbasis, w):
        if ubasis is vbasis and ubasis._vector() == 1:
            return self._fast(ubasis, w)
        return super().local(ubasis, vbasis, w)


def _gram(A: torch.Tensor, B: torch.Tensor, wq) -> torch.Tensor:
    """``sum_q w[e,q] A[e,q,i,:] . B[e,q,j,:]`` as one bmm -> ``[E, i, j]`` (A, B may have E = 1)."""
    Aw = A * (wq[..., None, None] if isinstance(wq, torch.Tensor) else wq)
    E = max(Aw.shape[0], B.shape[0])
    Q, n, d = Aw.shape[1], Aw.shape[2], Aw.shape[3]
    Aw = Aw.expand(E, Q, n, d).transpose(1, 2).reshape(E, n, Q * d)
    Bt = B.expand(E, Q, B.shape[2], d).transpose(1, 2).reshape(E, B.shape[2], Q * d)
    return torch.bmm(Aw, Bt.transpose(1, 2))


# ----------------------------------------------------------------- diffusion
def _diffusion_fn(u, v, w):
    return dot(grad(u), grad(v)) * w.get("k", 1.0)


def _diffusion_fast(b, w):
    return _gram(b.grad, b.grad, _scalar(w, "k", b) * b.dx)


diffusion = _Fast(_diffusion_fn, _diffusion_fast)
diffusion.__doc__ = r"""$\int k \nabla u \cdot \nabla v$ (``k`` defaults to 1)."""
laplace = diffusion


# ---------------------------------------------------------------------- mass
def _mass_fn(u, v, w):
    return dot(u.value, v.value) * w.get("c", 1.0) if u.value.dim() == 5 else u.value * v.value * w.get("c", 1.0)


def _mass_fast(b, w):
    phi = b.phi[..., None]  # [1|E, Q, n, 1]
    return _gram(phi, phi, _scalar(w, "c", b) * b.dx)


mass = _Fast(_mass_fn, _mass_fast)
mass.__doc__ = r"""$\int c\, u v$ (``c`` defaults to 1; vector elements: $\int c\, u \cdot v$)."""


# ---------------------------------------------------------------- elasticity
def _elasticity_fn(u, v, w):
    return 2 * w.mu * ddot(sym_grad(u), sym_grad(v)) + w.lam * div(u) * div(v)


def _elasticity_fast(b, w):
    G = b.grad  # [E, Q, n, d]
    E, Q, n, d = G.shape
    lam = _scalar(w, "lam", b, None) * b.dx
    mu = _scalar(w, "mu", b, None) * b.dx
    # K[a c, b f] = lam d_c phi_a d_f phi_b + mu (delta_cf grad phi_a . grad phi_b + d_f phi_a d_c phi_b)
    lam = lam.expand(E, Q) if isinstance(lam, torch.Tensor) else lam
    mu = mu.expand(E, Q) if isinstance(mu, torch.Tensor) else mu
    K = torch.einsum("eqac,eqbf,eq->eacbf", G, G, lam) + torch.einsum("eqaf,eqbc,eq->eacbf", G, G, mu)
    S = torch.einsum("eqad,eqbd,eq->eab", G, G, mu)
    K = K + S[:, :, None, :, None] * torch.eye(d, dtype=G.dtype, device=G.device)[None, None, :, None, :]
    return K.reshape(E, n * d, n * d)


def _elasticity_local(ubasis, vbasis, w):
    if ubasis is vbasis and ubasis._vector() == ubasis.mesh.dim and "lam" in w and "mu" in w:
        return _elasticity_fast(ubasis, w)
    return BilinearForm.local(elasticity, ubasis, vbasis, w)


elasticity = BilinearForm(_elasticity_fn)
elasticity.local = _elasticity_local
elasticity.__doc__ = r"""$\int 2\mu\, \varepsilon(u):\varepsilon(v) + \lambda\, \mathrm{div} u\, \mathrm{div} v$
(needs ``lam`` and ``mu``; vector element with ``dim`` components)."""


# ----------------------------------------------------------------- advection
def _advection_fn(u, v, w):
    return dot(w.b, grad(u)) * v.value


advection = BilinearForm(_advection_fn)
advection.__doc__ = r"""$\int (b \cdot \nabla u)\, v$ (``b``: velocity ``[dim]``, per cell ``[E, dim]``,
per point ``[E, Q, dim]`` or a callable)."""


# -------------------------------------------------------------------- source
def _source_fn(v, w):
    f = w.get("f", 1.0)
    if isinstance(f, Field):
        f = f.value
    return f * v.value if v.value.dim() == 3 else dot(f, v.value)


source = LinearForm(_source_fn)
source.__doc__ = r"""$\int f v$ (``f`` defaults to 1; vector elements: ``f`` ``[..., dim]``)."""
