"""Row partitions of a matrix graph: METIS (pymetis), contiguous blocks, or RCB on coordinates.

A :class:`Partition` says which rank owns each global row.  Ranks own a
contiguous block of rows *after* reordering by owner (``perm``), which is the
numbering distributed vectors use.  Partitions depend only on the pattern and
are cached on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..sparse import SparseTensor

__all__ = ["Partition", "from_parts", "partition", "rcb"]

METHODS = ("metis", "contiguous", "rcb")


@dataclass(frozen=True)
class Partition:
    """Owner of every row and the owner-grouped numbering.

    Attributes
    ----------
    parts : torch.Tensor
        ``[n]`` owning rank of each global row.
    perm : torch.Tensor
        ``[n]`` global row at each position of the owner-grouped order
        (rank r's rows are ``perm[offsets[r]:offsets[r+1]]``, in increasing order).
    local : torch.Tensor
        ``[n]`` position of each global row inside its owner's block.
    offsets : tuple[int, ...]
        ``nparts + 1`` block boundaries.
    """

    parts: torch.Tensor
    perm: torch.Tensor
    local: torch.Tensor
    offsets: tuple
    method: str
    edge_cut: int

    @property
    def nparts(self) -> int:
        return len(self.offsets) - 1

    def owned(self, rank: int) -> torch.Tensor:
        """Global rows of ``rank`` (increasing)."""
        return self.perm[self.offsets[rank] : self.offsets[rank + 1]]

    def sizes(self) -> list[int]:
        return [self.offsets[r + 1] - self.offsets[r] for r in range(self.nparts)]


def _metis(A: SparseTensor, nparts: int) -> np.ndarray:
    try:
        import pymetis
    except ImportError as exc:
        raise ImportError("partition(method='metis') needs pymetis: pip install 'sla-torch[dist]'") from exc
    import scipy.sparse as sp

    p = A.pattern.to("cpu")
    n = p.shape[0]
    g = sp.csr_array((np.ones(p.nnz, dtype=np.int8), p.ccol.numpy(), p.crow.numpy()), shape=p.shape)
    g = (g + g.T).tocsr()  # METIS wants an undirected graph without self loops
    g.setdiag(0)
    g.eliminate_zeros()
    if n <= nparts:
        return np.arange(n) % nparts
    graph = pymetis.CSRAdjacency(g.indptr.astype(np.int64), g.indices.astype(np.int64))
    _, membership = pymetis.part_graph(nparts, graph)
    return np.asarray(membership, dtype=np.int64)


def rcb(coords: torch.Tensor, nparts: int) -> torch.Tensor:
    """Recursive coordinate bisection: ``[n]`` part of each point of ``coords`` ``[n, d]``.

    Each step splits the longest extent at the weighted median, so parts differ in
    size by at most one point.
    """
    coords = torch.as_tensor(coords).detach().cpu().double()
    if coords.ndim == 1:
        coords = coords[:, None]
    parts = torch.zeros(coords.shape[0], dtype=torch.int64)

    def split(idx: torch.Tensor, first: int, count: int) -> None:
        if count == 1 or idx.numel() == 0:
            parts[idx] = first
            return
        left = count // 2
        c = coords[idx]
        axis = int(torch.argmax(c.amax(0) - c.amin(0))) if idx.numel() else 0
        order = idx[torch.argsort(c[:, axis], stable=True)]
        cut = (idx.numel() * left) // count
        split(order[:cut], first, left)
        split(order[cut:], first + left, count - left)

    split(torch.arange(coords.shape[0]), 0, nparts)
    return parts


def from_parts(parts: torch.Tensor, nparts: int, method: str = "given", cut: int = -1) -> Partition:
    """The :class:`Partition` of an owner array ``parts`` ``[n]`` (values in ``0..nparts-1``)."""
    parts = torch.as_tensor(parts, dtype=torch.int64).cpu()
    n = parts.numel()
    if n and (int(parts.min()) < 0 or int(parts.max()) >= nparts):
        raise ValueError(f"parts must lie in [0, {nparts}), got range [{int(parts.min())}, {int(parts.max())}]")
    perm = torch.argsort(parts, stable=True)
    counts = torch.bincount(parts, minlength=nparts)
    offsets = (0, *np.cumsum(counts.numpy()).tolist())
    local = torch.empty(n, dtype=torch.int64)
    local[perm] = torch.arange(n) - torch.tensor(offsets[:-1], dtype=torch.int64)[parts[perm]]
    return Partition(parts, perm, local, tuple(int(o) for o in offsets), method, cut)


def partition(A: SparseTensor, nparts: int, method: str = "metis", coords: torch.Tensor | None = None) -> Partition:
    """Partition the rows of a square ``A`` into ``nparts`` blocks (cached on the pattern).

    ``'metis'`` minimises the edge cut of the (symmetrised) matrix graph, i.e.
    the halo each rank exchanges; ``'contiguous'`` splits the current order
    into equal blocks; ``'rcb'`` bisects the point cloud ``coords`` ``[n, d]``
    recursively (needs ``coords``; not cached).
    """
    if not isinstance(A, SparseTensor):
        raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
    n, m = A.sparse_shape
    if n != m:
        raise ValueError(f"A must be square to partition, got shape {tuple(A.shape)}")
    if not isinstance(nparts, int) or nparts < 1:
        raise ValueError(f"nparts must be a positive integer, got {nparts!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    if method == "rcb" and (coords is None or torch.as_tensor(coords).shape[0] != n):
        got = None if coords is None else tuple(torch.as_tensor(coords).shape)
        raise ValueError(f"partition method 'rcb' needs coords of shape [{n}, d] (one point per row), got {got}")

    def build():
        if method == "metis" and nparts > 1:
            parts = torch.from_numpy(_metis(A, nparts))
        elif method == "rcb":
            parts = rcb(coords, nparts)
        else:
            parts = torch.div(torch.arange(n) * nparts, max(n, 1), rounding_mode="floor")
        p = A.pattern.to("cpu")
        return from_parts(parts, nparts, method, int((parts[p.row] != parts[p.col]).sum()))

    if method == "rcb":
        return build()
    return A.pattern.memo(f"partition:{method}:{nparts}", build)
