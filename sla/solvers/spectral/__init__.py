"""Spectral solvers with adjoints: ``eigsh``, ``eigs``, LOBPCG, ``svd``, norms and condition
numbers, ``det``/``slogdet``."""

from .det import det, slogdet
from .eigs import eigs
from .eigsh import eigsh
from .svd import condition_number, spectral_norm, svd

__all__ = ["condition_number", "det", "eigs", "eigsh", "slogdet", "spectral_norm", "svd"]
