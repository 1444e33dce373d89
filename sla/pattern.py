"""Sparsity patterns: the structure a :class:`~sla.SparseTensor` stores values on.

A :class:`Pattern` is the coalesced, row-major sorted set of ``(row, col)``
positions of an ``M x N`` matrix.  It is validated once, is immutable, and owns
everything that depends only on structure:

* CSR arrays (``crow``/``ccol``, int32 whenever ``nnz < 2**31``: torch's CSR
  kernels are faster with int32 indices, and they take half the memory),
* the permutation to the transposed pattern,
* the positions of the diagonal,
* a ``cache`` dict for structural work of the solvers (symbolic
  factorisations, multigrid aggregates, partitions, colourings) and for
  structural metadata (:data:`PORTABLE_KEYS`: grid shape, dof coordinates),
  the only part of it that :meth:`Pattern.to` carries to another device, and
* a small ``numeric`` cache for work that depends on the values too
  (factorisations), keyed on the values themselves (an exact copy on the CPU, a
  128-bit digest of them on other devices).

Patterns are shared: every operation that keeps the structure (``A * 2``,
``A.to(float32)``, batched values) reuses the same object and thus its caches.
:meth:`Pattern.from_coo` also *interns*: given the very same, unmodified ``row``
and ``col`` tensors again (as in ``SparseTensor(values, row, col, shape)``
rebuilt inside an optimisation loop), it returns the existing pattern and the
entry-order permutation found the first time, so solver plans cached on the
pattern are found again instead of being rebuilt.
"""

from __future__ import annotations

import operator
import os
import warnings
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch

from .kernels import all_, repeat_rows
from .numeric_cache import Probe, Stored, equal_record

__all__ = ["Pattern", "csr_tensor", "interned_patterns", "row_chunks"]

_INT32_MAX = 2**31 - 1
PORTABLE_KEYS = ("grid", "dof_points")
"""``Pattern.cache`` keys holding structural metadata, not solver state: ``"grid"`` (the
grid shape of a structured matrix, for geometric multigrid) and ``"dof_points"``
(``(points, ncomp)``, dof coordinates for the near-nullspace of AMG).  They survive
:meth:`Pattern.to` (``SparseTensor.to``/``.cuda()``/``.cpu()``), tensors moved along."""
_CHUNK = 1 << 20  # entries per pass of chunked structural scans (bounds their int64 temporaries)


# torch warns once per process that CSR support is "beta" (we rely on the stable subset), and on
# CUDA (torch 2.11) that invariant checks are "implicitly disabled" (they are: the arrays are
# trusted); the first construction on each device type is made quiet locally, later ones never warn.
_CSR_QUIET = ("Sparse CSR tensor support is in beta", "Sparse invariant checks are implicitly disabled")
_csr_quiet_devices: set = set()


def csr_tensor(crow: torch.Tensor, ccol: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` on trusted arrays, without torch's one-time warnings."""
    kind = values.device.type
    if kind in _csr_quiet_devices:
        return torch.sparse_csr_tensor(crow, ccol, values, shape, check_invariants=False)
    with warnings.catch_warnings():
        for message in _CSR_QUIET:
            warnings.filterwarnings("ignore", message=message)
        out = torch.sparse_csr_tensor(crow, ccol, values, shape, check_invariants=False)
    _csr_quiet_devices.add(kind)
    return out


# ------------------------------------------------------------------ interning
# (id, version, data_ptr, shape, dtype, device) of the row and col tensors, and (M, N) ->
# (weakref to the Pattern, the inverse permutation or None, weakrefs to row and col).  Entries hold the
# Pattern weakly (nothing is kept alive by the table) and are dropped as soon as the Pattern or one of the
# index tensors is collected; the version counter detects in-place edits of row/col (a new key).
_INTERN: dict[tuple, tuple] = {}


def _tensor_stamp(t: torch.Tensor) -> tuple:
    return (id(t), t._version, t.data_ptr(), tuple(t.shape), t.dtype, str(t.device))


def _intern_key(row, col, shape) -> tuple | None:
    if not (isinstance(row, torch.Tensor) and isinstance(col, torch.Tensor)) or len(shape) != 2:
        return None
    if row.layout != torch.strided or col.layout != torch.strided:
        return None
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape):
        return None  # anything else is validated (and refused) by _from_coo
    return (_tensor_stamp(row), _tensor_stamp(col), int(shape[0]), int(shape[1]))


def _intern_lookup(key, row, col) -> tuple[Pattern, torch.Tensor | None] | None:
    entry = _INTERN.get(key)
    if entry is None:
        return None
    wp, inverse, wr, wc = entry
    p = wp()
    if p is None or wr() is not row or wc() is not col:  # collected, or an id reused by a new tensor
        _INTERN.pop(key, None)
        return None
    return p, inverse


def _intern_store(key, row, col, pattern: Pattern, inverse: torch.Tensor | None) -> None:
    def drop(_ref, key=key):
        _INTERN.pop(key, None)

    try:
        refs = (weakref.ref(pattern, drop), inverse, weakref.ref(row, drop), weakref.ref(col, drop))
    except TypeError:  # an index type that takes no weak references: nothing is interned
        return
    _INTERN[key] = refs


def interned_patterns() -> int:
    """Number of live entries of the pattern intern table (for tests and diagnostics)."""
    return sum(1 for wp, _, wr, wc in list(_INTERN.values()) if wp() is not None)


def _index_dtype(nnz: int, M: int, N: int) -> torch.dtype:
    return torch.int32 if max(nnz, M, N) <= _INT32_MAX else torch.int64


def check_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """The entries of ``shape`` as Python ints, or a clear error: integers only (``2.5``, ``2.0``
    or ``True`` are not silently truncated), non-negative."""
    out = []
    for s in shape:
        if isinstance(s, torch.Tensor) and s.dim() == 0 and not (s.is_floating_point() or s.is_complex()):
            s = int(s)
        if isinstance(s, bool) or not isinstance(s, int) and not hasattr(s, "__index__"):
            raise TypeError(f"{name} must hold integers, got {tuple(shape)!r} ({type(s).__name__} {s!r})")
        s = operator.index(s)
        if s < 0:
            raise ValueError(f"{name} must be non-negative, got {tuple(shape)!r}")
        out.append(s)
    return tuple(out)


def check_row_pointer(M: int, device: torch.device | str = "cpu") -> None:
    """Refuse, before allocating, a row pointer (``M + 1`` int64 entries during construction)
    larger than the memory of the device (a 3-line .mtx file can declare 10^12 rows)."""
    need = 8 * (M + 1)
    dev = torch.device(device)
    if dev.type == "cuda":
        have = torch.cuda.get_device_properties(dev).total_memory
    else:
        try:
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            return
    if need > have:
        raise ValueError(
            f"a matrix with {M} rows needs a {need / 2**30:.3g} GiB row pointer, more than the "
            f"{have / 2**30:.3g} GiB of memory of {dev}: is the shape right?"
        )


def _check_index(name: str, idx: torch.Tensor) -> torch.Tensor:
    if not isinstance(idx, torch.Tensor):
        idx = torch.as_tensor(idx)
    if idx.dim() != 1:
        raise ValueError(f"{name} must be a 1-D index tensor, got shape {tuple(idx.shape)}")
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {idx.dtype}")
    return idx.to(torch.int64)


def _move_metadata(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (nested in tuples/lists) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_move_metadata(v, device) for v in value)
    return value


def row_chunks(crow: torch.Tensor, nnz: int, chunk: int = _CHUNK, dtype: torch.dtype = torch.int64):
    """Yield ``(lo, hi, rows)`` for the CSR row pointer ``crow`` of ``nnz`` entries: blocks of whole
    rows holding about ``chunk`` entries, ``rows`` the row (in ``dtype``) of entries ``lo:hi`` --
    for scans that need every entry's row without a row array of the matrix's size."""
    M = crow.numel() - 1
    if nnz == 0:
        return
    step = max(1, (chunk * M) // nnz)
    starts = [*range(0, M, step), M]
    ends = crow[starts].tolist()  # one host look for every block's bounds
    for r0, r1, lo, hi in zip(starts[:-1], starts[1:], ends[:-1], ends[1:]):
        if hi > lo:
            counts = crow[r0 + 1 : r1 + 1] - crow[r0:r1]
            yield lo, hi, repeat_rows(counts, r0, hi - lo, dtype)


def _csr_to_csc(crow: np.ndarray, ccol: np.ndarray, M: int, N: int):
    """``(crow_T, col_T, perm)`` of the transpose by SciPy's O(nnz) counting sort (CSR -> CSC) instead
    of an O(nnz log nnz) argsort.  The compiled kernel is loaded alone
    (:func:`~sla._optional.extension`): ``import scipy.sparse`` took 0.16-0.21 s of a CPU
    process's first solve, the kernel's module 1 ms.  SciPy's public ``tocsc`` where the kernel's
    module is missing or its call fails."""
    from ._optional import extension

    nnz = ccol.size
    ids = np.arange(nnz, dtype=np.int64)
    core = extension("scipy.sparse._sparsetools")
    if core is not None:
        tcrow = np.empty(N + 1, dtype=crow.dtype)
        tcol = np.empty(nnz, dtype=crow.dtype)
        perm = np.empty(nnz, dtype=np.int64)
        try:
            core.csr_tocsc(M, N, crow, ccol.astype(crow.dtype, copy=False), ids, tcrow, tcol, perm)
            return torch.from_numpy(tcrow), torch.from_numpy(tcol), torch.from_numpy(perm)
        except (AttributeError, TypeError, ValueError):
            pass
    import scipy.sparse as sp

    csc = sp.csr_matrix((ids, ccol, crow), shape=(M, N)).tocsc()
    return torch.from_numpy(csc.indptr), torch.from_numpy(csc.indices), torch.from_numpy(csc.data)


class Pattern:
    """Coalesced, row-major sorted sparsity structure of an ``M x N`` matrix.

    Build one with :meth:`from_coo`; the constructor trusts its input.

    Storage is CSR with int32 indices whenever they fit (``4 (M + 1) + 4 nnz``
    bytes); the int64 COO view ``row``/``col`` is derived on first use and
    then kept, so code paths that never ask for it (the Krylov/multigrid
    solves) never pay its ``16 nnz`` bytes.

    Attributes
    ----------
    crow, ccol : torch.Tensor
        CSR row pointer and column indices (int32 when ``nnz`` and the shape fit).
    row, col : torch.Tensor
        int64 indices of the stored entries, sorted by ``(row, col)``, unique.
    shape : tuple[int, int]
        ``(M, N)``.
    cache : dict
        Structural work of solvers, keyed by whatever the solver chooses.
    """

    __slots__ = ("crow", "ccol", "shape", "cache", "_numeric", "_memo", "__weakref__")

    def __init__(self, row: torch.Tensor, col: torch.Tensor, shape: tuple[int, int]):
        """From sorted, unique COO indices (trusted; :meth:`from_coo` validates)."""
        M, N = int(shape[0]), int(shape[1])
        dt = _index_dtype(col.numel(), M, N)
        crow = torch.zeros(M + 1, dtype=torch.int64, device=row.device)
        if row.numel():
            torch.cumsum(torch.bincount(row, minlength=M), 0, out=crow[1:])
        self._init(crow.to(dt), col.to(dt), (M, N))

    def _init(self, crow, ccol, shape):
        self.crow, self.ccol, self.shape = crow, ccol, shape
        self.cache: dict[Hashable, Any] = {}
        self._numeric: list = []
        self._memo: dict[str, Any] = {}

    @classmethod
    def _from_csr_trusted(cls, crow: torch.Tensor, ccol: torch.Tensor, shape) -> Pattern:
        """From CSR arrays known to be sorted and unique (no copies when the dtypes fit)."""
        M, N = int(shape[0]), int(shape[1])
        dt = _index_dtype(ccol.numel(), M, N)
        p = cls.__new__(cls)
        p._init(crow.to(dt), ccol.to(dt), (M, N))
        return p

    # ------------------------------------------------------------------ build
    @classmethod
    def from_coo(cls, row, col, shape) -> tuple[Pattern, torch.Tensor | None]:
        """Validate and coalesce COO indices.

        Returns ``(pattern, inverse)`` where ``inverse[k]`` is the position in
        the pattern of the caller's k-th entry, or ``None`` when the input was
        already coalesced and sorted (then entry k *is* position k).

        Called again with the *same* ``row`` and ``col`` tensor objects, unmodified
        (same version counter, storage, shape, dtype and device) and the same shape,
        while the first pattern is still alive, it returns that pattern and
        permutation without any work, so everything cached on the pattern (solver
        plans, factorisations, multigrid hierarchies) is found again.  An in-place
        edit of ``row``/``col`` (a new version) builds a new pattern.  Edits through
        ``.data`` bypass the version counter and are not detected: build new index
        tensors instead.
        """
        key = _intern_key(row, col, shape)
        if key is not None:
            hit = _intern_lookup(key, row, col)
            if hit is not None:
                return hit
        pattern, inverse = cls._from_coo(row, col, shape)
        if key is not None:
            _intern_store(key, row, col, pattern, inverse)
        return pattern, inverse

    @classmethod
    def _from_coo(cls, row, col, shape) -> tuple[Pattern, torch.Tensor | None]:
        row = _check_index("row", row)
        col = _check_index("col", col)
        if row.shape != col.shape:
            raise ValueError(f"row and col must have the same length, got {row.numel()} and {col.numel()}")
        if row.device != col.device:
            raise ValueError(f"row and col must be on the same device, got {row.device} and {col.device}")
        if len(shape) != 2:
            raise ValueError(f"shape of a pattern must be (M, N), got {tuple(shape)}")
        M, N = check_shape(shape)
        check_row_pointer(M, row.device)
        if row.numel():
            rmin, rmax, cmin, cmax = (
                int(v) for v in torch.stack([row.min(), row.max(), col.min(), col.max()]).tolist()
            )
            if rmin < 0 or cmin < 0:
                raise IndexError(f"row/col indices must be non-negative, got min row {rmin}, min col {cmin}")
            if rmax >= M:
                raise IndexError(f"row index {rmax} out of range for a matrix with {M} rows")
            if cmax >= N:
                raise IndexError(f"col index {cmax} out of range for a matrix with {N} columns")
        if M * N > 2**62:  # row * N + col would overflow int64: sort by the (row, col) pair instead
            return cls._from_coo_wide(row, col, (M, N))
        key = row * N + col
        if key.numel() <= 1 or bool((key[1:] > key[:-1]).all()):
            return cls(row, col, (M, N)), None
        uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
        return cls(uniq // N, uniq % N, (M, N)), inverse

    @classmethod
    def _from_coo_wide(cls, row, col, shape) -> tuple[Pattern, torch.Tensor | None]:
        """``_from_coo`` for shapes whose linear index ``row * N + col`` overflows int64."""
        later = (row[1:] > row[:-1]) | ((row[1:] == row[:-1]) & (col[1:] > col[:-1]))
        if row.numel() <= 1 or bool(later.all()):
            return cls(row, col, shape), None
        order = torch.sort(col, stable=True).indices  # lexicographic: by col, then stably by row
        order = order[torch.sort(row[order], stable=True).indices]
        r, c = row[order], col[order]
        new = torch.ones_like(r, dtype=torch.bool)
        new[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
        group = torch.cumsum(new, 0) - 1
        inverse = torch.empty_like(group)
        inverse[order] = group
        return cls(r[new], c[new], shape), inverse

    @classmethod
    def from_csr(cls, crow, ccol, shape) -> Pattern:
        """Pattern of CSR arrays (validated: sorted and unique within each row)."""
        crow = _check_index("crow_indices", crow)
        counts = crow[1:] - crow[:-1]
        if counts.numel() and bool((counts < 0).any()):
            raise ValueError("crow_indices must be non-decreasing")
        row = repeat_rows(counts, dtype=torch.int64)
        p, inv = cls._from_coo(row, ccol, shape)  # row is a temporary: nothing to intern
        if inv is not None:
            raise ValueError("CSR column indices must be sorted and unique within each row")
        return p

    # -------------------------------------------------------------- basics
    @property
    def nnz(self) -> int:
        return self.ccol.numel()

    @property
    def device(self) -> torch.device:
        return self.ccol.device

    def __repr__(self) -> str:
        return f"Pattern(shape={self.shape}, nnz={self.nnz}, device={self.device})"

    def memo(self, name: str, build: Callable[[], Any]) -> Any:
        """Structural quantity computed once per pattern."""
        if name not in self._memo:
            self._memo[name] = build()
        return self._memo[name]

    def to(self, device) -> Pattern:
        """The same pattern on another device (cached both ways)."""
        device = torch.device(device)
        if device == self.device or (device.type == self.device.type and device.index is None):
            return self
        copies = self._memo.setdefault("_devices", {})
        key = str(device)
        p = copies.get(key)
        if p is None:
            p = Pattern._from_csr_trusted(self.crow.to(device), self.ccol.to(device), self.shape)
            p._memo["_devices"] = {str(self.device): self}
            copies[key] = p
        self._carry_metadata(p)
        return p

    def _carry_metadata(self, p: Pattern) -> None:
        """Give the copy ``p`` on another device this pattern's structural metadata (:data:`PORTABLE_KEYS`).

        Only device-independent descriptions travel (tensors in them moved to ``p``'s
        device); solver states (plans, factorisations, hierarchies) stay behind.  A
        value set or replaced here after the copy was made is carried at the next
        :meth:`to`; one the copy already holds from elsewhere is kept.
        """
        moved = p._memo.setdefault("_carried", {})
        for name in PORTABLE_KEYS:
            value = self.cache.get(name)
            if value is None:
                continue
            src, out = moved.get(name, (None, None))
            if src is value and p.cache.get(name) is out:
                continue  # carried before and unchanged on both sides
            if name in p.cache and p.cache[name] is not out:
                continue  # set on the copy itself: it wins
            out = _move_metadata(value, p.device)
            p.cache[name] = out
            moved[name] = (value, out)

    def same_as(self, other: Pattern) -> bool:
        """Structural equality (cheap when the objects are shared)."""
        if self is other:
            return True
        return (
            self.shape == other.shape
            and self.nnz == other.nnz
            and bool(torch.equal(self.crow, other.crow.to(self.device)))
            and bool(torch.equal(self.ccol, other.ccol.to(self.device)))
        )

    # ---------------------------------------------------------- COO views
    @property
    def index_dtype(self) -> torch.dtype:
        return self.ccol.dtype

    def rows(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """int64 row index of the entries ``lo:hi`` (a temporary: nothing is kept)."""
        hi = self.nnz if hi is None else hi
        if lo == 0 and hi == self.nnz:
            counts = self.crow[1:] - self.crow[:-1]
            return repeat_rows(counts, 0, hi, torch.int64)
        pos = torch.arange(lo, hi, device=self.device)
        return torch.searchsorted(self.crow, pos, right=True) - 1

    def row_chunks(self, chunk: int = _CHUNK, dtype: torch.dtype = torch.int64):
        """Yield ``(lo, hi, rows)``: blocks of whole rows holding about ``chunk`` entries,
        ``rows`` the row (in ``dtype``) of entries ``lo:hi`` (scans that keep temporaries small)."""
        return row_chunks(self.crow, self.nnz, chunk, dtype)

    @property
    def row(self) -> torch.Tensor:
        """int64 row of every entry (derived from ``crow`` on first use, then kept)."""
        return self.memo("row", self.rows)

    @property
    def col(self) -> torch.Tensor:
        """int64 column of every entry (``ccol`` itself when that is int64)."""
        return self.memo("col", lambda: self.ccol.long())

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """A torch sparse CSR tensor on this pattern (values ``[nnz]``); beyond
        :data:`sla.blocked.BLOCK_NNZ` entries a :class:`~sla.blocked.RowBlockedCSR`."""
        from . import blocked

        if self.nnz > blocked.BLOCK_NNZ:
            key = ("csr_blocks", blocked.BLOCK_NNZ)
            return blocked.RowBlockedCSR(
                self.memo(key, lambda: blocked.row_blocks(self.crow, self.ccol, self.shape[1])), values, self.shape
            )
        return csr_tensor(self.crow, self.ccol, values, self.shape)

    # ----------------------------------------------------------- transpose
    def transpose(self) -> tuple[Pattern, torch.Tensor]:
        """``(pattern_T, perm)`` with ``values_T = values[..., perm]`` (perm in the index dtype)."""

        def build():
            M, N = self.shape
            if self.device.type == "cpu" and self.nnz:
                tcrow, tcol, perm = _csr_to_csc(self.crow.numpy(), self.ccol.numpy(), M, N)
            else:
                rows = self.rows()
                perm = torch.argsort(self.ccol.long() * M + rows, stable=True)
                tcol = rows[perm]
                del rows
                tcrow = torch.zeros(N + 1, dtype=torch.int64, device=self.device)
                if self.nnz:
                    torch.cumsum(torch.bincount(self.ccol, minlength=N), 0, out=tcrow[1:])
            dt = self.index_dtype
            perm = perm.to(dt)  # int32 when it fits: half the memory of the kept permutation
            if M == N and torch.equal(tcrow.to(dt), self.crow) and torch.equal(tcol.to(dt), self.ccol):
                return self, perm  # structurally symmetric: the same object; perm is an involution
            pt = Pattern._from_csr_trusted(tcrow, tcol, (N, M))
            inv = torch.empty_like(perm)
            inv[perm] = torch.arange(perm.numel(), device=perm.device, dtype=dt)
            pt._memo["transpose"] = (self, inv)
            return pt, perm

        return self.memo("transpose", build)

    @property
    def is_structurally_symmetric(self) -> bool:
        return self.shape[0] == self.shape[1] and self.transpose()[0] is self

    # ------------------------------------------------------------ diagonal
    @property
    def diag_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pos, idx)``: entries ``pos`` of the pattern sit on diagonal ``idx`` (index dtype)."""
        pos, idx = self.diag_entries()
        if idx is None:
            idx = torch.arange(pos.numel(), dtype=self.index_dtype, device=self.device)
        return pos, idx

    def diag_entries(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:attr:`diag_index` as kept on the pattern: ``idx`` is ``None`` when every diagonal entry is
        stored (it would be ``arange``: 4 bytes per row not kept)."""

        def build():
            k = min(self.shape)
            i = torch.arange(k, device=self.device)
            pos = self.find(i, i)
            has = pos >= 0
            if bool(all_(has)):
                return pos.to(self.index_dtype), None
            return pos[has].to(self.index_dtype), i[has].to(self.index_dtype)

        return self.memo("diag", build)

    def find(self, row: torch.Tensor, col: torch.Tensor, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """Positions (in ``dtype``) of the entries ``(row[k], col[k])`` in the pattern, ``-1`` where
        none is stored.

        A binary search inside each row (columns are sorted within a row): ``log2`` of the longest
        row steps over arrays of ``row``'s size, with no temporary of the pattern's size; in int32
        below 2^30 entries (half the memory traffic of int64).  Spelled with sums, comparisons,
        gathers and ``where`` (no shift, clamp or logical and: kernel families of their own on a GPU,
        see :mod:`sla.kernels`)."""
        col = col.to(self.ccol.dtype)
        if self.nnz == 0 or row.numel() == 0:
            return torch.full(row.shape, -1, dtype=dtype, device=self.device)
        steps = self.memo("row_bits", lambda: int(torch.diff(self.crow).amax()).bit_length())
        work = torch.int32 if self.nnz < 2**30 else torch.int64  # pos + step stays in range
        pos, end = self.crow[row].to(work), self.crow[row + 1].to(work)
        # pos: the first position in the row whose column is >= col, by steps of 2^(steps-1), ..., 1
        # (every column before pos is < col; the steps add up to at least the longest row)
        for k in reversed(range(steps)):
            cand = pos + (1 << k)
            inside = cand <= end
            below = self.ccol[torch.where(inside, cand - 1, 0)] < col
            pos = torch.where(torch.where(inside, below, inside), cand, pos)
        inside = pos < end
        found = torch.where(inside, self.ccol[torch.where(inside, pos, 0)] == col, inside)
        return torch.where(found, pos, -1).to(dtype)

    # -------------------------------------------------------- numeric cache
    def numeric(self, values: torch.Tensor, key: Hashable, build: Callable[[], Any], size: int = 4) -> Any:
        """Value-dependent work cached on (the values, key).

        A hit needs values equal to stored ones, at every size, so in-place changes -- also
        through ``.data``, which bypasses version counters -- never reuse stale work, and a new
        tensor with the same values does reuse it.  On the CPU the values are compared with an
        exact copy; on other devices with a 128-bit digest of their bits and positions, one per
        solve (:mod:`sla.numeric_cache`: no copy of the matrix in the device's memory).  The work
        of every key cached on the same values (structure checks, the solver setup) shares one
        stored record.
        """
        probe = Probe(values.detach())  # on a GPU its digest is taken now, before build()
        stored = equal_record(self._numeric, probe)
        if stored is not None:
            for i, (k, s, out) in enumerate(self._numeric):
                if k == key and s is stored:
                    self._numeric.append(self._numeric.pop(i))
                    return out
        before = len(self._numeric)
        out = build()
        if stored is None:  # work built inside build() on the same values may have stored a record already
            stored = equal_record(self._numeric[before:], probe)
        if stored is None:
            stored = Stored(probe)
        self._numeric.append((key, stored, out))
        while len(self._numeric) > size:
            self._numeric.pop(0)
        return out

    def clear_cache(self) -> None:
        """Drop cached solver work (structural and numeric)."""
        self.cache.clear()
        self._numeric.clear()
