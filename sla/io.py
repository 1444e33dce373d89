"""Persistence in safetensors files (Matrix Market interchange: :mod:`sla.mtx`).

:func:`save_sparse` / :func:`load_sparse` (also ``A.save(path)`` and
``SparseTensor.load(path, device=None)``) keep a :class:`~sla.SparseTensor`
exactly: values (any batch shape, bit for bit), the pattern, the shape and
dtype, with a format version in the safetensors metadata.

Every write goes to a temporary file in the target directory that is renamed
over the target only once complete (:func:`atomic_path`, shared with
:mod:`sla.mtx`), so a failed save leaves nothing behind.  Bad files raise
:class:`ValueError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

from .pattern import Pattern
from .sparse import DTYPES, SparseTensor, register_linalg

__all__ = ["save_sparse", "load_sparse", "load_metadata", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FORMAT = "sla.SparseTensor"
_DTYPE_NAMES = {str(d).removeprefix("torch."): d for d in DTYPES}


# ------------------------------------------------------------------ common
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save {path!r}: folder {folder!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_tensor(A: Any, name: str = "A") -> SparseTensor:
    if not isinstance(A, SparseTensor):
        raise TypeError(f"{name} must be a sla.SparseTensor, got {type(A).__name__}")
    return A


# -------------------------------------------------------------- safetensors
def _safetensors():
    try:
        import safetensors.torch as st
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("saving/loading SparseTensors needs safetensors: pip install 'sla-torch[io]'") from exc
    return st, safe_open


def save_sparse(A: SparseTensor, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save ``A`` to a safetensors file (exact round trip with :func:`load_sparse`).

    Parameters
    ----------
    A : SparseTensor
        Any batch shape and dtype; it is detached and copied to the CPU.
    path : str or os.PathLike
        Target file; written atomically (temporary name, then rename).
    metadata : dict of str to str, optional
        Your own entries, stored in the file's header; read them back with
        :func:`load_metadata`.  Keys must not be the file format's own.

    Examples
    --------
    >>> import tempfile, os, torch, sla
    >>> A = sla.SparseTensor.from_dense(torch.eye(3, dtype=torch.float64))
    >>> f = os.path.join(tempfile.mkdtemp(), "A.safetensors")
    >>> A.save(f)
    >>> sla.SparseTensor.load(f).to_dense().diagonal()
    tensor([1., 1., 1.], dtype=torch.float64)
    """
    check_tensor(A)
    user = _check_user_metadata(metadata)
    st, _ = _safetensors()
    p = A.pattern.to("cpu")
    values = A.values.detach().cpu().resolve_conj()
    if values.is_complex():
        values = torch.view_as_real(values)
    tensors = {
        "values": values.contiguous().clone(),
        "row": p.row.contiguous().clone(),
        "col": p.col.contiguous().clone(),
    }
    meta = {
        "format": _FORMAT,
        "format_version": str(FORMAT_VERSION),
        "shape": json.dumps(list(A.shape)),
        "batch_shape": json.dumps(list(A.batch_shape)),
        "dtype": str(A.dtype).removeprefix("torch."),
        "nnz": str(A.nnz),
    }
    grid = A.pattern.cache.get("grid")
    if grid is not None:
        meta["grid"] = json.dumps([int(g) for g in grid])
    meta.update(user)
    with atomic_path(path) as tmp:
        st.save_file(tensors, tmp, metadata=meta)


_RESERVED = ("format", "format_version", "shape", "batch_shape", "dtype", "nnz", "grid")


def _check_user_metadata(metadata) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of str to str, got {type(metadata).__name__}")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        if k in _RESERVED:
            raise ValueError(f"metadata key {k!r} is reserved by the file format (reserved: {list(_RESERVED)})")
    return dict(metadata)


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata`` given to :func:`save_sparse` for the file at ``path`` (without the format's own keys)."""
    _, safe_open = _safetensors()
    with safe_open(os.fspath(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: v for k, v in meta.items() if k not in _RESERVED}


def _meta_json(meta: dict, key: str, path: str):
    try:
        out = json.loads(meta[key])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: metadata entry {key!r} is missing or not valid JSON") from exc
    if not isinstance(out, list) or not all(isinstance(v, int) and v >= 0 for v in out):
        raise ValueError(f"{path}: metadata entry {key!r} must be a list of non-negative integers, got {meta[key]!r}")
    return tuple(out)


def load_sparse(path: str | os.PathLike, device: str | torch.device | None = None) -> SparseTensor:
    """Load a SparseTensor written by :func:`save_sparse` onto ``device`` (default CPU).

    Raises
    ------
    ValueError
        The file is not a safetensors file, was written by something other
        than sla, by a newer format version, or is inconsistent.
    """
    _, safe_open = _safetensors()
    path = os.fspath(path)
    dev = torch.device("cpu" if device is None else device)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        with safe_open(path, framework="pt", device=str(dev)) as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            if meta.get("format") != _FORMAT:
                raise ValueError(
                    f"{path}: not a sla SparseTensor file (metadata 'format' is {meta.get('format')!r}, "
                    f"expected {_FORMAT!r}); was it written by something else?"
                )
            missing = {"values", "row", "col"} - keys
            if missing:
                raise ValueError(f"{path}: missing tensors {sorted(missing)}")
            tensors = {k: f.get_tensor(k) for k in ("values", "row", "col")}
    except ValueError:
        raise
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        version = int(meta.get("format_version", ""))
    except ValueError as exc:
        raise ValueError(
            f"{path}: metadata 'format_version' is {meta.get('format_version')!r}, not an integer"
        ) from exc
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: written by a newer sla (format version {version}; this sla reads up to {FORMAT_VERSION}); "
            "upgrade sla to read it"
        )
    dtype = _DTYPE_NAMES.get(meta.get("dtype", ""))
    if dtype is None:
        raise ValueError(f"{path}: metadata 'dtype' is {meta.get('dtype')!r}, expected one of {sorted(_DTYPE_NAMES)}")
    shape = _meta_json(meta, "shape", path)
    batch = _meta_json(meta, "batch_shape", path)
    values, row, col = tensors["values"], tensors["row"], tensors["col"]
    if dtype.is_complex:
        if values.dim() < 1 or values.shape[-1] != 2:
            raise ValueError(f"{path}: complex values must be stored as [..., 2] reals, got {tuple(values.shape)}")
        values = torch.view_as_complex(values.contiguous())
    if values.dtype != dtype:
        raise ValueError(f"{path}: values have dtype {values.dtype} but the metadata says {dtype}")
    if len(shape) != len(batch) + 2 or shape[:-2] != batch:
        raise ValueError(f"{path}: shape {shape} does not match batch shape {batch}")
    nnz = row.numel()
    if row.dim() != 1 or col.shape != row.shape or tuple(values.shape) != batch + (nnz,):
        raise ValueError(
            f"{path}: inconsistent tensors: row {tuple(row.shape)}, col {tuple(col.shape)}, "
            f"values {tuple(values.shape)} for batch shape {batch}"
        )
    if row.dtype != torch.int64 or col.dtype != torch.int64:
        raise ValueError(f"{path}: row/col must be int64, got {row.dtype}/{col.dtype}")
    try:
        pattern, inverse = Pattern.from_coo(row, col, shape[-2:])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{path}: invalid pattern: {exc}") from exc
    if inverse is not None:
        raise ValueError(f"{path}: the stored pattern is not sorted row-major with unique entries")
    if "grid" in meta:
        pattern.cache["grid"] = _meta_json(meta, "grid", path)
    return SparseTensor._make(values, pattern)


def _save_method(self, path, metadata: dict[str, str] | None = None) -> None:
    save_sparse(self, path, metadata)


def _load_method(cls, path, device=None) -> SparseTensor:
    return load_sparse(path, device=device)


_save_method.__doc__ = save_sparse.__doc__
_load_method.__doc__ = load_sparse.__doc__
register_linalg(save=_save_method, load=_load_method)
