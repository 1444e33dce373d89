"""Derivatives of a residual ``F(u, *params)`` for the nonlinear solvers.

* :class:`Residual` evaluates ``F`` without a graph, Jacobian-vector products
  (exact forward mode through ``torch.func.jvp`` when every op supports it,
  else a finite difference ``(F(u + h v) - F(u)) / h`` with
  ``h = sqrt(eps) (1 + ||u||) / ||v||`` -- the matrix-free Newton-Krylov
  product of Knoll & Keyes, J. Comput. Phys. 193 (2004)), and exact
  vector-Jacobian products by reverse mode (one retained graph per point).
* :func:`assemble_jacobian` builds a sparse ``J = dF/du`` on a known pattern
  from a few exact VJPs: rows are coloured so that no two rows of a colour
  share a column (a distance-2 colouring of the pattern's row graph, Curtis,
  Powell & Reid 1974 applied to ``J^T``); then ``J^T w_c`` for the indicator
  ``w_c`` of colour ``c`` holds every entry of those rows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ...pattern import Pattern
from ...sparse import SparseTensor

__all__ = ["Residual", "row_coloring", "assemble_jacobian"]

log = logging.getLogger("sla")


class Residual:
    """``F(u, *params)`` with its derivatives; ``u`` of any shape, flattened to ``[N]`` here."""

    def __init__(self, fn: Callable, u_like: torch.Tensor, params: Sequence, jvp: str = "auto"):
        if jvp not in ("auto", "forward", "fd"):
            raise ValueError(f"jvp must be 'auto', 'forward' or 'fd', got {jvp!r}")
        self.fn = fn
        self.shape = u_like.shape
        self.params = [p.detach() if isinstance(p, torch.Tensor) else p for p in params]
        self.jvp_mode = jvp
        self.evaluations = 0

    def _call(self, u_flat: torch.Tensor, params) -> torch.Tensor:
        r = self.fn(u_flat.reshape(self.shape), *params)
        if not isinstance(r, torch.Tensor) or r.shape != self.shape:
            got = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise ValueError(f"residual_fn must return a tensor shaped like u {tuple(self.shape)}, got {got}")
        return r.reshape(-1)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        with torch.no_grad():
            return self._call(u, self.params)

    def jvp(self, u: torch.Tensor, v: torch.Tensor, Fu: torch.Tensor) -> torch.Tensor:
        """``J(u) v`` (``Fu = F(u)`` is reused by the finite difference)."""
        if self.jvp_mode in ("auto", "forward"):
            try:
                with warnings.catch_warnings(), torch.no_grad():  # torch.func emits torch.jit deprecation noise
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from torch.func import jvp

                    return jvp(lambda x: self._call(x, self.params), (u,), (v,))[1]
            except (RuntimeError, NotImplementedError) as exc:
                if self.jvp_mode == "forward":
                    raise
                log.info("forward-mode JVP unavailable (%s); using finite differences", str(exc).splitlines()[0])
                self.jvp_mode = "fd"
        vn = float(torch.linalg.vector_norm(v))
        if vn == 0:
            return torch.zeros_like(v)
        h = float(torch.finfo(u.dtype).eps) ** 0.5 * (1.0 + float(torch.linalg.vector_norm(u))) / vn
        return (self(u + h * v) - Fu) / h

    def linearize_transpose(self, u: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``w -> J(u)^T w`` by reverse mode on one retained graph."""
        with torch.enable_grad():
            x = u.detach().requires_grad_(True)
            r = self._call(x, self.params)
        if not r.requires_grad:  # F does not depend on u
            return lambda w: torch.zeros_like(u)

        def vjp(w: torch.Tensor) -> torch.Tensor:
            (g,) = torch.autograd.grad(r, x, w, retain_graph=True, allow_unused=True)
            return torch.zeros_like(u) if g is None else g

        return vjp

    def param_vjp(self, u: torch.Tensor, w: torch.Tensor, params: Sequence, needs: Sequence[bool]) -> list:
        """``[(dF/dp)^T w for p in params]`` (None where not needed)."""
        with torch.enable_grad():
            ps = [
                p.detach().requires_grad_(True) if need else (p.detach() if isinstance(p, torch.Tensor) else p)
                for p, need in zip(params, needs)
            ]
            r = self._call(u.detach(), ps)
            wanted = [p for p, need in zip(ps, needs) if need]
            grads = torch.autograd.grad(r, wanted, w, allow_unused=True) if wanted and r.requires_grad else ()
        it = iter(grads)
        out = []
        for p, need in zip(ps, needs):
            if not need:
                out.append(None)
                continue
            g = next(it, None)
            out.append(torch.zeros_like(p) if g is None else g)
        return out


def row_coloring(pattern: Pattern) -> tuple[np.ndarray, int]:
    """Colours of the rows such that rows of one colour share no column (cached per pattern).

    Jones-Plassmann on the graph of ``P P^T``: each round takes the uncoloured
    rows whose random priority beats every uncoloured neighbour (an
    independent set) and gives each the smallest colour its coloured
    neighbours do not use (a 64-bit mask per row; past 63 colours a fresh
    colour per round).
    """

    def build():
        import scipy.sparse as sp

        p = pattern.to("cpu")
        M, N = p.shape
        S = sp.csr_array((np.ones(p.nnz, dtype=np.float32), p.ccol.numpy(), p.crow.numpy()), shape=(M, N))
        G = (S @ S.T).tocsr()
        G.setdiag(0)
        G.eliminate_zeros()
        indptr, indices = G.indptr, G.indices
        prio = np.random.default_rng(0).permutation(M).astype(np.int64)
        color = np.full(M, -1, dtype=np.int64)
        empty = np.diff(indptr) == 0
        starts = np.minimum(indptr[:-1], max(len(indices) - 1, 0))
        bits = np.zeros(M, dtype=np.uint64)  # colours used by coloured neighbours (< 64)
        spill = 64
        while (color < 0).any():
            w = np.where(color < 0, prio, -1)
            nb = np.maximum.reduceat(w[indices], starts) if len(indices) else np.full(M, -1)
            nb = np.where(empty, -1, nb)
            sel = np.nonzero((color < 0) & (prio > nb))[0]
            free = ~bits[sel]
            low = free & (~free + np.uint64(1))  # lowest unset bit of the neighbours' mask
            c = np.where(low == 0, spill, np.log2(np.maximum(low, 1).astype(np.float64)).astype(np.int64))
            if (low == 0).any():
                spill += 1
            color[sel] = c
            # tell the neighbours of the newly coloured rows which colour they may no longer take
            r, cr = sel[c < 64], c[c < 64]
            cnt = indptr[r + 1] - indptr[r]
            if cnt.sum():
                within = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                nbrs = indices[np.repeat(indptr[r], cnt) + within]
                np.bitwise_or.at(bits, nbrs, np.repeat(np.left_shift(np.uint64(1), cr.astype(np.uint64)), cnt))
        return color, int(color.max()) + 1 if M else 0

    return pattern.memo("jacobian_row_coloring", build)


def assemble_jacobian(res: Residual, u: torch.Tensor, pattern: Pattern) -> SparseTensor:
    """``dF/du`` at ``u`` on ``pattern`` (entries outside it must be zero) from coloured VJPs."""
    pattern = pattern.to(u.device)
    color, ncolors = row_coloring(pattern)
    vjp = res.linearize_transpose(u)
    colour_t = torch.from_numpy(color).to(u.device)
    rows = []
    for c in range(ncolors):
        rows.append(vjp((colour_t == c).to(u.dtype)))
    Jt = torch.stack(rows)  # Jt[c, j] = J[row of colour c touching column j, j]
    vals = Jt[colour_t[pattern.row], pattern.col]
    return SparseTensor._make(vals, pattern)
