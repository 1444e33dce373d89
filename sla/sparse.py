"""SparseTensor: values on a shared sparsity :class:`~sla.pattern.Pattern`.

``SparseTensor(values, row, col, shape)`` stores ``values`` of shape
``[*batch, nnz]`` on one pattern of an ``M x N`` matrix; the full shape is
``(*batch, M, N)``.  It is an immutable value object: operations return new
tensors that share the pattern where they can, and gradients flow to the
stored values only (never to a dense matrix).

Linear algebra (``solve``, ``lu``, ``eigsh``, ``det``, ...) is delegated to
:mod:`sla.solvers`, which registers its entry points with :func:`register_linalg`
when it is imported (``import sla`` does this).  The storage layer never
imports the solver layer.
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from . import convert, products, reductions, structure
from .pattern import Pattern, check_shape

__all__ = ["SparseTensor", "register_linalg"]

DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)

_LINALG: dict[str, Callable[..., Any]] = {}


def register_linalg(**fns: Callable[..., Any]) -> None:
    """Install the solver layer's entry points behind SparseTensor methods."""
    _LINALG.update(fns)


def _delegate(name: str, doc: str):
    def method(self, *args, **kwargs):
        fn = _LINALG.get(name)
        if fn is None:
            raise NotImplementedError(f"SparseTensor.{name} needs the solver layer: import sla (not only sla.sparse)")
        return fn(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = doc
    return method


def _check_values(values) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values)
        if not (values.dtype.is_floating_point or values.dtype.is_complex):
            values = values.to(torch.get_default_dtype())
    if values.dtype not in DTYPES:
        raise TypeError(f"values must have dtype float32, float64, complex64 or complex128, got {values.dtype}")
    if values.dim() < 1:
        raise ValueError("values must have shape [*batch, nnz], got a scalar")
    return values


class SparseTensor:
    """A (batched) sparse matrix with differentiable values.

    Parameters
    ----------
    values : torch.Tensor
        ``[*batch, nnz]`` entries (float32/64, complex64/128).  Duplicates are
        summed; gradients reach this tensor in its own order and shape.
    row, col : torch.Tensor
        ``[nnz]`` integer indices, shared by every batch member.
    shape : tuple
        ``(*batch, M, N)``.

    Notes
    -----
    Rebuilt inside an optimisation loop from the *same*, unmodified ``row`` and
    ``col`` tensor objects, the new tensor shares the existing
    :class:`~sla.pattern.Pattern` (an intern table holding patterns weakly, see
    :meth:`Pattern.from_coo <sla.pattern.Pattern.from_coo>`), so factorisation
    plans and multigrid setups cached on it are reused.  ``A.with_values(v)``
    states the same intent explicitly.

    Examples
    --------
    >>> import torch, sla
    >>> A = sla.SparseTensor(torch.tensor([2.0, -1.0, -1.0, 2.0], dtype=torch.float64),
    ...                      torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]), (2, 2))
    >>> A.solve(torch.tensor([1.0, 1.0], dtype=torch.float64))
    tensor([1., 1.], dtype=torch.float64)
    """

    __slots__ = ("values", "pattern", "batch_shape", "__weakref__")
    __array_priority__ = 1000  # numpy scalars defer to our __rmul__

    def __init__(
        self,
        values: torch.Tensor | Sequence[complex],
        row: torch.Tensor | Sequence[int],
        col: torch.Tensor | Sequence[int],
        shape: Sequence[int],
    ) -> None:
        values = _check_values(values)
        shape = check_shape(shape)  # integers only: 2.5 is an error, not 2
        if len(shape) < 2:
            raise ValueError(f"shape must be (*batch, M, N), got {shape}")
        batch = shape[:-2]
        if tuple(values.shape[:-1]) != batch:
            raise ValueError(
                f"values must have shape [*batch, nnz] = [{', '.join(map(str, batch + ('nnz',)))}] "
                f"for shape {shape}, got {tuple(values.shape)}"
            )
        row = torch.as_tensor(row)
        col = torch.as_tensor(col)
        if row.dim() != 1 or col.dim() != 1 or row.numel() != values.shape[-1] or col.numel() != values.shape[-1]:
            raise ValueError(
                f"row, col and values must hold the same number of entries: "
                f"row {tuple(row.shape)}, col {tuple(col.shape)}, values {tuple(values.shape)} (last dim)"
            )
        if row.device != values.device or col.device != values.device:
            raise ValueError(f"row/col ({row.device}/{col.device}) and values ({values.device}) must be on one device")
        pattern, inverse = Pattern.from_coo(row, col, shape[-2:])
        if inverse is not None:
            pattern.memo("entry_index", lambda: inverse)  # the caller's entry k sits at inverse[k]
            values = values.new_zeros(*batch, pattern.nnz).index_add(-1, inverse, values)
        self._init(values, pattern, batch)

    def _init(self, values, pattern, batch):
        self.values = values
        self.pattern = pattern
        self.batch_shape = tuple(batch)

    @classmethod
    def _make(cls, values: torch.Tensor, pattern: Pattern) -> SparseTensor:
        """Trusted constructor: values ``[*batch, pattern.nnz]`` on ``pattern``."""
        out = cls.__new__(cls)
        out._init(values, pattern, values.shape[:-1])
        return out

    def with_values(self, values: torch.Tensor) -> SparseTensor:
        """A new tensor on this tensor's pattern with the given values.

        The pattern is shared, not copied or re-coalesced, so everything cached
        on it (symbolic factorisations, multigrid hierarchies, solve plans) is
        found again; gradients flow to ``values``.  This is the way to build a
        matrix from a parameter tensor inside a differentiable program.

        Parameters
        ----------
        values : torch.Tensor
            ``[*batch, nnz]`` entries in the order of ``self.row`` / ``self.col``
            (float32/64, complex64/128), on ``self.device``.  The batch shape
            may differ from this tensor's.

        Returns
        -------
        SparseTensor
            Shape ``(*batch, M, N)``, sharing ``self.pattern``.

        Raises
        ------
        ValueError
            If the last dimension of ``values`` is not ``nnz`` or it lies on another device.
        TypeError
            If ``values`` is not of a floating-point or complex dtype.

        Examples
        --------
        >>> import torch, sla
        >>> A = sla.gallery.poisson1d(3)
        >>> v = torch.ones(A.nnz, dtype=torch.float64, requires_grad=True)
        >>> B = A.with_values(v)
        >>> B.pattern is A.pattern
        True
        >>> B.to_dense()
        tensor([[1., 1., 0.],
                [1., 1., 1.],
                [0., 1., 1.]], dtype=torch.float64, grad_fn=<...>)
        >>> (B @ torch.ones(3, dtype=torch.float64)).sum().backward()
        >>> v.grad
        tensor([1., 1., 1., 1., 1., 1., 1.], dtype=torch.float64)
        """
        values = _check_values(values)
        if values.shape[-1] != self.nnz:
            raise ValueError(
                f"values must have shape [*batch, nnz] with nnz = {self.nnz} (this pattern), got {tuple(values.shape)}"
            )
        if values.device != self.pattern.device:
            raise ValueError(
                f"values are on {values.device} but the pattern is on {self.pattern.device}; "
                f"move the tensor first (A.to(device).with_values(values))"
            )
        return SparseTensor._make(values, self.pattern)

    # ------------------------------------------------------------ properties
    row = property(lambda self: self.pattern.row, doc="int64 row indices ``[nnz]`` (sorted, unique with col).")
    col = property(lambda self: self.pattern.col, doc="int64 column indices ``[nnz]``.")
    nnz = property(lambda self: self.pattern.nnz, doc="Number of stored entries per batch member.")
    dtype = property(lambda self: self.values.dtype)
    device = property(lambda self: self.values.device)
    requires_grad = property(lambda self: self.values.requires_grad)
    is_cuda = property(lambda self: self.values.is_cuda)
    is_complex = property(lambda self: self.values.dtype.is_complex)
    sparse_shape = property(lambda self: self.pattern.shape, doc="``(M, N)``.")
    row_indices = property(lambda self: self.pattern.row, doc="Alias of ``row`` (the seed project's name).")
    col_indices = property(lambda self: self.pattern.col, doc="Alias of ``col`` (the seed project's name).")
    is_square = property(lambda self: self.pattern.shape[0] == self.pattern.shape[1], doc="``M == N``.")
    is_batched = property(lambda self: bool(self.batch_shape), doc="Has batch dimensions.")

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.batch_shape + self.pattern.shape)

    @property
    def ndim(self) -> int:
        return len(self.batch_shape) + 2

    @property
    def batch_size(self) -> int:
        return int(np.prod(self.batch_shape, dtype=np.int64)) if self.batch_shape else 1

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return (
            f"SparseTensor(shape={tuple(self.shape)}, nnz={self.nnz}, dtype={self.dtype}, device={self.device}{grad})"
        )

    def __len__(self) -> int:
        return self.shape[0]

    def _flat(self) -> torch.Tensor:
        """Values as ``[B, nnz]``."""
        return self.values.reshape(self.batch_size, self.nnz)

    def _like(self, values: torch.Tensor, pattern: Pattern | None = None) -> SparseTensor:
        return SparseTensor._make(values, pattern or self.pattern)

    # ----------------------------------------------------------- conversion
    @classmethod
    def from_dense(cls, dense: torch.Tensor, atol: float = 0.0) -> SparseTensor:
        """Sparse copy of a dense ``[*batch, M, N]`` tensor (entries with ``|a| > atol``).

        The pattern is the union over the batch; gradients flow to ``dense``.
        """
        if not isinstance(dense, torch.Tensor) or dense.dim() < 2:
            raise ValueError("dense must be a tensor of shape [*batch, M, N]")
        dense = _check_values(dense)
        mask = dense.detach().abs() > atol
        if dense.dim() > 2:
            mask = mask.reshape(-1, *dense.shape[-2:]).any(0)
        row, col = torch.nonzero(mask, as_tuple=True)
        return cls._make(dense[..., row, col], Pattern(row, col, dense.shape[-2:]))

    def to_dense(self) -> torch.Tensor:
        """Dense ``[*batch, M, N]`` tensor (differentiable)."""
        M, N = self.pattern.shape
        out = self.values.new_zeros(self.batch_size, M * N)
        out = out.index_add(1, self.row * N + self.col, self._flat())
        return out.reshape(*self.batch_shape, M, N)

    from_scipy = classmethod(convert.from_scipy)
    to_scipy = convert.to_scipy
    from_torch = classmethod(convert.from_torch)
    from_torch_sparse = classmethod(convert.from_torch)  # the seed project's name
    to_torch = convert.to_torch
    to_csr = convert.to_csr

    def to(self, *args: str | torch.device | torch.dtype, **kwargs: Any) -> SparseTensor:
        """Like ``Tensor.to``: a device, a dtype, or both (``device=``, ``dtype=``)."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            elif isinstance(a, (str, torch.device)):
                device = a
            else:
                raise TypeError(f"to() takes a device or dtype, got {a!r}")
        if dtype is not None and dtype not in DTYPES:
            raise TypeError(f"dtype must be one of {DTYPES}, got {dtype}")
        values = self.values.to(device=device, dtype=dtype)
        pattern = self.pattern.to(values.device)
        if values is self.values:
            return self
        return self._like(values, pattern)

    def cuda(self, device: int | str | torch.device | None = None) -> SparseTensor:
        return self.to(
            torch.device("cuda")
            if device is None
            else torch.device("cuda", device)
            if isinstance(device, int)
            else device
        )

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def double(self) -> SparseTensor:
        return self.to(torch.complex128 if self.is_complex else torch.float64)

    def float(self) -> SparseTensor:
        return self.to(torch.complex64 if self.is_complex else torch.float32)

    def detach(self) -> SparseTensor:
        return self._like(self.values.detach())

    def clone(self) -> SparseTensor:
        return self._like(self.values.clone())

    def requires_grad_(self, flag: bool = True) -> SparseTensor:
        self.values.requires_grad_(flag)
        return self

    # ------------------------------------------------------------- products
    def _canon(self, x: torch.Tensor, n: int, name: str):
        """Map a dense operand onto ``[B, n, K]`` and return the inverse map."""
        return canonical_rhs(self.batch_shape, n, x, name)

    def matmul(self, x: torch.Tensor | SparseTensor) -> torch.Tensor | SparseTensor:
        """``A @ x`` for a dense vector/matrix/batch, or a SparseTensor (sparse result)."""
        if isinstance(x, SparseTensor):
            return self._spspmm(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"can only multiply a SparseTensor by a torch.Tensor or SparseTensor, got {type(x).__name__}"
            )
        _check_same(self, x, "x")
        x3, back = self._canon(x, self.pattern.shape[1], "x")
        return back(products.spmm(self.pattern, self._flat(), x3), self.pattern.shape[0])

    __matmul__ = matmul

    def __rmatmul__(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ A`` for a row vector ``[M]``, a batch of them ``[*batch, M]`` or rows ``[*batch, K, M]``."""
        if not isinstance(x, torch.Tensor):
            return NotImplemented
        M, nb = self.pattern.shape[0], len(self.batch_shape)
        s = tuple(x.shape)
        if x.dim() == 1 or (nb and x.dim() == nb + 1 and s[:nb] == self.batch_shape):
            if s[-1] == M:
                return self.T() @ x
        elif x.dim() >= 2 and s[-1] == M and (not nb or s[:-2] == self.batch_shape):
            return (self.T() @ x.transpose(-1, -2)).transpose(-1, -2)
        b = list(self.batch_shape)
        want = f"[{M}]" + (f", {b + [M]} (one row per member) or {b + ['K', M]}" if nb else f" or [..., K, {M}]")
        raise ValueError(f"x in x @ A must have shape {want} for A of shape {list(self.shape)}, got {list(s)}")

    def _spspmm(self, other: SparseTensor) -> SparseTensor:
        if self.pattern.shape[1] != other.pattern.shape[0]:
            raise ValueError(f"inner dimensions differ: {tuple(self.shape)} @ {tuple(other.shape)}")
        _check_same(self, other.values, "other")
        va, vb = _broadcast_values(self, other)
        pc, vc = products.spspmm(self.pattern, va, other.pattern.to(self.device), vb)
        batch = torch.broadcast_shapes(self.batch_shape, other.batch_shape)
        return SparseTensor._make(vc.reshape(*batch, pc.nnz), pc)

    # ----------------------------------------------------------- arithmetic
    def _combine(self, other: SparseTensor, op: str) -> SparseTensor:
        if self.pattern.shape != other.pattern.shape:
            raise ValueError(f"shapes differ: {tuple(self.shape)} and {tuple(other.shape)}")
        _check_same(self, other.values, "other")
        batch = tuple(torch.broadcast_shapes(self.batch_shape, other.batch_shape))
        pa, pb = self.pattern, other.pattern.to(self.device)
        va, vb = self.values, other.values
        if pa.same_as(pb):
            v = va + vb if op == "add" else va * vb
            return SparseTensor._make(v.expand(*batch, pa.nnz) if v.shape[:-1] != batch else v, pa)
        if op == "add":
            pc, ia, ib = products.union(pa, pb)
            v = va.new_zeros(*batch, pc.nnz).index_add(-1, ia, va.expand(*batch, pa.nnz))
            return SparseTensor._make(v.index_add(-1, ib, vb.expand(*batch, pb.nnz)), pc)
        pc, ia, ib = products.intersection(pa, pb)
        return SparseTensor._make(va[..., ia] * vb[..., ib], pc)

    def __add__(self, other):
        if isinstance(other, SparseTensor):
            return self._combine(other, "add")
        if isinstance(other, torch.Tensor) and other.dim() >= 2:
            return self.to_dense() + other
        raise TypeError(
            "adding a scalar to a SparseTensor would fill every implicit zero; "
            "add a SparseTensor (e.g. s * identity) or convert with to_dense() first"
        )

    __radd__ = __add__

    def __neg__(self) -> SparseTensor:
        return self._like(-self.values)

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        if isinstance(other, SparseTensor):
            return self._combine(other, "mul")
        if isinstance(other, numbers.Number) or (isinstance(other, torch.Tensor) and other.dim() == 0):
            return self._like(self.values * other)
        if isinstance(other, torch.Tensor):
            if other.dim() < 2:
                raise ValueError(
                    f"elementwise product with a dense tensor needs shape [..., M, N], got {tuple(other.shape)}"
                )
            D = torch.broadcast_to(other, torch.broadcast_shapes(other.shape, self.shape))
            return self._like(self.values * D[..., self.row, self.col])
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, numbers.Number) or (isinstance(other, torch.Tensor) and other.dim() == 0):
            return self._like(self.values / other)
        return NotImplemented

    # ----------------------------------------------------- transposes, maps
    def T(self) -> SparseTensor:
        """Transpose of the matrix dimensions (shares the cached transposed pattern)."""
        pt, perm = self.pattern.transpose()
        return self._like(self.values[..., perm], pt)

    def H(self) -> SparseTensor:
        """Conjugate transpose."""
        return self.T().conj()

    @property
    def mT(self) -> SparseTensor:
        return self.T()

    def conj(self) -> SparseTensor:
        return self._like(self.values.conj().resolve_conj()) if self.is_complex else self

    def abs(self) -> SparseTensor:
        return self._like(self.values.abs())

    @property
    def real(self) -> SparseTensor:
        return self._like(self.values.real) if self.is_complex else self

    @property
    def imag(self) -> SparseTensor:
        if not self.is_complex:
            raise TypeError("imag is only defined for complex tensors")
        return self._like(self.values.imag)

    # ----------------------------------------------------------- reductions
    sum = reductions.sum_method
    mean = reductions.mean_method

    def norm(self, ord: Any = "fro") -> torch.Tensor:
        """Matrix norm: ``'fro'``, ``1`` (max column sum), ``inf`` (max row sum); ``2`` via the solver layer."""
        if ord == "fro":
            return torch.linalg.vector_norm(self.values, dim=-1)
        if ord == 1:
            return self.abs().sum(-2).amax(-1)
        if ord in (float("inf"), "inf"):
            return self.abs().sum(-1).amax(-1)
        if ord == 2:
            return _delegate("spectral_norm", "")(self)
        raise ValueError(f"ord must be 'fro', 1, inf or 2, got {ord!r}")

    def diagonal(self) -> torch.Tensor:
        """Main diagonal ``[*batch, min(M, N)]`` (zeros where nothing is stored)."""
        pos, idx = self.pattern.diag_entries()
        if idx is None:  # every diagonal entry stored
            return self.values[..., pos]
        n = min(self.pattern.shape)
        return self.values.new_zeros(*self.batch_shape, n).index_add(-1, idx, self.values[..., pos])

    # ------------------------------------------------------------ structure
    def is_symmetric(self, rtol: float | None = None) -> bool | torch.Tensor:
        """``A == A^T`` (to rounding): a bool, or for a batched tensor a bool tensor ``[*batch]`` per member."""
        if self.batch_shape:
            return structure.symmetric_members(self, conjugate=False, rtol=rtol)
        return structure.is_symmetric(self, conjugate=False, rtol=rtol)

    def is_hermitian(self, rtol: float | None = None) -> bool | torch.Tensor:
        """``A == A^H`` (to rounding): a bool, or a bool tensor ``[*batch]`` per member when batched."""
        if self.batch_shape:
            return structure.symmetric_members(self, conjugate=True, rtol=rtol)
        return structure.is_symmetric(self, conjugate=True, rtol=rtol)

    def is_positive_definite(self, method: str = "auto") -> bool | torch.Tensor:
        """Hermitian positive definite: a bool, or a bool tensor ``[*batch]`` per member when batched.
        ``method``: see :func:`sla.structure.positive_definite_members` (``'auto'``: exact, cached)."""
        if self.batch_shape or method != "auto":
            out = structure.positive_definite_members(self, method)
            return out if self.batch_shape else bool(out)
        return structure.is_positive_definite(self)

    connected_components = structure.connected_components  # (labels [N], count) of the pattern's graph

    def has_isolated_components(self) -> bool:
        """More than one connected component (``to_connected_components`` would split it)."""
        return structure.connected_components(self)[1] > 1

    def detect_matrix_type(self) -> str:
        """One of ``'general'``, ``'symmetric'``, ``'spd'``, ``'hermitian'``, ``'hpd'``."""
        return structure.detect_matrix_type(self)

    # --------------------------------------------- linear algebra (solvers)
    solve = _delegate("solve", "Solve ``A x = b``; see :func:`sla.solve`.")
    lu = _delegate("lu", "Factorise once, solve many times; see :class:`sla.LUFactorization`.")
    eigsh = _delegate("eigsh", "Eigenpairs of a symmetric/Hermitian matrix; see :func:`sla.eigsh`.")
    eigs = _delegate("eigs", "Eigenpairs of a general matrix; see :func:`sla.eigs`.")
    svd = _delegate("svd", "Largest singular triplets; see :func:`sla.svd`.")
    det = _delegate("det", "Determinant; see :func:`sla.det`.")
    slogdet = _delegate("slogdet", "Sign and log-abs-determinant; see :func:`sla.slogdet`.")
    solve_batch = _delegate(
        "solve_batch", "Solve for a batch of values on this pattern; see :mod:`sla.solvers.linear.batch`."
    )

    def condition_number(self, ord: int | str = 2, **options: Any) -> torch.Tensor:
        """2-norm condition number ``[*batch]``; ``options`` (``method``, ...) go to :func:`sla.condition_number`."""
        if ord not in (2, "2"):
            raise ValueError(f"ord must be 2 (the 2-norm condition number), got {ord!r}")
        return _delegate("condition_number", "")(self, **options)

    nonlinear_solve = _delegate("nonlinear_solve", "Solve F(u, A, *params) = 0; see :func:`sla.nonlinear_solve`.")
    # persistence (sla.io registers these)
    save = _delegate("save", "Save to a safetensors file (``metadata``: extra strings); see :func:`sla.save_sparse`.")

    def spy(self, *args: Any, **kwargs: Any) -> Any:
        """Plot the sparsity pattern (needs matplotlib); see :func:`sla.spy.spy`."""
        return importlib.import_module("sla.spy").spy(self, *args, **kwargs)  # plotting: loaded on use only

    load = classmethod(
        _delegate("load", "Load a file written by ``save`` onto ``device``; see :func:`sla.load_sparse`.")
    )
    to_connected_components = _delegate(
        "to_connected_components",
        "Split into connected components; see :meth:`sla.SparseTensorList.to_connected_components`.",
    )


# --------------------------------------------------------------------- helpers
def _check_same(A: SparseTensor, x: torch.Tensor, name: str) -> None:
    if x.device != A.device:
        raise ValueError(f"{name} is on {x.device} but the matrix is on {A.device}; move one with .to()")
    if x.dtype != A.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the matrix has {A.dtype}; convert one with .to(dtype)")


def _broadcast_values(a: SparseTensor, b: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tuple(torch.broadcast_shapes(a.batch_shape, b.batch_shape))
    B = int(np.prod(batch, dtype=np.int64)) if batch else 1
    va = a.values.expand(*batch, a.nnz).reshape(B, a.nnz)
    vb = b.values.expand(*batch, b.nnz).reshape(B, b.nnz)
    return va, vb


def canonical_rhs(
    batch_shape: tuple, n: int, x: torch.Tensor, name: str = "b"
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Map a dense right operand of a ``[*batch, M, n]`` matrix onto ``[B, n, K]``.

    Accepted: ``[*batch, n]``, ``[*batch, n, K]``, ``[n]`` (broadcast over the
    batch); for an unbatched matrix also ``[*extra, n, K]`` (folded into
    columns).  Returns ``(x3, back)`` where ``back(y3, m)`` restores the caller's
    layout with ``n`` replaced by ``m``.
    """
    batch = tuple(batch_shape)
    nb = len(batch)
    B = int(np.prod(batch, dtype=np.int64)) if nb else 1
    s = tuple(x.shape)
    if nb and x.dim() == nb + 1 and s[:nb] == batch and s[-1] == n:
        return x.reshape(B, n, 1), lambda y, m: y.reshape(*batch, m)
    if x.dim() == nb + 2 and s[:nb] == batch and s[-2] == n:
        K = s[-1]
        return x.reshape(B, n, K), lambda y, m: y.reshape(*batch, m, K)
    if x.dim() == 1 and s[0] == n:
        return x.reshape(1, n, 1), (lambda y, m: y.reshape(*batch, m)) if nb else (lambda y, m: y.reshape(m))
    if not nb and x.dim() > 2 and s[-2] == n:
        extra, K = s[:-2], s[-1]
        x3 = x.movedim(-2, 0).reshape(1, n, -1)
        return x3, lambda y, m: y.reshape(m, *extra, K).movedim(0, -2)
    want = f"[{', '.join(map(str, batch + (n,)))}] or [{', '.join(map(str, batch + (n, 'K')))}]"
    raise ValueError(f"{name} must have shape {want} for a matrix of shape {batch + ('M', n)}, got {list(s)}")
