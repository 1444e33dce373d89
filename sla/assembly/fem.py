"""Forms and assembly: a pure function of a basis and a form (scikit-fem style).

A bilinear form is a torch function ``fn(u, v, w)`` of the trial function
``u``, the test function ``v`` and the coefficients ``w``, vectorised over
(elements x test dofs x trial dofs x quadrature points).  ``u.value`` /
``u.grad`` (and ``v``'s) broadcast against each other and against ``w.x``,
``w.<name>``; ``assemble`` multiplies by ``dx``, sums over quadrature points and
scatters the element matrices into one :class:`~sla.SparseTensor`:

>>> import torch
>>> from sla.assembly import BilinearForm, CellBasis, ElementP1, assemble, dot, grad, unit_square
>>> @BilinearForm
... def laplace(u, v, w):
...     return dot(grad(u), grad(v))
>>> A = assemble(laplace, CellBasis(unit_square(2), ElementP1()))
>>> A.shape, round(float(A.values.sum()), 12)
(torch.Size([9, 9]), 0.0)

Performance by construction: the element -> nonzero scatter map (and the
:class:`~sla.Pattern`) is built once per (mesh, test element, trial element)
and cached on the mesh, so re-assembling with a new coefficient is one
batched element computation plus one scatter-add.  Everything is torch, so
the result is differentiable w.r.t. coefficients and node coordinates on any
device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..sparse import SparseTensor
from .basis import CellBasis, _Basis
from .plan import ScatterAdd, plan_index, scatter_plan

__all__ = [
    "BilinearForm",
    "LinearForm",
    "Functional",
    "assemble",
    "integrate",
    "Field",
    "Params",
    "dot",
    "ddot",
    "grad",
    "div",
    "sym_grad",
    "trace",
    "eye",
    "scatter_plan",
]


# ------------------------------------------------------------------ fields
class Field:
    """A function at quadrature points: ``value`` and ``grad`` (trailing dims: component(s), then space)."""

    __slots__ = ("value", "grad")

    def __init__(self, value: torch.Tensor, grad: torch.Tensor | None = None) -> None:
        self.value, self.grad = value, grad

    def __mul__(self, other):
        return self.value * (other.value if isinstance(other, Field) else other)

    __rmul__ = __mul__


class Params(dict):
    """Coefficients of a form; attribute access (``w.x``, ``w.k``, ``w.n`` on facets)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"form coefficient {name!r} was not given; have {sorted(self)}") from None


def grad(u: Field) -> torch.Tensor:
    return u.grad


def sum_last(t: torch.Tensor) -> torch.Tensor:
    """``t.sum(-1)`` as explicit adds: elementwise ops keep the elements-innermost memory layout
    of the basis arrays (a reduction would return a layout with a tiny innermost axis, which slows
    down everything that follows)."""
    if t.shape[-1] > 32:
        return t.sum(-1)
    out = t[..., 0]
    for i in range(1, t.shape[-1]):
        out = out + t[..., i]
    return out


def dot(a: torch.Tensor | Field, b: torch.Tensor | Field) -> torch.Tensor:
    """Contraction over the last (space or component) axis."""
    return sum_last(a * b)


def ddot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Double contraction over the last two axes."""
    return sum_last(sum_last(a * b))


def trace(a: torch.Tensor) -> torch.Tensor:
    return sum_last(a.diagonal(dim1=-2, dim2=-1))


def div(u: Field) -> torch.Tensor:
    return trace(u.grad)


def sym_grad(u: Field) -> torch.Tensor:
    g = u.grad
    return 0.5 * (g + g.transpose(-1, -2))


def eye(a: torch.Tensor, dim: int) -> torch.Tensor:
    """``a * I`` as trailing ``[dim, dim]`` matrices."""
    I = torch.eye(dim, dtype=a.dtype, device=a.device)
    return a[..., None, None] * I


def _shape_fields(basis: _Basis, axis: int, nd: int) -> Field:
    """Shape functions laid out on ``nd`` leading dims ``[E, (i,) (j,) Q]`` with dofs on ``axis``."""
    phi = basis.phi.transpose(1, 2)  # [1|E, n, Q]
    gr = basis.grad.transpose(1, 2)  # [E, n, Q, d]
    k = basis._vector()
    if k > 1:  # vector element: local dof a*k + c carries phi_a e_c
        I = torch.eye(k, dtype=phi.dtype, device=phi.device)
        n = phi.shape[1]
        phi = (phi[:, :, None, :, None] * I[None, None, :, None, :]).reshape(phi.shape[0], n * k, -1, k)
        gr = (gr[:, :, None, :, None, :] * I[None, None, :, None, :, None]).reshape(
            gr.shape[0], n * k, -1, k, gr.shape[-1]
        )
    for _ in range(nd - 3):
        phi, gr = phi.unsqueeze(2 - axis), gr.unsqueeze(2 - axis)
    return Field(phi, gr)


def _coefficient(name: str, c, basis: _Basis, nd: int):
    """Broadcast a coefficient to ``[E, 1.., Q, ...]``: scalar, per cell ``[E]``, per point ``[E, Q]``,
    callable ``f(x)``, or a :class:`Field` from ``basis.interpolate``."""
    E, Q = basis.n_elements, basis.nqp
    pad = (1,) * (nd - 2)

    def lay(t):
        return t.reshape(t.shape[0], *pad, *t.shape[1:])

    if isinstance(c, Field):
        return Field(lay(c.value), None if c.grad is None else lay(c.grad))
    if isinstance(c, tuple) and len(c) == 2 and all(isinstance(t, torch.Tensor) for t in c):
        return Field(lay(c[0]), lay(c[1]))
    if callable(c):
        c = c(basis.x)
    if isinstance(c, (list, tuple)) and all(isinstance(t, (int, float)) for t in c):
        return torch.tensor(c, dtype=basis.dx.dtype, device=basis.dx.device)  # a constant vector
    if isinstance(c, (int, float)):
        return c
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"coefficient {name!r} must be a number, tensor, callable or Field, got {type(c).__name__}")
    if c.dim() == 0:
        return c
    if c.shape[0] != E:
        raise ValueError(
            f"coefficient {name!r} must be per cell [{E}], per quadrature point [{E}, {Q}] or a callable f(x), "
            f"got shape {tuple(c.shape)} (interpolate dof vectors with basis.interpolate(u))"
        )
    if c.dim() == 1 or c.shape[1] != Q:
        c = c.reshape(E, 1, *c.shape[1:])
    return lay(c)


def _params(basis: _Basis, w: dict, nd: int) -> Params:
    p = Params({k: _coefficient(k, v, basis, nd) for k, v in w.items()})
    pad = (1,) * (nd - 2)
    p["x"] = basis.x.reshape(basis.x.shape[0], *pad, *basis.x.shape[1:])
    p["dx"] = basis.dx
    if hasattr(basis, "normal"):
        p["n"] = basis.normal.reshape(basis.normal.shape[0], *pad, *basis.normal.shape[1:])
    return p


# ------------------------------------------------------------------- forms
class BilinearForm:
    """Decorator/wrapper for ``fn(u, v, w) -> [E, i, j, Q]`` (broadcastable)."""

    def __init__(self, fn: Callable[[Field, Field, Params], torch.Tensor]):
        self.fn = fn
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = getattr(fn, "__name__", "form")

    def local(self, ubasis: _Basis, vbasis: _Basis, w: dict) -> torch.Tensor:
        """Element matrices ``[E, n_test, n_trial]``."""
        u, v = _shape_fields(ubasis, 1, 4), _shape_fields(vbasis, 0, 4)
        val = self.fn(u, v, _params(vbasis, w, 4))
        return sum_last(val * vbasis.dx[:, None, None, :]).expand(vbasis.n_elements, vbasis.element.n, ubasis.element.n)


class LinearForm:
    """Decorator/wrapper for ``fn(v, w) -> [E, i, Q]`` (broadcastable)."""

    def __init__(self, fn: Callable[[Field, Params], torch.Tensor]):
        self.fn = fn
        self.__doc__ = getattr(fn, "__doc__", None)

    def local(self, basis: _Basis, w: dict) -> torch.Tensor:
        v = _shape_fields(basis, 0, 3)
        val = self.fn(v, _params(basis, w, 3))
        return sum_last(val * basis.dx[:, None, :]).expand(basis.n_elements, basis.element.n)


class Functional:
    """Decorator/wrapper for ``fn(w) -> [E, Q]``: an integral of coefficients (errors, energies)."""

    def __init__(self, fn: Callable[[Params], torch.Tensor]):
        self.fn = fn


# ----------------------------------------------------------------- scatter
def _check_basis(b, name):
    if not isinstance(b, _Basis):
        raise TypeError(f"{name} must be a CellBasis or FacetBasis, got {type(b).__name__}")


def assemble(
    form: BilinearForm | LinearForm | Functional, basis: _Basis, test_basis: _Basis | None = None, **w: Any
) -> Any:
    """Assemble a form on a basis.

    Parameters
    ----------
    form : BilinearForm, LinearForm or Functional
    basis : CellBasis or FacetBasis
        Trial basis (and test basis unless ``test_basis`` is given).
    **w : coefficients: numbers, per-cell ``[E]`` or per-point ``[E, Q]`` tensors,
        callables ``f(x)``, or fields from ``basis.interpolate``.

    Returns
    -------
    SparseTensor (bilinear), tensor ``[ndofs]`` (linear) or a scalar tensor (functional).
    """
    _check_basis(basis, "basis")
    if isinstance(form, Functional):
        val = form.fn(_params(basis, w, 2))
        return (val * basis.dx).sum()
    vb = basis if test_basis is None else test_basis
    _check_basis(vb, "test_basis")
    if isinstance(form, LinearForm):
        ke = form.local(vb, w)
        return ke.new_zeros(vb.ndofs).index_add(0, vb.dofs.reshape(-1), ke.reshape(-1))
    if not isinstance(form, BilinearForm):
        raise TypeError(f"form must be a BilinearForm, LinearForm or Functional, got {type(form).__name__}")
    if vb.mesh._cache is not basis.mesh._cache or (vb.cells is None) != (basis.cells is None):
        raise ValueError("trial and test bases must live on the same mesh and the same cells/facets")
    if vb.nqp != basis.nqp:
        raise ValueError(
            f"trial and test bases need the same quadrature (pass intorder=), got {basis.nqp} and {vb.nqp} points"
        )
    if hasattr(form, "assemble_fast"):  # cached coefficient -> values map (forms linear in a coefficient)
        A = form.assemble_fast(basis, vb, w)
        if A is not None:
            return A
    ke_t = form.local_t(basis, vb, w) if hasattr(form, "local_t") else None
    if ke_t is not None:  # batched kernel, elements last [n_test, n_trial, E]
        return scatter(ke_t, basis, vb, elements_last=True)
    if _streamable(basis, vb):
        return _streamed(form, basis, vb, w)
    return scatter(form.local(basis, vb, w), basis, vb)


_GENERIC_BLOCK_WORK = 1 << 20


def _streamable(*bases) -> bool:
    return all(isinstance(b, CellBasis) and not b.requires_grad and "geometry" not in b._cache for b in bases)


def _slice_coefficient(c, sl: slice, E: int):
    """The part of a coefficient that belongs to the cells ``sl`` (per-cell data is sliced)."""
    if isinstance(c, Field):
        return Field(c.value[sl], None if c.grad is None else c.grad[sl])
    if isinstance(c, tuple) and len(c) == 2 and all(isinstance(t, torch.Tensor) for t in c):
        return (c[0][sl], c[1][sl])
    if isinstance(c, torch.Tensor) and c.dim() > 0 and c.shape[0] == E:
        return c[sl]
    return c


def _streamed(form, basis, vb, w):
    """A general form evaluated block by block: no whole-mesh geometry or element arrays."""
    E = basis.n_elements
    # a general form broadcasts over (cell, i, j, q, component): size blocks by that (measured on the
    # CPU: ~2^20 entries per temporary is 2-3x faster than blocks sized for the basis alone)
    per_cell = vb.element.n * basis.element.n * basis.nqp * basis.mesh.dim * max(basis._vector(), vb._vector())
    size = min(basis.block_size(), vb.block_size(), max(256, _GENERIC_BLOCK_WORK // per_cell))
    plan = scatter_plan(basis.mesh, vb.element, basis.element)
    if E == 0:
        return SparseTensor._make(basis.mesh.points.new_zeros(plan["pattern"].nnz), plan["pattern"])
    index = plan_index(plan, basis.mesh.points.device, None, elements_last=False)
    vals = None
    for lo in range(0, E, size):
        sl = slice(lo, min(lo + size, E))
        ub = basis.view(sl)
        wb = ub if vb is basis else vb.view(sl)
        ke = form.local(ub, wb, {k: _slice_coefficient(v, sl, E) for k, v in w.items()})
        if vals is None:
            vals = ke.new_zeros(plan["pattern"].nnz)
        idx = index[sl].reshape(-1)
        vals = vals.index_add(0, idx, ke.reshape(-1)) if ke.requires_grad else vals.index_add_(0, idx, ke.reshape(-1))
    return SparseTensor._make(vals, plan["pattern"].to(vals.device))


def scatter(
    ke: torch.Tensor, basis: _Basis, test_basis: _Basis | None = None, elements_last: bool = False
) -> SparseTensor:
    """Sum element matrices ``[E, n_test, n_trial]`` (or ``[n_test, n_trial, E]`` with
    ``elements_last``) into a SparseTensor on the cached pattern (one index_add)."""
    vb = basis if test_basis is None else test_basis
    plan = scatter_plan(basis.mesh, vb.element, basis.element)
    pattern = plan["pattern"].to(ke.device)
    index = plan_index(plan, ke.device, basis.cells, elements_last)
    return SparseTensor._make(ScatterAdd.apply(ke.reshape(-1), index.reshape(-1), pattern.nnz), pattern)


def integrate(fn: Callable[[Params], torch.Tensor], basis: _Basis, **w: Any) -> torch.Tensor:
    """``sum_e sum_q fn(w) dx`` -- e.g. an L2 error with ``w.uh = basis.interpolate(u)``."""
    return assemble(Functional(fn), basis, **w)
