"""sla: differentiable sparse linear algebra for PyTorch.

>>> import torch, sla
>>> A = sla.SparseTensor.from_dense(torch.tensor([[4., -1.], [-1., 4.]], dtype=torch.float64))
>>> A.solve(torch.tensor([3., 3.], dtype=torch.float64))
tensor([1., 1.], dtype=torch.float64)
"""

from .config import (
    BackendUnavailableError,
    ConvergenceError,
    ConvergenceWarning,
    NotPositiveDefiniteError,
    SingularMatrixError,
    SlaError,
    SolveInfo,
    SolverConfig,
)
from .pattern import Pattern
from .sparse import SparseTensor
from .solvers import (
    LUFactorization,
    get_available_backends,
    get_backend_methods,
    is_scipy_available,
    is_cudss_available,
    is_cupy_available,
    is_eigen_available,
    is_pytorch_available,
    select_backend,
    show_backends,
    solve,
    spsolve,
    spsolve_coo,
)
from .solvers import condition_number, det, eigs, eigsh, nonlinear_solve, slogdet, spectral_norm, svd
from .io import load_mtx, load_sparse, save_mtx, save_sparse
from .sparse_list import SparseTensorList
from .dist import DSparseTensor

__version__ = "0.1.0"

__all__ = [
    "SparseTensor",
    "Pattern",
    "SolverConfig",
    "SolveInfo",
    "SlaError",
    "SingularMatrixError",
    "NotPositiveDefiniteError",
    "ConvergenceError",
    "ConvergenceWarning",
    "BackendUnavailableError",
    "LUFactorization",
    "solve",
    "spsolve",
    "spsolve_coo",
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
    "save_sparse",
    "load_sparse",
    "save_mtx",
    "load_mtx",
    "SparseTensorList",
    "DSparseTensor",
]
