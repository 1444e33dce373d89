"""sla: differentiable sparse linear algebra for PyTorch.

>>> import torch, sla
>>> A = sla.SparseTensor.from_dense(torch.tensor([[4., -1.], [-1., 4.]], dtype=torch.float64))
>>> A.solve(torch.tensor([3., 3.], dtype=torch.float64))
tensor([1., 1.], dtype=torch.float64)

Assembly (meshes, stencils, finite elements) lives in :mod:`sla.assembly`, the
runner in :mod:`sla.run` (``python -m sla.run problem=poisson2d solver=cg``).
"""

from . import gallery, precond
from ._version import __version__ as __version__  # the one place the version is written
from .config import (
    BackendUnavailableError,
    ConvergenceError,
    ConvergenceWarning,
    IllConditionedWarning,
    NotPositiveDefiniteError,
    SingularMatrixError,
    SlaError,
    SolveInfo,
    SolverConfig,
)
from .dist import DSparseMatrix, DSparseTensor, DSparseTensorList
from .io import load_sparse, save_sparse
from .mtx import load_mtx, save_mtx
from .pattern import Pattern
from .solvers import (
    LUFactorization,
    condition_number,
    det,
    eigs,
    eigsh,
    explain_solve,
    get_available_backends,
    get_backend_methods,
    is_cudss_available,
    is_cupy_available,
    is_eigen_available,
    is_pytorch_available,
    is_scipy_available,
    nonlinear_solve,
    select_backend,
    show_backends,
    slogdet,
    solve,
    spectral_norm,
    spsolve,
    spsolve_batch_coo_different_layout,
    spsolve_batch_coo_same_layout,
    spsolve_batch_different_layout,
    spsolve_batch_same_layout,
    spsolve_coo,
    spsolve_csr,
    svd,
    warmup,
)
from .sparse import SparseTensor
from .sparse_list import SparseTensorList

__all__ = [
    # storage
    "SparseTensor",
    "SparseTensorList",
    "DSparseTensor",
    "DSparseMatrix",
    "DSparseTensorList",
    "Pattern",
    # configuration, reports, errors
    "SolverConfig",
    "SolveInfo",
    "SlaError",
    "SingularMatrixError",
    "NotPositiveDefiniteError",
    "ConvergenceError",
    "ConvergenceWarning",
    "IllConditionedWarning",
    "BackendUnavailableError",
    # linear solves
    "solve",
    "explain_solve",
    "warmup",
    "spsolve",
    "spsolve_coo",
    "spsolve_csr",
    "spsolve_batch_same_layout",
    "spsolve_batch_different_layout",
    "spsolve_batch_coo_same_layout",
    "spsolve_batch_coo_different_layout",
    "LUFactorization",
    # beyond solve
    "eigsh",
    "eigs",
    "svd",
    "spectral_norm",
    "condition_number",
    "det",
    "slogdet",
    "nonlinear_solve",
    # model matrices (sla.gallery.poisson2d, ...)
    "gallery",
    "precond",
    # persistence
    "save_sparse",
    "load_sparse",
    "save_mtx",
    "load_mtx",
    # backends
    "get_available_backends",
    "get_backend_methods",
    "select_backend",
    "show_backends",
    "is_scipy_available",
    "is_cudss_available",
    "is_cupy_available",
    "is_eigen_available",
    "is_pytorch_available",
]
