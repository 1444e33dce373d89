"""What :meth:`sla.Pattern.numeric` keeps of the values it caches work on, and how it compares them.

On the CPU, and of at most :data:`COPY_MAX` values anywhere, an exact copy; of more values on
other devices (whose memory is the scarce resource) a 128-bit digest of the values' bits and
positions (:func:`_digest`), taken at most once per solve (:func:`values_scope`).  Either way a
hit needs values equal to the stored ones, so in-place edits -- also through ``.data``, which
bypasses version counters -- never reuse stale work.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Hashable
from typing import Any

import torch

from .kernels import any_

__all__ = [
    "COPY_DEVICES",
    "COPY_MAX",
    "Probe",
    "Stored",
    "equal_record",
    "hand_over",
    "scope_wants",
    "take_over",
    "values_scope",
]

_DIGEST_CHUNK = 1 << 20

COPY_DEVICES = {"cpu"}
"""Device types on which :meth:`Pattern.numeric` keeps an exact copy of the values it caches work
on; on the others it keeps a 128-bit digest of them (:func:`_digest`) beyond :data:`COPY_MAX`."""
COPY_MAX = 1 << 20
"""Values of at most this many entries are kept as an exact copy on every device (8 MB in double
precision): comparing with it is one pass, and the digest's integer kernels, each loaded on its
first call in a process (~35 ms on an H200), are not needed by a program of small solves."""


def _keeps_copy(v: torch.Tensor) -> bool:
    return v.device.type in COPY_DEVICES or v.numel() <= COPY_MAX


# odd 64-bit constants (splitmix64 / murmur3 finalisers), as signed int64
_MIX = [
    c - (1 << 64) if c >= 1 << 63 else c
    for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)
]
_INT_VIEW = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def _digest(v: torch.Tensor) -> torch.Tensor:
    """A 128-bit digest of the bit patterns of ``v`` and their positions: two int64 lanes, each the
    wrapping sum of a mixed (value bits + index * constant) per entry, by chunks on ``v``'s device.

    A swap, a one-bit flip or any other edit changes each lane like a random 64-bit number would,
    so two different arrays of the same shape share a digest with probability about 2**-128.
    The temporaries are three int64 arrays of a sixteenth of the entries (at least 1M): a few
    hundred kernel launches at most, 1.5 bytes per value (on P1 tetrahedra, with the hierarchy of
    an earlier solve alive, a quarter made the solve's peak)."""
    flat = v.reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    bits = flat.view(_INT_VIEW[flat.element_size()])
    out = torch.zeros(2, dtype=torch.int64, device=v.device)
    m0, m1, m2, m3, m4 = _MIX
    chunk = max(_DIGEST_CHUNK, -(-bits.numel() // 16))
    for lo in range(0, bits.numel(), chunk):
        x = bits[lo : lo + chunk]
        i = torch.arange(lo, lo + x.numel(), dtype=torch.int64, device=v.device)
        y = torch.empty_like(i)
        for lane, (a, b, c, shift) in enumerate(((m0, m1, m2, 31), (m3, m4, m1, 29))):
            torch.add(x, i, alpha=a, out=y).mul_(b)
            y.bitwise_xor_(y >> shift).mul_(c)
            out[lane] += y.sum()
    return out


_SCOPE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("sla_numeric_scope", default=None)


_KEEP = "keep"  # the scope's own entry (its other keys are tuples)


def _values_key(v: torch.Tensor) -> tuple:
    return (v.data_ptr(), v._version, v.storage_offset(), tuple(v.shape), v.stride(), v.dtype, str(v.device))


@contextlib.contextmanager
def values_scope(keep: tuple = ()):
    """Within it (one solve's type checks and setup lookups, where no user code runs in between),
    :meth:`Pattern.numeric` digests an unchanged values tensor once instead of at every lookup.

    ``keep``: names of work the type checks may hand to the setup (:func:`hand_over`), asked for by
    a solve whose setup reads it (geometric multigrid: ``'stencil'``).  What is not taken is dropped
    when the outermost scope ends."""
    token = _SCOPE.set({_KEEP: frozenset(keep)}) if _SCOPE.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _SCOPE.reset(token)


def scope_wants(name: str) -> bool:
    """Whether the current scope asked for ``name`` (see :func:`values_scope`)."""
    memo = _SCOPE.get()
    return memo is not None and name in memo[_KEEP]


def hand_over(name: str, v: torch.Tensor, extra: Hashable, work: Any) -> bool:
    """Leave ``work`` made from the values ``v`` (and ``extra``) for :func:`take_over` when the current
    scope asked for ``name``; whether it was left."""
    memo = _SCOPE.get()
    if not scope_wants(name):
        return False
    memo[(name, extra, *_values_key(v))] = (v, work)  # holding v: its storage cannot be reused meanwhile
    return True


def take_over(name: str, v: torch.Tensor, extra: Hashable) -> Any:
    """What :func:`hand_over` left for these values (removed from the scope), else ``None``."""
    memo = _SCOPE.get()
    got = None if memo is None else memo.pop((name, extra, *_values_key(v)), None)
    return None if got is None else got[1]


class Stored:
    """What :meth:`Pattern.numeric` keeps of some values to recognise them: an exact copy on the CPU
    and of at most :data:`COPY_MAX` values, else a 128-bit :func:`_digest` (on other devices, whose
    memory is the scarce resource: a copy would be 8 bytes per stored entry, 40 bytes per unknown
    of a 5-point matrix)."""

    __slots__ = ("copy", "digest", "dtype", "shape")

    def __init__(self, probe: Probe):
        v = probe.v
        self.shape, self.dtype = v.shape, v.dtype
        self.copy = v.clone() if _keeps_copy(v) else None
        self.digest = None if self.copy is not None else probe.digest()

    @property
    def device(self) -> torch.device:
        return (self.copy if self.copy is not None else self.digest).device


class Probe:
    """The values looked up in the numeric cache, their digest computed at most once (at once off the CPU)."""

    def __init__(self, v: torch.Tensor):
        self.v, self._digest = v, None
        if not _keeps_copy(v):
            self.digest()  # now: its temporaries never meet those of the work built after a miss

    def digest(self) -> torch.Tensor:
        if self._digest is None:
            memo, v = _SCOPE.get(), self.v
            key = _values_key(v)
            hit = None if memo is None else memo.get(key)
            self._digest = _digest(v) if hit is None else hit[1]
            if memo is not None and hit is None:
                memo[key] = (v, self._digest)  # holding v: its storage cannot be reused within the scope
        return self._digest

    def matches(self, s: Stored) -> bool:
        v = self.v
        if s.shape != v.shape or s.dtype != v.dtype or s.device != v.device:
            return False
        if s.copy is None:
            return torch.equal(s.digest, self.digest())
        if v.device.type == "cpu":
            return torch.equal(s.copy, v)
        return not bool(any_(s.copy != v))  # a count: no all() family (torch.equal's) on a GPU


def equal_record(entries: list, probe: Probe) -> Stored | None:
    """The stored record among ``(key, stored, work)`` entries of values equal to the probe's (newest first)."""
    seen: set[int] = set()
    for _, stored, _ in reversed(entries):
        if id(stored) in seen:
            continue
        seen.add(id(stored))
        if probe.matches(stored):
            return stored
    return None
