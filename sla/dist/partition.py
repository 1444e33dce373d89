"""Row partitions of a matrix graph: METIS (pymetis) or contiguous blocks.

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

__all__ = ["Partition", "partition"]

METHODS = ("metis", "contiguous")


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
        raise ImportError("partition(method='metis') needs pymetis: pip install 'sla[dist]'") from exc
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


def partition(A: SparseTensor, nparts: int, method: str = "metis") -> Partition:
    """Partition the rows of a square ``A`` into ``nparts`` blocks (cached on the pattern).

    ``'metis'`` minimises the edge cut of the (symmetrised) matrix graph, i.e.
    the halo each rank exchanges; ``'contiguous'`` splits the current order
    into equal blocks.
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

    def build():
        if method == "metis" and nparts > 1:
            parts = torch.from_numpy(_metis(A, nparts))
        else:
            parts = torch.div(torch.arange(n) * nparts, max(n, 1), rounding_mode="floor")
        perm = torch.argsort(parts, stable=True)
        counts = torch.bincount(parts, minlength=nparts)
        offsets = (0, *np.cumsum(counts.numpy()).tolist())
        local = torch.empty(n, dtype=torch.int64)
        local[perm] = torch.arange(n) - torch.tensor(offsets[:-1])[parts[perm]]
        p = A.pattern.to("cpu")
        cut = int((parts[p.row] != parts[p.col]).sum())
        return Partition(parts, perm, local, tuple(int(o) for o in offsets), method, cut)

    return A.pattern.memo(f"partition:{method}:{nparts}", build)
