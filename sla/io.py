"""Persistence in safetensors files (Matrix Market interchange: :mod:`sla.mtx`).

:func:`save_sparse` / :func:`load_sparse` (also ``A.save(path)`` and
``SparseTensor.load(path, device=None)``) keep a :class:`~sla.SparseTensor`
exactly: values (any batch shape, bit for bit), the pattern, the shape and
dtype, with a format version in the safetensors metadata.

Every write goes to a temporary file in the target directory that is synced
to disk and renamed over the target only once complete (:func:`atomic_path`,
shared with :mod:`sla.mtx`): a crash leaves the old file or the new one, a
failed save leaves nothing behind, and the file keeps its permissions.  A
SHA-256 of the tensors in the metadata is verified at load.  Bad files raise
:class:`ValueError` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
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
_TMP_SUFFIX = ".tmp"


def _tmp_prefix(path: str) -> str:
    return "." + os.path.basename(path) + "."


def _remove_stale_temps(folder: str, path: str) -> None:
    """Delete temporary files of earlier saves of ``path`` whose writer is gone (killed by
    SIGKILL/SIGTERM or a power cut, so no ``finally`` ran): their names carry the writer's pid;
    one whose pid is alive on this host is left alone (a concurrent save)."""
    prefix = _tmp_prefix(path)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        pid_part = name[len(prefix) :].split(".", 1)[0]
        if not pid_part.isdigit():
            continue
        pid = int(pid_part)
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # a live writer
            except ProcessLookupError:
                pass
            except (PermissionError, OSError):
                continue  # someone else's live process
        elif name in _LIVE:
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))


_LIVE: set[str] = set()  # temp files this process is writing now (threads)


def _mode_for(path: str) -> int:
    """Permissions for the new file: the existing file's, else what ``open()`` would give
    (0o666 less the umask) -- not mkstemp's 0o600."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        pass
    umask = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every platform / file system can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; make it durable and rename it over ``path`` on success.

    The data reaches the disk (``fsync``) before the rename, and the rename before returning
    (``fsync`` of the folder), so a crash leaves the old file or the new one, never a mix.
    The new file keeps the permissions of the file it replaces.  A failed or interrupted
    save (an exception, ``KeyboardInterrupt``) removes its temporary file; temporary files
    left by a killed writer are removed by the next save of the same path.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save {path!r}: folder {folder!r} does not exist")
    _remove_stale_temps(folder, path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_tmp_prefix(path)}{os.getpid()}.", suffix=_TMP_SUFFIX)
    os.close(fd)
    _LIVE.add(os.path.basename(tmp))
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    finally:
        _LIVE.discard(os.path.basename(tmp))


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
    meta["sha256"] = _checksum(tensors)
    meta.update(user)
    with atomic_path(path) as tmp:
        st.save_file(tensors, tmp, metadata=meta)


_RESERVED = ("format", "format_version", "shape", "batch_shape", "dtype", "nnz", "grid", "sha256")


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the raw bytes of ``values``, ``row`` and ``col`` (CPU tensors), in that order."""
    h = hashlib.sha256()
    for k in ("values", "row", "col"):
        t = tensors[k].detach().cpu().contiguous()
        h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


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
        with safe_open(path, framework="pt", device="cpu") as f:
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
    if "sha256" in meta and _checksum(tensors) != meta["sha256"]:
        raise ValueError(
            f"{path}: checksum mismatch -- the stored tensors are not the ones saved (the file is corrupt: "
            "a flipped bit, a partial copy, or an edit); restore it from a good copy"
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
    out = SparseTensor._make(values, pattern)
    return out if dev.type == "cpu" else out.to(dev)


def _save_method(self, path, metadata: dict[str, str] | None = None) -> None:
    save_sparse(self, path, metadata)


def _load_method(cls, path, device=None) -> SparseTensor:
    return load_sparse(path, device=device)


_save_method.__doc__ = save_sparse.__doc__
_load_method.__doc__ = load_sparse.__doc__
register_linalg(save=_save_method, load=_load_method)
