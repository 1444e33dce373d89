"""Reductions, norms, structure checks, elementwise maps and gathers of a
:class:`~sla.dist.DSparseTensor` (mixed into it).

Every stored entry lives on exactly one rank (the owner of its row), so
reductions over stored values are one all-reduce.  Operations that need the
whole matrix (the 2-norm, ``det``, ``lu``, ``svd``, ``condition_number``,
structure checks; ``eigsh`` is distributed: :mod:`sla.dist.eigsh`) gather it onto every rank with :meth:`full_tensor`;
the expensive ones say so with a ``ResourceWarning``.
"""

from __future__ import annotations

import numbers
import warnings

import torch
import torch.distributed as dist

from ..sparse import SparseTensor
from .comm import all_gather_list, all_reduce
from .halo import reverse_exchange

__all__ = ["DistOps"]


class DistOps:
    """Mixin of the whole-matrix operations (see the module docstring)."""

    # ------------------------------------------------------------ gathers
    def full_tensor(self) -> SparseTensor:
        """The global SparseTensor on every rank (all-gather of the stored entries; collective)."""
        if "full" in self._cache and self._cache["full"][0] == self.local.values._version:
            return self._cache["full"][1]
        loc = self.local.detach()
        cols = torch.cat([self.owned, self.plan.ghosts.cpu()]).to(loc.device)
        idx = torch.stack([self.owned.to(loc.device)[loc.row.long()], cols[loc.col.long()]], 1)
        nnz = torch.tensor([loc.nnz], dtype=torch.int64, device=loc.device)
        counts = [int(t) for t in torch.cat(counts_list(self, nnz))]
        vals = torch.cat(all_gather_list(loc.values, counts, self.group, self.timeout))
        ij = torch.cat(all_gather_list(idx, counts, self.group, self.timeout))
        A = SparseTensor(vals, ij[:, 0], ij[:, 1], self.shape)
        self._cache["full"] = (self.local.values._version, A)
        return A

    def _gather_warn(self, what: str) -> SparseTensor:
        warnings.warn(
            f"DSparseTensor.{what} gathers the whole {self.shape[0]}x{self.shape[1]} matrix onto every rank "
            "and runs single-process",
            ResourceWarning,
            stacklevel=3,
        )
        return self.full_tensor()

    def det(self) -> torch.Tensor:
        """Determinant (gathers the matrix; ``ResourceWarning``)."""
        return self._gather_warn("det()").det()

    def lu(self):
        """LU factorisation of the global matrix (gathers it; ``ResourceWarning``)."""
        return self._gather_warn("lu()").lu()

    def svd(self, k: int = 6, **kwargs):
        """``k`` largest singular triplets (gathers the matrix; ``ResourceWarning``)."""
        return self._gather_warn("svd()").svd(k, **kwargs)

    def condition_number(self, ord: int = 2, **kwargs) -> torch.Tensor:
        """Condition number (gathers the matrix; ``ResourceWarning``)."""
        return self._gather_warn("condition_number()").condition_number(ord, **kwargs)

    # --------------------------------------------------------- reductions
    def _reduce(self, local: torch.Tensor, op) -> torch.Tensor:
        return all_reduce(local.clone(), op=op, group=self.group, timeout=self.timeout)

    @property
    def nnz(self) -> int:
        """Stored entries on this rank."""
        return self.local.nnz

    @property
    def global_nnz(self) -> int:
        """Stored entries over all ranks (one all-reduce)."""
        return int(self._reduce(torch.tensor(self.local.nnz, device=self.device), dist.ReduceOp.SUM))

    def sum(self) -> torch.Tensor:
        """Sum of every entry (one all-reduce)."""
        return self._reduce(self.local.values.sum(), dist.ReduceOp.SUM)

    def mean(self) -> torch.Tensor:
        """Mean over all ``n * n`` entries, implicit zeros included (like ``to_dense().mean()``)."""
        return self.sum() / (self.shape[0] * self.shape[1])

    def max(self) -> torch.Tensor:
        """Largest stored value (one all-reduce)."""
        v = self.local.values
        return self._reduce(v.max() if v.numel() else v.new_tensor(-torch.inf), dist.ReduceOp.MAX)

    def min(self) -> torch.Tensor:
        """Smallest stored value (one all-reduce)."""
        v = self.local.values
        return self._reduce(v.min() if v.numel() else v.new_tensor(torch.inf), dist.ReduceOp.MIN)

    def prod(self) -> torch.Tensor:
        """Product of the stored values (one all-reduce)."""
        return self._reduce(self.local.values.prod(), dist.ReduceOp.PRODUCT)

    def norm(self, ord="fro") -> torch.Tensor:
        """``'fro'``, ``1`` (max column sum), ``inf`` (max row sum): one all-reduce; ``2`` gathers."""
        v = self.local.values
        if ord == "fro":
            return self._reduce((v.abs() ** 2).sum(), dist.ReduceOp.SUM).sqrt()
        if ord in (float("inf"), "inf"):
            rows = v.new_zeros(self.n_owned, dtype=v.real.dtype).index_add_(0, self.local.row.long(), v.abs())
            return self._reduce(rows.max() if rows.numel() else rows.new_tensor(0.0), dist.ReduceOp.MAX)
        if ord == 1:
            cols = v.new_zeros(self.local.shape[1], dtype=v.real.dtype).index_add_(0, self.local.col.long(), v.abs())
            mine = cols[: self.n_owned] + reverse_exchange(self.plan, cols[self.n_owned :, None], self.group)[:, 0]
            return self._reduce(mine.max() if mine.numel() else mine.new_tensor(0.0), dist.ReduceOp.MAX)
        if ord == 2:
            return self._gather_warn("norm(2)").norm(2)
        raise ValueError(f"ord must be 'fro', 1, inf or 2, got {ord!r}")

    # ---------------------------------------------------------- structure
    def is_symmetric(self, rtol: float | None = None) -> bool:
        """``A == A^T`` (on the gathered matrix, cached)."""
        return self.full_tensor().is_symmetric(rtol)

    def is_hermitian(self, rtol: float | None = None) -> bool:
        """``A == A^H`` (on the gathered matrix, cached)."""
        return self.full_tensor().is_hermitian(rtol)

    def is_positive_definite(self) -> bool:
        """Hermitian positive definite (on the gathered matrix)."""
        return self.full_tensor().is_positive_definite()

    def detect_matrix_type(self) -> str:
        """``'spd'``, ``'symmetric'``, ``'general'``... as :meth:`SparseTensor.detect_matrix_type`."""
        return self.full_tensor().detect_matrix_type()

    def T(self) -> DSparseTensor:  # noqa: F821
        """Transpose, repartitioned on the same ranks (gathers the matrix)."""
        return self._repartition(self.full_tensor().T())

    def H(self) -> DSparseTensor:  # noqa: F821
        """Conjugate transpose, repartitioned on the same ranks (gathers the matrix)."""
        return self._repartition(self.full_tensor().H())

    def _repartition(self, A: SparseTensor):
        layers = self.overlap.layers if self.overlap is not None else 0
        where = self._mesh if self._mesh is not None else self.group
        return type(self).partition(A, where, self.method, overlap=layers, timeout=self.timeout)

    # --------------------------------------------------- elementwise maps
    def map_values(self, fn) -> DSparseTensor:  # noqa: F821
        """The same layout with ``fn`` applied to the stored values (``D * s``, ``D.abs()``...)."""
        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.local = self.local.with_values(fn(self.local.values))
        out.overlap = None if self.overlap is None else self.overlap.map_values(fn)
        out._prec, out._cache = (
            {},
            {k: v for k, v in self._cache.items() if k in ("col_owner", "all_owned", "layout_key")},
        )
        return out

    def _scalar(self, s, op: str):
        if isinstance(s, numbers.Number) or (isinstance(s, torch.Tensor) and s.ndim == 0):
            return s
        raise TypeError(f"DSparseTensor {op} takes a scalar (number or 0-d tensor), got {type(s).__name__}")

    def __add__(self, s):
        """``D + s`` adds ``s`` to every *stored* entry (the seed's semantics; implicit zeros stay zero)."""
        if isinstance(s, DistOps):
            if s.layout_key != self.layout_key or not torch.equal(s.local.col, self.local.col):
                raise ValueError("D1 + D2 needs two DSparseTensors with the same partition and pattern")
            return self.map_values(lambda v: v + s.local.values)
        s = self._scalar(s, "+")
        return self.map_values(lambda v: v + s)

    __radd__ = __add__

    def __sub__(self, s):
        if isinstance(s, DistOps):
            return self + (-s)
        s = self._scalar(s, "-")
        return self.map_values(lambda v: v - s)

    def __rsub__(self, s):
        s = self._scalar(s, "-")
        return self.map_values(lambda v: s - v)

    def __mul__(self, s):
        s = self._scalar(s, "*")
        return self.map_values(lambda v: v * s)

    __rmul__ = __mul__

    def __truediv__(self, s):
        s = self._scalar(s, "/")
        return self.map_values(lambda v: v / s)

    def __neg__(self):
        return self.map_values(torch.neg)

    def abs(self):
        """Entrywise absolute value."""
        return self.map_values(torch.abs)

    __abs__ = abs

    def conj(self):
        """Entrywise complex conjugate."""
        return self.map_values(lambda v: v.conj().resolve_conj())


def counts_list(D, nnz: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``nnz`` (a one-element tensor)."""
    return all_gather_list(nnz, [1] * D.world_size, D.group, D.timeout)
