"""CSR matrices with more than ``2**31 - 1`` entries, as row blocks with int32 indices.

cuSPARSE's SpMV/SpMM fail ("internal error") on a CSR with more than ``2**31 - 1``
entries, even with int64 indices, and int64 column indices cost twice the memory.
Such a matrix is kept as a few blocks of whole rows, each an ordinary torch CSR with
int32 indices whose values are views into the one values tensor (no copy of the
values); a product runs block by block into slices of one output vector.  The block
structure (row ranges, rebased int32 row pointers and int32 columns) is built once
per :class:`~sla.pattern.Pattern` and kept on it.
"""

from __future__ import annotations

import torch

__all__ = ["BLOCK_NNZ", "RowBlockedCSR", "row_blocks"]

BLOCK_NNZ = 2**31 - 1
"""A pattern with more entries than this is multiplied as :class:`RowBlockedCSR` (module
attribute: tests lower it to exercise the path)."""

BLOCK_SIZE = 2**30
"""Most entries in one block: blocks are balanced below this (cuSPARSE also failed on a single
int32 block just under ``2**31`` entries)."""


def row_blocks(crow: torch.Tensor, ccol: torch.Tensor, n_cols: int, limit: int | None = None) -> list:
    """``[(r0, r1, lo, hi, crow_block, col_block)]``: whole-row blocks of about equal size,
    at most ``limit`` entries each (default ``min(BLOCK_SIZE, BLOCK_NNZ)``).

    ``crow_block`` is rebased to start at 0; both index arrays are int32 when the block
    and the column count fit (int64 otherwise).  A single row longer than ``limit`` is
    a block of its own.
    """
    limit = min(BLOCK_SIZE, BLOCK_NNZ) if limit is None else int(limit)
    M = crow.numel() - 1
    host = crow.cpu() if crow.device.type != "cpu" else crow
    nnz = int(host[-1])
    if nnz:  # balanced: ceil(nnz / number of blocks)
        limit = max(1, -(-nnz // -(-nnz // limit)))
    out = []
    r0 = 0
    while r0 < M:
        lo = int(host[r0])
        # last row r1 with crow[r1] - lo <= limit (at least one row per block)
        r1 = int(torch.searchsorted(host, torch.tensor(lo + limit, dtype=host.dtype), right=True)) - 1
        r1 = min(max(r1, r0 + 1), M)
        hi = int(host[r1])
        it = torch.int32 if max(hi - lo, r1 - r0, n_cols) <= 2**31 - 1 else torch.int64
        out.append((r0, r1, lo, hi, (crow[r0 : r1 + 1] - lo).to(it), ccol[lo:hi].to(it)))
        r0 = r1
    return out


class RowBlockedCSR:
    """A CSR matrix as row blocks of int32 torch CSR tensors sharing one values tensor.

    Supports what the solvers ask of a level or fine matrix: ``shape``, ``dtype``,
    ``device``, ``values()``, ``matmul(x)`` and ``residual(b, x)`` for dense ``x``
    ``[n, K]``, and ``nbytes()``.
    """

    def __init__(self, blocks: list, values: torch.Tensor, shape: tuple):
        from .pattern import csr_tensor

        self.shape = (int(shape[0]), int(shape[1]))
        self._values = values
        self.blocks = [
            (r0, r1, csr_tensor(crow, col, values[lo:hi], (r1 - r0, self.shape[1])))
            for r0, r1, lo, hi, crow, col in blocks
        ]

    @property
    def dtype(self) -> torch.dtype:
        return self._values.dtype

    @property
    def device(self) -> torch.device:
        return self._values.device

    def values(self) -> torch.Tensor:
        return self._values

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``A @ x`` for dense ``x`` ``[n, K]``."""
        y = x.new_empty(self.shape[0], x.shape[1])
        for r0, r1, C in self.blocks:
            if x.shape[1] == 1:
                torch.mv(C, x[:, 0], out=y[r0:r1, 0])
            else:
                y[r0:r1] = C @ x
        return y

    def residual(self, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``b - A x`` (one new ``[n, K]`` tensor)."""
        y = self.matmul(x)
        return torch.sub(b, y, out=y)

    def nbytes(self) -> int:
        idx = sum(C.crow_indices().nbytes + C.col_indices().nbytes for _, _, C in self.blocks)
        return idx + self._values.nbytes

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x)
