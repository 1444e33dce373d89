"""Typed preconditioner choices: small frozen dataclasses, validated at construction.

Wherever a preconditioner name is accepted (``solve(..., preconditioner=...)``,
``SolverConfig(preconditioner=...)``, :func:`sla.solvers.precond.make_preconditioner`),
one of these objects may be given instead; its fields are the preconditioner's options,
so an option cannot be misspelt or silently dropped.

>>> from sla.solvers.precond.options import AMG
>>> AMG(cycle="W").options()
{'cycle': 'W'}
>>> AMG(cycle="F")
Traceback (most recent call last):
...
ValueError: AMG: cycle must be one of ['K', 'V', 'W', 'auto'], got 'F'
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from .base import Preconditioner

__all__ = ["AMG", "GMG", "BlockJacobi", "Chebyshev", "Jacobi", "PreconditionerSpec", "resolve"]


def _positive_int(spec: PreconditionerSpec, name: str) -> None:
    v = getattr(spec, name)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{type(spec).__name__}: {name} must be a positive integer, got {v!r}")


def _number(spec: PreconditionerSpec, name: str, low: float, strict: bool, optional: bool = False) -> None:
    v = getattr(spec, name)
    if v is None and optional:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v > low if strict else v >= low)
    if not ok:
        rel = ">" if strict else ">="
        raise ValueError(f"{type(spec).__name__}: {name} must be a number {rel} {low}, got {v!r}")


def _choice(spec: PreconditionerSpec, name: str, choices: tuple) -> None:
    v = getattr(spec, name)
    if v not in choices:
        raise ValueError(f"{type(spec).__name__}: {name} must be one of {sorted(choices)}, got {v!r}")


@dataclass(frozen=True)
class PreconditionerSpec:
    """Base of the typed preconditioner choices: ``name`` plus the options as fields."""

    name: ClassVar[str] = "none"

    def options(self) -> dict[str, Any]:
        """The options that differ from the preconditioner's defaults (passed as keywords)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


@dataclass(frozen=True)
class Jacobi(PreconditionerSpec):
    """``z = D^{-1} r``."""

    name: ClassVar[str] = "jacobi"


@dataclass(frozen=True)
class BlockJacobi(PreconditionerSpec):
    """Exact inverses of the ``block_size x block_size`` diagonal blocks."""

    name: ClassVar[str] = "block_jacobi"
    block_size: int = 4

    def __post_init__(self) -> None:
        _positive_int(self, "block_size")


@dataclass(frozen=True)
class Chebyshev(PreconditionerSpec):
    """Chebyshev polynomial of degree ``degree`` in ``D^{-1} A`` on ``[hi / ratio, hi]``."""

    name: ClassVar[str] = "chebyshev"
    degree: int = 4
    ratio: float = 30.0

    def __post_init__(self) -> None:
        _positive_int(self, "degree")
        _number(self, "ratio", 1, strict=True)


@dataclass(frozen=True)
class AMG(PreconditionerSpec):
    """Smoothed-aggregation AMG (see :class:`sla.solvers.precond.amg.SmoothedAggregation`
    for the meaning of each option)."""

    name: ClassVar[str] = "amg"
    theta: float | None = None
    max_coarse: int = 500
    max_levels: int = 25
    degree: int = 2
    ratio: float = 10.0
    omega: float = 4.0 / 3.0
    hermitian: bool | None = None
    improve: int = 0
    aggregation: str = "auto"
    coarse_theta: float | None = None
    cycle: str = "auto"
    near_nullspace: Any = field(default="auto", compare=False)
    block_size: int | None = None
    coarse_dtype: Any = "auto"
    prolongation: str = "auto"

    def __post_init__(self) -> None:
        if not (self.coarse_dtype == "auto" or isinstance(self.coarse_dtype, torch.dtype)):
            raise ValueError(f"AMG: coarse_dtype must be 'auto' or a torch dtype, got {self.coarse_dtype!r}")
        _choice(self, "prolongation", ("auto", "stored", "implicit"))
        _number(self, "theta", 0, strict=False, optional=True)
        for n in ("max_coarse", "max_levels", "degree"):
            _positive_int(self, n)
        _number(self, "ratio", 1, strict=True)
        _number(self, "omega", 0, strict=True)
        _choice(self, "hermitian", (None, True, False))
        if not isinstance(self.improve, int) or isinstance(self.improve, bool) or self.improve < 0:
            raise ValueError(f"AMG: improve must be a non-negative integer, got {self.improve!r}")
        _choice(self, "aggregation", ("auto", "standard", "mis2"))
        _number(self, "coarse_theta", 0, strict=False, optional=True)
        _choice(self, "cycle", ("V", "W", "K", "auto"))
        nns = self.near_nullspace
        if isinstance(nns, str):
            _choice(self, "near_nullspace", ("auto", "constant"))
        elif not (hasattr(nns, "shape") and len(nns.shape) in (1, 2)):
            raise ValueError(f"AMG: near_nullspace must be 'auto', 'constant' or a tensor [n, k], got {nns!r}")
        if self.block_size is not None:
            _positive_int(self, "block_size")

    def __eq__(self, other: object) -> bool:  # a near-null-space tensor compares by identity
        if type(other) is not type(self):
            return NotImplemented
        return all(
            getattr(self, f.name) is getattr(other, f.name)
            if f.name == "near_nullspace" and not isinstance(self.near_nullspace, str)
            else getattr(self, f.name) == getattr(other, f.name)
            for f in fields(self)
        )

    def options(self) -> dict[str, Any]:
        """The options that differ from the defaults (a near-null-space tensor always counts)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (str, int, float, bool, type(None))) or v != f.default:
                out[f.name] = v
        return out


@dataclass(frozen=True)
class GMG(PreconditionerSpec):
    """Geometric multigrid on a structured grid (see
    :class:`sla.solvers.precond.gmg.GeometricMultigrid` for the meaning of each option)."""

    name: ClassVar[str] = "gmg"
    grid: tuple[int, ...] | None = None
    max_coarse: int = 500
    max_levels: int = 25
    degree: int = 2
    ratio: float = 10.0
    transfers: str = "auto"
    cycle: str = "auto"
    graph: bool | str = "auto"
    coarse_dtype: Any = "auto"

    def __post_init__(self) -> None:
        if not (isinstance(self.graph, bool) or self.graph == "auto"):
            raise ValueError(f"GMG: graph must be True, False or 'auto', got {self.graph!r}")
        if not (self.coarse_dtype == "auto" or isinstance(self.coarse_dtype, torch.dtype)):
            raise ValueError(f"GMG: coarse_dtype must be 'auto' or a torch dtype, got {self.coarse_dtype!r}")
        if self.grid is not None:
            g = self.grid
            if not isinstance(g, tuple) or not g or not all(isinstance(k, int) and k >= 1 for k in g):
                raise ValueError(f"GMG: grid must be a tuple of positive integers, got {g!r}")
        for n in ("max_coarse", "max_levels", "degree"):
            _positive_int(self, n)
        _number(self, "ratio", 1, strict=True)
        _choice(self, "transfers", ("auto", "csr", "stencil"))
        _choice(self, "cycle", ("V", "W", "K", "auto"))


def resolve(preconditioner: str | PreconditionerSpec | None, options: dict | None = None) -> tuple[str, dict]:
    """``(name, options)`` of a preconditioner given by name (+ ``options``) or as a typed object.

    Parameters
    ----------
    preconditioner : str or PreconditionerSpec or None
        A name (``None`` means ``'auto'``) or a typed choice.
    options : dict, optional
        Options that go with a name (``SolverConfig.options``); options of a typed choice
        come from its fields, and giving the same option both ways is an error.

    Returns
    -------
    (str, dict)
    """
    opts = dict(options or {})
    if isinstance(preconditioner, PreconditionerSpec):
        both = sorted(set(opts) & set(preconditioner.options()))
        if both:
            raise ValueError(
                f"preconditioner option(s) {both} given both in the {type(preconditioner).__name__} object "
                "and as separate options: give them once"
            )
        return preconditioner.name, {**opts, **preconditioner.options()}
    if preconditioner is None:
        return "auto", opts
    if isinstance(preconditioner, Preconditioner):
        raise TypeError(
            f"a built preconditioner ({type(preconditioner).__name__}) is used as given by the pytorch backend only; "
            "elsewhere give a name or a sla.precond object"
        )
    if not isinstance(preconditioner, str):
        raise TypeError(
            "preconditioner must be a name or a sla.precond object (AMG, GMG, Jacobi, BlockJacobi, Chebyshev), "
            f"got {type(preconditioner).__name__}"
        )
    return preconditioner, opts
