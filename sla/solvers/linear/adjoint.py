"""The one autograd.Function of a linear solve (every backend, every method).

Forward solves ``A x = b`` with a prepared solver state; backward solves
``A^H lam = g`` on the *same* state (no second factorisation) and returns

    grad_b = lam,        grad_values[k] = -lam[row_k] . conj(x[col_k])

summed over right-hand sides -- the conjugate-correct adjoint of
``x = A^{-1} b`` (the convention of ``torch.linalg.solve``).  The graph holds
one node however many iterations the solver ran.

Under ``create_graph=True`` the backward is itself differentiable: the adjoint solve is an
:class:`AdjointSolve` node (whose backward is a forward :class:`LinearSolve`, and so on), and
the products with the saved ``x`` are ordinary torch operations, so second (and higher)
derivatives -- Hessian-vector products -- come out of autograd, on the same factorisation.
"""

from __future__ import annotations

import torch

__all__ = ["AdjointSolve", "LinearSolve", "values_grad"]


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
        ctx.values = values  # the input itself (not a saved tensor): the double backward differentiates through it
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        op = ctx.op
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            if hasattr(op, "columns"):
                raise RuntimeError(
                    "second-order gradients (create_graph=True) of a distributed solve are not supported; "
                    "differentiate a single-process solve, or use first-order gradients"
                )
            values = ctx.values
            lam = AdjointSolve.apply(values, g.contiguous(), op)
            gv = values_grad(op.pattern, lam, x) if ctx.needs_input_grad[0] else None
            return gv, (lam if ctx.needs_input_grad[1] else None), None
        lam = op.solve(g.contiguous(), transpose=True)
        gv = gb = None
        if ctx.needs_input_grad[0]:
            gv = values_grad(op.pattern, lam, op.columns(x) if hasattr(op, "columns") else x)
        if ctx.needs_input_grad[1]:
            gb = lam
        return gv, gb, None


class AdjointSolve(torch.autograd.Function):
    """``lam = A^{-H} g`` on the state of a forward :class:`LinearSolve` (the adjoint solve of its
    backward, as a node of its own under ``create_graph=True``).

    Its gradients: ``grad_g = A^{-1} gl`` (a forward solve, ``mu``) and
    ``grad_values[k] = -lam[row_k] . conj(mu[col_k])``.
    """

    @staticmethod
    def forward(ctx, values, g, op):
        lam = op.solve(g, transpose=True)
        ctx.op = op
        ctx.values = values
        ctx.save_for_backward(lam)
        return lam

    @staticmethod
    def backward(ctx, gl):
        (lam,) = ctx.saved_tensors
        op = ctx.op
        if torch.is_grad_enabled():
            mu = LinearSolve.apply(ctx.values, gl.contiguous(), op)
        else:
            mu = op.solve(gl.contiguous())
        gv = values_grad(op.pattern, lam, mu) if ctx.needs_input_grad[0] else None
        return gv, (mu if ctx.needs_input_grad[1] else None), None
