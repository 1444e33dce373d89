"""Scatter plans: the sparsity pattern of an assembled operator and where each element entry lands.

``scatter_plan(mesh, test, trial)`` is computed once per (mesh, test element,
trial element) and cached on the mesh; every later assembly on that mesh --
any form, any coefficient, any quadrature -- reuses its :class:`~sla.Pattern`
(and with it every solver cache keyed on the pattern).

Square plans (test == trial, the usual case) sort only the ``n (n - 1) / 2``
distinct dof *pairs* of each element (a third of the ``n^2`` entries for P1
triangles) and place row-major positions by counting: in row ``i`` the
columns are the lower neighbours, ``i`` itself, then the upper neighbours.
Other plans sort all ``row * N + col`` keys.  Indices are produced in an
elements-last layout ``[n_test * n_trial, E]`` that the batched kernels write.
Square plans store every diagonal entry, also of dofs no cell touches (a stored
zero), so Dirichlet elimination always finds its diagonal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..pattern import Pattern

if TYPE_CHECKING:  # annotations only: plan sits below the mesh and elements
    from .elements import Element
    from .mesh import Mesh

__all__ = ["scatter_plan", "ScatterAdd", "LinearScatter"]


def _runs(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(run id of each sorted key, first-of-run mask)``."""
    new = np.empty(s.shape, dtype=bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    return np.cumsum(new) - 1, new


def _plan_pairs(dofs: np.ndarray, N: int):
    """Square plan by sorting distinct dof pairs; returns (crow, col, index_t [n*n, E])."""
    E, n = dofs.shape
    ia, ib = np.triu_indices(n, 1)
    dT = np.ascontiguousarray(dofs.T)  # [n, E]
    key = np.empty((ia.size, E), dtype=np.int64)  # pair-major: long nearly sorted runs for timsort
    hi = np.empty(E, dtype=np.int64)
    for p, (a, b) in enumerate(zip(ia, ib)):
        np.minimum(dT[a], dT[b], out=key[p])
        key[p] *= N
        np.maximum(dT[a], dT[b], out=hi)
        key[p] += hi
    key = key.reshape(-1)
    perm = np.argsort(key, kind="stable")
    s = key[perm]
    ids, new = _runs(s)
    edge = key  # reuse the buffer: pair -> unique pair id
    edge[perm] = ids
    edge = edge.reshape(ia.size, E)
    U = s[new]
    del s, ids, new, perm
    ulo, uhi = U // N, U % N
    ne = U.shape[0]
    deg_up = np.bincount(ulo, minlength=N)
    deg_lo = np.bincount(uhi, minlength=N)
    crow = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(deg_lo + 1 + deg_up, out=crow[1:])
    first_up = np.zeros(N, dtype=np.int64)
    np.cumsum(deg_up[:-1], out=first_up[1:])
    pos_up = crow[ulo] + deg_lo[ulo] + 1 + (np.arange(ne) - first_up[ulo])
    # lower entries (row hi, col lo) in row order: U is sorted by (lo, hi), a stable sort by hi gives (hi, lo)
    L = np.argsort(uhi, kind="stable")
    first_lo = np.zeros(N, dtype=np.int64)
    np.cumsum(deg_lo[:-1], out=first_lo[1:])
    rank = np.empty(ne, dtype=np.int64)
    rank[L] = np.arange(ne) - first_lo[uhi[L]]
    pos_lo = crow[uhi] + rank
    pos_diag = crow[:-1] + deg_lo
    col = np.empty(int(crow[-1]), dtype=np.int64)
    col[pos_up], col[pos_lo], col[pos_diag] = uhi, ulo, np.arange(N)
    itype = np.int32 if crow[-1] < 2**31 else np.int64  # halves the index traffic of every scatter
    pos_diag, pos_up, pos_lo = pos_diag.astype(itype), pos_up.astype(itype), pos_lo.astype(itype)
    index_t = np.empty((n, n, E), dtype=itype)
    for a in range(n):
        np.take(pos_diag, dT[a], out=index_t[a, a])
    for p, (a, b) in enumerate(zip(ia, ib)):
        e = edge[p]
        up = dT[a] < dT[b]
        pu, pl = pos_up[e], pos_lo[e]
        np.copyto(index_t[a, b], np.where(up, pu, pl))
        np.copyto(index_t[b, a], np.where(up, pl, pu))
    return crow, col, index_t.reshape(n * n, E)


def _plan_sorted(rd: torch.Tensor, cd: torch.Tensor, N: int, use_numpy: bool | None = None):
    """General plan: one stable sort of all ``row * N + col`` keys; returns (row, col, index_t)."""
    E, nv, nu = rd.shape[0], rd.shape[1], cd.shape[1]
    key = (rd.T[:, None, :] * N + cd.T[None, :, :]).reshape(-1)  # elements last
    if key.device.type == "cpu" if use_numpy is None else use_numpy:
        kn = key.numpy()
        perm = np.argsort(kn, kind="stable")
        s = kn[perm]
        ids, new = _runs(s)
        inv = np.empty_like(ids)
        inv[perm] = ids
        u, inv = torch.from_numpy(s[new]), torch.from_numpy(inv)
    else:
        s, perm = torch.sort(key, stable=True)
        new = torch.ones_like(s, dtype=torch.bool)
        new[1:] = s[1:] != s[:-1]
        inv = torch.empty_like(perm)
        inv[perm] = torch.cumsum(new, 0) - 1
        u = s[new]
    return u // N, u % N, inv.reshape(nv * nu, E)


def scatter_plan(mesh: Mesh, test: Element, trial: Element | None = None) -> dict:
    """``{'pattern': Pattern, 'index_t': [n_test * n_trial, E]}`` for (test, trial) on ``mesh`` (cached)."""
    trial = test if trial is None else trial

    def build():
        rd, cd = test.dofs(mesh), trial.dofs(mesh)
        M, N = test.ndofs(mesh), trial.ndofs(mesh)
        if test.key == trial.key and rd.device.type == "cpu":
            crow, col, index_t = _plan_pairs(rd.numpy(), N)
            counts = np.diff(crow)
            row = torch.from_numpy(np.repeat(np.arange(M, dtype=np.int64), counts))
            pattern = Pattern(row, torch.from_numpy(col), (M, N))
            index_t = torch.from_numpy(index_t)
        else:
            row, col, index_t = _plan_sorted(rd, cd, N)
            pattern = Pattern(row, col, (M, N))
        if test.key == trial.key and getattr(test, "ncomp", 1) > 1:
            points = test.dof_points(mesh)
            if points.shape[1] == test.ncomp:  # a displacement-like field: AMG takes its rigid-body modes
                pattern.cache["dof_points"] = (points, test.ncomp)
        return {"pattern": pattern, "index_t": index_t}

    return mesh.memo(("plan", test.key, trial.key), build)


def plan_index(
    plan: dict, device: str | torch.device, cells: torch.Tensor | None = None, elements_last: bool = True
) -> torch.Tensor:
    """The plan's index on ``device`` in either layout, restricted to the rows ``cells`` (facets)."""
    key = ("index", str(device), elements_last)
    idx = plan.get(key) if cells is None else None
    if idx is None:
        idx = plan["index_t"].to(device)
        if cells is not None:
            idx = idx[:, cells.to(device)]
        if not elements_last:
            idx = idx.T
        idx = idx.contiguous()
        if cells is None:
            plan[key] = idx
    return idx


class ScatterAdd(torch.autograd.Function):
    """``values[index[k]] += ke[k]`` (one index_add); the backward pass is a gather."""

    @staticmethod
    def forward(ctx: Any, ke: torch.Tensor, index: torch.Tensor, nnz: int) -> torch.Tensor:
        ctx.save_for_backward(index)
        return ke.new_zeros(nnz).index_add_(0, index, ke)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (index,) = ctx.saved_tensors
        return g[index], None, None


class LinearScatter(torch.autograd.Function):
    """``values = B @ c`` for a cached sparse map ``B`` (nnz x n_coefficients) of a form that is
    linear in its coefficient: re-assembly becomes one sparse mat-vec (backward: ``B^T g``)."""

    @staticmethod
    def forward(ctx: Any, c: torch.Tensor, op: CoefficientMap) -> torch.Tensor:
        ctx.op = op
        return op.apply(c)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.op.apply_t(g), None


class CoefficientMap:
    """The sparse map ``B`` from a per-cell (or per-point) coefficient to the values of an operator.

    ``units`` ``[n*n, K, E]`` are the element matrices for a unit coefficient in each of
    the ``K`` coefficient slots (K = 1 per cell, K = Q per quadrature point); ``index``
    ``[n*n, E]`` is the plan's.  On the CPU, ``B^T`` is a scipy CSR matrix built without
    any sorting (row ``(slot, e)`` holds element ``e``'s unit matrix), so ``B c`` is one
    CSC mat-vec and ``B^T g`` one CSR mat-vec; elsewhere ``B c`` is one batched product
    plus one index_add.
    """

    def __init__(self, units: torch.Tensor, index: torch.Tensor, nnz: int, use_scipy: bool | None = None):
        nn, K, E = units.shape
        self.K, self.E, self.nnz = K, E, nnz
        self.dtype, self.device = units.dtype, units.device
        self._scipy = units.device.type == "cpu" if use_scipy is None else use_scipy
        if self._scipy:
            import scipy.sparse as sp

            data = units.detach().permute(1, 2, 0).reshape(-1).numpy()  # [K, E, n*n]
            itype = np.int32 if max(nnz, K * E * nn) < 2**31 else np.int64
            cols = np.broadcast_to(index.T.numpy().astype(itype, copy=False)[None], (K, E, nn)).reshape(-1)
            indptr = np.arange(0, K * E * nn + 1, nn, dtype=itype)
            self._Bt = sp.csr_matrix((data, cols, indptr), shape=(K * E, nnz))
        else:
            self._units, self._index = units.detach(), index.reshape(-1)

    def apply(self, c: torch.Tensor) -> torch.Tensor:
        """``B @ c`` for ``c`` ``[K * E]`` (slot-major)."""
        if self._scipy:
            return torch.from_numpy(self._Bt.T @ c.detach().reshape(-1).numpy())
        ke = (self._units * c.reshape(1, self.K, self.E)).sum(1)
        return ke.new_zeros(self.nnz).index_add_(0, self._index, ke.reshape(-1))

    def apply_t(self, g: torch.Tensor) -> torch.Tensor:
        """``B^T @ g`` -> ``[K * E]``."""
        if self._scipy:
            return torch.from_numpy(self._Bt @ g.detach().numpy())
        return (self._units * g[self._index].reshape(-1, 1, self.E)).sum(0).reshape(-1)
