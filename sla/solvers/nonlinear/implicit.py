"""The implicit-function adjoint of a nonlinear solve ``F(u*, theta) = 0``.

Differentiating ``F(u*(theta), theta) = 0`` gives ``J du* = -(dF/dtheta) dtheta``
with ``J = dF/du`` at the solution, so for a loss gradient ``g = dL/du*``::

    J^T lam = g,        dL/dtheta = -(dF/dtheta)^T lam.

:class:`ImplicitAdjoint` owns the linear solver of the first equation
(GMRES on exact reverse-mode VJPs, an assembled sparse Jacobian, or dense);
:class:`ImplicitSolve` is the one autograd node of a solve: it saves ``u*``
and the parameters only -- no iteration history.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...checks import first_order_only
from ...config import apply_failure_policy
from ...pattern import Pattern
from ..krylov.gmres import gmres
from .jacobian import Residual, assemble_jacobian

__all__ = ["ImplicitAdjoint", "ImplicitSolve", "block_preconditioner"]


def block_preconditioner(fn: Callable | None) -> Callable | None:
    """Lift a preconditioner on flat vectors ``[N]`` -- or on ``[B, n, K]`` blocks -- to ``[1, N, 1]``."""
    if fn is None:
        return None

    def apply(r):
        try:
            z = fn(r)
        except (RuntimeError, ValueError, IndexError, TypeError):
            z = fn(r.reshape(-1))
        return z.reshape(r.shape)

    return apply


class ImplicitAdjoint:
    """Backward of ``u*(theta)``: ``J^T lam = g`` then ``grad theta = -(dF/dtheta)^T lam``.

    ``linear``: ``'gmres'`` (matrix-free on exact VJPs; ``preconditioner`` is
    applied to ``J^T``), ``'sparse'`` (assembled Jacobian on ``pattern`` and a
    sparse direct solve) or ``'dense'``.
    """

    def __init__(
        self,
        linear: str = "gmres",
        pattern: Pattern | None = None,
        preconditioner=None,
        rtol: float | None = None,
        maxiter: int | None = None,
        restart: int = 50,
        on_failure: str = "raise",
        linear_options: dict | None = None,
    ):
        self.linear, self.pattern, self.P = linear, pattern, block_preconditioner(preconditioner)
        self.linear_options = dict(linear_options or {})
        self.rtol, self.maxiter, self.restart, self.on_failure = rtol, maxiter, restart, on_failure

    def solve_transpose(self, res: Residual, u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.linear == "sparse":
            from ..linear.solve import solve

            return solve(assemble_jacobian(res, u, self.pattern).T(), g, **self.linear_options)
        vjp = res.linearize_transpose(u)
        if self.linear == "dense":
            J = torch.stack([vjp(e) for e in torch.eye(u.numel(), dtype=u.dtype, device=u.device)])
            return torch.linalg.solve(J.T, g)
        single = u.dtype == torch.float32
        rtol = self.rtol if self.rtol is not None else (1e-6 if single else 1e-10)
        out = gmres(
            lambda w: vjp(w.reshape(-1)).reshape(1, -1, 1),
            g.reshape(1, -1, 1),
            precond=self.P,
            rtol=rtol,
            restart=self.restart,
            maxiter=self.maxiter or 20 * self.restart,
        )
        if not bool(out.converged.all()):
            msg = f"implicit adjoint: GMRES on J^T did not converge (residual {float(out.residual.max()):.2e})"
            apply_failure_policy(self.on_failure, msg, stacklevel=3)
        return out.x.reshape(-1)


class ImplicitSolve(torch.autograd.Function):
    """``u*`` attached to the parameters through the implicit function theorem (one node)."""

    @staticmethod
    def forward(ctx, u_star, res, adjoint, *params):
        ctx.res, ctx.adjoint = res, adjoint
        ctx.kinds = [isinstance(p, torch.Tensor) for p in params]
        ctx.others = [None if k else p for p, k in zip(params, ctx.kinds)]
        ctx.save_for_backward(u_star, *[p for p in params if isinstance(p, torch.Tensor)])
        return u_star.clone()

    @staticmethod
    @first_order_only("nonlinear_solve")
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        u, *tensors = ctx.saved_tensors
        it = iter(tensors)
        params = [next(it) if k else o for k, o in zip(ctx.kinds, ctx.others)]
        needs = list(ctx.needs_input_grad[3:])
        if not any(needs):
            return (None, None, None) + (None,) * len(params)
        lam = ctx.adjoint.solve_transpose(ctx.res, u.reshape(-1), g.reshape(-1).contiguous())
        grads = ctx.res.param_vjp(u.reshape(-1), -lam, params, needs)
        return (None, None, None, *grads)
