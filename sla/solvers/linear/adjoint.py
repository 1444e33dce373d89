"""The one autograd.Function of a linear solve (every backend, every method).

Forward solves ``A x = b`` with a prepared solver state; backward solves
``A^H lam = g`` on the *same* state (no second factorisation) and returns

    grad_b = lam,        grad_values[k] = -lam[row_k] . conj(x[col_k])

summed over right-hand sides -- the conjugate-correct adjoint of
``x = A^{-1} b`` (the convention of ``torch.linalg.solve``).  The graph holds
one node however many iterations the solver ran.
"""

from __future__ import annotations

import torch

__all__ = ["LinearSolve", "values_grad"]


def values_grad(pattern, lam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``-lam[row] . conj(x[col])`` summed over right-hand sides: the gradient of the stored
    values of ``A`` in ``x = A^{-1} b`` (``lam``, ``x``: ``[B, n, K]``; ``x`` may extend past
    the rows, e.g. with ghost entries of a distributed vector)."""
    return -(lam[:, pattern.row, :] * x[:, pattern.col, :].conj()).sum(-1)


class LinearSolve(torch.autograd.Function):
    """``x = solve(values, b)`` on canonical shapes ``[B, nnz]``, ``[B, M, K]``.

    ``op`` is any object with ``solve(b, transpose=False) -> x`` and a
    ``pattern``; it is usually a :class:`sla.solvers.linear.solve.Prepared`.  An ``op``
    whose matrix has more columns than owned rows (a rank of a distributed matrix, whose
    columns include ghost entries) also has ``columns(x) -> x`` extended to every column.
    """

    @staticmethod
    def forward(ctx, values, b, op):
        x = op.solve(b)
        ctx.op = op
        ctx.save_for_backward(x)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        op = ctx.op
        lam = op.solve(g.contiguous(), transpose=True)
        gv = gb = None
        if ctx.needs_input_grad[0]:
            gv = values_grad(op.pattern, lam, op.columns(x) if hasattr(op, "columns") else x)
        if ctx.needs_input_grad[1]:
            gb = lam
        return gv, gb, None
