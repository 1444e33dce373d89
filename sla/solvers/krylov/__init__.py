"""Krylov methods (CG, BiCGStab, GMRES, FGMRES, MINRES) on any operator, preconditioner and
inner product: one implementation for single-process, batched and distributed solves."""

from .methods import METHODS, KrylovResult, bicgstab, cg, fgmres, gmres, krylov_solve, local_dot, minres

__all__ = ["METHODS", "KrylovResult", "bicgstab", "cg", "fgmres", "gmres", "krylov_solve", "local_dot", "minres"]
