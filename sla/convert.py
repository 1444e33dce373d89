"""Conversions of a :class:`~sla.SparseTensor` to and from SciPy and torch sparse tensors.

The functions are installed as methods (``A.to_scipy()``, ``SparseTensor.from_torch(t)``, ...);
``cls``/``self`` is the SparseTensor class or instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .pattern import Pattern, csr_tensor

if TYPE_CHECKING:  # annotations only: sparse.py imports this module
    from .sparse import SparseTensor

__all__ = ["from_scipy", "to_scipy", "from_torch", "to_torch", "to_csr"]


def from_scipy(
    cls, matrix: Any, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> SparseTensor:
    """From any ``scipy.sparse`` matrix or array."""
    import scipy.sparse as sp

    if not sp.issparse(matrix):
        raise TypeError(f"matrix must be a scipy.sparse matrix, got {type(matrix).__name__}")
    csr = sp.csr_array(matrix)
    csr.sum_duplicates()
    csr.sort_indices()
    crow = torch.from_numpy(csr.indptr.astype(np.int64))
    col = torch.from_numpy(csr.indices.astype(np.int64))
    data = torch.from_numpy(np.ascontiguousarray(csr.data))
    if not (data.dtype.is_floating_point or data.dtype.is_complex):
        # integers (and bools) become float64, exact up to 2^53 -- never the float32 default,
        # which rounds 16777217 to 16777216; larger integers are refused rather than rounded
        exact = data.to(torch.float64)
        if data.numel() and data.dtype != torch.bool and not torch.equal(exact.to(data.dtype), data):
            big = int(data.abs().max())
            raise ValueError(
                f"from_scipy: integer entries up to {big} are not exactly representable in float64 "
                "(|v| > 2^53); convert them yourself if rounding is acceptable"
            )
        data = exact
    out = cls._make(data, Pattern.from_csr(crow, col, csr.shape))
    return out.to(device=device, dtype=dtype)


def to_scipy(self, format: str = "csr") -> Any:
    """``scipy.sparse`` array of an unbatched tensor (copied to the CPU)."""
    import scipy.sparse as sp

    if self.batch_shape:
        raise ValueError(f"to_scipy needs an unbatched tensor, got batch shape {self.batch_shape}")
    p = self.pattern.to("cpu")
    data = self.values.detach().cpu().resolve_conj().numpy()
    A = sp.csr_array((data, p.ccol.numpy(), p.crow.numpy()), shape=p.shape)
    return A.asformat(format)


def from_torch(cls, tensor: torch.Tensor) -> SparseTensor:
    """From a torch sparse COO/CSR/CSC tensor ``[M, N]`` (or ``[*batch, M, N]`` COO with dense batch)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout == torch.strided:
        return cls.from_dense(tensor)
    if tensor.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
        if tensor.dim() != 2:
            raise ValueError(f"batched compressed torch tensors are not supported, got shape {tuple(tensor.shape)}")
        tensor = tensor.to_sparse_coo()
    if tensor.layout != torch.sparse_coo:
        raise TypeError(f"unsupported layout {tensor.layout}")
    if tensor.sparse_dim() != 2:
        raise ValueError(f"expected 2 sparse dims (M, N), got {tensor.sparse_dim()}")
    t = tensor.coalesce()
    row, col = t.indices()
    vals = t.values()  # [nnz, *dense]
    vals = vals.movedim(0, -1) if vals.dim() > 1 else vals
    return cls(vals, row, col, tuple(vals.shape[:-1]) + tuple(t.shape[:2]))


def to_csr(self, batch_idx: int | Sequence[int] | None = None) -> torch.Tensor:
    """Torch sparse CSR tensor; ``batch_idx`` picks the member of a batched tensor."""
    if batch_idx is None:
        if self.batch_shape:
            raise ValueError(f"to_csr of a batched tensor (batch shape {self.batch_shape}) needs batch_idx")
        return self.to_torch("csr")
    idx = (batch_idx,) if isinstance(batch_idx, int) else tuple(batch_idx)
    if len(idx) != len(self.batch_shape) or any(not 0 <= i < s for i, s in zip(idx, self.batch_shape)):
        raise IndexError(f"batch_idx {batch_idx!r} does not name a member of batch shape {self.batch_shape}")
    return self._like(self.values[idx]).to_torch("csr")


def to_torch(self, layout: str = "coo") -> torch.Tensor:
    """Torch sparse tensor (``'coo'`` or ``'csr'``) of an unbatched tensor."""
    if self.batch_shape:
        raise ValueError(f"to_torch needs an unbatched tensor, got batch shape {self.batch_shape}")
    if layout == "coo":
        idx = torch.stack([self.row, self.col])
        return torch.sparse_coo_tensor(idx, self.values, self.pattern.shape, is_coalesced=True, check_invariants=False)
    if layout == "csr":
        return csr_tensor(self.pattern.crow.long(), self.pattern.ccol.long(), self.values, self.pattern.shape)
    raise ValueError(f"layout must be 'coo' or 'csr', got {layout!r}")
