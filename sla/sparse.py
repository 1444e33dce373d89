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

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from . import products, structure
from .pattern import Pattern

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
        shape = tuple(int(s) for s in shape)
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

    @classmethod
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
            data = data.to(torch.get_default_dtype())
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

    @classmethod
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

    def to_torch(self, layout: str = "coo") -> torch.Tensor:
        """Torch sparse tensor (``'coo'`` or ``'csr'``) of an unbatched tensor."""
        if self.batch_shape:
            raise ValueError(f"to_torch needs an unbatched tensor, got batch shape {self.batch_shape}")
        if layout == "coo":
            idx = torch.stack([self.row, self.col])
            return torch.sparse_coo_tensor(
                idx, self.values, self.pattern.shape, is_coalesced=True, check_invariants=False
            )
        if layout == "csr":
            return torch.sparse_csr_tensor(
                self.pattern.crow.long(),
                self.pattern.ccol.long(),
                self.values,
                self.pattern.shape,
                check_invariants=False,
            )
        raise ValueError(f"layout must be 'coo' or 'csr', got {layout!r}")

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

    def __rmatmul__(self, x):
        """``x @ A = (A^T @ x^T)^T``."""
        if x.dim() == 1:
            return self.T() @ x
        return (self.T() @ x.transpose(-1, -2)).transpose(-1, -2)

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
    def _matrix_dim(self, dim: int) -> int:
        nd = self.ndim
        d = dim + nd if dim < 0 else dim
        if d not in (nd - 2, nd - 1):
            raise ValueError(f"dim must name a matrix dimension ({nd - 2}, {nd - 1}, -2 or -1), got {dim}")
        return d - (nd - 2)

    def sum(self, dim: int | None = None) -> torch.Tensor:
        """Sum like ``to_dense().sum(dim)`` for ``dim`` in None or a matrix dimension."""
        if dim is None:
            return self.values.sum(-1)
        d = self._matrix_dim(dim)
        M, N = self.pattern.shape
        idx, size = (self.col, N) if d == 0 else (self.row, M)
        return self.values.new_zeros(*self.batch_shape, size).index_add(-1, idx, self.values)

    def mean(self, dim: int | None = None) -> torch.Tensor:
        """Mean like ``to_dense().mean(dim)`` (implicit zeros count)."""
        M, N = self.pattern.shape
        if dim is None:
            return self.sum() / (M * N)
        return self.sum(dim) / (M if self._matrix_dim(dim) == 0 else N)

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
        pos, idx = self.pattern.diag_index
        n = min(self.pattern.shape)
        return self.values.new_zeros(*self.batch_shape, n).index_add(-1, idx, self.values[..., pos])

    # ------------------------------------------------------------ structure
    def is_symmetric(self, rtol: float | None = None) -> bool:
        """``A == A^T`` (to rounding), via the pattern's transpose permutation."""
        return structure.is_symmetric(self, conjugate=False, rtol=rtol)

    def is_hermitian(self, rtol: float | None = None) -> bool:
        """``A == A^H`` (to rounding)."""
        return structure.is_symmetric(self, conjugate=True, rtol=rtol)

    def is_positive_definite(self) -> bool:
        """Hermitian with a successful Cholesky-type factorisation (exact test, cached)."""
        return structure.is_positive_definite(self)

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
    condition_number = _delegate("condition_number", "2-norm condition number estimate.")
    nonlinear_solve = _delegate("nonlinear_solve", "Solve F(u, A, *params) = 0; see :func:`sla.nonlinear_solve`.")
    # persistence (sla.io registers these)
    save = _delegate("save", "Save to a safetensors file; see :func:`sla.save_sparse`.")
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
