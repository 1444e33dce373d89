"""Nonlinear solves (Newton, Picard, Anderson) with the implicit-function adjoint and
coloured sparse Jacobians."""

from .solve import nonlinear_solve, sparse_nonlinear_solve

__all__ = ["nonlinear_solve", "sparse_nonlinear_solve"]
