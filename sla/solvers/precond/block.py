"""Block preconditioners of saddle-point systems ``[[F, B^T], [B, -C]]`` (incompressible flow).

:class:`BlockTriangular` applies the inverse of the upper block-triangular matrix
``[[F, B^T], [0, S]]``: ``z_p = S^{-1} r_p``, then ``z_u = F^{-1} (r_u - B^T z_p)`` (Elman,
Silvester & Wathen, *Finite Elements and Fast Iterative Solvers*, 2nd ed., ch. 9).  With exact
blocks and the exact Schur complement ``S = -C - B F^{-1} B^T`` GMRES converges in two
iterations; with the approximations below the iteration counts are (nearly) independent of
the mesh size.  It changes between applications when its inner solves do, so use it with
FGMRES (:func:`sla.solvers.krylov.fgmres`).

Building blocks (all composed from the existing preconditioners):

* :class:`ComponentwiseSolve` -- ``F^{-1}`` of a vector operator whose components share one
  scalar operator (``F = F_s (x) I``: Picard/Oseen velocity block), applied to all
  components at once as ``K = dim`` columns of one preconditioner (default: AMG);
* :class:`MassSchur` -- ``S^{-1} ~ -nu Mp^{-1}`` (Stokes; ``Mp`` the pressure mass matrix);
* :class:`PCDSchur` -- ``S^{-1} ~ -Mp^{-1} Fp Ap^{-1}`` (pressure convection--diffusion for
  Navier--Stokes; ``Ap`` pressure Laplacian, ``Fp`` its convection--diffusion);
* :class:`LSCSchur` -- the least-squares commutator (scaled BFBt) for Navier--Stokes.

Pinned dofs (rows and columns of the system that are identity) are passed through unchanged
(``z[pinned] = r[pinned]``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...products import spmm_nograd
from ...sparse import SparseTensor
from .base import Preconditioner
from .factory import make_preconditioner

__all__ = ["BlockTriangular", "ComponentwiseSolve", "LSCSchur", "MassSchur", "PCDSchur"]

Apply = Callable[[torch.Tensor], torch.Tensor]


def _mv(A: SparseTensor) -> Apply:
    p, v = A.pattern, A._flat().detach()
    return lambda x: spmm_nograd(p, v, x)


def _check(A, name: str, n: int | None = None) -> SparseTensor:
    if not isinstance(A, SparseTensor):
        raise TypeError(f"{name} must be a sla.SparseTensor, got {type(A).__name__}")
    if n is not None and A.sparse_shape != (n, n):
        raise ValueError(f"{name} must have shape ({n}, {n}), got {tuple(A.sparse_shape)}")
    return A.detach()


class ComponentwiseSolve:
    """``F^{-1}`` for ``F = F_s (x) I_ncomp`` on interleaved dofs (``node * ncomp + c``).

    ``F_s`` (``(nodes, nodes)``) gets one preconditioner (``name``, default ``'amg'``; ``'lu'``
    factors it exactly); the ``ncomp`` components of a block ``[B, nodes * ncomp, K]`` are its
    ``ncomp * K`` columns.  ``inner > 0`` wraps the preconditioner in that many GMRES steps
    (relative tolerance 1e-2), which keeps AMG useful on convection-dominated blocks.
    """

    def __init__(self, Fs: SparseTensor, ncomp: int, name: str = "amg", inner: int = 0, **options) -> None:
        Fs = _check(Fs, "Fs")
        if isinstance(inner, bool) or not isinstance(inner, int) or inner < 0:
            raise ValueError(f"inner must be an int >= 0 (GMRES steps around the preconditioner), got {inner!r}")
        self.inner, self._Fmv = inner, _mv(Fs)
        self.ncomp, self.nodes = int(ncomp), Fs.sparse_shape[0]
        if name == "lu":
            self._lu = Fs.lu()
            self._M = None
        else:
            self._M = make_preconditioner(Fs, name, **options)
        self.name = name

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        B, n, K = r.shape
        c = self.ncomp
        rs = r.reshape(B, self.nodes, c, K).permute(0, 1, 3, 2).reshape(B, self.nodes, K * c)
        if self._M is None:
            zs = torch.stack([self._lu.solve(rs[b]) for b in range(B)])
        elif self.inner:  # a few GMRES steps preconditioned by M (robust for convection-dominated F)
            from ..krylov import gmres

            zs = gmres(self._Fmv, rs, precond=self._M, rtol=1e-2, maxiter=self.inner, restart=self.inner).x
        else:
            zs = self._M(rs)
        return zs.reshape(B, self.nodes, K, c).permute(0, 1, 3, 2).reshape(B, n, K)


class _Pinned:
    """Identity on pinned rows, ``fn`` on the others (inputs/outputs zero on pinned rows)."""

    def __init__(self, n: int, pinned: torch.Tensor | None, device) -> None:
        self.mask = None
        if pinned is not None and pinned.numel():
            self.mask = torch.zeros(n, 1, dtype=torch.bool, device=device)
            self.mask[pinned.to(device)] = True

    def wrap(self, r: torch.Tensor, fn: Apply) -> torch.Tensor:
        if self.mask is None:
            return fn(r)
        z = fn(torch.where(self.mask, torch.zeros_like(r), r))
        return torch.where(self.mask, r, z)


class MassSchur:
    """``S^{-1} r ~ -scale Mp^{-1} r`` (``scale = nu`` for Stokes ``[[nu K, B^T], [B, 0]]``).

    ``Mp^{-1}`` by a Chebyshev polynomial in ``D^{-1} Mp`` (the mass matrix is spectrally
    equivalent to its diagonal, so a low degree is accurate)."""

    def __init__(
        self, Mp: SparseTensor, scale: float | torch.Tensor = 1.0, pinned: torch.Tensor | None = None, degree: int = 4
    ) -> None:
        Mp = _check(Mp, "Mp")
        self.scale = float(scale) if not isinstance(scale, torch.Tensor) else float(scale.detach())
        self._M = make_preconditioner(Mp, "chebyshev", degree=degree, ratio=8.0)
        self._pin = _Pinned(Mp.sparse_shape[0], pinned, Mp.device)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        return self._pin.wrap(r, lambda q: -self.scale * self._M(q))


class PCDSchur:
    """Pressure convection--diffusion: ``S^{-1} r ~ -Mp^{-1} Fp Ap^{-1} r``.

    ``Ap^{-1}`` by one AMG cycle on the pressure Laplacian with the pinned dofs eliminated
    (``Ap`` must carry identity rows there, e.g. after :func:`sla.assembly.apply_dirichlet`),
    ``Mp^{-1}`` by Chebyshev, ``Fp`` a mat-vec."""

    def __init__(
        self,
        Mp: SparseTensor,
        Ap: SparseTensor,
        Fp: SparseTensor,
        pinned: torch.Tensor | None = None,
        laplace: str = "amg",
    ) -> None:
        n = Mp.sparse_shape[0]
        Mp, Ap, Fp = _check(Mp, "Mp"), _check(Ap, "Ap", n), _check(Fp, "Fp", n)
        self._M = make_preconditioner(Mp, "chebyshev", degree=4, ratio=8.0)
        if laplace == "lu":
            lu = Ap.lu()
            self._A = lambda q: torch.stack([lu.solve(q[b]) for b in range(q.shape[0])])
        else:
            self._A = make_preconditioner(Ap, laplace)
        self._F = _mv(Fp)
        self._pin = _Pinned(n, pinned, Mp.device)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        def apply(q):
            y = self._A(q)
            y = self._F(y)
            if self._pin.mask is not None:
                y = torch.where(self._pin.mask, torch.zeros_like(y), y)
            return -self._M(y)

        return self._pin.wrap(r, apply)


class LSCSchur:
    """Least-squares commutator: ``S^{-1} r ~ -Bp^{-1} (B D^{-1} F D^{-1} B^T) Bp^{-1} r`` with
    ``Bp = B D^{-1} B^T`` and ``D = diag(F)`` (Elman, Howle, Shadid, Shuttleworth & Tuminaro 2006,
    the scaled BFBt); needs no pressure boundary conditions, so it suits enclosed flows.

    ``B`` is the divergence block ``(n_p, n_u)`` and ``F`` the velocity block, both with the
    constrained velocity columns (and the pinned pressure rows) zeroed as
    :func:`sla.assembly.apply_dirichlet` leaves them.  ``Bp^{-1}`` by ``laplace`` (``'amg'``: one
    cycle, or ``'lu'``)."""

    def __init__(self, B: SparseTensor, F: SparseTensor, pinned: torch.Tensor | None = None, laplace: str = "amg"):
        from ...products import spspmm

        B, F = _check(B, "B"), _check(F, "F", B.sparse_shape[1])
        d = F.diagonal().abs()
        self.dinv = (1.0 / torch.where(d > 0, d, torch.ones_like(d)))[:, None]
        Bt = B.T()
        bv = B.values * self.dinv[B.pattern.col, 0]
        pp, pv = spspmm(B.pattern, bv[None], Bt.pattern, Bt.values[None])
        pv = pv[0]
        n = B.sparse_shape[0]
        self._pin = _Pinned(n, pinned, B.device)
        if self._pin.mask is not None:  # identity rows/columns at the pinned dofs
            on = self._pin.mask[:, 0]
            hit = on[pp.row] | on[pp.col]
            pv = torch.where(hit, torch.zeros_like(pv), pv)
            dpos, didx = pp.diag_index
            pv = pv.clone()
            pv[dpos[on[didx]]] = 1.0
        Bp = SparseTensor._make(pv, pp)
        if laplace == "lu":
            lu = Bp.lu()
            self._P = lambda q: torch.stack([lu.solve(q[b]) for b in range(q.shape[0])])
        else:
            self._P = make_preconditioner(Bp, laplace)
        self._B, self._Bt, self._F = _mv(B), _mv(Bt), _mv(F)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        def apply(q):
            y = self._P(q)
            y = self.dinv * self._F(self.dinv * self._Bt(y))
            y = self._B(y)
            if self._pin.mask is not None:
                y = torch.where(self._pin.mask, torch.zeros_like(y), y)
            return -self._P(y)

        return self._pin.wrap(r, apply)


class BlockTriangular(Preconditioner):
    """``[[F, B^T], [0, S]]^{-1}`` on system blocks ``[B, n_u + n_p, K]``.

    Parameters
    ----------
    gradient : SparseTensor ``(n_u, n_p)``
        The ``B^T`` block (as assembled, constrained columns zeroed).
    velocity : callable
        ``F^{-1}`` on ``[B, n_u, K]`` (e.g. :class:`ComponentwiseSolve`).
    schur : callable
        ``S^{-1}`` on ``[B, n_p, K]`` (:class:`MassSchur`, :class:`PCDSchur`).
    """

    name = "block_triangular"

    def __init__(self, gradient: SparseTensor, velocity: Apply, schur: Apply) -> None:
        super().__init__(None)
        Bt = _check(gradient, "gradient")
        self.n_u, self.n_p = Bt.sparse_shape
        self._Bt = _mv(Bt)
        self.velocity, self.schur = velocity, schur

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        ru, rp = r[:, : self.n_u], r[:, self.n_u :]
        zp = self.schur(rp)
        zu = self.velocity(ru - self._Bt(zp))
        return torch.cat([zu, zp], 1)

    def adjoint(self) -> Preconditioner:
        raise NotImplementedError("BlockTriangular preconditions the forward system only (use a direct adjoint)")
