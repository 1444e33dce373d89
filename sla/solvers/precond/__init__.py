"""Preconditioners for the Krylov methods: Jacobi, block Jacobi, Chebyshev, and multigrid
(smoothed-aggregation AMG, geometric multigrid on recorded grids), by name or as typed
objects (:mod:`.options`)."""

from .base import Preconditioner
from .factory import PRECONDITIONERS, make_preconditioner
from .options import AMG, GMG, BlockJacobi, Chebyshev, Jacobi, PreconditionerSpec

__all__ = [
    "AMG",
    "GMG",
    "PRECONDITIONERS",
    "BlockJacobi",
    "Chebyshev",
    "Jacobi",
    "Preconditioner",
    "PreconditionerSpec",
    "make_preconditioner",
]
