"""Preconditioners for the Krylov methods: Jacobi, block Jacobi, Chebyshev, and multigrid
(smoothed-aggregation AMG, geometric multigrid on recorded grids)."""

from .simple import PRECONDITIONERS, Preconditioner, make_preconditioner

__all__ = ["PRECONDITIONERS", "Preconditioner", "make_preconditioner"]
