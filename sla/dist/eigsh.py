"""Distributed LOBPCG: ``D.eigsh(k=)`` of a :class:`~sla.dist.DSparseTensor` (mixed into it).

The one LOBPCG of :mod:`sla.solvers.spectral.lobpcg` runs with the blocks
sharded by rows: the operator is the distributed product (one halo exchange and
the local SpMV), and its ``reduce`` hook all-reduces the small Gram matrices
and squared column norms, so the Rayleigh-Ritz step and the convergence test
are global (every rank computes the same Ritz values and stops at the same
iteration) while no vector is ever gathered.  Per LOBPCG iteration: one halo
exchange (two for ``which='LM'``, which runs both ends) and six all-reduces of
``m x m``-sized tensors.

``which`` has the meaning of the single-process :func:`sla.eigsh`: ``'SA'``
(preconditioned, distributed AMG by default), ``'LA'``, ``'LM'`` (both ends,
the ``k`` of largest magnitude), ``'SM'`` for a positive semi-definite matrix
(its smallest ones).  Shift-invert (``sigma``) and ``'SM'`` of an indefinite
matrix need a factorisation of the global matrix: ``method='gather'`` runs the
single-process :func:`sla.eigsh` on the gathered matrix (``ResourceWarning``).

Gradients: the eigenvalues are differentiable in the local values
(``d lam_i / dA[r, c] = v_i[r] conj(v_i[c])``, one halo exchange of the
eigenvectors); gradients through the eigenvectors are not distributed
(``NotImplementedError`` in the backward; gather for those).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist

from ..checks import first_order_only
from ..config import SolveInfo, SolverConfig, rtol_alias
from ..solvers.linear.policy import SYMMETRY_RTOL
from ..solvers.spectral.eigsh import _select
from ..solvers.spectral.lobpcg import block_size, lobpcg

__all__ = ["DistEigsh"]

_WHICH = ("LM", "SM", "LA", "SA")


class _EigvalAdjoint(torch.autograd.Function):
    """Attach distributed ``(lam, V)`` to the local values (one graph node)."""

    @staticmethod
    def forward(ctx, values, lam, V, D):
        ctx.set_materialize_grads(False)
        ctx.D = D
        ctx.save_for_backward(values, V)
        return lam.clone(), V.clone()

    @staticmethod
    @first_order_only("distributed eigsh")
    @torch.autograd.function.once_differentiable
    def backward(ctx, glam, gV):
        if gV is not None and bool((gV != 0).any()):
            raise NotImplementedError(
                "gradients through the eigenvectors of a distributed eigsh are not implemented (the eigenvalues "
                "are differentiable); for eigenvector gradients gather the matrix: D.full_tensor().eigsh(k=...)"
            )
        values, V = ctx.saved_tensors
        if glam is None:
            return None, None, None, None
        D = ctx.D
        Vf = D._full(V)  # owned rows, then the ghosts (one halo exchange)
        loc = D.local
        U = Vf * glam.to(V.dtype)
        gv = (U[loc.row.long()] * Vf[loc.col.long()].conj()).sum(-1)
        return (gv if values.is_complex() else gv.real), None, None, None


class DistEigsh:
    """Mixin: :meth:`eigsh` (see the module docstring)."""

    def eigsh(
        self,
        k: int = 6,
        which: str = "LM",
        sigma: float | None = None,
        return_eigenvectors: bool = True,
        method: str = "lobpcg",
        *,
        rtol: float | None = None,
        tol: float | None = None,
        maxiter: int | None = None,
        preconditioner: str | Callable = "auto",
        config: SolverConfig | None = None,
        return_info: bool = False,
        seed: int = 0,
    ):
        """``k`` eigenpairs of the Hermitian distributed matrix by distributed LOBPCG (collective).

        Parameters
        ----------
        k : int
            Number of eigenpairs (``3 k <= n``).
        which : {'LM', 'SA', 'LA', 'SM'}
            As :func:`sla.eigsh`; ``'SM'`` for a positive semi-definite matrix.
        sigma : float, optional
            Eigenvalues nearest ``sigma``: only with ``method='gather'``.
        return_eigenvectors : bool
            Also return the eigenvectors.
        method : {'lobpcg', 'gather'}
            ``'gather'``: single-process :func:`sla.eigsh` of the gathered matrix (``ResourceWarning``).
        rtol, maxiter : optional
            Relative residual ``||A v - lam v|| / max(|lam|, ||A||_est)`` (default ``1e-8`` in double,
            ``1e-4`` in single precision; ``tol`` is the seed's alias) and iteration cap (1000).
        preconditioner : str or callable
            For the smallest end: ``'auto'`` (``'distributed_amg'`` when the diagonal is positive, else
            none), ``'none'``, any preconditioner name of ``sla.solve(D, b)`` (``'schwarz'``,
            ``'jacobi'``, ``'amg'``...), or a callable on owned blocks ``[1, n_owned, K]``.
        config : SolverConfig, optional
            Its ``on_failure`` decides what an unconverged run does (the same on every rank).
        return_info : bool
            Also return a :class:`~sla.SolveInfo`.
        seed : int
            Seed of the random start block (each rank draws its own rows).

        Returns
        -------
        eigenvalues : ``[k]`` real, ascending, the same on every rank;
        eigenvectors : ``DTensor[Shard(0)]`` ``[n, k]`` (orthonormal columns; ``full_tensor()`` in
        global row order), if requested.
        """
        from .dtensor import to_dtensor

        n = self.shape[0]
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if which not in _WHICH:
            raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
        tol = rtol_alias(rtol, tol, "eigsh")
        if method == "gather":
            lam, V, info = self._gathered_eigsh(k, which, sigma, tol, maxiter, preconditioner, config)
        elif method in ("lobpcg", "auto"):
            if sigma is not None:
                raise ValueError(
                    f"sigma={sigma!r} (shift-invert) needs a factorisation of the global matrix; "
                    "use method='gather' (single-process eigsh of the gathered matrix)"
                )
            if 3 * k > n:
                raise ValueError(f"distributed LOBPCG needs 3k <= n, got k={k}, n={n}; use method='gather'")
            lam, V, info = self._lobpcg(int(k), which, tol, maxiter, preconditioner, seed)
            info.fail(SolverConfig.resolve(config))
        else:
            raise ValueError(f"method must be 'lobpcg' or 'gather' for a DSparseTensor, got {method!r}")
        if torch.is_grad_enabled() and self.local.values.requires_grad:
            lam, V = _EigvalAdjoint.apply(self.local.values, lam, V, self)
        out = (lam, to_dtensor(V, self)) if return_eigenvectors else lam
        return (out, info) if return_info else out

    # ------------------------------------------------------------ helpers
    def _gathered_eigsh(self, k, which, sigma, tol, maxiter, preconditioner, config):
        (vals, vecs), info = self._gather_warn("eigsh(method='gather')").eigsh(
            k=k, which=which, sigma=sigma, rtol=tol, maxiter=maxiter, config=config, return_info=True
        )
        return vals, vecs[self.owned.to(vecs.device)], info

    def _hermitian_op(self, notes: list):
        """The operator of eigsh: ``A x``, or ``(A x + A^H x) / 2`` (with a warning) when one random
        probe shows ``A`` further than ``SYMMETRY_RTOL`` from Hermitian."""
        gen = torch.Generator(device=self.device).manual_seed(7919 + self.rank)
        x = torch.randn(self.n_owned, 1, dtype=self.dtype, device=self.device, generator=gen)
        y, z = self.matvec(x), self.matvec(x, transpose=True)
        num = torch.stack([(y - z).abs().square().sum(), y.abs().square().sum()])
        d, ref = self.reduce(num).sqrt().tolist()
        asym = d / ref if ref > 0 else 0.0
        if asym <= SYMMETRY_RTOL:
            return lambda X: self.matvec(X[0])[None]
        kind = "Hermitian" if self.dtype.is_complex else "symmetric"
        warnings.warn(
            f"eigsh: the DSparseTensor is not {kind} (|A x - A^H x| / |A x| = {asym:.1e} > {SYMMETRY_RTOL:g} for "
            f"a random x); eigsh uses its {kind} part (A + A^H) / 2",
            stacklevel=4,
        )
        notes.append(f"not {kind}: (A + A^H) / 2")
        return lambda X: 0.5 * (self.matvec(X[0]) + self.matvec(X[0], transpose=True))[None]

    def _eig_preconditioner(self, spec, notes: list):
        if callable(spec):
            notes.append("preconditioner: user callable")
            return spec
        if spec in (None, "none"):
            return None
        if not isinstance(spec, str):
            raise ValueError(f"preconditioner must be a name or a callable, got {type(spec).__name__}")
        if spec == "auto":
            loc = self.local
            on_diag = loc.row == loc.col
            d = loc.values.detach()[on_diag]
            d = d.real if d.is_complex() else d
            lowest = d.min() if d.numel() else d.new_tensor(torch.inf)
            every_row = float(int(on_diag.sum()) == self.n_owned)
            lowest, every_row = all_min(self, torch.stack([lowest, d.new_tensor(every_row)])).tolist()
            if not (lowest > 0 and every_row == 1.0):
                notes.append("preconditioner: none (diagonal not positive, A not definite)")
                return None
            spec = "jacobi" if self.dtype.is_complex else "distributed_amg"  # (distributed AMG is real)
        notes.append(f"preconditioner: {spec}")
        return self._preconditioner(spec, False, {})

    def _lobpcg(self, k: int, which: str, tol, maxiter, preconditioner, seed: int):
        n = self.shape[0]
        notes: list = []
        op = self._hermitian_op(notes)
        m = block_size(n, k)
        gen = torch.Generator(device=self.device).manual_seed(int(seed) * 1_000_003 + self.rank)
        kw = dict(n=n, k=k, batch=1, dtype=self.dtype, device=self.device, rtol=tol, maxiter=maxiter or 1000)
        kw["reduce"] = self.reduce
        runs = []
        if which in ("SA", "SM", "LM"):
            T = self._eig_preconditioner(preconditioner, notes)
            X0 = torch.randn(1, self.n_owned, m, dtype=self.dtype, device=self.device, generator=gen)
            runs.append(lobpcg(op, precond=T, X0=X0, **kw))
            lo, scale = float(runs[0][0][0, 0]), float(runs[0][0].abs().max())
            if which == "SM" and lo < -(torch.finfo(lam_dtype(self)).eps ** 0.5) * scale:  # rounding of a 0 is fine
                raise ValueError(
                    "which='SM' of an indefinite DSparseTensor (its smallest eigenvalue is "
                    f"{lo:.6g} < 0) needs shift-invert at 0; use method='gather'"
                )
        if which in ("LA", "LM"):
            X0 = torch.randn(1, self.n_owned, m, dtype=self.dtype, device=self.device, generator=gen)
            lam, V, st = lobpcg(lambda X: -op(X), X0=X0, **kw)
            runs.append((-lam.flip(-1), V.flip(-1), st))
        lam = torch.cat([r[0] for r in runs], -1)[0]
        V = torch.cat([r[1] for r in runs], -1)[0]
        idx = _select(lam[None], k, which, None)[0]  # the wanted k, ascending (as the single-process eigsh)
        lam, V = lam[idx], V[:, idx]
        with torch.no_grad():
            R = op(V[None])[0] - V * lam.to(V.dtype)
            sq = (R.abs().square().sum(0), lam.abs().amax().clamp_min(torch.finfo(lam.dtype).tiny))
            resid = float((self.reduce(sq[0]).sqrt() / sq[1]).max())
        reasons = [r[2]["reason"] for r in runs if r[2].get("reason")]
        info = SolveInfo(
            backend="dist",
            method="lobpcg",
            matrix_type="hermitian" if self.dtype.is_complex else "symmetric",
            iterations=sum(r[2]["iterations"] for r in runs),
            converged=all(r[2]["converged"] for r in runs),
            residual=resid,
            notes=notes,
            reason=reasons[0] if reasons else None,
        )
        return lam, V, info


def lam_dtype(D) -> torch.dtype:
    """The real dtype of the eigenvalues."""
    return D.dtype.to_real() if D.dtype.is_complex else D.dtype


def all_min(D, t: torch.Tensor) -> torch.Tensor:
    """Elementwise minimum over the ranks (one all-reduce)."""
    from .comm import all_reduce

    return all_reduce(t.clone(), op=dist.ReduceOp.MIN, group=D.group, timeout=D.timeout)
