"""Batched-solve helpers: many systems in one call, over the batched solve of :func:`sla.solve`.

* :func:`solve_batch` -- ``A.solve_batch(values, b)``: a batch of values on ``A``'s pattern,
  given in the caller's own entry order (the order of the ``row``/``col`` that built ``A``);
* :func:`spsolve_batch_same_layout` / :func:`spsolve_batch_coo_same_layout` -- one pattern,
  ``[B, nnz]`` values (a batched :class:`~sla.SparseTensor`: one symbolic setup);
* :func:`spsolve_batch_different_layout` / :func:`spsolve_batch_coo_different_layout` -- one
  pattern each (a :class:`~sla.SparseTensorList`: one block-diagonal solve);
* :func:`spsolve_csr` -- a torch CSR matrix.

The names and argument orders are the seed project's (``torch_sla``); each is a thin
function: everything is differentiable in the values and the right-hand sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...config import rtol_alias
from ...sparse import SparseTensor
from ...sparse_list import SparseTensorList
from .solve import solve

__all__ = [
    "solve_batch",
    "spsolve_batch_same_layout",
    "spsolve_batch_different_layout",
    "spsolve_batch_coo_same_layout",
    "spsolve_batch_coo_different_layout",
    "spsolve_csr",
]


def _options(options: dict, where: str) -> dict:
    """The seed's ``tol`` is sla's ``rtol``."""
    if "tol" in options:
        options["rtol"] = rtol_alias(options.get("rtol"), options.pop("tol"), where)
    return options


def batch_values(A: SparseTensor, values: torch.Tensor) -> torch.Tensor:
    """``values [*batch, k]`` on ``A``'s pattern: in the caller's entry order when ``A`` was built
    from unsorted or duplicated ``row``/``col`` (``k`` = the number of entries given then;
    duplicates are summed), else in pattern order (``k = A.nnz``)."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor [*batch, nnz], got {type(values).__name__}")
    entry = A.pattern._memo.get("entry_index")
    n_in = A.nnz if entry is None else entry.numel()
    if values.dim() < 1 or values.shape[-1] != n_in:
        raise ValueError(
            f"values must have shape [*batch, {n_in}] (one value per entry given when A was built), "
            f"got {tuple(values.shape)}"
        )
    if values.device != A.device:
        raise ValueError(f"values are on {values.device} but A is on {A.device}; move one with .to()")
    if entry is None:
        return values
    return values.new_zeros(*values.shape[:-1], A.nnz).index_add(-1, entry.to(values.device), values)


def solve_batch(
    A: SparseTensor,
    values: torch.Tensor,
    b: torch.Tensor,
    backend: str | None = None,
    method: str | None = None,
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, Any]:
    """Solve ``A_i x_i = b_i`` for a batch of values on ``A``'s pattern (one symbolic setup).

    Parameters
    ----------
    A : SparseTensor
        The template (an unbatched ``[n, n]`` matrix; its values are not used).
    values : torch.Tensor
        ``[*batch, nnz]`` in the entry order of the ``row``/``col`` that built ``A``
        (duplicates summed as then), or ``[*batch, A.nnz]`` in pattern order when
        ``A`` was built from sorted unique indices.
    b : torch.Tensor
        ``[*batch, n]`` (or ``[*batch, n, K]``, or ``[n]`` for every member).
    backend, method, **options
        As for :func:`sla.solve` (``tol`` is accepted for ``rtol``).

    Examples
    --------
    >>> import torch, sla
    >>> row, col = torch.tensor([1, 0, 0, 1]), torch.tensor([1, 0, 1, 0])  # not row-major
    >>> A = sla.SparseTensor(torch.tensor([2.0, 2.0, -1.0, -1.0], dtype=torch.float64), row, col, (2, 2))
    >>> vals = torch.tensor([[2.0, 2.0, -1.0, -1.0], [4.0, 4.0, 0.0, 0.0]], dtype=torch.float64)
    >>> A.solve_batch(vals, torch.ones(2, 2, dtype=torch.float64))
    tensor([[1.0000, 1.0000],
            [0.2500, 0.2500]], dtype=torch.float64)
    """
    if not isinstance(A, SparseTensor):
        raise TypeError(f"A must be a sla.SparseTensor, got {type(A).__name__}")
    if A.batch_shape:
        raise ValueError(f"solve_batch needs an unbatched template matrix, got batch shape {A.batch_shape}")
    batch = SparseTensor._make(batch_values(A, values), A.pattern)
    return solve(batch, b, backend, method, **_options(options, "solve_batch"))


def spsolve_batch_same_layout(
    val_batch: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    shape: Sequence[int],
    b_batch: torch.Tensor,
    method: str | None = None,
    **options: Any,
) -> torch.Tensor:
    """Solve ``A_i x_i = b_i``, all ``A_i`` on one ``(row, col)`` layout: ``val_batch [B, nnz]``, ``b_batch [B, m]``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"shape must be (m, n) of one matrix, got {shape}")
    if not isinstance(val_batch, torch.Tensor) or val_batch.dim() < 2:
        got = tuple(val_batch.shape) if isinstance(val_batch, torch.Tensor) else type(val_batch).__name__
        raise ValueError(f"val_batch must be a tensor [B, nnz], got {got}")
    A = SparseTensor(val_batch, row, col, tuple(val_batch.shape[:-1]) + shape)
    return solve(A, b_batch, method=method, **_options(options, "spsolve_batch_same_layout"))


def spsolve_batch_different_layout(
    matrices: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Sequence[int]]],
    b_list: Sequence[torch.Tensor],
    method: str | None = None,
    **options: Any,
) -> list[torch.Tensor]:
    """Solve ``A_i x_i = b_i`` for matrices given as ``(values, row, col, shape)`` with their own layouts."""
    if not isinstance(matrices, (list, tuple)) or not matrices:
        raise ValueError("matrices must be a non-empty list of (values, row, col, shape) tuples")
    mats = []
    for i, m in enumerate(matrices):
        if not isinstance(m, (list, tuple)) or len(m) != 4:
            raise ValueError(f"matrices[{i}] must be a (values, row, col, shape) tuple, got {type(m).__name__}")
        mats.append(SparseTensor(*m))
    return SparseTensorList(mats).solve(list(b_list), method=method, **_options(options, "spsolve_batch"))


def spsolve_batch_coo_same_layout(
    A_template: torch.Tensor, val_batch: torch.Tensor, b_batch: torch.Tensor, method: str | None = None, **options: Any
) -> torch.Tensor:
    """:func:`spsolve_batch_same_layout` with the layout of a torch sparse COO ``A_template``
    (``val_batch [B, nnz]`` in the order of its coalesced ``indices()``)."""
    if not isinstance(A_template, torch.Tensor) or A_template.layout != torch.sparse_coo:
        raise TypeError("A_template must be a torch sparse COO tensor")
    idx = A_template.coalesce().indices()
    return spsolve_batch_same_layout(val_batch, idx[0], idx[1], A_template.shape, b_batch, method, **options)


def spsolve_batch_coo_different_layout(
    A_list: Sequence[torch.Tensor], b_list: Sequence[torch.Tensor], method: str | None = None, **options: Any
) -> list[torch.Tensor]:
    """:func:`spsolve_batch_different_layout` for torch sparse (COO or CSR) matrices."""
    if not isinstance(A_list, (list, tuple)) or not A_list:
        raise ValueError("A_list must be a non-empty list of torch sparse tensors")
    mats = SparseTensorList([SparseTensor.from_torch(A) for A in A_list])
    return mats.solve(list(b_list), method=method, **_options(options, "spsolve_batch"))


def spsolve_csr(A: torch.Tensor, b: torch.Tensor, **options: Any) -> torch.Tensor:
    """Solve with a torch sparse CSR matrix ``A`` (differentiable in its values and ``b``)."""
    if not isinstance(A, torch.Tensor) or A.layout != torch.sparse_csr:
        got = A.layout if isinstance(A, torch.Tensor) else type(A).__name__
        raise TypeError(f"A must be a torch sparse CSR tensor, got {got}")
    return solve(SparseTensor.from_torch(A), b, **_options(options, "spsolve_csr"))
