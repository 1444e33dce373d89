"""Geometric multigrid for the whole Taylor--Hood system, with Vanka smoothing on nested meshes.

The monolithic multigrid of the classic CFD codes (FEATFLOW, the DFG benchmark's references):
each level holds the *whole* saddle-point operator, so no Schur-complement approximation is
needed and the convection-dominated velocity block never has to be solved on its own.

* levels: nested meshes, each the uniform refinement of the one before
  (:func:`refined_spaces`; the cavity's ``unit_square(n)`` is ``refine`` applied to
  ``unit_square(n / 2)`` as a triangulation);
* transfers: the exact interpolation of the coarse P2/P1 fields on the fine mesh
  (:func:`prolongation`, built from the refinement's child table), restriction its transpose;
* coarse operators: Galerkin products ``P^T A P`` (for nested conforming spaces the
  rediscretised Stokes/Oseen terms; convection with the fine state; any terms the fine operator
  has -- Newton, Picard, BDF mass -- carry over);
* smoother: additive Vanka -- one patch per pressure vertex, holding that pressure dof and every
  velocity dof of the cells around the vertex (the velocity dofs its divergence row touches); the
  dense patch systems are inverted in one batched call and applied as one batched product,
  averaged over the patches that share a dof and damped by ``omega``;
* coarsest level: an LU factorisation.

The cycle is a preconditioner of FGMRES on the fine system (:class:`~sla.cfd.linear.FlowLinearSolver`
with ``hierarchy=``); constrained dofs (velocity Dirichlet, pinned pressure) carry identity rows on
every level (the constraint set of a coarse level is the fine one's at the shared nodes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._optional import installed
from ..assembly.generators import _TET_CHILDREN, _TRI_CHILDREN, refine
from ..assembly.geometry import barycentric
from ..assembly.mesh import Mesh
from ..assembly.mixed import TaylorHood
from ..config import SolverConfig
from ..pattern import Pattern
from ..products import spspmm, union
from ..solvers.linear.solve import prepare
from ..sparse import SparseTensor

__all__ = ["FlowMultigrid", "FlowHierarchy", "Vanka", "prolongation", "refined_spaces"]

#: dense entries of the patch matrices built per chunk when locating them in the CSR
PATCH_CHUNK = 1 << 24


def refined_spaces(mesh: Mesh, levels: int) -> list[TaylorHood]:
    """Taylor--Hood spaces on ``mesh`` and its ``levels`` successive uniform refinements
    (coarsest first; facet and cell sets follow the refinement)."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels (refinements of the coarse mesh) must be an int >= 1, got {levels!r}")
    meshes = [mesh]
    for _ in range(levels):
        meshes.append(refine(meshes[-1]))
    return [TaylorHood(m) for m in meshes]


def _local_interpolation(ct: str, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per child: P2 values ``[nchild, n2, n2]`` (child P2 node x parent P2 basis) and P1 values
    ``[nchild, nv, nv]`` (child vertex x parent vertex basis), from the refinement's child table."""
    from ..assembly.elements import ElementP2

    el = ElementP2(ct)
    d = 2 if ct == "triangle" else 3
    table = torch.tensor(_TRI_CHILDREN if ct == "triangle" else _TET_CHILDREN)
    ref_v = torch.cat([torch.zeros(1, d, dtype=dtype), torch.eye(d, dtype=dtype)])  # parent vertices
    ref_nodes = torch.cat([ref_v, ref_v[el.edges].mean(1)])  # parent P2 nodes (vertices, edge mids)
    child_v = ref_nodes[table]  # [nchild, nv, d]
    child_nodes = torch.cat([child_v, child_v[:, el.edges].mean(2)], 1)  # [nchild, n2, d]
    return el.phi(child_nodes), barycentric(child_v)[0]


def _dedupe(rows, cols, vals, shape) -> SparseTensor:
    keep = vals.abs() > 1e-12
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    key = rows * shape[1] + cols
    uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
    out = vals.new_zeros(uniq.numel()).scatter_(0, inv, vals)  # duplicates carry the same value
    return SparseTensor._make(out, Pattern(uniq // shape[1], uniq % shape[1], shape))


def prolongation(coarse: TaylorHood, fine: TaylorHood) -> SparseTensor:
    """The interpolation ``(fine.n, coarse.n)`` of coarse Taylor--Hood fields on the fine mesh.

    ``fine.mesh`` must be ``refine(coarse.mesh)`` (checked: the operator must map the coarse node
    coordinates onto the fine ones, which P2 reproduces exactly)."""
    mc, mf = coarse.mesh, fine.mesh
    ct = mc.cell_type
    nchild = 4 if ct == "triangle" else 8
    if mf.cell_type != ct or mf.n_cells != nchild * mc.n_cells:
        raise ValueError(
            f"fine mesh must be the uniform refinement of the coarse one: {mc.n_cells} {ct} cells should give "
            f"{nchild * mc.n_cells}, got {mf.n_cells} {mf.cell_type} cells"
        )
    dev, dtype, d = mc.points.device, mc.points.dtype, coarse.dim
    L2, L1 = (t.to(dev) for t in _local_interpolation(ct, dtype))
    E = mc.n_cells
    fc2 = fine.p2.dofs(mf).reshape(E, nchild, -1)  # fine P2 nodes per parent and child
    cc2 = coarse.p2.dofs(mc)  # [E, n2]
    n2 = cc2.shape[1]
    nodes_f, nodes_c = fine.n_u // d, coarse.n_u // d
    P2 = _dedupe(
        fc2[:, :, :, None].expand(E, nchild, n2, n2).reshape(-1),
        cc2[:, None, None, :].expand(E, nchild, n2, n2).reshape(-1),
        L2.expand(E, nchild, n2, n2).reshape(-1),
        (nodes_f, nodes_c),
    )
    xf = P2 @ coarse.velocity_points()
    if float((xf - fine.velocity_points()).abs().max()) > 1e-9 * float(mf.points.abs().max() + 1):
        raise ValueError("fine mesh must be refine(coarse mesh): the interpolated node coordinates do not match")
    nv = mc.cells.shape[1]
    fc1 = mf.cells.reshape(E, nchild, nv)
    P1 = _dedupe(
        fc1[:, :, :, None].expand(E, nchild, nv, nv).reshape(-1),
        mc.cells[:, None, None, :].expand(E, nchild, nv, nv).reshape(-1),
        L1.expand(E, nchild, nv, nv).reshape(-1),
        (fine.n_p, coarse.n_p),
    )
    # the whole system: velocity (node * d + c) then pressure
    r2, c2, v2 = P2.pattern.row, P2.pattern.col, P2.values
    comp = torch.arange(d, device=dev)
    rows = torch.cat([(r2[:, None] * d + comp).reshape(-1), fine.n_u + P1.pattern.row])
    cols = torch.cat([(c2[:, None] * d + comp).reshape(-1), coarse.n_u + P1.pattern.col])
    vals = torch.cat([v2[:, None].expand(-1, d).reshape(-1), P1.values])
    order = torch.argsort(rows * coarse.n + cols)
    return SparseTensor._make(vals[order], Pattern(rows[order], cols[order], (fine.n, coarse.n)))


class Vanka:
    """Additive Vanka smoother of one level: patch structure from the space, values per matrix.

    Patch ``i`` (pressure vertex ``i``): the velocity dofs of every cell around vertex ``i`` and the
    pressure dof ``i``, padded to the largest patch.  :meth:`update` extracts the dense patch
    matrices of a new matrix on the same pattern and inverts them (batched); :meth:`__call__`
    returns ``sum_i R_i^T A_i^{-1} R_i r`` divided by the number of patches sharing each dof.
    """

    def __init__(self, space: TaylorHood, pattern: Pattern) -> None:
        m, d = space.mesh, space.dim
        dev = m.points.device
        cells, nodes = m.cells, space.p2.dofs(m)
        nn = space.n_u // d
        pair = torch.unique(
            (cells[:, :, None] * nn + nodes[:, None, :]).reshape(-1), sorted=True
        )  # (vertex, node) pairs, sorted by vertex
        vert, node = pair // nn, pair % nn
        count = torch.bincount(vert, minlength=space.n_p)
        smax = int(count.max())
        start = torch.cumsum(count, 0) - count
        slot = torch.arange(vert.numel(), device=dev) - start[vert]
        patch_nodes = torch.full((space.n_p, smax), -1, dtype=torch.int64, device=dev)
        patch_nodes[vert, slot] = node
        comp = torch.arange(d, device=dev)
        vel = torch.where(patch_nodes[:, :, None] >= 0, patch_nodes[:, :, None] * d + comp, -1).reshape(space.n_p, -1)
        pres = space.n_u + torch.arange(space.n_p, device=dev)[:, None]
        self.q = torch.cat([vel, pres], 1)  # [n_p, S], -1 = padding
        self.n = space.n
        self.S = self.q.shape[1]
        self.pad = self.q < 0
        self.qd = torch.where(self.pad, self.n, self.q)  # padding -> a dummy row n
        mult = torch.zeros(self.n + 1, dtype=m.points.dtype, device=dev).index_add_(
            0, self.qd.reshape(-1), torch.ones(self.qd.numel(), dtype=m.points.dtype, device=dev)
        )[: self.n]
        if bool((mult == 0).any()):
            raise ValueError("Vanka patches do not cover every dof of the space")
        self.winv = 1.0 / mult
        self.pos = self._positions(pattern)
        self.inv = None

    def _positions(self, pattern: Pattern) -> torch.Tensor:
        """Index of every patch entry ``(q_a, q_b)`` in the CSR values (``-1``: not stored / padding)."""
        n = self.n
        keys = pattern.row.to(torch.int64) * n + pattern.col.to(torch.int64)
        npatch, S = self.q.shape
        per = max(1, PATCH_CHUNK // (S * S))
        dt = torch.int32 if pattern.nnz < 2**31 - 1 else torch.int64
        out = torch.empty(npatch, S, S, dtype=dt, device=self.q.device)
        for lo in range(0, npatch, per):
            q = self.q[lo : lo + per]
            k = q[:, :, None] * n + q[:, None, :]
            pos = torch.searchsorted(keys, k.reshape(-1)).clamp_(max=max(pattern.nnz - 1, 0)).reshape(k.shape)
            ok = (keys[pos] == k) & (q[:, :, None] >= 0) & (q[:, None, :] >= 0)
            out[lo : lo + per] = torch.where(ok, pos, -1).to(dt)
        return out

    def update(self, values: torch.Tensor, dtype: torch.dtype | None = None) -> None:
        """Patch inverses of the matrix with these CSR ``values`` (on the pattern given at construction),
        built in chunks of patches (the dense patches of a 1M-unknown system take gigabytes) and kept
        in ``dtype`` (default: that of ``values``; float32 halves the smoother's memory traffic)."""
        npatch, S = self.q.shape
        dtype = values.dtype if dtype is None else dtype
        values = values.to(dtype)
        if self.inv is None or self.inv.dtype != dtype:
            self.inv = values.new_empty(npatch, S, S)
        per = max(1, PATCH_CHUNK // (S * S))
        for lo in range(0, npatch, per):
            pos = self.pos[lo : lo + per]
            local = values[pos.clamp(min=0).long()]
            local.masked_fill_(pos < 0, 0.0)
            local.diagonal(dim1=-2, dim2=-1).add_(self.pad[lo : lo + per].to(values.dtype))  # padding: identity
            inv, info = torch.linalg.inv_ex(local)
            bad = info != 0
            if bool(bad.any()):  # a singular patch (e.g. a pressure row with no free velocity): pseudo-inverse
                inv[bad] = torch.linalg.pinv(local[bad])
            self.inv[lo : lo + per] = inv

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """``r [n, K]`` -> the patch-averaged correction ``[n, K]``."""
        K = r.shape[1]
        rext = torch.cat([r.to(self.inv.dtype), r.new_zeros(1, K, dtype=self.inv.dtype)])
        z = torch.bmm(self.inv, rext[self.qd])  # [n_p, S, K]
        out = z.new_zeros(self.n + 1, K).index_add_(0, self.qd.reshape(-1), z.reshape(-1, K))
        return out[: self.n].to(r.dtype) * self.winv[:, None]


class FlowHierarchy:
    """The structure of a flow multigrid (built once per space hierarchy and constraint set).

    Parameters
    ----------
    spaces : sequence of TaylorHood, coarsest first, each mesh ``refine`` of the one before
    dofs : constrained dofs of the finest space (sorted, as ``FlowLinearSolver`` takes them)
    """

    def __init__(self, spaces: Sequence[TaylorHood], dofs: torch.Tensor) -> None:
        spaces = list(spaces)
        if len(spaces) < 2 or not all(isinstance(s, TaylorHood) for s in spaces):
            raise ValueError(f"hierarchy must be at least two TaylorHood spaces (coarsest first), got {spaces!r}")
        self.spaces = spaces
        fine = spaces[-1]
        self.P, self.R = [], []
        constrained = torch.zeros(fine.n, dtype=torch.bool, device=dofs.device)
        constrained[dofs] = True
        masks = [constrained]
        for lo in range(len(spaces) - 2, -1, -1):
            c, f = spaces[lo], spaces[lo + 1]
            fm = masks[0]
            # coarse node k is fine vertex k: the velocity dofs share their index, the pressure dofs shift
            cm = torch.cat([fm[: c.n_u], fm[f.n_u : f.n_u + c.n_p]])
            masks.insert(0, cm)
        self.masks = masks
        self.eye = []  # per level: the unit diagonal of the constrained dofs (their rows/columns are empty)
        for lo in range(len(spaces) - 1):
            P = prolongation(spaces[lo], spaces[lo + 1])
            keep = ~masks[lo + 1][P.pattern.row] & ~masks[lo][P.pattern.col]
            p = P.pattern
            pk, vk = Pattern(p.row[keep], p.col[keep], p.shape), P.values[keep]
            pt, perm = pk.transpose()
            self.P.append((pk, vk))
            self.R.append((pt, vk[perm.long()]))
            idx = masks[lo].nonzero().flatten()
            self.eye.append(Pattern(idx, idx, (spaces[lo].n, spaces[lo].n)))
        self._vanka: dict = {}

    def vanka(self, level: int, pattern: Pattern) -> Vanka:
        """The Vanka smoother of ``level`` on ``pattern`` (its patch positions rebuilt if the pattern changed)."""
        held = self._vanka.get(level)
        if held is None or not held[0].same_as(pattern):
            held = (pattern, Vanka(self.spaces[level], pattern))
            self._vanka[level] = held
        return held[1]


class FlowMultigrid:
    """One multigrid cycle on the whole (constraint-eliminated) flow system: an FGMRES preconditioner.

    Parameters
    ----------
    hierarchy : FlowHierarchy
    A : SparseTensor
        The finest system with identity rows/columns on the constrained dofs.
    steps : int
        Vanka sweeps before and after each coarse correction.
    omega : float
        Damping of each sweep.
    cycle : ``'V'`` or ``'W'``
    smoother_dtype : torch.dtype, optional
        Precision of the Vanka patch inverses (default: float32 on CUDA -- half the memory traffic of
        the smoother, which is most of a cycle; the outer FGMRES keeps the solve at the matrix's
        precision -- and the matrix's dtype on the CPU).
    coarse : SolverConfig, optional
        The factorisation of the coarsest level (default: a dense LU up to :data:`DENSE_COARSE`
        unknowns, else the sparse LU of :class:`~sla.cfd.linear.LaggedLU`).
    """

    def __init__(
        self,
        hierarchy: FlowHierarchy,
        A: SparseTensor,
        steps: int = 2,
        omega: float = 0.6,
        cycle: str = "W",
        smoother_dtype: torch.dtype | None = None,
        coarse: SolverConfig | None = None,
    ) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps (Vanka sweeps per level) must be an int >= 1, got {steps!r}")
        if not 0 < omega <= 1.5:
            raise ValueError(f"omega (the Vanka damping) must lie in (0, 1.5], got {omega!r}")
        if cycle not in ("V", "W"):
            raise ValueError(f"cycle must be 'V' or 'W', got {cycle!r}")
        self.steps, self.omega, self.gamma = steps, float(omega), 1 if cycle == "V" else 2
        L = len(hierarchy.spaces)
        # Galerkin products on cached index plans (the patterns repeat every Newton step: numeric work only)
        ops: list = [None] * L
        ops[L - 1] = (A.pattern, A.values.detach())
        for lo in range(L - 2, -1, -1):
            (pp, vp), (pr, vr), (pa, va) = hierarchy.P[lo], hierarchy.R[lo], ops[lo + 1]
            pap, vap = spspmm(pa, va[None], pp, vp[None])
            pc, vc = spspmm(pr, vr[None], pap, vap)
            pu, ic, ie = union(pc, hierarchy.eye[lo])
            vals = vc.new_zeros(pu.nnz).index_add_(0, ic, vc[0]).index_add_(0, ie, vc.new_ones(ie.numel()))
            ops[lo] = (pu, vals)
        self.ops = [p.csr(v) for p, v in ops]
        self.smoothers = [None] * L
        if smoother_dtype is not None and smoother_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"smoother_dtype must be torch.float32 or torch.float64, got {smoother_dtype!r}")
        if smoother_dtype is None and A.device.type == "cuda" and A.dtype == torch.float64:
            smoother_dtype = torch.float32
        for lv in range(1, L):
            vk = hierarchy.vanka(lv, ops[lv][0])
            vk.update(ops[lv][1], smoother_dtype)
            self.smoothers[lv] = vk
        self._coarse = _CoarseSolve(SparseTensor._make(ops[0][1], ops[0][0]), coarse)
        self.P = [p.csr(v) for p, v in hierarchy.P]
        self.R = [p.csr(v) for p, v in hierarchy.R]

    def _solve(self, lv: int, b: torch.Tensor) -> torch.Tensor:
        if lv == 0:
            return self._coarse(b)
        A, S, w = self.ops[lv], self.smoothers[lv], self.omega
        x = w * S(b)
        for _ in range(self.steps - 1):
            x = x + w * S(b - A @ x)
        for _ in range(self.gamma if lv > 1 else 1):  # the coarsest solve is exact: once is enough
            rc = self.R[lv - 1] @ (b - A @ x)
            x = x + self.P[lv - 1] @ self._solve(lv - 1, rc)
        for _ in range(self.steps):
            x = x + w * S(b - A @ x)
        return x

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """``r [B, n, K]`` -> one cycle applied to every column."""
        return torch.stack([self._solve(len(self.ops) - 1, r[b]) for b in range(r.shape[0])])


DENSE_COARSE = 3000
"""Coarsest levels up to this size are solved by a dense LU (torch), larger ones by a sparse LU."""


class _CoarseSolve:
    """The coarsest level's exact solve: dense LU when small, else a sparse LU (SuperLU with the
    saddle-point ordering on the CPU, and on the host for CUDA tensors when cuDSS is missing; the
    default LU -- cuDSS -- on CUDA)."""

    def __init__(self, C: SparseTensor, config: SolverConfig | None) -> None:
        from .linear import LaggedLU

        n = C.sparse_shape[0]
        self.dense = config is None and n <= DENSE_COARSE
        # on CUDA without cuDSS: SuperLU on the host (a vector each way per solve) beats CuPy's host
        # factorisation with a cuSPARSE triangular-solve analysis on every call
        self.host = config is None and C.device.type == "cuda" and not installed("nvmath")
        if self.dense:
            self.lu = torch.linalg.lu_factor(C.to_dense())
            return
        C = C.cpu() if self.host else C
        cfg = config or LaggedLU().config_for(C.device)
        self.prep = prepare(C, SolverConfig.resolve(cfg), kind="direct")

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return torch.linalg.lu_solve(*self.lu, b)
        from .linear import _apply_factors

        if self.host:
            return _apply_factors(self.prep, b.cpu()[None])[0].to(b.device)
        return _apply_factors(self.prep, b[None])[0]
