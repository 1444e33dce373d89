"""Matrix Market interchange: :func:`load_mtx` / :func:`save_mtx`.

Coordinate files with ``real``, ``integer``, ``complex`` and ``pattern`` fields,
``general``, ``symmetric``, ``skew-symmetric`` and ``hermitian`` symmetry, plain
or ``.mtx.gz``.  The reader is a NumPy parser checked against ``scipy.io``; bad
files raise :class:`ValueError` naming the file and the line.  Writes are atomic
(a failed save leaves nothing behind).
"""

from __future__ import annotations

import gzip
import io
import os
import warnings

import numpy as np
import torch

from .io import atomic_path, check_tensor
from .pattern import check_row_pointer
from .sparse import SparseTensor

__all__ = ["load_mtx", "save_mtx"]

_FIELDS = ("real", "integer", "complex", "pattern")
_SYMMETRIES = ("general", "symmetric", "skew-symmetric", "hermitian")
_NCOLS = {"pattern": 2, "real": 3, "integer": 3, "complex": 4}


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read the (gzip) file: {exc}") from exc


def _split_header(path: str, data: bytes):
    """Parse banner and size line; return (field, symmetry, M, N, nnz, size_line_no, body, body_first_line)."""
    pos = 0
    lineno = 0
    banner = None
    size = None
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[pos:end].strip()
        lineno += 1
        pos = end + 1
        if banner is None:
            banner = line
            tok = line.decode("ascii", "replace").lower().split()
            if not tok or tok[0] != "%%matrixmarket":
                raise ValueError(
                    f"{path}, line 1: not a Matrix Market file (banner {line[:60]!r}, expected '%%MatrixMarket')"
                )
            if len(tok) != 5 or tok[1] != "matrix":
                raise ValueError(
                    f"{path}, line 1: banner must read '%%MatrixMarket matrix <format> <field> <symmetry>', "
                    f"got {line[:80]!r}"
                )
            fmt, field, symmetry = tok[2:]
            if fmt != "coordinate":
                raise ValueError(f"{path}, line 1: format {fmt!r} is not supported; only 'coordinate' (sparse) files")
            if field not in _FIELDS:
                raise ValueError(f"{path}, line 1: unknown field {field!r}; expected one of {_FIELDS}")
            if symmetry not in _SYMMETRIES:
                raise ValueError(f"{path}, line 1: unknown symmetry {symmetry!r}; expected one of {_SYMMETRIES}")
            if symmetry == "hermitian" and field != "complex":
                raise ValueError(f"{path}, line 1: symmetry 'hermitian' needs field 'complex', got {field!r}")
            if symmetry == "skew-symmetric" and field == "pattern":
                raise ValueError(f"{path}, line 1: a 'pattern' matrix cannot be skew-symmetric")
            continue
        if not line or line.startswith(b"%"):
            continue
        parts = line.split()
        try:
            size = [int(t) for t in parts]
        except ValueError:
            size = None
        if size is None or len(size) != 3 or min(size) < 0:
            raise ValueError(
                f"{path}, line {lineno}: size line must be 'rows cols entries' (non-negative integers), "
                f"got {line[:80]!r}"
            )
        return field, symmetry, size[0], size[1], size[2], lineno, data[pos:], lineno + 1
    if banner is None:
        raise ValueError(f"{path}, line 1: empty file, expected a '%%MatrixMarket' banner")
    raise ValueError(f"{path}, line {lineno}: file ends before the size line 'rows cols entries'")


def _data_lines(body: bytes, first: int):
    """``(line_number, tokens)`` of every data line (slow; used to locate errors)."""
    for k, line in enumerate(body.split(b"\n")):
        s = line.strip()
        if s and not s.startswith(b"%"):
            yield first + k, s.split()


def _locate(path, body, first, ncols, field, nnz, size_line):
    """Find and report the first malformed line (error path only)."""
    count = 0
    last = size_line
    for lineno, tok in _data_lines(body, first):
        count += 1
        last = lineno
        if count > nnz:
            raise ValueError(
                f"{path}, line {lineno}: more entries than the {nnz} the size line (line {size_line}) announces"
            )
        if len(tok) != ncols:
            raise ValueError(f"{path}, line {lineno}: expected {ncols} numbers for a {field!r} entry, got {len(tok)}")
        for t, kind in zip(tok, (int, int, float, float)):
            try:
                kind(t)
            except ValueError:
                what = "an integer index" if kind is int else "a number"
                raise ValueError(f"{path}, line {lineno}: {t.decode('ascii', 'replace')!r} is not {what}") from None
    if count < nnz:
        raise ValueError(
            f"{path}, line {last}: truncated data: the size line (line {size_line}) announces {nnz} entries, "
            f"the file holds {count}"
        )
    return None


def _entry_line(body: bytes, first: int, k: int) -> int:
    for j, (lineno, _) in enumerate(_data_lines(body, first)):
        if j == k:
            return lineno
    return first


def load_mtx(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> SparseTensor:
    """Read a Matrix Market coordinate file (``.mtx`` or gzip-compressed ``.mtx.gz``).

    Symmetric, skew-symmetric and Hermitian files are expanded to the full
    matrix.  ``real``/``integer``/``pattern`` fields give float64 (pattern
    entries are ones), ``complex`` gives complex128, unless ``dtype`` says
    otherwise.  Duplicate entries are summed.

    Raises
    ------
    ValueError
        Naming the file and line: bad banner, unknown field or symmetry, a
        malformed or truncated data line, an index out of range, more or fewer
        entries than the size line announces.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    data = _read_bytes(path)
    field, symmetry, M, N, nnz, size_line, body, first = _split_header(path, data)
    if symmetry != "general" and M != N:
        raise ValueError(f"{path}, line {size_line}: a {symmetry} matrix must be square, got {M} x {N}")
    try:  # before anything is allocated for the declared size
        check_row_pointer(M, device or "cpu")
    except ValueError as exc:
        raise ValueError(f"{path}, line {size_line}: {exc}") from None
    ncols = _NCOLS[field]
    names = ["i", "j", "re", "im"][:ncols]
    rec = np.dtype([(n, np.int64 if n in "ij" else np.float64) for n in names])
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
            arr = np.loadtxt(io.BytesIO(body), dtype=rec, comments="%", ndmin=1)
    except ValueError:
        _locate(path, body, first, ncols, field, nnz, size_line)
        raise ValueError(f"{path}: malformed data after line {size_line}") from None
    if arr.shape[0] != nnz:
        _locate(path, body, first, ncols, field, nnz, size_line)
        raise ValueError(f"{path}: the size line (line {size_line}) announces {nnz} entries, found {arr.shape[0]}")
    i = arr["i"] - 1
    j = arr["j"] - 1
    bad = (i < 0) | (i >= M) | (j < 0) | (j >= N)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}, line {_entry_line(body, first, k)}: index ({i[k] + 1}, {j[k] + 1}) out of range for a "
            f"{M} x {N} matrix (indices are 1-based)"
        )
    if field == "pattern":
        v = np.ones(nnz)
    elif field == "complex":
        v = arr["re"] + 1j * arr["im"]
    else:
        v = arr["re"]
    if symmetry != "general":
        diag = i == j
        if symmetry == "skew-symmetric" and np.any(v[diag] != 0):
            k = int(np.flatnonzero(diag & (v != 0))[0])
            line = _entry_line(body, first, k)
            raise ValueError(f"{path}, line {line}: a skew-symmetric matrix has a non-zero diagonal entry")
        if symmetry == "hermitian" and np.any(v[diag].imag != 0):
            k = int(np.flatnonzero(diag & (v.imag != 0))[0])
            line = _entry_line(body, first, k)
            raise ValueError(f"{path}, line {line}: a Hermitian matrix has a complex diagonal entry")
        off = ~diag
        mirrored = {"symmetric": v[off], "skew-symmetric": -v[off], "hermitian": np.conj(v[off])}[symmetry]
        i, j, v = np.concatenate([i, j[off]]), np.concatenate([j, i[off]]), np.concatenate([v, mirrored])
    values = torch.from_numpy(np.ascontiguousarray(v))
    A = SparseTensor(values, torch.from_numpy(i), torch.from_numpy(j), (M, N))
    return A.to(device=device, dtype=dtype)


def _detect_symmetry(A: SparseTensor) -> str:
    p = A.pattern
    if p.shape[0] != p.shape[1] or not p.is_structurally_symmetric:
        return "general"
    v = A.values.detach()
    vt = v[p.transpose()[1]]
    if A.is_complex:
        if torch.equal(v, vt.conj().resolve_conj()):
            return "hermitian"
    if torch.equal(v, vt):
        return "symmetric"
    if p.diag_index[0].numel() == 0 and torch.equal(v, -vt):
        return "skew-symmetric"
    return "general"


def _check_symmetry(A: SparseTensor, symmetry: str) -> None:
    if symmetry == "general":
        return
    if A.sparse_shape[0] != A.sparse_shape[1]:
        raise ValueError(f"symmetry={symmetry!r} needs a square matrix, got shape {tuple(A.shape)}")
    B = A.detach()
    other = {"symmetric": B.T(), "skew-symmetric": -B.T(), "hermitian": B.H()}[symmetry]
    diff = (B - other).values
    if diff.numel() and not bool((diff == 0).all()):
        raise ValueError(f"symmetry={symmetry!r} was asked for, but the matrix is not exactly {symmetry}")
    if symmetry == "hermitian" and not A.is_complex:
        raise ValueError("symmetry='hermitian' needs a complex matrix; use 'symmetric' for a real one")


def save_mtx(
    A: SparseTensor, path: str | os.PathLike, symmetry: str = "auto", field: str = "auto", comment: str = ""
) -> None:
    """Write ``A`` as a Matrix Market coordinate file (gzip-compressed if ``path`` ends in ``.gz``).

    Parameters
    ----------
    A : SparseTensor
        Unbatched.
    path : str or os.PathLike
        Written atomically (temporary name, then rename).
    symmetry : {'auto', 'general', 'symmetric', 'skew-symmetric', 'hermitian'}
        ``'auto'`` stores only the lower triangle when the matrix is exactly
        symmetric (Hermitian, skew-symmetric).
    field : {'auto', 'real', 'complex', 'integer', 'pattern'}
        ``'auto'`` is ``'complex'`` for complex dtypes, else ``'real'``.
    comment : str
        Lines written after the banner (each prefixed with ``%``).

    Values are written with enough digits to round-trip exactly (shortest
    repr for float64, 9 significant digits for float32).
    """
    check_tensor(A)
    if A.batch_shape:
        raise ValueError(f"save_mtx needs an unbatched matrix, got batch shape {A.batch_shape}; save each member")
    if field == "auto":
        field = "complex" if A.is_complex else "real"
    if field not in _FIELDS:
        raise ValueError(f"field must be 'auto' or one of {_FIELDS}, got {field!r}")
    if A.is_complex and field != "complex" and field != "pattern":
        raise ValueError(f"a complex matrix needs field 'complex' (or 'pattern'), got {field!r}")
    if symmetry == "auto":
        if field == "pattern":
            symmetry = "symmetric" if A.pattern.is_structurally_symmetric else "general"
        else:
            symmetry = _detect_symmetry(A)
    elif symmetry not in _SYMMETRIES:
        raise ValueError(f"symmetry must be 'auto' or one of {_SYMMETRIES}, got {symmetry!r}")
    elif field == "pattern":
        if symmetry != "general" and not A.pattern.is_structurally_symmetric:
            raise ValueError(f"symmetry={symmetry!r} with field 'pattern' needs a structurally symmetric pattern")
    else:
        _check_symmetry(A, symmetry)
    p = A.pattern.to("cpu")
    i, j = p.row.numpy(), p.col.numpy()
    v = A.values.detach().cpu().resolve_conj().numpy()
    if symmetry != "general":
        keep = i > j if symmetry == "skew-symmetric" else i >= j
        i, j, v = i[keep], j[keep], v[keep]
    if field == "integer":
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
            raise ValueError("field='integer' needs integral values; use 'real'")
    M, N = p.shape
    lines = [f"%%MatrixMarket matrix coordinate {field} {symmetry}"]
    lines += [("% " + c).rstrip() for c in comment.splitlines()]
    lines.append(f"{M} {N} {len(i)}")
    header = ("\n".join(lines) + "\n").encode("ascii")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw:
            fh = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if os.fspath(path).endswith(".gz") else raw
            with fh:
                fh.write(header)
                _write_entries(fh, i + 1, j + 1, v, field, A.dtype)


def _write_entries(fh, i, j, v, field, dtype, chunk: int = 1 << 16) -> None:
    single = dtype in (torch.float32, torch.complex64)
    num = "%.9g" if single else "%r"
    fmt = {
        "pattern": "%d %d\n",
        "integer": "%d %d %d\n",
        "real": f"%d %d {num}\n",
        "complex": f"%d %d {num} {num}\n",
    }[field]
    for s in range(0, len(i), chunk):
        cols = [i[s : s + chunk].tolist(), j[s : s + chunk].tolist()]
        vs = v[s : s + chunk]
        if field == "complex":
            cols += [vs.real.astype(np.float64).tolist(), vs.imag.astype(np.float64).tolist()]
        elif field == "integer":
            cols.append(vs.astype(np.int64).tolist())
        elif field == "real":
            cols.append(vs.astype(np.float64).tolist())
        flat = [x for row in zip(*cols) for x in row]
        fh.write(((fmt * (len(flat) // len(cols))) % tuple(flat)).encode("ascii"))
