"""Geometric multigrid for matrices on structured grids.

Needs the grid: ``A.pattern.cache["grid"] = (nx, ny[, nz])`` with unknowns
numbered lexicographically, last axis fastest (``sla.gallery.poisson2d/3d``
and ``sla.assembly`` stencils record it).  Each level halves every axis longer
than 3 (coarse point ``I`` sits on fine point ``2I + 1``); transfers are
(bi/tri)linear interpolation and its transpose (from the points' true distances to the
boundary: :func:`end_weights`), applied as strided tensor operations on the grid on GPUs
(no stored P or R; stored CSR on the CPU, where it is faster).

Coarse operators are Galerkin products ``A_c = P^T A P`` computed on *stencil
arrays* (:mod:`sla.solvers.precond.grid_stencil`): the fine matrix is read as ``|O|``
coefficient grids (one per neighbour offset, compact stencils with offsets in
``{-1, 0, 1}^d``), and the coarse stencil (at most ``3^d`` offsets) follows one axis
at a time from strided slices of those grids -- no sparse-times-sparse product, so the
setup needs only ``O(|O| n)`` extra memory.  Any matrix on the grid works (variable
coefficients, anisotropy, convection), as long as its stencil is compact.

On GPUs the cycle below the fine level is replayed from a CUDA graph and, from
:data:`~sla.solvers.precond.multigrid.MIXED_MIN` unknowns, runs in single precision (options ``graph`` and
``coarse_dtype``): the fine level's few large kernels are what remains to launch.
"""

from __future__ import annotations

import functools

import torch

from ...kernels import all_, any_, reciprocal
from ...numeric_cache import take_over
from ...reductions import abs_max
from ...sparse import SparseTensor
from .graphed import GraphedApply, check_graph
from .grid_stencil import diagonal_and_bound, galerkin_stencil, read_stencil, stencil_to_csr, strides
from .multigrid import Level, Mat, Multigrid, cast_csr, check_cycle, coarse_dtype_for

__all__ = ["GeometricMultigrid", "prolong", "restrict"]

# the stencil helpers under their former names here (tests and scripts read them from this module)
_stencil, _strides, _stencil_to_csr = read_stencil, strides, stencil_to_csr


# --------------------------------------------------- transfers on grids
def _interp_add_(out: torch.Tensor, u: torch.Tensor, n: int, fresh: bool, end: float = 0.5) -> None:
    """``out`` (``n`` fine rows on dim 0) ``+= P u`` along dim 0, or ``=`` when ``fresh``: the odd rows take
    ``u``, the even rows the mean of their two coarse neighbours (zero past the ends; the last point of
    an odd ``n`` takes ``end`` times its one neighbour, see :func:`end_weights`).  Three or four strided
    passes, no temporaries."""
    nc = u.shape[0]
    odd, even = out[1::2][:nc], out[0::2]
    if fresh:
        odd.copy_(u)
        torch.mul(u, 0.5, out=even[:nc])
    else:
        odd.add_(u)
        even[:nc].add_(u, alpha=0.5)
    even[1:nc].add_(u[: nc - 1], alpha=0.5)
    if even.shape[0] > nc:  # odd n: the last fine point 2 nc sees only coarse nc - 1
        if fresh:
            torch.mul(u[nc - 1], end, out=even[nc])
        else:
            even[nc].add_(u[nc - 1], alpha=end)


def end_weights(dims: tuple, axes: tuple, gaps: tuple) -> tuple[tuple, tuple]:
    """Per axis of one coarsening: the weight of the last point of an odd axis from its one coarse
    neighbour, and the coarse level's ``gaps``.

    A level's points sit on its axis at spacing ``s``; the zero boundary past the first point is ``s``
    away (coarse point ``I`` on fine point ``2I + 1`` keeps it so), the one past the last point
    ``gap * s`` away (``gaps``: 1 on the fine grid).  An even axis makes its last point coarse, so the
    coarse level's gap is half its own; an odd one leaves it fine, between its coarse neighbour
    ``s`` before and the boundary ``gap * s`` after, and linear interpolation gives it
    ``gap / (gap + 1)`` of that neighbour (1/2 on a uniform grid).  With 1/2 there instead, grids
    whose levels are not all odd (1000^2: 1000, 500, 250, 125, ...) interpolated badly at their last
    row and took CG 10 iterations where 1023^2 and 1024^2 take 8."""
    ends, out = [], list(gaps)
    for a, n in enumerate(dims):
        g = gaps[a]
        if a not in axes:
            ends.append(0.5)
            continue
        ends.append(g / (g + 1) if n % 2 else 0.5)
        out[a] = (g + 1) / 2 if n % 2 else g / 2
    return tuple(ends), tuple(out)


def _ends(ends, dims) -> tuple:
    return (0.5,) * len(dims) if ends is None else ends


def _prolong_axis(u: torch.Tensor, axis: int, n: int, end: float = 0.5) -> torch.Tensor:
    """Linear interpolation along ``axis`` from ``n // 2`` coarse to ``n`` fine points."""
    shape = list(u.shape)
    shape[axis] = n
    out = u.new_empty(shape)
    _interp_add_(out.movedim(axis, 0), u.movedim(axis, 0), n, fresh=True, end=end)
    return out


def _restrict_axis(f: torch.Tensor, axis: int, end: float = 0.5) -> torch.Tensor:
    """Transpose of :func:`_prolong_axis` (full weighting without the 1/2 scaling); the result is
    contiguous in ``f``'s axis order."""
    nc = f.shape[axis] // 2
    shape = list(f.shape)
    shape[axis] = nc
    out = f.new_empty(shape)
    fv, ov = f.movedim(axis, 0), out.movedim(axis, 0)
    fe = fv[0::2]  # fine points 2I and 2I + 2 feed coarse I with weight 1/2 (2I + 2 may be off the grid)
    torch.add(fv[1::2][:nc], fe[:nc], alpha=0.5, out=ov)
    m = min(nc, fe.shape[0] - 1)
    if m == nc and end != 0.5:  # odd n: the last fine point feeds coarse nc - 1 with its own weight
        ov[: m - 1].add_(fe[1:m], alpha=0.5)
        ov[m - 1].add_(fe[m], alpha=end)
    else:
        ov[:m].add_(fe[1 : m + 1], alpha=0.5)
    return out


def prolong(xc: torch.Tensor, fine: tuple, axes: tuple, ends: tuple | None = None) -> torch.Tensor:
    """``P xc`` for ``xc`` ``[n_coarse, K]`` on the coarse grid of ``fine`` (coarsened ``axes``; ``ends``
    from :func:`end_weights`, 1/2 on every axis when ``None``)."""
    K, ends = xc.shape[-1], _ends(ends, fine)
    coarse = tuple(n // 2 if a in axes else n for a, n in enumerate(fine))
    u = xc.reshape(*coarse, K)
    for a in axes:
        u = _prolong_axis(u, a, fine[a], ends[a])
    return u.reshape(-1, K)


def prolong_add_(
    x: torch.Tensor, xc: torch.Tensor, fine: tuple, axes: tuple, ends: tuple | None = None
) -> torch.Tensor:
    """``x += P xc`` in place (``x`` contiguous ``[n_fine, K]``).

    The last coarsened axis is interpolated straight into strided views of ``x``,
    so no fine-grid temporary is made (the V-cycle's peak memory sits here).
    """
    K, ends = xc.shape[-1], _ends(ends, fine)
    coarse = tuple(n // 2 if a in axes else n for a, n in enumerate(fine))
    u = xc.reshape(*coarse, K)
    for a in axes[:-1]:
        u = _prolong_axis(u, a, fine[a], ends[a])
    a = axes[-1]
    _interp_add_(x.view(*fine, K).movedim(a, 0), u.movedim(a, 0), fine[a], fresh=False, end=ends[a])
    return x


def restrict(r: torch.Tensor, fine: tuple, axes: tuple, ends: tuple | None = None) -> torch.Tensor:
    """``P^T r`` for ``r`` ``[n_fine, K]``."""
    K, ends = r.shape[-1], _ends(ends, fine)
    u = r.reshape(*fine, K)
    for a in axes:
        u = _restrict_axis(u, a, ends[a])
    return u.reshape(-1, K)


def _interp_1d(n: int, coarsen: bool, transpose: bool, device, end: float = 0.5):
    """Padded rows of 1-D interpolation (or its transpose): (cols [rows, E], weights, valid)."""
    if not coarsen:
        i = torch.arange(n, device=device).unsqueeze(1)
        return (
            i,
            torch.ones(n, 1, dtype=torch.float64, device=device),
            torch.ones(n, 1, dtype=torch.bool, device=device),
        )
    nc = n // 2
    if transpose:  # coarse row I: fine 2I, 2I+1, 2I+2
        I = torch.arange(nc, device=device).unsqueeze(1)
        cols = 2 * I + torch.arange(3, device=device)
        w = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64, device=device).repeat(nc, 1)
        if n % 2:
            w[nc - 1, 2] = end
        return cols, w, cols < n
    i = torch.arange(n, device=device)
    odd = (i % 2) == 1
    left = torch.where(odd, (i - 1) // 2, i // 2 - 1)
    right = torch.where(odd, (i - 1) // 2, i // 2)
    cols = torch.stack([left, right], 1)
    w = torch.where(
        odd.unsqueeze(1),
        torch.tensor([1.0, 0.0], dtype=torch.float64, device=device),
        torch.tensor([0.5, 0.5], dtype=torch.float64, device=device),
    )
    if n % 2:
        w[n - 1, 0] = end
    valid = (cols >= 0) & (cols < nc) & (w > 0)
    return cols, w, valid


def _interp_1d_scipy(n: int, coarsen: bool, end: float = 0.5):
    import numpy as np
    import scipy.sparse as sp

    if not coarsen:
        return sp.identity(n, format="csr")
    c, w, v = _interp_1d(n, True, False, "cpu", end)
    rows = np.repeat(np.arange(n), 2)
    ok = v.numpy().ravel()
    return sp.csr_matrix((w.numpy().ravel()[ok], (rows[ok], c.numpy().ravel()[ok])), shape=(n, n // 2))


def transfer_matrix(dims: tuple, axes: tuple, transpose: bool, dtype, device, ends: tuple | None = None) -> Mat:
    """P (``transpose=False``) or R = P^T as a CSR matrix: Kronecker product of 1-D factors.

    Structural setup work, built once per pattern with ``scipy.sparse.kron`` on the host.
    """
    import scipy.sparse as sp

    ends = _ends(ends, dims)
    M = sp.csr_matrix([[1.0]])
    for a, n in enumerate(dims):
        M = sp.kron(M, _interp_1d_scipy(n, a in axes, ends[a]), format="csr")
    if transpose:
        M = M.T.tocsr()
    M.sort_indices()

    def t(a):
        return torch.from_numpy(a.astype("int64")).to(device)

    return Mat(t(M.indptr), t(M.indices), torch.from_numpy(M.data).to(device=device, dtype=dtype), M.shape)


class GeometricMultigrid(Multigrid):
    """Geometric multigrid V-cycle preconditioner for a matrix on a structured grid.

    Parameters
    ----------
    A : SparseTensor
        ``[*batch, n, n]`` with ``A.pattern.cache["grid"]`` set (or pass ``grid``).
    grid : tuple, optional
        Grid dimensions (product ``n``), lexicographic numbering, last axis fastest.
    max_coarse : int
        Stop coarsening at this many unknowns (dense inverse there).
    max_levels : int
        Level cap.
    degree, ratio : int, float
        Chebyshev smoother degree and interval ``[rho / ratio, rho]``.
    cycle : str
        ``'V'``, ``'W'``, ``'K'`` (Krylov-accelerated coarse corrections, a variable
        preconditioner: see :class:`~sla.solvers.precond.multigrid.Multigrid`) or ``'auto'``
        (default: V; on a structured grid the extra coarse work of W and K hardly pays for the
        iterations they save: CPU, 1 thread, K 7 iterations against V's 9-10 at 1.3x the time
        each, 0.89-0.90x V's solve time at 1M-4M unknowns and 1.06x at 250K).
    transfers : str
        ``'stencil'`` (strided tensor operations, no storage), ``'csr'`` (stored
        sparse P and R: faster on the CPU) or ``'auto'`` (CSR on the CPU, stencil on GPUs).
    graph : bool or str
        Replay the cycle below the fine level from a CUDA graph
        (:class:`~sla.solvers.precond.graphed.GraphedApply`: captured on the second application,
        one launch for all coarse levels from then on; eager where it cannot be captured).  The fine
        level's few large kernels stay eager, so the graph's private memory is that of the coarse
        levels (a few bytes per fine unknown).  ``'auto'``: on CUDA devices below :data:`GRAPH_MAX`
        unknowns; ``True`` needs one.
    coarse_dtype : torch.dtype or str
        The dtype of the coarse levels (operators, vectors, coarsest inverse) and of the
        smoother's inverse diagonals; the fine operator and the cycle's fine vectors keep A's.
        ``'auto'``: on GPUs from :data:`~sla.solvers.precond.multigrid.MIXED_MIN` unknowns,
        single precision for a double-precision A (``float32`` / ``complex64``: half the coarse
        memory and traffic; the coarse correction needs no more digits, and CG's iterations stay
        the same), with every cycle (the K-cycle's coarse Krylov steps run in the coarse levels'
        dtype); A's own dtype otherwise (the CPU, smaller systems).  In single precision the
        cycle is symmetric to rounding (~1e-7), not exactly.
        Coarse operators are formed in A's precision, then rounded; one whose entries do not fit
        single precision keeps A's dtype under ``'auto'``.
    """

    name = "gmg"

    def __init__(
        self,
        A: SparseTensor,
        grid: tuple | None = None,
        max_coarse: int = 500,
        max_levels: int = 25,
        degree: int = 2,
        ratio: float = 10.0,
        transfers: str = "auto",
        cycle: str = "auto",
        graph: bool | str = "auto",
        coarse_dtype: torch.dtype | str = "auto",
    ):
        cycle = check_cycle(cycle)
        cd = coarse_dtype_for(coarse_dtype, A)
        graph = check_graph(graph, A.device) and (graph is True or A.shape[-1] < GRAPH_MAX)
        if transfers not in ("auto", "csr", "stencil"):
            raise ValueError(f"transfers must be 'auto', 'csr' or 'stencil', got {transfers!r}")
        if transfers == "auto":
            transfers = "csr" if A.device.type == "cpu" else "stencil"
        p = A.pattern
        grid = grid if grid is not None else p.cache.get("grid")
        if grid is None:
            raise ValueError(
                "preconditioner 'gmg' needs a structured grid: A.pattern.cache['grid'] is not set "
                "(build A with sla.gallery / sla.assembly stencils, pass grid=(nx, ny[, nz]), "
                "or use preconditioner='amg')"
            )
        grid = tuple(int(g) for g in grid)
        total = 1
        for g in grid:
            total *= g
        if total != p.shape[0]:
            raise ValueError(f"grid {grid} has {total} points but A has {p.shape[0]} rows")
        vals = A._flat().detach()
        self.ends: list[tuple] = []  # per coarsening, per axis: see end_weights
        plans = []  # per batch member: [(csr, diag, bound, transfers)] -- the host looks once at the end
        for bi in range(A.batch_size):
            # the fine operator is the pattern's own CSR (no copy); every level is read as a stencil
            csr = p.csr(vals[bi])
            got = take_over("stencil", vals[bi], grid)  # read by this solve's type check, if it did
            offs, S = got if got is not None else read_stencil(p, vals[bi], grid)
            del got
            dims, gaps = grid, (1.0,) * len(grid)
            plan = []
            while S[0].numel() > max_coarse and len(plan) < max_levels - 1:
                axes = tuple(a for a, n in enumerate(dims) if n >= 4)
                if not axes:
                    break
                ends, gaps = end_weights(dims, axes, gaps)
                if bi == 0:
                    self.ends.append(ends)
                diag, hi = diagonal_and_bound(offs, S)
                offs, S, coarse, valid = galerkin_stencil(offs, S, dims, axes, ends)
                plan.append((csr, diag, hi, self._transfers(p, transfers, dims, axes, ends, vals)))
                csr, dims = stencil_to_csr(offs, S, coarse, valid), coarse
                del valid
            diag, hi = diagonal_and_bound(offs, S)
            plan.append((csr, diag, hi, {}))
            del S
            plans.append(plan)
        # one host look for every level's bound, zero-pivot check and range (does it fit in cd?)
        finfo, cast = torch.finfo(cd), cd != A.dtype

        def checks(c, d):  # (zero pivot, fits in cd, constant diagonal); no |values| temporary
            # spelled with the kernels every solve loads (comparisons, sums, amax): aminmax, any and
            # vector_norm would each load a family of their own on a GPU
            const = all_(d == d[:1]) & (d.imag.abs().amax() == 0 if d.is_complex() else True)
            if not cast:
                return any_(d == 0), d.new_ones((), dtype=torch.bool), const
            big = abs_max(c.values()) < finfo.max / 8
            return any_(d == 0), big & (reciprocal(d.abs()).amax() < 1 / (finfo.tiny * 8)), const

        looks = torch.stack(
            [torch.as_tensor(t) for plan in plans for c, d, hi, _ in plan for t in (hi, *checks(c, d))]
        ).tolist()
        if any(looks[1::4]):
            raise ValueError("multigrid needs a non-zero diagonal on every level (a zero pivot appeared)")
        if cast and not all(looks[2::4]):
            if coarse_dtype != "auto":
                raise ValueError(
                    f"coarse_dtype={coarse_dtype}: the coarse operators' entries do not fit its range "
                    f"(use coarse_dtype='auto' or {A.dtype})"
                )
            cd = A.dtype
        his, const = iter(looks[0::4]), iter(looks[3::4])
        # a constant diagonal (a constant-coefficient operator) is kept as one number: 4-8 bytes
        # per unknown less, and one vector less to read in every smoothing step
        hierarchies = [
            [
                Level(
                    None,
                    csr=c if k == 0 else cast_csr(c, cd),
                    diag=(d[:1] if next(const) else d).to(cd),
                    hi=next(his),
                    **t,
                )
                for k, (c, d, _, t) in enumerate(plan)
            ]
            for plan in plans
        ]
        del plans
        super().__init__(A, hierarchies, degree=degree, ratio=ratio, cycle=cycle)
        self.grid = grid
        # below the fine level, the cycle is replayed from a CUDA graph (one per hierarchy): the fine
        # level's few large kernels stay eager, the coarse levels' many small ones become one launch
        self.coarse_dtype = cd
        self._graph = None
        if graph:
            self._graph = {
                id(h): GraphedApply(functools.partial(self._coarse, h, c))
                for h, c in zip(self.hierarchies, self.coarse)
                if len(h) > 1
            }

    def _cycle(self, h, cinv, lvl: int, b: torch.Tensor) -> torch.Tensor:
        if lvl == 1:
            return self._graph[id(h)](b) if self._graph is not None else self._coarse(h, cinv, b)
        return super()._cycle(h, cinv, lvl, b)

    def _coarse(self, h, cinv, b: torch.Tensor) -> torch.Tensor:
        """The cycle below the fine level, in :attr:`coarse_dtype` (what the CUDA graph captures)."""
        if b.dtype == self.coarse_dtype:
            return Multigrid._cycle(self, h, cinv, 1, b)
        return Multigrid._cycle(self, h, cinv, 1, b.to(self.coarse_dtype)).to(b.dtype)

    def graph_status(self) -> list[str]:
        """Per hierarchy: ``'eager'`` (no graph), ``'not captured yet'``, ``'captured'`` or why the capture failed."""
        if self._graph is None:
            return ["eager"] * len(self.hierarchies)
        out = []
        for h in self.hierarchies:
            g = self._graph.get(id(h))
            out.append(
                "eager"
                if g is None
                else (f"failed: {g.failed}" if g.failed else ("captured" if g.graphs else "not captured yet"))
            )
        return out

    @staticmethod
    def _transfers(p, transfers: str, dims: tuple, axes: tuple, ends: tuple, vals: torch.Tensor) -> dict:
        """The level's transfer operators: stored CSR ``P``, ``R`` (cached on the pattern, built once)
        or strided grid operations."""
        if transfers == "csr":
            key = ("gmg_transfers", dims, axes, ends, vals.dtype)
            if key not in p.cache:  # structural: once per pattern
                p.cache[key] = (
                    transfer_matrix(dims, axes, False, vals.dtype, vals.device, ends).csr32(),
                    transfer_matrix(dims, axes, True, vals.dtype, vals.device, ends).csr32(),
                )
            P, R = p.cache[key]
            return {"P": P, "R": R}
        return {
            "prolong": _Transfer(prolong_add_, dims, axes, ends),
            "restrict": _Transfer(restrict, dims, axes, ends),
        }


GRAPH_MAX = 1 << 22
"""``graph='auto'`` captures the coarse cycle below this many unknowns.  Measured on an H200 (5-point,
``bench_gmg.py``): 1M, later solve 11 ms graphed against 28 ms eager (launch-bound coarse levels);
16M, 72 against 73 ms (the coarse levels are no longer launch-bound) while the capture adds ~70 ms
to the first solve (0.203 s against 0.135 s)."""


class _Transfer:
    def __init__(self, fn, dims, axes, ends):
        self.fn, self.dims, self.axes, self.ends = fn, dims, axes, ends

    def __call__(self, *x):
        return self.fn(*x, self.dims, self.axes, self.ends)
