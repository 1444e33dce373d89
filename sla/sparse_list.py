"""SparseTensorList: matrices of different sizes and patterns handled as one.

A dataset of graphs or meshes gives matrices that cannot share a batch
dimension (their patterns differ).  :class:`SparseTensorList` keeps them
apart for indexing and iteration, and joins them into one block-diagonal
:class:`~sla.SparseTensor` whenever that makes the work one call: ``@`` runs
one sparse product, ``solve`` one linear solve.  The block values are a
``torch.cat`` of the members' values, so gradients reach every member.

>>> import torch, sla
>>> A = sla.SparseTensor.from_dense(torch.tensor([[2., 0.], [0., 4.]], dtype=torch.float64))
>>> B = sla.SparseTensor.from_dense(torch.tensor([[1.]], dtype=torch.float64))
>>> L = sla.SparseTensorList([A, B])
>>> L.solve([torch.tensor([2., 4.], dtype=torch.float64), torch.tensor([3.], dtype=torch.float64)])
[tensor([1., 1.], dtype=torch.float64), tensor([3.], dtype=torch.float64)]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from . import structure
from .pattern import Pattern
from .sparse import SparseTensor, register_linalg

__all__ = ["SparseTensorList"]

Operand = Sequence[torch.Tensor] | torch.Tensor


def _offsets(sizes: Sequence[int]) -> torch.Tensor:
    out = torch.zeros(len(sizes) + 1, dtype=torch.int64)
    if sizes:
        torch.cumsum(torch.tensor(list(sizes), dtype=torch.int64), 0, out=out[1:])
    return out


class SparseTensorList:
    """A list of unbatched SparseTensors with their own shapes and patterns.

    Parameters
    ----------
    tensors : sequence of SparseTensor
        Unbatched ``[M_i, N_i]`` matrices on one device with one dtype.

    Notes
    -----
    ``to_block_diagonal()`` gives ``diag(A_1, ..., A_n)``; the offsets of its
    blocks are :attr:`offsets` (from :attr:`block_sizes`).  Its pattern is built
    once per list and kept.  Arithmetic (``+ - * /``, unary ``-``) works member
    by member with another list of the same shapes or with a scalar, with the
    rules of :class:`~sla.SparseTensor` (so adding a scalar, which would fill
    every implicit zero, is refused).
    """

    __slots__ = ("_tensors", "_block", "node_index")

    def __init__(self, tensors: Sequence[SparseTensor]):
        if isinstance(tensors, SparseTensor) or not isinstance(tensors, (list, tuple, SparseTensorList)):
            raise TypeError(f"tensors must be a list of SparseTensors, got {type(tensors).__name__}")
        tensors = list(tensors)
        if not tensors:
            raise ValueError("a SparseTensorList needs at least one member, got an empty list")
        for i, t in enumerate(tensors):
            if not isinstance(t, SparseTensor):
                raise TypeError(f"tensors[{i}] must be a sla.SparseTensor, got {type(t).__name__}")
            if t.batch_shape:
                raise ValueError(f"tensors[{i}] is batched (batch shape {t.batch_shape}); members must be [M, N]")
            if t.device != tensors[0].device or t.dtype != tensors[0].dtype:
                raise ValueError(
                    f"all members must share device and dtype: tensors[0] is {tensors[0].dtype} on "
                    f"{tensors[0].device}, tensors[{i}] is {t.dtype} on {t.device}"
                )
        self._tensors = tensors
        self._block = None  # (pattern, row offsets, col offsets), built on demand
        self.node_index: list[torch.Tensor] | None = None

    # ------------------------------------------------------------ container
    def __len__(self) -> int:
        return len(self._tensors)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return SparseTensorList(self._tensors[idx])
        return self._tensors[idx]

    @classmethod
    def from_coo_list(
        cls, matrices: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Sequence[int]]]
    ) -> SparseTensorList:
        """From ``[(values, row, col, shape), ...]``, one tuple per member."""
        if not isinstance(matrices, (list, tuple)):
            raise TypeError(
                f"matrices must be a list of (values, row, col, shape) tuples, got {type(matrices).__name__}"
            )
        out = []
        for i, m in enumerate(matrices):
            if not isinstance(m, (list, tuple)) or len(m) != 4:
                raise ValueError(f"matrices[{i}] must be a (values, row, col, shape) tuple, got {m!r:.80}")
            out.append(SparseTensor(*m))
        return cls(out)

    @classmethod
    def from_torch_sparse_list(cls, tensors: Sequence[torch.Tensor]) -> SparseTensorList:
        """From torch sparse (COO or CSR) matrices, one per member."""
        return cls([SparseTensor.from_torch(t) for t in tensors])

    def __iter__(self) -> Iterator[SparseTensor]:
        return iter(self._tensors)

    def __repr__(self) -> str:
        return (
            f"SparseTensorList(len={len(self)}, total_shape={self.total_shape}, nnz={self.nnz}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    def to_list(self) -> list[SparseTensor]:
        """The members as a plain Python list."""
        return list(self._tensors)

    def _first(self) -> SparseTensor:
        return self._tensors[0]

    device = property(lambda self: self._first().device)
    dtype = property(lambda self: self._first().dtype)
    shapes = property(lambda self: [tuple(t.shape) for t in self._tensors], doc="``[(M_i, N_i), ...]``.")
    nnz = property(lambda self: sum(t.nnz for t in self._tensors), doc="Stored entries of all members.")
    total_nnz = property(lambda self: sum(t.nnz for t in self._tensors), doc="Alias of ``nnz`` (the seed's name).")
    block_sizes = property(
        lambda self: [tuple(t.shape) for t in self._tensors], doc="``[(M_i, N_i), ...]``: the diagonal blocks."
    )
    total_shape = property(
        lambda self: (sum(t.shape[0] for t in self._tensors), sum(t.shape[1] for t in self._tensors)),
        doc="Shape of the block-diagonal matrix.",
    )

    # ---------------------------------------------------------------- moves
    def _map(self, fn) -> SparseTensorList:
        out = SparseTensorList([fn(t) for t in self._tensors])
        out.node_index = self.node_index
        return out

    def to(self, *args: str | torch.device | torch.dtype, **kwargs: Any) -> SparseTensorList:
        """Every member ``.to(...)`` (device and/or dtype)."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def cpu(self) -> SparseTensorList:
        return self.to("cpu")

    def cuda(self, device: int | str | torch.device | None = None) -> SparseTensorList:
        return self._map(lambda t: t.cuda(device))

    def detach(self) -> SparseTensorList:
        return self._map(lambda t: t.detach())

    def requires_grad_(self, flag: bool = True) -> SparseTensorList:
        for t in self._tensors:
            t.requires_grad_(flag)
        return self

    def with_values(self, values: Sequence[torch.Tensor]) -> SparseTensorList:
        """Same patterns (and block pattern) with new values, ``values[i]`` of shape ``[nnz_i]``."""
        if len(values) != len(self):
            raise ValueError(f"values must hold {len(self)} tensors, got {len(values)}")
        for i, (t, v) in enumerate(zip(self._tensors, values)):
            if not isinstance(v, torch.Tensor) or tuple(v.shape) != (t.nnz,):
                raise ValueError(f"values[{i}] must be a tensor of shape [{t.nnz}], got {getattr(v, 'shape', v)}")
        out = SparseTensorList([SparseTensor._make(v, t.pattern) for t, v in zip(self._tensors, values)])
        out._block = self._block if self._block and self._block[0].device == out.device else None
        out.node_index = self.node_index
        return out

    # --------------------------------------------------------- block matrix
    def _block_pattern(self) -> tuple[Pattern, torch.Tensor, torch.Tensor]:
        if self._block is None:
            first = self._first()
            ro = _offsets([t.shape[0] for t in self._tensors])
            co = _offsets([t.shape[1] for t in self._tensors])
            dev = first.device
            row = torch.cat([t.row + int(ro[i]) for i, t in enumerate(self._tensors)])
            col = torch.cat([t.col + int(co[i]) for i, t in enumerate(self._tensors)])
            # members are sorted row-major and their row ranges increase: the union is sorted too
            pattern = Pattern(row.to(dev), col.to(dev), (int(ro[-1]), int(co[-1])))
            self._block = (pattern, ro, co)
        return self._block

    def to_block_diagonal(self) -> SparseTensor:
        """``diag(A_1, ..., A_n)``; block ``i`` spans rows ``offsets[i]:offsets[i+1]`` and columns
        ``col_offsets[i]:col_offsets[i+1]`` (see :attr:`offsets`, :attr:`block_sizes`).

        Gradients flow from the block matrix's values to every member's values.
        """
        pattern, _, _ = self._block_pattern()
        return SparseTensor._make(torch.cat([t.values for t in self._tensors]), pattern)

    @property
    def offsets(self) -> torch.Tensor:
        """Row offsets of the blocks ``[len + 1]``."""
        return self._block_pattern()[1]

    @property
    def col_offsets(self) -> torch.Tensor:
        """Column offsets of the blocks ``[len + 1]``."""
        return self._block_pattern()[2]

    @classmethod
    def from_block_diagonal(
        cls, A: SparseTensor, sizes: Sequence[int] | None = None, *, offsets: Sequence[int] | None = None
    ) -> SparseTensorList:
        """Split a block-diagonal matrix into its blocks (differentiably).

        Parameters
        ----------
        A : SparseTensor
            Unbatched; every stored entry must lie inside a diagonal block.
        sizes : sequence of int or of (M_i, N_i)
            Block sizes (an int means a square block), e.g. another list's :attr:`block_sizes`.
        offsets : sequence of int, keyword-only
            Alternatively, the row (= column) offsets of square blocks (:attr:`offsets`).
        """
        if not isinstance(A, SparseTensor) or A.batch_shape:
            raise ValueError("A must be an unbatched sla.SparseTensor")
        if (sizes is None) == (offsets is None):
            raise ValueError("pass exactly one of sizes and offsets")
        if offsets is not None:
            off = [int(o) for o in offsets]
            if not off or off[0] != 0 or any(b < a for a, b in zip(off, off[1:])):
                raise ValueError(f"offsets must start at 0 and not decrease, got {off}")
            sizes = [(b - a, b - a) for a, b in zip(off, off[1:])]
        sizes = [(int(s), int(s)) if np.ndim(s) == 0 else (int(s[0]), int(s[1])) for s in sizes]
        if any(m < 0 or n < 0 for m, n in sizes):
            raise ValueError(f"block sizes must be non-negative, got {sizes}")
        total = (sum(m for m, _ in sizes), sum(n for _, n in sizes))
        if total != A.sparse_shape:
            raise ValueError(f"block sizes add up to {total}, but A has shape {A.sparse_shape}")
        dev = A.device
        ro = _offsets([m for m, _ in sizes]).to(dev)
        co = _offsets([n for _, n in sizes]).to(dev)
        brow = torch.searchsorted(ro, A.row, right=True) - 1
        bcol = torch.searchsorted(co, A.col, right=True) - 1
        if A.nnz and not bool((brow == bcol).all()):
            k = int(torch.nonzero(brow != bcol)[0])
            raise ValueError(
                f"A is not block diagonal for these sizes: entry ({int(A.row[k])}, {int(A.col[k])}) lies outside "
                "the diagonal blocks"
            )
        counts = torch.bincount(brow, minlength=len(sizes)).tolist()
        rows = torch.split(A.row - ro[brow], counts)
        cols = torch.split(A.col - co[bcol], counts)
        vals = torch.split(A.values, counts)
        out = cls([SparseTensor._make(v, Pattern(r, c, s)) for r, c, v, s in zip(rows, cols, vals, sizes)])
        out._block = (A.pattern, ro.cpu(), co.cpu())
        return out

    def to_connected_components(
        self: SparseTensorList | SparseTensor, A: SparseTensor | None = None
    ) -> SparseTensorList:
        """Split a square matrix into the blocks of its connected components (weak connectivity).

        ``SparseTensorList.to_connected_components(A)`` (or ``A.to_connected_components()``)
        splits ``A``; ``L.to_connected_components()`` splits ``L``'s block-diagonal matrix,
        i.e. every member into its own components (``node_index`` then numbers the nodes
        of the block-diagonal matrix).  Component ``i`` holds the nodes ``out.node_index[i]``
        (sorted original indices), renumbered from 0; values are differentiable views of
        ``A.values``.  Components are ordered by their smallest node.
        """
        if isinstance(self, SparseTensorList):
            if A is not None:
                raise TypeError("L.to_connected_components() takes no matrix (it splits L's members)")
            A = self.to_block_diagonal()
        elif A is None:
            A = self  # called on the class with the matrix first: SparseTensorList.to_connected_components(A)
        cls = SparseTensorList
        if not isinstance(A, SparseTensor) or A.batch_shape:
            raise ValueError("A must be an unbatched sla.SparseTensor")
        n = A.sparse_shape[0]
        labels, ncomp = structure.connected_components(A)
        dev = A.device
        order = torch.argsort(labels, stable=True)  # nodes grouped by component, original order inside
        sizes = torch.bincount(labels, minlength=ncomp)
        starts = torch.cumsum(sizes, 0) - sizes
        local = torch.empty_like(order)
        local[order] = torch.arange(n, device=dev) - starts[labels[order]]
        comp = labels[A.row]
        eorder = torch.argsort(comp, stable=True)  # entries grouped by component, row-major inside
        counts = torch.bincount(comp, minlength=ncomp).tolist()
        rows = torch.split(local[A.row[eorder]], counts)
        cols = torch.split(local[A.col[eorder]], counts)
        vals = torch.split(A.values[..., eorder], counts)
        sizes_l = sizes.tolist()
        out = cls([SparseTensor._make(v, Pattern(r, c, (s, s))) for r, c, v, s in zip(rows, cols, vals, sizes_l)])
        out.node_index = list(torch.split(order, sizes_l))
        return out

    # ----------------------------------------------------------- arithmetic
    def _zip(self, other, op, name: str) -> SparseTensorList:
        if isinstance(other, SparseTensorList):
            if len(other) != len(self):
                raise ValueError(f"{name} needs lists of one length, got {len(self)} and {len(other)}")
            return SparseTensorList([op(a, b) for a, b in zip(self._tensors, other._tensors)])
        return SparseTensorList([op(a, other) for a in self._tensors])

    def __add__(self, other: SparseTensorList) -> SparseTensorList:
        return self._zip(other, lambda a, b: a + b, "+")

    __radd__ = __add__

    def __sub__(self, other: SparseTensorList) -> SparseTensorList:
        return self._zip(other, lambda a, b: a - b, "-")

    def __rsub__(self, other: Any) -> SparseTensorList:
        return self._zip(other, lambda a, b: b - a, "-")

    def __mul__(self, other: SparseTensorList | float | torch.Tensor) -> SparseTensorList:
        return self._zip(other, lambda a, b: a * b, "*")

    __rmul__ = __mul__

    def __truediv__(self, other: float | torch.Tensor) -> SparseTensorList:
        return self._zip(other, lambda a, b: a / b, "/")

    def __neg__(self) -> SparseTensorList:
        return self._map(lambda t: -t)

    # -------------------------------------------------- per-member results
    def sum(self, axis: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """``[A_i.sum(axis)]``: each member's sum (None: all its entries; 0: over rows; 1: over columns)."""
        return [t.sum(axis=axis) for t in self._tensors]

    def mean(self, axis: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """``[A_i.mean(axis)]`` (implicit zeros count)."""
        return [t.mean(axis=axis) for t in self._tensors]

    def norm(self, ord: Any = "fro") -> list[torch.Tensor]:
        """``[A_i.norm(ord)]`` (``'fro'``, 1, inf, 2)."""
        return [t.norm(ord) for t in self._tensors]

    def is_symmetric(self, rtol: float | None = None) -> list[bool]:
        """``[A_i.is_symmetric()]``."""
        return [t.is_symmetric(rtol) for t in self._tensors]

    def is_positive_definite(self, method: str = "auto") -> list[bool]:
        """``[A_i.is_positive_definite(method)]`` (exact by default)."""
        return [t.is_positive_definite(method) for t in self._tensors]

    def connected_components(self) -> tuple[torch.Tensor, int]:
        """``(labels, count)`` of the block-diagonal matrix's graph: every member adds at least one component."""
        return structure.connected_components(self.to_block_diagonal())

    def has_isolated_components(self) -> bool:
        """The block-diagonal matrix has more than one connected component (always, for two or more members)."""
        return self.connected_components()[1] > 1

    # ------------------------------------------------------------ operators
    def _stack(self, xs: Operand, sizes: list, name: str):
        """Concatenate per-member operands; return (x, splitter).  One tensor is either every
        member's operand stacked (``[sum n_i(, K)]``) or, when every ``n_i`` is its length and
        there are several members, one operand for all of them."""
        total = sum(sizes)
        if isinstance(xs, torch.Tensor):
            if xs.dim() in (1, 2) and len(sizes) > 1 and all(s == xs.shape[0] for s in sizes):
                return torch.cat([xs] * len(sizes)), sizes
            if xs.dim() not in (1, 2) or xs.shape[0] != total:
                common = f" or one operand [{sizes[0]}] for every member" if len(set(sizes)) == 1 else ""
                raise ValueError(
                    f"{name} as one tensor must have shape [{total}] or [{total}, K]{common}, got {tuple(xs.shape)}"
                )
            return xs, None
        if not isinstance(xs, (list, tuple)) or len(xs) != len(self):
            raise ValueError(f"{name} must be a list of {len(self)} tensors (one per member) or one stacked tensor")
        dims = {x.dim() if isinstance(x, torch.Tensor) else -1 for x in xs}
        if not dims <= {1, 2} or len(dims) != 1:
            raise ValueError(f"{name} must be all vectors [n_i] or all matrices [n_i, K]")
        for i, (x, s) in enumerate(zip(xs, sizes)):
            if x.shape[0] != s or x.shape[1:] != xs[0].shape[1:]:
                raise ValueError(f"{name}[{i}] must have {s} rows (and the same K as {name}[0]), got {tuple(x.shape)}")
        return torch.cat(list(xs)), sizes

    def matmul(self, xs: Operand) -> list[torch.Tensor] | torch.Tensor:
        """``[A_i @ x_i]`` for a list of operands (or one stacked tensor -> one stacked result)."""
        x, split = self._stack(xs, [t.shape[1] for t in self._tensors], "x")
        y = self.to_block_diagonal() @ x
        return y if split is None else list(torch.split(y, [t.shape[0] for t in self._tensors]))

    __matmul__ = matmul

    def solve(self, bs: Operand, **options: Any) -> list[torch.Tensor] | torch.Tensor:
        """Solve every ``A_i x_i = b_i`` through one block-diagonal system.

        ``bs`` is a list of ``[n_i]`` (or ``[n_i, K]``) tensors, or one stacked
        ``[sum n_i(, K)]`` tensor; the result has the same form.  Options go to
        :func:`sla.solve` (``backend``, ``method``, ``rtol``, ``return_info``...).
        Differentiable in every member's values and in ``bs``.
        """
        for i, t in enumerate(self._tensors):
            if t.shape[0] != t.shape[1]:
                raise ValueError(f"solve needs square members; member {i} has shape {tuple(t.shape)}")
        b, split = self._stack(bs, [t.shape[0] for t in self._tensors], "b")
        out = self.to_block_diagonal().solve(b, **options)
        x, info = out if options.get("return_info") else (out, None)
        if split is not None:
            x = list(torch.split(x, split))
        return (x, info) if info is not None else x


register_linalg(to_connected_components=SparseTensorList.to_connected_components)
