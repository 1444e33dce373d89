"""Bases: an element evaluated on the cells (or boundary facets) of a mesh at quadrature points.

A basis holds, as torch tensors computed from ``mesh.points`` (so gradients
reach the node coordinates), everything a form needs:

* ``x``    ``[E, Q, dim]`` physical quadrature points,
* ``dx``   ``[E, Q]`` quadrature weight times ``|det J|`` (or facet measure),
* ``phi``  ``[1 or E, Q, n]`` shape function values,
* ``grad`` ``[E, Q, n, dim]`` physical shape function gradients,
* ``dofs`` ``[E, n]`` global degrees of freedom,
* ``normal`` ``[E, Q, dim]`` outward unit normals (facet bases only).

The geometry is the mesh's own P1/Q1 map.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .elements import Element
from .geometry import AFFINE, REF_VERTICES, det_inv, det_inv_cf, jacobian_cf, map_gradients, map_shape
from .mesh import CELL_TYPES, Mesh
from .quadrature import quadrature

__all__ = ["CellBasis", "FacetBasis", "BlockView"]


def _check_cells(det: torch.Tensor, J: torch.Tensor, sl: slice, d: int) -> None:
    """A zero-area / zero-volume (or inverted-to-flat) cell is an error naming the cell, not a
    singular matrix later: ``|det J|`` at or below rounding of the cell's size ``max|J|^d``."""
    with torch.no_grad():
        a = det.detach().abs()
        size = J.detach().abs().amax(dim=(0, 1)) ** d  # [e] or [Q, e]
        bad = ~(a > 64 * torch.finfo(a.dtype).eps * size)  # NaN counts as bad
        if bad.dim() > 1:
            bad = bad.any(0)
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0]) + (sl.start or 0)
            count = int(bad.sum())
            raise ValueError(
                f"mesh cell {first} is degenerate (zero {'area' if d == 2 else 'volume' if d == 3 else 'length'}: "
                f"|det J| ~ 0){f'; {count} such cells in this block' if count > 1 else ''}: fix the mesh "
                "(repeated or collinear vertices)"
            )


def _combine(coef: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
    """``out[i] = sum_r coef[i, r] * vecs[r]`` for a small constant ``coef`` (skinny GEMMs are slow on
    the CPU; a few scaled adds of long vectors run at memory speed).  Zero coefficients are skipped."""
    c = coef.detach().cpu().tolist()
    if not (torch.is_grad_enabled() and vecs.requires_grad):  # write straight into one buffer
        out = torch.empty((len(c),) + tuple(vecs.shape[1:]), dtype=vecs.dtype, device=vecs.device)
        for i, ci in enumerate(c):
            nz = [(r, v) for r, v in enumerate(ci) if v != 0.0]
            if not nz:
                out[i].zero_()
                continue
            torch.mul(vecs[nz[0][0]], nz[0][1], out=out[i])
            for r, v in nz[1:]:
                out[i].add_(vecs[r], alpha=v)
        return out
    rows = []
    for ci in c:
        acc = None
        for r, v in enumerate(ci):
            if v == 0.0:
                continue
            term = vecs[r] if v == 1.0 else -vecs[r] if v == -1.0 else v * vecs[r]
            acc = term if acc is None else acc + term
        rows.append(acc if acc is not None else torch.zeros_like(vecs[0]))
    return torch.stack(rows)


class _Basis:
    mesh: Mesh
    element: Element

    @property
    def n_elements(self) -> int:
        return self.dofs.shape[0]

    @property
    def ndofs(self) -> int:
        return self.element.ndofs(self.mesh)

    @property
    def nqp(self) -> int:
        return self.dx.shape[1]

    @property
    def requires_grad(self) -> bool:
        return torch.is_grad_enabled() and self.mesh.points.requires_grad

    def _vector(self):
        return getattr(self.element, "ncomp", 1)

    def interpolate(self, u: torch.Tensor):
        """Value ``[E, Q(, ncomp)]`` and gradient ``[E, Q(, ncomp), dim]`` at the quadrature points of a dof vector."""
        if not isinstance(u, torch.Tensor) or u.shape[-1:] != (self.ndofs,):
            raise ValueError(f"u must be a dof vector of shape [{self.ndofs}], got {getattr(u, 'shape', type(u))}")
        k = self._vector()
        ue = u[self.dofs]  # [E, n]
        if k > 1:
            ue = ue.reshape(ue.shape[0], -1, k)  # [E, nb, k]
            return torch.einsum("eqn,enk->eqk", self.phi.expand(ue.shape[0], -1, -1), ue), torch.einsum(
                "eqnd,enk->eqkd", self.grad, ue
            )
        return (self.phi * ue[:, None, :]).sum(-1), torch.einsum("eqnd,en->eqd", self.grad, ue)

    def project_points(self, f) -> torch.Tensor:
        """Nodal interpolant ``f(dof_points)`` (``[ndofs]``, or ``[ndofs * ncomp]`` interleaved)."""
        v = f(self.element.dof_points(self.mesh))
        k = self._vector()
        return v.reshape(-1) if k > 1 else v


class CellBasis(_Basis):
    """``element`` on every cell of ``mesh`` with a quadrature of degree ``intorder``
    (default ``2 * element.degree``).

    Geometry is computed on first use (the ready-made forms stream it in blocks and
    never store it).  When ``mesh.points`` requires grad (and grad mode is on) the
    geometry is recomputed at each use, so every assembly gets its own graph.

    >>> from sla.assembly import unit_square, CellBasis, ElementP1
    >>> b = CellBasis(unit_square(2), ElementP1())
    >>> round(float(b.dx.sum()), 12)
    1.0
    """

    #: block size when kernels stream over the mesh: on the CPU about ``CHUNK_WORK`` gradient
    #: entries (Q n d per cell) per block, at most ``CHUNK`` cells, so intermediates stay in
    #: cache; on a GPU ``CHUNK_GPU`` cells, so launch overhead stays small
    CHUNK = 1 << 16
    CHUNK_WORK = 1 << 21
    CHUNK_GPU = 1 << 21

    def __init__(self, mesh: Mesh, element: Element, intorder: int | None = None):
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a sla.assembly.Mesh, got {type(mesh).__name__}")
        if not isinstance(element, Element):
            raise TypeError(f"element must be a sla.assembly Element, got {type(element).__name__}")
        element.check_mesh(mesh)
        self.mesh, self.element = mesh, element
        self._cache: dict = {}  # geometry (computed on first use), unit element matrices of ready-made forms
        P = mesh.points
        self.X, self.W = quadrature(
            mesh.cell_type, 2 * element.degree if intorder is None else intorder, P.dtype, P.device
        )
        self._dref = element.dphi(self.X)  # [Q, n, rd]
        self._psi = map_shape(mesh.cell_type, self.X)  # [Q, k]
        self.phi = element.phi(self.X)[None]  # [1, Q, n]
        self.dofs = element.dofs(mesh)
        self.cells = None  # rows of the cell map (all cells, in order)

    @property
    def n_elements(self) -> int:
        return self.mesh.n_cells

    @property
    def nqp(self) -> int:
        return self.W.shape[0]

    @property
    def requires_grad(self) -> bool:
        """Whether the geometry is differentiated (node coordinates require grad, grad mode on)."""
        return torch.is_grad_enabled() and self.mesh.points.requires_grad

    def geometry(self, sl: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grad [Q, n, d, e], dx [Q, e])`` of the cells ``sl``, elements last (computed, not cached)."""
        P, W, dref = self.mesh.points, self.W, self._dref
        # component-first layout, elements last: every op below runs over contiguous length-E vectors
        xt = P.T[:, self.mesh.cells[sl].T]  # [d, k, e]
        d, _, E = xt.shape
        Q, n = dref.shape[0], dref.shape[1]
        J = jacobian_cf(xt, self.mesh.cell_type, self.X)  # J[a, r] = dx_a / dX_r: [d, rd, e] or [d, rd, Q, e]
        det, inv = det_inv_cf(J)  # inv [rd, d, e] or [r, a, Q, e]
        _check_cells(det, J, sl, d)
        if self.mesh.cell_type in AFFINE:  # one Jacobian per cell
            gT = _combine(dref.reshape(Q * n, d), inv).reshape(Q, n, d, E)
            dxT = det.abs()[None, :] * W[:, None]  # [Q, e]
        else:
            gT = dref[:, :, 0, None, None] * inv[0].transpose(0, 1)[:, None]
            for r in range(1, d):
                gT = gT + dref[:, :, r, None, None] * inv[r].transpose(0, 1)[:, None]
            dxT = det.abs() * W[:, None]
        return gT, dxT

    def points(self, sl: slice = slice(None)) -> torch.Tensor:
        """Physical quadrature points ``[e, Q, dim]`` of the cells ``sl``."""
        xt = self.mesh.points.T[:, self.mesh.cells[sl].T]  # [d, k, e]
        return torch.matmul(self._psi, xt).permute(2, 1, 0)

    def block_size(self) -> int:
        """Cells per block of :meth:`blocks` (cache-sized on the CPU)."""
        if self.mesh.points.device.type != "cpu":
            return self.CHUNK_GPU
        work = self._dref.shape[0] * self._dref.shape[1] * self.mesh.dim
        return min(self.CHUNK, max(256, self.CHUNK_WORK // work))

    def blocks(self, size: int | None = None) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """``(slice, grad [Q, n, d, e], dx [Q, e])`` over blocks of cells (whole arrays if already computed)."""
        if "geometry" in self._cache:
            gT, dxT = self._cache["geometry"]
            yield slice(None), gT, dxT
            return
        E = self.n_elements
        size = size or self.block_size()
        for lo in range(0, E, size):
            sl = slice(lo, min(lo + size, E))
            yield (sl, *self.geometry(sl))

    def view(self, sl: slice, geometry: tuple[torch.Tensor, torch.Tensor] | None = None) -> BlockView:
        """This basis restricted to the cells ``sl`` (a basis object forms can run on)."""
        return BlockView(self, sl, self.geometry(sl) if geometry is None else geometry)

    def _full(self):
        if self.requires_grad:  # differentiated geometry: a fresh graph per use, never cached
            return self.geometry()
        g = self._cache.get("geometry")
        if g is None:
            g = self._cache["geometry"] = self.geometry()
        return g

    _gT = property(lambda self: self._full()[0], doc="Gradients ``[Q, n, d, E]`` (elements last).")
    _dxT = property(lambda self: self._full()[1], doc="Weights ``[Q, E]`` (elements last).")
    grad = property(lambda self: self._full()[0].permute(3, 0, 1, 2), doc="Gradients ``[E, Q, n, d]``.")
    dx = property(lambda self: self._full()[1].T, doc="Quadrature weights times ``|det J|``, ``[E, Q]``.")

    @property
    def x(self) -> torch.Tensor:
        """Physical quadrature points ``[E, Q, dim]`` (computed on first use)."""
        if self.requires_grad:
            return self.points()
        x = self._cache.get("x")
        if x is None:
            x = self._cache["x"] = self.points()
        return x


class BlockView(_Basis):
    """A :class:`CellBasis` restricted to a block of cells (what streamed assembly runs forms on)."""

    def __init__(self, basis: CellBasis, sl: slice, geometry: tuple[torch.Tensor, torch.Tensor]) -> None:
        gT, dxT = geometry
        self.mesh, self.element, self._basis, self._sl = basis.mesh, basis.element, basis, sl
        self.phi, self.X, self.W = basis.phi, basis.X, basis.W
        self.grad, self.dx = gT.permute(3, 0, 1, 2), dxT.T
        self.dofs = basis.dofs[sl]
        self.cells = None
        self._x = None

    @property
    def x(self) -> torch.Tensor:
        if self._x is None:
            self._x = self._basis.points(self._sl)
        return self._x


class FacetBasis(_Basis):
    """``element`` traced on the facets of a facet set (``'boundary'``, a set name, or node lists).

    Shape functions are the cell's, evaluated at the facet quadrature points,
    so facet forms assemble into the same sparsity pattern as cell forms.
    """

    def __init__(
        self, mesh: Mesh, element: Element, facets: str | torch.Tensor = "boundary", intorder: int | None = None
    ) -> None:
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a sla.assembly.Mesh, got {type(mesh).__name__}")
        element.check_mesh(mesh)
        self.mesh, self.element = mesh, element
        P = mesh.points
        info = CELL_TYPES[mesh.cell_type]
        cells, local = mesh.facet_cells(facets)
        self.cells = cells
        ft = info["facet"]
        Xf, Wf = quadrature(ft, 2 * element.degree if intorder is None else intorder, P.dtype, P.device)
        loc = torch.tensor(info["facets"], device=P.device)  # [nf, kf]
        refv = torch.tensor(REF_VERTICES[mesh.cell_type], dtype=P.dtype, device=P.device)
        if ft == "vertex":  # 1D: the facet is a vertex
            Xc = refv[loc[:, 0]][:, None, :]  # [nf, 1, 1]
            psi = torch.ones(1, 1, dtype=P.dtype, device=P.device)
        else:
            psi = map_shape(ft, Xf)  # [Q, kf]
            Xc = torch.einsum("qk,fkr->fqr", psi, refv[loc])  # [nf, Q, rd]
        Xc = Xc[local]  # [F, Q, rd]
        xf = P[mesh.cells[cells[:, None], loc[local]]]  # [F, kf, d]
        self.x = torch.einsum("qk,fkd->fqd", psi, xf)
        d = mesh.dim
        if d == 1:
            meas = torch.ones(cells.shape[0], 1, dtype=P.dtype, device=P.device)
            nrm = torch.ones(cells.shape[0], 1, 1, dtype=P.dtype, device=P.device)
        else:
            T = torch.einsum("qkr,fkd->fqdr", map_gradients(ft, Xf), xf)  # tangents [F, Q, d, d-1]
            if d == 2:
                nrm = torch.stack([T[..., 1, 0], -T[..., 0, 0]], -1)
            else:
                nrm = torch.linalg.cross(T[..., 0], T[..., 1])
            meas = nrm.norm(dim=-1)
            nrm = nrm / meas[..., None]
        centroid = P[mesh.cells[cells]].mean(1)  # [F, d]
        sign = torch.sign(((self.x - centroid[:, None, :]) * nrm).sum(-1, keepdim=True)).detach()
        self.normal = nrm * sign
        self.dx = meas * Wf
        # cell shape functions and their physical gradients at the facet points
        xc = P[mesh.cells[cells]]  # [F, k, d]
        J = torch.einsum("ekd,eqkr->eqdr", xc, map_gradients(mesh.cell_type, Xc))
        _, inv = det_inv(J)
        self.phi = element.phi(Xc)  # [F, Q, n]
        self.grad = torch.einsum("eqnr,eqrd->eqnd", element.dphi(Xc), inv)
        self.dofs = element.dofs(mesh)[cells]
