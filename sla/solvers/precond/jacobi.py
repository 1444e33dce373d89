"""Jacobi (``z = D^{-1} r``) and block-Jacobi (exact inverses of the diagonal blocks) preconditioners."""

from __future__ import annotations

import torch

from ...config import SingularMatrixError
from ...kernels import any_, reciprocal
from ...sparse import SparseTensor
from .base import Preconditioner, flat_values

__all__ = ["BlockJacobiPreconditioner", "JacobiPreconditioner", "diagonal_inverse"]


def diagonal_inverse(A: SparseTensor, name: str = "jacobi") -> torch.Tensor:
    """``1 / diag(A)`` as ``[B, n, 1]``; raises if a diagonal entry is zero."""
    d = A.detach().diagonal().reshape(A.batch_size, -1)
    if bool(any_(d == 0)):
        i = int(torch.nonzero((d == 0).any(0))[0])
        raise SingularMatrixError(f"preconditioner {name!r} needs a non-zero diagonal, but A[{i}, {i}] = 0")
    return reciprocal(d).unsqueeze(-1)


class JacobiPreconditioner(Preconditioner):
    """``z = D^{-1} r``."""

    name = "jacobi"

    def __init__(self, A: SparseTensor):
        super().__init__(A)
        self.dinv = diagonal_inverse(A, "jacobi")

    def __call__(self, r):
        return self.dinv * r

    def adjoint(self):
        out = JacobiPreconditioner.__new__(JacobiPreconditioner)
        out.A, out.dinv = None, self.dinv.conj()
        return out


class BlockJacobiPreconditioner(Preconditioner):
    """Exact inverses of the ``block_size x block_size`` diagonal blocks (contiguous unknowns)."""

    name = "block_jacobi"

    def __init__(self, A: SparseTensor, block_size: int = 4):
        super().__init__(A)
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        n = A.sparse_shape[0]
        bs = min(block_size, n)
        nb = -(-n // bs)
        p, v = A.pattern, flat_values(A)
        keep = (p.row // bs) == (p.col // bs)
        r, c = p.row[keep], p.col[keep]
        blocks = v.new_zeros(A.batch_size, nb * bs * bs)
        blocks[:, (r // bs) * bs * bs + (r % bs) * bs + (c % bs)] = v[:, keep]
        blocks = blocks.reshape(A.batch_size, nb, bs, bs)
        pad = torch.arange(n, nb * bs, device=v.device) - (nb - 1) * bs  # identity on the padding
        blocks[:, nb - 1, pad, pad] = 1
        inv, info = torch.linalg.inv_ex(blocks)
        if bool((info != 0).any()) or not bool(torch.isfinite(inv).all()):
            bad = int(torch.nonzero((info != 0).any(0) | ~torch.isfinite(inv).all(-1).all(-1).any(0))[0])
            raise SingularMatrixError(
                f"block_jacobi: diagonal block {bad} (rows {bad * bs}..{min(n, bad * bs + bs) - 1}) "
                "is singular; try another block_size or preconditioner"
            )
        self.inv, self.n, self.bs = inv, n, bs

    def __call__(self, r):
        B, n, K = r.shape
        nb = self.inv.shape[1]
        rp = torch.nn.functional.pad(r, (0, 0, 0, nb * self.bs - n)).reshape(B, nb, self.bs, K)
        z = torch.matmul(self.inv if self.inv.shape[0] == B else self.inv.expand(B, -1, -1, -1), rp)
        return z.reshape(B, nb * self.bs, K)[:, :n]

    def adjoint(self):
        out = BlockJacobiPreconditioner.__new__(BlockJacobiPreconditioner)
        out.A, out.n, out.bs = None, self.n, self.bs
        out.inv = self.inv.mH
        return out
