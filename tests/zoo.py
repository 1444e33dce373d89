"""The test matrix zoo: one seeded catalogue of matrices for the solver, eigen and GPU tests.

Every matrix comes as a :class:`sla.SparseTensor` (:func:`matrix`) and as the same
SciPy CSR matrix (:func:`scipy_matrix`); :func:`dense` is the dense torch tensor
both are made from.  Kinds (:data:`KINDS`):

``spd``        Hermitian (real symmetric when real), diagonally dominant: positive definite
``symmetric``  Hermitian indefinite (a diagonal spread over [-3, 3])
``csym``       complex symmetric, not Hermitian (real dtypes: the same as ``spd``)
``general``    nonsymmetric, diagonally dominant (well conditioned)
``ill``        ``spd`` scaled symmetrically by ``diag(logspace(0, -4))``: SPD, condition ~1e8
``singular``   a weighted graph Laplacian: Hermitian positive semidefinite, ``A @ 1 = 0``

``batch=k`` gives ``k`` members on one shared pattern whose values are rescaled
member-wise (and, except ``singular``, shifted on the diagonal) so each keeps its kind.
Complex dtypes draw an imaginary part too (complex Hermitian / complex general).
Imported as ``import zoo`` (``tests/`` is on ``sys.path``, see ``conftest.py``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from sla import SparseTensor

KINDS = ("spd", "symmetric", "csym", "general", "ill", "singular")


def dense(kind: str, n: int = 40, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    """The ``n x n`` matrix of ``kind`` as a dense tensor (a sparse random pattern, density ~0.3)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, n, generator=g) < 0.15) | torch.eye(n, dtype=torch.bool)
    mask = mask | mask.T
    R = torch.randn(n, n, generator=g, dtype=torch.float64) * mask
    if dtype.is_complex:
        R = torch.complex(R, torch.randn(n, n, generator=g, dtype=torch.float64) * mask)
    if kind in ("spd", "ill"):
        S = (R + R.mT.conj()) / 2
        D = S + torch.diag(S.abs().sum(1).real.to(S.dtype) + 1)
        if kind == "ill":
            s = torch.logspace(0, -4, n, dtype=torch.float64).to(D.dtype)
            D = D * torch.outer(s, s)  # (s_i s_j exactly symmetric: D stays exactly Hermitian)
    elif kind == "symmetric":
        S = (R + R.mT.conj()) / 2
        D = S + torch.diag(torch.linspace(-3, 3, n, dtype=torch.float64).to(S.dtype))
    elif kind == "csym":
        S = (R + R.mT) / 2
        D = S + torch.diag(S.abs().sum(1).real.to(S.dtype) + 1)
    elif kind == "general":
        D = R + torch.diag(R.abs().sum(1).real.to(R.dtype) + 1)
    else:  # singular: Laplacian of the graph of the pattern with weights |R| + |R|^T
        W = (R.abs() + R.abs().mT).fill_diagonal_(0)
        D = (torch.diag(W.sum(1)) - W).to(R.dtype)
    return D.to(dtype)


def matrix(
    kind: str,
    n: int = 40,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    batch: int | None = None,
    device: str | torch.device = "cpu",
) -> SparseTensor:
    """The matrix of ``kind`` as a SparseTensor (``[batch, n, n]`` on one pattern when ``batch``)."""
    A = SparseTensor.from_dense(dense(kind, n, dtype, seed))
    if batch is None:
        return A.to(device)
    g = torch.Generator().manual_seed(seed + 1)
    d = A.pattern.diag_index[0]
    vals = []
    for i in range(batch):  # member-wise rescaled; a real diagonal shift keeps Hermitian / definite
        v = A.values * (1.0 + 0.5 * i)
        if kind != "singular":  # (a shift would make it regular)
            v[d] += float(torch.rand((), generator=g))
        vals.append(v)
    return A.with_values(torch.stack(vals)).to(device)


def scipy_matrix(kind: str, n: int = 40, dtype: torch.dtype = torch.float64, seed: int = 0) -> sp.csr_matrix:
    """The same matrix as :func:`matrix` as a SciPy CSR matrix (float64 or complex128 entries)."""
    return matrix(kind, n, torch.complex128 if dtype.is_complex else torch.float64, seed).to_scipy("csr")


def members(A: SparseTensor) -> list[sp.csr_matrix]:
    """The SciPy CSR matrices of the members of a (batched) SparseTensor, on the CPU."""
    A = A.detach().cpu()
    return [A.with_values(v).to_scipy("csr") for v in A.values.reshape(-1, A.nnz)]


def scipy_solve(A: SparseTensor, b: torch.Tensor) -> torch.Tensor:
    """Reference ``x`` of ``A x = b`` (``b [*batch, n(, K)]``) by SciPy's SuperLU on the CPU, per member."""
    b = b.detach().cpu().resolve_conj()
    mats = members(A)
    if not A.batch_shape:
        return torch.from_numpy(np.asarray(spla.spsolve(mats[0].tocsc(), b.numpy())).reshape(b.shape))
    bs = b.reshape(len(mats), *b.shape[len(A.batch_shape) :])
    out = [np.asarray(spla.spsolve(M.tocsc(), bi.numpy())).reshape(bi.shape) for M, bi in zip(mats, bs)]
    return torch.from_numpy(np.stack(out)).reshape(b.shape)
