"""The linear solve pipeline: validation, the backend registry, the choice behind
``'auto'``, the cached solver state, and the one adjoint ``autograd.Function``."""

from .registry import get_available_backends, get_backend_methods, select_backend, show_backends
from .solve import LUFactorization, solve, spsolve, spsolve_coo

__all__ = [
    "LUFactorization",
    "get_available_backends",
    "get_backend_methods",
    "select_backend",
    "show_backends",
    "solve",
    "spsolve",
    "spsolve_coo",
]
