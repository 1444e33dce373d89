"""Matrices for the GPU backend tests and their SciPy reference solutions (computed on the CPU)."""

import numpy as np
import scipy.sparse.linalg as spla
import torch

from sla import SparseTensor


def dense(kind, n=30, dtype=torch.float64, seed=0):
    """A dense ``n x n`` matrix of ``kind``: spd, symmetric (indefinite), csym (complex symmetric), general."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, n, generator=g) < 0.2) | torch.eye(n, dtype=torch.bool)
    mask = mask | mask.T
    R = torch.randn(n, n, generator=g, dtype=torch.float64) * mask
    if dtype.is_complex:
        R = torch.complex(R, torch.randn(n, n, generator=g, dtype=torch.float64) * mask)
    if kind == "spd":  # Hermitian, diagonally dominant
        S = (R + R.mT.conj()) / 2
        D = S + torch.diag(S.abs().sum(1).real.to(S.dtype) + 1)
    elif kind == "symmetric":  # Hermitian indefinite (real symmetric when real)
        S = (R + R.mT.conj()) / 2
        D = S + torch.diag(torch.linspace(-3, 3, n, dtype=torch.float64).to(S.dtype))
    elif kind == "csym":  # complex symmetric, not Hermitian
        S = (R + R.mT) / 2
        D = S + torch.diag(S.abs().sum(1).real.to(S.dtype) + 1)
    else:  # general nonsymmetric, well conditioned
        D = R + torch.diag(R.abs().sum(1).real.to(R.dtype) + 1)
    return D.to(dtype)


def zoo(kind, n=30, dtype=torch.float64, batch=None, device="cpu"):
    """SparseTensor of ``kind`` (``[batch, n, n]`` members with one shared pattern when ``batch``)."""
    if batch is None:
        return SparseTensor.from_dense(dense(kind, n, dtype)).to(device)
    base = SparseTensor.from_dense(dense(kind, n, dtype))
    g = torch.Generator().manual_seed(1)
    vals = []
    for i in range(batch):  # same pattern, member-wise rescaled values that keep the kind
        s = 1.0 + 0.5 * i
        v = base.values * s
        d = base.pattern.diag_index[0]
        v = v.clone()
        v[d] = v[d] + float(torch.rand((), generator=g))  # a real diagonal shift keeps Hermitian / definite
        vals.append(v)
    return SparseTensor._make(torch.stack(vals), base.pattern).to(device)


def scipy_solve(A, b):
    """Reference x for ``A x = b`` (b ``[*batch, n, K]``) by SciPy's SuperLU on the CPU."""
    A = A.detach().cpu()
    b = b.detach().cpu().resolve_conj()
    if not A.batch_shape:
        return torch.from_numpy(np.asarray(spla.spsolve(A.to_scipy("csc"), b.numpy())).reshape(b.shape))
    out = []
    for i in range(A.batch_size):
        Ai = SparseTensor._make(A._flat()[i], A.pattern)
        out.append(torch.from_numpy(np.asarray(spla.spsolve(Ai.to_scipy("csc"), b[i].numpy())).reshape(b[i].shape)))
    return torch.stack(out)
