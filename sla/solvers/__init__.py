"""Solvers: linear solves (direct and iterative) with adjoint gradients, and the backend registry."""

from ..sparse import register_linalg
from .linear import LUFactorization, solve, spsolve, spsolve_coo
from .registry import (
    get_available_backends,
    get_backend_methods,
    is_scipy_available,
    is_cudss_available,
    is_cupy_available,
    is_eigen_available,
    is_pytorch_available,
    select_backend,
    show_backends,
)

register_linalg(solve=solve, lu=LUFactorization)

from .det import det, slogdet  # noqa: E402
from .eigen import eigsh  # noqa: E402
from .eigs import eigs  # noqa: E402
from .svd import condition_number, spectral_norm, svd  # noqa: E402

register_linalg(det=det, slogdet=slogdet, eigsh=eigsh, eigs=eigs)
register_linalg(svd=svd, spectral_norm=spectral_norm, condition_number=condition_number)

from .nonlinear import nonlinear_solve, sparse_nonlinear_solve  # noqa: E402

register_linalg(nonlinear_solve=sparse_nonlinear_solve)

__all__ = [
    "solve",
    "spsolve",
    "spsolve_coo",
    "LUFactorization",
    "get_available_backends",
    "get_backend_methods",
    "is_scipy_available",
    "is_cudss_available",
    "is_cupy_available",
    "is_eigen_available",
    "is_pytorch_available",
    "select_backend",
    "show_backends",
    "det",
    "slogdet",
    "eigsh",
    "eigs",
    "svd",
    "spectral_norm",
    "condition_number",
    "nonlinear_solve",
]
