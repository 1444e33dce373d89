"""Solvers: linear solves (direct and iterative) with adjoint gradients, eigen/SVD/determinants,
nonlinear solves, and the backend registry.  Importing this package installs the entry points
behind the SparseTensor methods (``A.solve``, ``A.eigsh``, ...)."""

from ..sparse import register_linalg
from .linear.batch import (
    solve_batch,
    spsolve_batch_coo_different_layout,
    spsolve_batch_coo_same_layout,
    spsolve_batch_different_layout,
    spsolve_batch_same_layout,
    spsolve_csr,
)
from .linear.policy import explain_solve
from .linear.registry import (
    get_available_backends,
    get_backend_methods,
    is_cudss_available,
    is_cupy_available,
    is_eigen_available,
    is_pytorch_available,
    is_scipy_available,
    select_backend,
    show_backends,
)
from .linear.solve import LUFactorization, solve, spsolve, spsolve_coo
from .linear.warmup import warmup
from .nonlinear.solve import nonlinear_solve, sparse_nonlinear_solve
from .spectral.det import det, slogdet
from .spectral.eigs import eigs
from .spectral.eigsh import eigsh
from .spectral.svd import condition_number, spectral_norm, svd

register_linalg(
    solve=solve,
    solve_batch=solve_batch,
    lu=LUFactorization,
    det=det,
    slogdet=slogdet,
    eigsh=eigsh,
    eigs=eigs,
    svd=svd,
    spectral_norm=spectral_norm,
    condition_number=condition_number,
    nonlinear_solve=sparse_nonlinear_solve,
)

__all__ = [
    "solve",
    "warmup",
    "explain_solve",
    "spsolve",
    "spsolve_coo",
    "spsolve_csr",
    "spsolve_batch_same_layout",
    "spsolve_batch_different_layout",
    "spsolve_batch_coo_same_layout",
    "spsolve_batch_coo_different_layout",
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
