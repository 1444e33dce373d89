"""Geometric multigrid on structured quad/hex grids with Galerkin coarse operators built element by element.

On nested grids with (bi/tri)linear prolongation every fine cell lies inside one
coarse cell, and the prolongation restricted to that child is a fixed local matrix
``P_q`` (one per child position ``q``: ``4`` in 2D, ``8`` in 3D) from the coarse
cell's dofs to the child's.  So the Galerkin operator ``A_c = P^T A P`` is assembled
from coarse element matrices

    ``K_C = sum_q P_q^T K_child(C, q) P_q``

(Amir, Aage & Lazarov 2014, *On multigrid-CG for efficient topology optimization*;
Aage et al. 2015, *Topology optimization using PETSc*).  On the finest level
``K_e = c_e K_0`` (a coefficient per cell times one unit matrix, as in SIMP), so the
first coarse level is a single product ``c[children] @ [P_q^T K_0 P_q]``; deeper levels
are batched ``24 x 24`` (3D vector) contractions.  Each level's global matrix is one
``index_add`` through the coarse mesh's cached scatter plan: after the first build
no index work is left, and rebuilding for new coefficients costs a few dense
products per level.

Dirichlet dofs (``fixed``, eliminated in the fine matrix) are handled by zeroing the
rows of ``P`` at fixed fine dofs, ``P_bc = D_free P``: then ``P_bc^T A P_bc`` is the
exact Galerkin operator of the eliminated fine matrix whatever its fixed diagonal,
and element-wise it means masking the fixed rows and columns of the finest element
matrices.  A coarse dof that interpolates only into fixed dofs (a column of
``P_bc`` that is empty) gets an identity row and is masked the same way below.

The cycle is :class:`sla.solvers.precond.multigrid.Multigrid` (Chebyshev smoothing
with the Jacobi diagonal, dense inverse on the coarsest level): this module only
builds its levels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..solvers.precond.chebyshev import capped, ritz_estimate
from ..solvers.precond.multigrid import DENSE_MAX, Level, Mat, Multigrid, check_cycle, csr32
from ..sparse import SparseTensor
from .elements import ElementVector, element_for
from .mesh import Mesh
from .plan import plan_index, scatter_plan

__all__ = ["GridHierarchy", "ElementMultigrid", "grid_shape"]

_CORNERS = {  # local node -> offset bits (x, y[, z]) in sla.assembly.rectangle / box order
    "quad": [(0, 0), (1, 0), (1, 1), (0, 1)],
    "hexahedron": [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)],
}


def _grid_cells(counts: tuple[int, ...], cell_type: str, device) -> torch.Tensor:
    """Connectivity of the ``counts`` grid as :func:`rectangle` / :func:`box` number it (x fastest)."""
    d = len(counts)
    nodes = [n + 1 for n in counts]
    stride = [math.prod(nodes[:a]) for a in range(d)]
    idx = torch.meshgrid(*(torch.arange(n, device=device) for n in reversed(counts)), indexing="ij")
    base = sum(idx[d - 1 - a].flatten() * stride[a] for a in range(d))
    return torch.stack([base + sum(b * stride[a] for a, b in enumerate(bits)) for bits in _CORNERS[cell_type]], 1)


def grid_shape(mesh: Mesh) -> tuple[int, ...]:
    """Cells per axis ``(nx, ny[, nz])`` of a structured quad/hex mesh numbered as
    :func:`~sla.assembly.rectangle` / :func:`~sla.assembly.box` number them (x fastest).

    Raises ``ValueError`` for any other mesh (the element-wise hierarchy needs that layout).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a sla.assembly.Mesh, got {type(mesh).__name__}")
    if mesh.cell_type not in _CORNERS:
        raise ValueError(
            f"geometric multigrid needs a structured quad or hexahedron mesh, got {mesh.cell_type!r} cells "
            "(use preconditioner='amg' for other meshes)"
        )

    def build():
        P = mesh.points.detach()
        d = P.shape[1]
        axes = [torch.unique(P[:, a]) for a in range(d)]
        counts = tuple(int(ax.numel()) - 1 for ax in axes)
        ok = math.prod(c + 1 for c in counts) == P.shape[0] and min(counts) >= 1
        if ok:
            grids = torch.meshgrid(*reversed(axes), indexing="ij")
            ok = torch.equal(P, torch.stack([g.flatten() for g in reversed(grids)], 1))
        if ok:
            ok = mesh.cells.shape[0] == math.prod(counts) and torch.equal(
                mesh.cells, _grid_cells(counts, mesh.cell_type, mesh.cells.device).to(mesh.cells.dtype)
            )
        if not ok:
            raise ValueError(
                "geometric multigrid needs the structured grid of sla.assembly.rectangle(..., 'quad') / "
                "box(..., 'hex') (lexicographic nodes and cells, x fastest); this mesh is not one "
                "(use preconditioner='amg')"
            )
        return counts

    return mesh.memo(("grid_shape",), build)


def _local_prolongations(dim: int, ncomp: int, cell_type: str, dtype) -> torch.Tensor:
    """``P_q`` ``[2^dim, nd, nd]``: coarse cell dofs -> dofs of its child at position ``q``."""
    corners = torch.tensor(_CORNERS[cell_type], dtype=dtype)  # [nn, dim]
    out = []
    for q in range(2**dim):
        shift = torch.tensor([(q >> a) & 1 for a in range(dim)], dtype=dtype)
        xi = (shift + corners) / 2  # child's nodes in the coarse cell's unit coordinates
        w = (1 - (xi[:, None, :] - corners[None, :, :]).abs()).clamp(min=0).prod(-1)  # [fine node, coarse node]
        out.append(torch.kron(w, torch.eye(ncomp, dtype=dtype)))
    return torch.stack(out)


def _interp_1d(n: int):
    """1-D linear interpolation from the ``n // 2 + 1`` coarse nodes to the ``n + 1`` fine nodes (scipy CSR)."""
    import scipy.sparse as sp

    i = np.arange(n + 1)
    even = i % 2 == 0
    rows = np.concatenate([i[even], i[~even], i[~even]])
    cols = np.concatenate([i[even] // 2, (i[~even] - 1) // 2, (i[~even] + 1) // 2])
    w = np.concatenate([np.ones(even.sum()), np.full((~even).sum(), 0.5), np.full((~even).sum(), 0.5)])
    return sp.csr_matrix((w, (rows, cols)), shape=(n + 1, n // 2 + 1))


def _prolongation(counts: tuple[int, ...], ncomp: int, dead: np.ndarray):
    """Global ``P`` (scipy CSR, rows of ``dead`` fine dofs removed) and the coarse dofs it leaves empty."""
    import scipy.sparse as sp

    M = sp.identity(ncomp, format="csr")
    for n in counts:  # dofs: node-major, x fastest -> kron(P_z, P_y, P_x, I_c)
        M = sp.kron(_interp_1d(n), M, format="csr")
    if dead.any():
        M = sp.diags((~dead).astype(np.float64)) @ M
        M.eliminate_zeros()
    M.sort_indices()
    empty = np.diff(M.tocsc().indptr) == 0
    return M, empty


class _Level:
    """Structure of one coarsening: children, local prolongations, global P/R, coarse plan."""

    def __init__(self, fine_counts, ncomp, cell_type, fine_dead: np.ndarray, fine_cells, device, dtype):
        d = len(fine_counts)
        self.counts = tuple(n // 2 for n in fine_counts)
        # children of every coarse cell, position q = sum_a bit_a 2^a
        cidx = torch.meshgrid(*(torch.arange(n, device=device) for n in reversed(self.counts)), indexing="ij")
        cidx = [cidx[d - 1 - a].flatten() for a in range(d)]  # per axis x, y[, z]
        fstride = [math.prod(fine_counts[:a]) for a in range(d)]
        self.children = torch.stack(
            [sum((2 * cidx[a] + ((q >> a) & 1)) * fstride[a] for a in range(d)) for q in range(2**d)], 1
        )  # [Ec, 2^d]
        P, empty = _prolongation(fine_counts, ncomp, fine_dead)
        self.dead = empty  # coarse dofs that get an identity row

        def t(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        R = P.T.tocsr()
        R.sort_indices()
        self.P = csr32(t(P.indptr.astype(np.int64)), t(P.indices.astype(np.int64)), t(P.data).to(dtype), P.shape)
        self.R = csr32(t(R.indptr.astype(np.int64)), t(R.indices.astype(np.int64)), t(R.data).to(dtype), R.shape)
        self.Pq = _local_prolongations(d, ncomp, cell_type, dtype).to(device)  # [2^d, nd, nd]
        # fine cells with a dead (fixed) local dof: their element matrices are masked before the contraction
        local_dead = torch.from_numpy(fine_dead).to(device)[fine_cells]  # [Ef, nd]
        hit = local_dead.any(1)
        parent_hit = hit[self.children].any(1)  # [Ec]
        self.masked = torch.nonzero(parent_hit).flatten()
        self.mask = (~local_dead[self.children[self.masked]]).to(dtype)  # [nb, 2^d, nd]
        # coarse mesh and its scatter plan (pattern + where each element entry lands)
        pts = torch.zeros(math.prod(n + 1 for n in self.counts), d, dtype=dtype, device=device)
        self.mesh = Mesh(pts, _grid_cells(self.counts, cell_type, device), cell_type)
        base = element_for(cell_type, 1)
        el = ElementVector(base, ncomp) if ncomp > 1 else base
        plan = scatter_plan(self.mesh, el, el)
        self.pattern = plan["pattern"].to(device)
        self.index = plan_index(plan, device, elements_last=False).reshape(-1)  # [Ec * nd * nd]
        self.cells = el.dofs(self.mesh).to(device)  # [Ec, nd]
        dpos, didx = self.pattern.diag_index
        self.dead_pos = dpos[torch.from_numpy(empty).to(device)[didx.long()]].long()

    def contract(self, Kf: torch.Tensor) -> torch.Tensor:
        """Coarse element matrices ``[Ec, nd, nd]`` from fine ones ``[Ef, nd, nd]`` (rows of dead dofs zero)."""
        Kc = None
        for q in range(self.Pq.shape[0]):
            X = Kf[self.children[:, q]]
            Y = self.Pq[q].T @ X @ self.Pq[q]
            Kc = Y if Kc is None else Kc.add_(Y)
        return Kc

    def contract_unit(self, coeff: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        """Coarse element matrices of fine ``K_e = coeff_e * unit`` (one unit matrix for all cells)."""
        nd = unit.shape[-1]
        M = (self.Pq.transpose(1, 2) @ unit @ self.Pq).reshape(self.Pq.shape[0], nd * nd)  # [2^d, nd*nd]
        Kc = (coeff[self.children] @ M).reshape(-1, nd, nd)
        if self.masked.numel():  # cells next to fixed dofs: mask the fine rows and columns first
            m = self.mask  # [nb, 2^d, nd]
            Km = unit * m[..., :, None] * m[..., None, :]  # [nb, 2^d, nd, nd]
            Km = self.Pq.transpose(1, 2) @ Km @ self.Pq
            Kc[self.masked] = (coeff[self.children[self.masked]][..., None, None] * Km).sum(1)
        return Kc

    def contract_masked(self, Kf: torch.Tensor) -> torch.Tensor:
        """:meth:`contract` with the fixed rows and columns of the fine element matrices masked."""
        Kc = self.contract(Kf)
        if self.masked.numel():
            m = self.mask
            X = Kf[self.children[self.masked]] * m[..., :, None] * m[..., None, :]
            Kc[self.masked] = (self.Pq.transpose(1, 2) @ X @ self.Pq).sum(1)
        return Kc

    def assemble(self, Kc: torch.Tensor) -> torch.Tensor:
        """Values of the coarse matrix on :attr:`pattern` (identity rows at dead dofs)."""
        vals = Kc.new_zeros(self.pattern.nnz).index_add_(0, self.index, Kc.reshape(-1))
        if self.dead_pos.numel():
            vals[self.dead_pos] = 1.0
        return vals


class ElementMultigrid(Multigrid):
    """The multigrid cycle over a :class:`GridHierarchy`'s levels (CG preconditioner for SPD ``A``)."""

    name = "gmg"


class GridHierarchy:
    """Nested structured grids of a quad/hex mesh for element-wise Galerkin geometric multigrid.

    Built once per mesh (children, prolongations, coarse scatter plans); :meth:`preconditioner`
    then makes the multigrid cycle for new element matrices at the cost of a few dense products
    and one scatter per level.

    Parameters
    ----------
    mesh : Mesh
        From :func:`~sla.assembly.rectangle` (``'quad'``) or :func:`~sla.assembly.box` (``'hex'``).
    ncomp : int
        Components per node (``dim`` for displacements, 1 for a scalar Q1 field); dofs are
        ``node * ncomp + component``.
    fixed : torch.Tensor, optional
        Dirichlet dofs, eliminated in the fine matrix (zero rows and columns but the diagonal).
    max_coarse : int
        Coarsen until a level has at most this many dofs (its dense inverse ends the cycle).
    max_levels : int
        Level cap.
    degree, ratio, cycle
        Chebyshev smoother degree and interval ``[rho / ratio, rho]``; ``'V'`` or ``'W'`` cycle
        (default W: in 3D its coarse work is a third of a fine smoothing, and on SIMP designs it
        needs about two thirds of the V-cycle's CG iterations; ``'auto'`` means W).
    bound_steps : int
        Lanczos steps estimating ``rho`` of ``D^-1 A`` per level for the Chebyshev smoother
        (``1.1 rho``, capped by the Gershgorin bound; 0: the Gershgorin bound alone).

    Each coarsening halves every axis, so every cell count must stay even until the coarse
    grid is small enough: ``192 x 96 x 64`` coarsens five times, ``200 x 100 x 50`` only
    once (25 is odd); a grid that cannot reach a coarsest level with at most
    ``min(max_coarse, 8000)`` dofs is refused with the counts that would work.

    Examples
    --------
    >>> import torch, sla
    >>> from sla.assembly import rectangle
    >>> from sla.assembly.galerkin import GridHierarchy
    >>> mesh = rectangle(0, 16, 0, 8, 16, 8, "quad")  # 16 x 8 quads, scalar Q1 (ncomp=1)
    >>> h = GridHierarchy(mesh, ncomp=1, max_coarse=20)
    >>> h.sizes
    [153, 45, 15]
    >>> ke = torch.tensor([[4.0, -1, -2, -1], [-1, 4, -1, -2], [-2, -1, 4, -1], [-1, -2, -1, 4]]) / 6
    >>> ke = ke.double()  # the Q1 Laplacian of a square cell; one coefficient per cell
    >>> c = torch.ones(mesh.n_cells, dtype=torch.float64)
    >>> v = h.coarse_values(c, ke)  # values of each coarse matrix on its level's pattern
    >>> [x.shape[0] for x in v], [round(float(x.max()), 4) for x in v]  # nested Q1: the coarse Laplacian again
    ([325, 91], [2.6667, 2.6667])
    """

    def __init__(
        self,
        mesh: Mesh,
        ncomp: int = 1,
        fixed: torch.Tensor | None = None,
        max_coarse: int = 500,
        max_levels: int = 10,
        degree: int = 2,
        ratio: float = 10.0,
        cycle: str = "W",
        bound_steps: int = 10,
    ) -> None:
        counts = grid_shape(mesh)
        for name, v, lo in (("ncomp", ncomp, 1), ("max_coarse", max_coarse, 1), ("max_levels", max_levels, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree must be a positive integer, got {degree!r}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 1:
            raise ValueError(f"ratio must be a number > 1, got {ratio!r}")
        self.cycle = check_cycle(cycle, auto="W")
        if isinstance(bound_steps, bool) or not isinstance(bound_steps, int) or bound_steps < 0:
            raise ValueError(f"bound_steps must be a non-negative integer, got {bound_steps!r}")
        self.degree, self.ratio, self.bound_steps = degree, float(ratio), bound_steps
        self.mesh, self.ncomp, self.counts = mesh, ncomp, counts
        self.cell_type = mesh.cell_type
        dev, dt = mesh.points.device, mesh.points.dtype
        ndof = mesh.n_points * ncomp
        self.ndofs = ndof
        self.check(counts, ncomp, max_coarse, max_levels)  # before any work
        dead = np.zeros(ndof, dtype=bool)
        if fixed is not None:
            fixed = torch.as_tensor(fixed).to(torch.int64).flatten().cpu()
            if fixed.numel() and (int(fixed.min()) < 0 or int(fixed.max()) >= ndof):
                raise IndexError(f"fixed dofs must lie in [0, {ndof}), got [{int(fixed.min())}, {int(fixed.max())}]")
            dead[fixed.numpy()] = True
        base = element_for(self.cell_type, 1)
        el = ElementVector(base, ncomp) if ncomp > 1 else base
        cells = el.dofs(mesh).to(dev)
        self.levels: list[_Level] = []
        for _ in self.check(counts, ncomp, max_coarse, max_levels)[1:]:
            lv = _Level(counts, ncomp, self.cell_type, dead, cells, dev, dt)
            self.levels.append(lv)
            counts, dead, cells = lv.counts, lv.dead, lv.cells

    @staticmethod
    def check(counts: tuple[int, ...], ncomp: int, max_coarse: int = 500, max_levels: int = 10) -> list[tuple]:
        """Cell counts of every level for a grid of ``counts`` cells (halving all axes while each is
        even and a level has more than ``max_coarse`` dofs); ``ValueError`` when the coarsest level
        would be too large for its dense inverse."""
        out = [tuple(counts)]

        def dofs(c):
            return math.prod(n + 1 for n in c) * ncomp

        while dofs(out[-1]) > max_coarse and len(out) < max_levels and all(n % 2 == 0 for n in out[-1]):
            out.append(tuple(n // 2 for n in out[-1]))
        size, limit = dofs(out[-1]), min(max_coarse, DENSE_MAX)
        if size > limit and len(out) < max_levels:
            k = len(out) - 1
            need = next(j for j in range(k + 1, 60) if math.prod(n / 2**j + 1 for n in counts) * ncomp <= limit)
            example = " x ".join(str(max(2**need, round(n / 2**need) * 2**need)) for n in counts)
            raise ValueError(
                f"grid of {' x '.join(map(str, counts))} cells cannot be coarsened below {size} dofs (after {k} "
                f"halving(s) {' x '.join(map(str, out[-1]))} has an odd count); the coarsest level must have at most "
                f"{limit} dofs (max_coarse): use cell counts divisible by 2^{need} (e.g. {example})"
            )
        if size > DENSE_MAX:
            raise ValueError(
                f"max_levels={max_levels} stops the {' x '.join(map(str, counts))} grid at {size} dofs; the "
                f"coarsest level must have at most {DENSE_MAX} (raise max_levels)"
            )
        return out

    @property
    def sizes(self) -> list[int]:
        """Dofs per level, finest first."""
        return [self.ndofs] + [lv.pattern.shape[0] for lv in self.levels]

    def coarse_values(self, coeff: torch.Tensor, unit: torch.Tensor) -> list[torch.Tensor]:
        """Values of every coarse matrix (on ``levels[i].pattern``) for fine element matrices
        ``coeff[e] * unit`` (``unit`` ``[nd, nd]``: equal cells) or ``coeff[e] * unit[e]`` (``[E, nd, nd]``)."""
        E = self.mesh.n_cells
        nd = self.mesh.cells.shape[1] * self.ncomp
        coeff = torch.as_tensor(coeff).detach()
        if coeff.shape != (E,):
            raise ValueError(f"coeff must hold one value per cell [{E}], got {tuple(coeff.shape)}")
        unit = torch.as_tensor(unit).detach().to(coeff)
        if unit.shape not in ((nd, nd), (E, nd, nd)):
            raise ValueError(f"unit must be an element matrix [{nd}, {nd}] or one per cell [{E}, {nd}, {nd}]")
        out = []
        K = None
        for i, lv in enumerate(self.levels):
            if i == 0:
                if unit.dim() == 2:
                    K = lv.contract_unit(coeff, unit)
                else:
                    K = lv.contract_masked(coeff[:, None, None] * unit)
            else:
                K = lv.contract(K)
            out.append(lv.assemble(K))
        return out

    def preconditioner(self, A: SparseTensor, coeff: torch.Tensor, unit: torch.Tensor) -> ElementMultigrid:
        """The multigrid cycle for ``A`` (the fine matrix, Dirichlet rows eliminated) whose element
        matrices are ``coeff[e] * unit`` (see :meth:`coarse_values`)."""
        if not isinstance(A, SparseTensor) or A.batch_shape or A.sparse_shape != (self.ndofs, self.ndofs):
            raise ValueError(
                f"A must be one sla.SparseTensor ({self.ndofs}, {self.ndofs}) on this grid, got "
                f"{getattr(A, 'shape', type(A).__name__)}"
            )
        A = A.detach()
        p = A.pattern
        vals = A._flat()[0]
        levels = []
        mats = [(p, vals)] + [(lv.pattern, v) for lv, v in zip(self.levels, self.coarse_values(coeff, unit))]
        for i, (pi, v) in enumerate(mats):
            dpos, didx = pi.diag_index
            d = v.new_zeros(pi.shape[0]).index_add_(0, didx.long(), v[dpos.long()])
            csr = csr32(pi.crow, pi.ccol, v, pi.shape)
            # Chebyshev interval: Lanczos on D^-1 A (x1.1, capped by Gershgorin; Gershgorin alone for
            # bound_steps=0) -- the bound every multigrid of sla uses
            rho = ritz_estimate(
                lambda x, C=csr: torch.mv(C, x), Mat(pi.crow, pi.ccol, v, pi.shape).row, v, d, True, self.bound_steps
            )
            hi = float(capped(*rho))
            P, R = (self.levels[i].P, self.levels[i].R) if i < len(self.levels) else (None, None)
            levels.append(Level(None, P=P, R=R, csr=csr, diag=d, hi=hi))
        return ElementMultigrid(A, [levels], degree=self.degree, ratio=self.ratio, cycle=self.cycle)

    def __repr__(self) -> str:
        grid = " x ".join(map(str, self.counts))
        return f"GridHierarchy({grid} {self.cell_type}, ncomp={self.ncomp}, dofs per level {self.sizes})"
