"""The scaffold shared by the SciPy and CuPy Krylov adapters (``scipy.sparse.linalg`` and
``cupyx.scipy.sparse.linalg`` have the same API): the Jacobi preconditioner and its checks,
``A`` / ``A^H`` (built once, only for a non-Hermitian matrix), the loop over right-hand
sides, the statistics and the registry entry.  Each backend supplies the array module's
``linalg``, the conversions and the solve of one column (their stopping tests differ)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ..linear.registry import Method
from ..precond.options import resolve

__all__ = ["KrylovAdapter", "krylov_method"]


class KrylovAdapter:
    """One Krylov solve of a backend: ``apply(b, transpose)`` on ``[n, K]`` right-hand sides.

    Subclasses set :attr:`backend` and implement :meth:`linalg`, :meth:`to_array`,
    :meth:`from_columns` and :meth:`solve_column`; :meth:`scope` wraps array work
    (a CUDA device context for CuPy).
    """

    backend = ""

    def setup(self, A: Any, AH: Any, diag: Any, cfg: Any, method: str, dtype: torch.dtype) -> None:
        """Keep the matrix (``AH``: ``A`` itself when Hermitian, else ``None``) and build the Jacobi
        preconditioner from ``diag`` (an array of the backend's module)."""
        pc, opts = resolve(cfg.preconditioner, cfg.options)
        if pc not in ("auto", "jacobi", "none"):
            raise ValueError(f"{self.backend} backend preconditioners are 'jacobi' and 'none', got {pc!r}")
        self.method, self.A, self.AH = method, A, AH
        self.jacobi = pc in ("auto", "jacobi") and bool((diag != 0).all())
        if pc == "jacobi" and not self.jacobi:
            raise ValueError("preconditioner 'jacobi' needs a non-zero diagonal")
        # MINRES needs a positive definite preconditioner: |diag| for an indefinite matrix
        d = abs(diag) if method == "minres" else diag
        self.dinv = 1.0 / d if self.jacobi else None
        self.rtol, self.atol = cfg.tolerances(dtype)
        self.maxiter, self.restart = cfg.maxiter, cfg.restart
        self.fn = getattr(self.linalg(), method)

    # ------------------------------------------------------- per backend
    def linalg(self) -> Any:
        raise NotImplementedError

    def to_array(self, b: torch.Tensor) -> Any:
        raise NotImplementedError

    def from_columns(self, cols: list, like: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def solve_column(self, A: Any, M: Any, b: Any) -> tuple[Any, int, bool]:
        raise NotImplementedError

    def scope(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    # ------------------------------------------------------------ shared
    def counter(self) -> tuple[list, Callable]:
        """``(count, callback)``: the callback counts the iterations of a SciPy-style solver."""
        count = [0]

        def cb(*_: Any) -> None:
            count[0] += 1

        return count, cb

    def operator(self, transpose: bool) -> tuple[Any, Any]:
        """``(A or A^H, Jacobi LinearOperator or None)``."""
        if transpose and self.AH is None:
            self.AH = self.A.conj().T.tocsr()
        A = self.AH if transpose else self.A
        M = None
        if self.jacobi:
            dinv = self.dinv.conj() if transpose else self.dinv
            M = self.linalg().LinearOperator(A.shape, matvec=lambda v: dinv * v.ravel(), dtype=A.dtype)
        return A, M

    def apply(self, b: torch.Tensor, transpose: bool = False) -> tuple[torch.Tensor, dict]:
        with self.scope():
            A, M = self.operator(transpose)
            B = self.to_array(b)
            cols, iters, ok = [], 0, True
            for k in range(B.shape[1]):
                x, it, conv = self.solve_column(A, M, B[:, k])
                cols.append(x)
                iters, ok = max(iters, it), ok and conv
            x = self.from_columns(cols, b)
        return x, {"iterations": iters, "converged": ok, "preconditioner": "jacobi" if self.jacobi else "none"}


def krylov_method(adapter: Callable[..., KrylovAdapter], method: str, types: tuple) -> Method:
    """The registry entry of ``method`` run by ``adapter(A, cfg, mtype, method)``."""
    return Method(
        method,
        "iterative",
        setup=lambda A, cfg, mtype: adapter(A, cfg, mtype, method),
        apply=lambda st, b, transpose=False: st.apply(b, transpose),
        matrix_types=types,
    )
