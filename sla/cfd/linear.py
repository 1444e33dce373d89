"""The linear solves of a flow Newton step: a direct path and a block-preconditioned Krylov path.

:class:`FlowLinearSolver` solves ``J dx = rhs`` with ``dx = 0`` on the constrained dofs:

* ``'direct'``: LU on the eliminated system (SuperLU/UMFPACK on the CPU, cuDSS or cuSOLVER on
  CUDA; the symbolic work is cached on the space's pattern).  With ``refactor_after > 0``
  (:class:`LaggedLU`) the factors of an earlier matrix are held and later systems are solved by
  GMRES preconditioned with them, to the tolerance the caller asks (the Newton forcing term);
  the matrix is refactored only when GMRES needs more than ``refactor_after`` iterations.
  ``refactor_after=0``: fresh factors for every system;
* ``'iterative'``: FGMRES with :class:`~sla.solvers.precond.block.BlockTriangular` -- the
  velocity block by AMG (one V-cycle of the component-averaged scalar block, all components
  as columns), the Schur complement by the viscosity-scaled pressure mass (``schur='mass'``,
  Stokes), by the least-squares commutator (``schur='lsc'``, Navier--Stokes; the default when a
  state is given), by pressure convection--diffusion (``schur='pcd'``) or by the augmented
  Lagrangian (``schur='al'``: grad-div on the velocity rows, Schur ``-(nu + gamma) Mp^{-1}``; flat in
  Re and h with an exact velocity block).  Measured on the cavity
  (16^2 mesh): LSC 35-40 FGMRES iterations per Newton step at Re = 100, 55-95 at Re = 400; at
  Re = 1000 LSC and PCD grow with the mesh even with an exact velocity block, and AMG (Chebyshev
  smoother) is not robust on the convection-dominated velocity block: use ``schur='al'`` with
  ``velocity='lu'``, or the direct path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

import sla

from ..assembly import advection, apply_dirichlet, assemble
from ..assembly.flow import _velocity_at_qp, pressure_operators
from ..assembly.mixed import TaylorHood
from ..config import ConvergenceError, SolverConfig
from ..pattern import Pattern
from ..products import spspmm
from ..solvers.krylov import fgmres, gmres
from ..solvers.linear.solve import prepare
from ..solvers.precond.block import BlockTriangular, ComponentwiseSolve, LSCSchur, MassSchur, PCDSchur
from ..sparse import SparseTensor

__all__ = ["FlowLinearSolver", "LaggedLU", "LINEAR_PATHS"]

LINEAR_PATHS = ("direct", "iterative")
SCHUR = ("auto", "mass", "pcd", "lsc", "al")
#: AMG options of the velocity block.  Stokes: the strength threshold drops the stored zeros between
#: components (P2 cavity Laplacians 16^2..64^2: 12-13 GMRES iterations flat, against 17-21 growing
#: with the defaults).  Navier--Stokes: a degree-1 smoother (higher Chebyshev degrees are unstable on
#: convection-dominated blocks) inside 10 GMRES steps.
#: SuperLU options for the flow saddle points (structurally symmetric, zero pressure block): minimum
#: degree on A^T + A with a threshold pivot of 0.01 (the cavity's 48^2 Newton Jacobian: 3.6M entries in
#: L + U against 9.9M with SciPy's default COLAMD and partial pivoting; a factorisation 3x faster, a
#: solve 2.8x faster), and no condition estimate (a third of a factorisation).  The residual is
#: checked after every solve (iterative refinement / GMRES), so a poor pivot cannot pass silently.
SADDLE_LU = {
    "rcond": False,
    "permc_spec": "MMD_AT_PLUS_A",
    "diag_pivot_thresh": 0.01,
    "options": {"SymmetricMode": True},
}
#: GMRES iterations with held LU factors before they are rebuilt (CPU default of the direct path): a
#: SuperLU factorisation of the cavity's Newton Jacobian costs ~90 solves with its factors (48^2).
REFACTOR_AFTER = 30
VELOCITY_AMG = {"stokes": {"theta": 0.08, "degree": 3}, "navier-stokes": {"theta": 0.08, "degree": 1, "inner": 10}}


class FlowLinearSolver:
    """Solves Newton/Picard/Stokes systems on a :class:`TaylorHood` space.

    Parameters
    ----------
    space : TaylorHood
    kind : ``'direct'`` or ``'iterative'``
    dofs : constrained dofs (velocity Dirichlet + pinned pressure), sorted
    solver : SolverConfig for the direct path (default: LU)
    rtol, maxiter, restart : FGMRES settings (iterative path)
    schur : ``'auto'``, ``'mass'``, ``'pcd'``, ``'lsc'`` or ``'al'``
        ``'al'``: augmented Lagrangian (grad-div) -- the velocity rows get ``gamma B^T W^{-1} (B u -
        b_p)`` (``W`` the lumped pressure mass; the solution is unchanged since ``B u = b_p``) and the
        Schur complement becomes ``-(nu + gamma) Mp^{-1}`` to within a Reynolds- and mesh-independent
        factor (Benzi & Olshanskii, SIAM J. Sci. Comput. 28, 2006).  Cavity Newton Jacobian at
        the converged Re = 1000 flow, exact velocity block, rtol 1e-8: 27, 25, 26 FGMRES iterations on
        8^2, 16^2, 32^2 (LSC: 115, 184 on 16^2, 32^2).  The augmented velocity block is harder for
        AMG: 47, 71 iterations at Re = 100 on 8^2, 16^2 with ``velocity='amg'`` (LSC: 49, 53).
    gamma : float
        The augmentation weight of ``schur='al'`` (``> 0``; larger: fewer outer iterations, a harder
        velocity block).
    velocity : preconditioner of the scalar velocity block (``'amg'``, ``'lu'``, ``'jacobi'``, ...)
    velocity_options : its options (AMG default :data:`VELOCITY_AMG`)
    velocity_block : ``'full'`` (the coupled ``uu`` block) or ``'component'`` (component average,
        all components as columns of one scalar preconditioner)
    refactor_after : int, optional
        Direct path: hold the LU factors and solve later systems by GMRES preconditioned with them
        (:class:`LaggedLU`), refactoring when GMRES needs more than this many iterations; ``0``: a
        fresh factorisation per system.  Default: :data:`REFACTOR_AFTER` on the CPU, ``0`` on CUDA
        (where the cached-plan refactorisation is cheap next to the triangular solves).
    factors : LaggedLU, optional
        Held factors to start from and keep updating (direct path): pass the same object to the
        stages of a continuation so that a stage starts from the previous stage's factors.
    """

    def __init__(
        self,
        space: TaylorHood,
        kind: str,
        dofs: torch.Tensor,
        solver: SolverConfig | None = None,
        rtol: float = 1e-6,
        maxiter: int = 500,
        restart: int = 100,
        schur: str = "auto",
        velocity: str = "amg",
        velocity_options: dict | None = None,
        velocity_block: str = "full",
        refactor_after: int | None = None,
        factors: LaggedLU | None = None,
        gamma: float = 1.0,
        hierarchy: Sequence[TaylorHood] | None = None,
        multigrid: dict | None = None,
    ) -> None:
        if kind not in LINEAR_PATHS:
            raise ValueError(f"linear must be one of {LINEAR_PATHS}, got {kind!r}")
        if schur not in SCHUR:
            raise ValueError(f"schur must be one of {SCHUR}, got {schur!r}")
        if not 0 < rtol < 1:
            raise ValueError(f"rtol must lie in (0, 1), got {rtol!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < float("inf"):
            raise ValueError(f"gamma (the augmented-Lagrangian weight) must be a positive float, got {gamma!r}")
        self.gamma = float(gamma)
        self.space, self.kind, self.dofs = space, kind, dofs
        cpu = space.mesh.points.device.type == "cpu"
        if refactor_after is None:
            refactor_after = REFACTOR_AFTER if cpu else 0
        if factors is not None and not isinstance(factors, LaggedLU):
            raise TypeError(f"factors must be a LaggedLU, got {type(factors).__name__}")
        self.lagged = factors or LaggedLU(solver, refactor_after=refactor_after, maxiter=max(60, 2 * refactor_after))
        self.direct_config = self.lagged.config_for(space.mesh.points.device)
        self.rtol, self.maxiter, self.restart = rtol, int(maxiter), int(restart)
        self.schur, self.velocity = schur, velocity
        if velocity_block not in ("full", "component"):
            raise ValueError(f"velocity_block must be 'full' or 'component', got {velocity_block!r}")
        self.velocity_block = velocity_block
        self._velocity_options = velocity_options
        self.last_iterations = 0
        pin = dofs[dofs >= space.n_u] - space.n_u
        self.pinned = pin if pin.numel() else None
        self._pops = None
        self.multigrid = None
        if hierarchy is not None:
            from .multigrid import FlowHierarchy

            hierarchy = list(hierarchy)
            if not hierarchy or hierarchy[-1] is not space:
                raise ValueError("hierarchy must be a list of TaylorHood spaces, coarsest first, ending with `space`")
            self.multigrid = FlowHierarchy(hierarchy, dofs)
        self.multigrid_options = dict(multigrid or {})

    def solve(
        self,
        J: SparseTensor,
        rhs: torch.Tensor,
        state: torch.Tensor | None = None,
        nu: float = 1.0,
        newton: bool = True,
        rtol: float | None = None,
    ) -> tuple[torch.Tensor, int]:
        """``(dx, linear iterations)`` with ``J dx = rhs`` on the free rows, ``dx = 0`` on ``dofs``.

        ``rtol``: the relative residual this solve must reach (a Newton forcing term; default the
        solver's ``rtol``, and ``1e-10`` for the lagged-LU direct path).  The plain direct path
        (``refactor_after=0``) solves exactly.
        """
        A, b = apply_dirichlet(J, rhs, self.dofs, 0.0)
        if self.kind == "direct":
            dx, its = self.lagged.solve(A, b, rtol=1e-10 if rtol is None else rtol)
            self.last_iterations = its
            return dx, its
        rtol = self.rtol if rtol is None else rtol
        if self.multigrid is not None:
            from .multigrid import FlowMultigrid

            op, M = (lambda v: _block_mv(A, v)), FlowMultigrid(self.multigrid, A, **self.multigrid_options)
        elif self.schur == "al":
            op, b, M = self._augmented(A, b, nu)
        else:
            op, M = (lambda v: _block_mv(A, v)), self.preconditioner(A, state, nu)
        res = fgmres(
            op,
            b.detach()[None, :, None],
            precond=M,
            rtol=rtol,
            maxiter=self.maxiter,
            restart=self.restart,
        )
        its = int(res.iterations.max())
        self.last_iterations = its
        if not bool(res.converged.all()):
            raise ConvergenceError(
                f"FGMRES with the block preconditioner did not reach rtol={rtol:g} in {self.maxiter} "
                f"iterations (relative residual {float(res.residual.max() / b.norm()):.2e})"
            )
        return res.x[0, :, 0], its

    def describe(self) -> str:
        """What this solver does, in words (the runner's summary, :class:`~sla.cfd.FlowResult`)."""
        if self.kind == "direct":
            lag = self.lagged.refactor_after
            return "LU" + (
                f" (factors held as a GMRES preconditioner, refactored after {lag} iterations)" if lag else ""
            )
        if self.multigrid is not None:
            o = {"cycle": "W", "steps": 2, "omega": 0.6, **self.multigrid_options}
            sizes = "/".join(str(V.n) for V in self.multigrid.spaces)
            return (
                f"FGMRES + monolithic multigrid ({o['cycle']}-cycle, {o['steps']} additive Vanka sweeps with "
                f"omega={o['omega']}, levels of {sizes} unknowns, LU on the coarsest)"
            )
        return f"FGMRES + block preconditioner (schur={self.schur}, velocity={self.velocity})"

    def preconditioner(self, A: SparseTensor, state: torch.Tensor | None, nu: float) -> BlockTriangular:
        """The block-triangular preconditioner of the eliminated system ``A``."""
        V = self.space
        opts = self._velocity_opts(state)
        if self.schur == "al":
            raise ValueError("schur='al' changes the system: FlowLinearSolver.solve builds its preconditioner")
        if self.velocity_block == "full":  # the coupled velocity block (Newton terms couple components)
            vel = ComponentwiseSolve(V.block(A, "uu"), 1, self.velocity, **opts)
        else:  # one scalar operator for all components (exact for Picard with the Laplace form)
            vel = ComponentwiseSolve(_component_average(V, A), V.dim, self.velocity, **opts)
        schur = self.schur if self.schur != "auto" else ("mass" if state is None else "lsc")
        ops = self._pressure_ops(nu, state if schur == "pcd" else None) if schur != "lsc" else {}
        if schur == "mass":
            S = MassSchur(ops["mass"], scale=nu, pinned=self.pinned)
        elif schur == "lsc":
            S = LSCSchur(V.block(A, "pu"), V.block(A, "uu"), pinned=self.pinned)
        else:
            S = PCDSchur(ops["mass"], ops["laplace"], ops["convection_diffusion"], pinned=self.pinned)
        return BlockTriangular(V.block(A, "up"), vel, S)

    def _velocity_opts(self, state) -> dict:
        opts = dict(self._velocity_options or {})
        if self.velocity == "amg":
            opts = dict(VELOCITY_AMG["stokes" if state is None else "navier-stokes"], **opts)
        return opts

    def _augmented(self, A: SparseTensor, b: torch.Tensor, nu: float):
        """``(matvec, rhs, preconditioner)`` of the grad-div augmented system (``schur='al'``)."""
        V, n_u = self.space, self.space.n_u
        A, b = A.detach(), b.detach()
        B, Bt = V.block(A, "pu"), V.block(A, "up")  # the elimination keeps up = pu^T
        Mp = self._pressure_ops(nu, None)["mass"]
        gw = self.gamma / (Mp @ torch.ones(V.n_p, dtype=b.dtype, device=b.device))  # gamma W^{-1}, W lumped
        pp, pv = spspmm(Bt.pattern, (Bt.values * gw[Bt.pattern.col])[None], B.pattern, B.values[None])
        G = SparseTensor._make(pv[0], pp)
        Fg = V.block(A, "uu") + G
        rhs = torch.cat([b[:n_u] + Bt @ (gw * b[n_u:]), b[n_u:]])

        def matvec(v: torch.Tensor) -> torch.Tensor:
            r = _block_mv(A, v)
            return torch.cat([r[:, :n_u] + _block_mv(G, v[:, :n_u]), r[:, n_u:]], 1)

        vel = ComponentwiseSolve(Fg, 1, self.velocity, **self._velocity_opts(True))
        S = MassSchur(Mp, scale=float(nu) + self.gamma, pinned=self.pinned)
        return matvec, rhs, BlockTriangular(Bt, vel, S)

    def _pressure_ops(self, nu, state) -> dict:
        V = self.space
        if self._pops is None:
            ops = pressure_operators(V)
            Ap = ops["laplace"]
            if self.pinned is not None:
                Ap, _ = apply_dirichlet(Ap, Ap.values.new_zeros(V.n_p), self.pinned, 0.0)
            self._pops = {"mass": ops["mass"].detach(), "laplace": Ap.detach(), "K": ops["laplace"].detach()}
        out = dict(self._pops)
        if state is not None:
            with torch.no_grad():
                _, wq = _velocity_at_qp(V, state)
                Cp = assemble(advection, V.pbasis, b=wq.permute(2, 0, 1).contiguous())
                out["convection_diffusion"] = self._pops["K"] * nu + Cp
        return out


def _block_mv(A: SparseTensor, v: torch.Tensor) -> torch.Tensor:
    from ..products import spmm_nograd

    return spmm_nograd(A.pattern, A._flat().detach(), v)


def _component_average(V: TaylorHood, A: SparseTensor) -> SparseTensor:
    """``(1/dim) sum_c A[(., c), (., c)]``: the scalar velocity operator (nodes x nodes)."""
    d = V.dim

    def build():
        p = V.pattern
        row, col = p.row, p.col
        uu = (row < V.n_u) & (col < V.n_u) & (row % d == col % d)
        pos = uu.nonzero().flatten()
        rn, cn, comp = row[pos] // d, col[pos] // d, row[pos] % d
        nodes = V.n_u // d
        sub = Pattern(rn[comp == 0], cn[comp == 0], (nodes, nodes))
        # position of each component's entry inside the component-0 pattern (same node pairs)
        key0 = rn[comp == 0] * nodes + cn[comp == 0]
        order = torch.argsort(key0)
        slots = []
        for c in range(d):
            kc = rn[comp == c] * nodes + cn[comp == c]
            slots.append((pos[comp == c], order[torch.searchsorted(key0[order], kc)]))
        return sub, slots

    sub, slots = V.mesh.memo(("mixed-component-average", V.key), build)
    vals = A.values.detach()
    out = vals.new_zeros(sub.nnz)
    for pos, slot in slots:
        out.index_add_(0, slot.to(vals.device), vals[pos.to(vals.device)])
    return SparseTensor._make(out / d, sub.to(vals.device))


class LaggedLU:
    """LU factors of an earlier matrix held as the GMRES preconditioner of later, nearby matrices.

    The systems of a Newton iteration (consecutive Jacobians) or of a time stepper (consecutive
    Oseen matrices) change little from one to the next, so the factors of one of them are an
    excellent preconditioner for the following ones: a GMRES iteration costs one triangular solve
    and one product, a factorisation costs many of them.  :meth:`solve` runs GMRES (true residual
    checked) with the held factors; when it needed more than ``refactor_after`` iterations the
    factors are marked stale and the *next* system is factored afresh; when it fails, the current
    system is factored and GMRES retried once.  ``refactor_after=0``: a fresh factorisation and a
    direct solve for every system.

    Parameters
    ----------
    config : SolverConfig, optional
        The factorisation (default: LU).
    refactor_after : int
        GMRES iterations beyond which the factors are rebuilt (``>= 0``).
    maxiter : int
        GMRES iterations at most per system (no restarts: the basis holds them all).
    """

    def __init__(self, config: SolverConfig | None = None, refactor_after: int = 8, maxiter: int = 60) -> None:
        for name, v, lo in (("refactor_after", refactor_after, 0), ("maxiter", maxiter, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        self.config = config
        self.refactor_after, self.maxiter = refactor_after, maxiter
        self.lu = None
        self.stale = True
        self.factorizations = 0

    def config_for(self, device: torch.device) -> SolverConfig:
        """The factorisation's config: the one given, else LU (on the CPU: :data:`SADDLE_LU`)."""
        if self.config is not None:
            return self.config
        return (
            SolverConfig(backend="scipy", method="lu", matrix_type="general", options=SADDLE_LU)
            if device.type == "cpu"
            else SolverConfig(method="lu")
        )

    def factor(self, A: SparseTensor) -> None:
        """Factor ``A`` now (its factors precondition the following systems)."""
        # the prepared factors themselves: as a preconditioner no residual checks around each solve
        # (GMRES checks the true residual of the whole system)
        self.lu = prepare(A.detach(), SolverConfig.resolve(self.config_for(A.device)), kind="direct")
        self.factorizations += 1
        self.stale = False

    def solve(
        self, A: SparseTensor, b: torch.Tensor, x0: torch.Tensor | None = None, rtol: float = 1e-10
    ) -> tuple[torch.Tensor, int]:
        """``(x, GMRES iterations)`` with ``||A x - b|| <= rtol ||b||`` (a direct solve: 0 iterations)."""
        if self.refactor_after == 0:
            self.factorizations += 1
            return sla.solve(A.detach(), b.detach(), config=self.config_for(A.device)), 0
        fresh = self.stale or self.lu is None
        if fresh:
            self.factor(A)
        Ad = A.detach()
        while True:
            lu = self.lu
            res = gmres(
                lambda v: (Ad @ v[0])[None],
                b.detach()[None, :, None],
                precond=lambda v, lu=lu: _apply_factors(lu, v),
                x0=None if x0 is None else x0.detach()[None, :, None],
                rtol=rtol,
                maxiter=self.maxiter,
                restart=self.maxiter,
            )
            its = int(res.iterations.max())
            if bool(res.converged.all()):
                self.stale = its > self.refactor_after
                return res.x[0, :, 0], its
            if fresh:
                raise ConvergenceError(
                    f"GMRES with fresh LU factors did not reach rtol={rtol:g} in {self.maxiter} iterations "
                    f"({res.reason})"
                )
            self.factor(A)  # the held factors no longer fit: factor this system and retry once
            fresh = True


def _apply_factors(prep, v: torch.Tensor) -> torch.Tensor:
    """The held factors applied to ``v`` ``[1, n, 1]``.  SciPy (SuperLU): the triangular solves alone,
    no refinement residual (as a preconditioner, GMRES checks the residual of the whole system);
    other backends (cuDSS, ...): their prepared solve."""
    if prep.backend.name == "scipy" and not prep.backend.batched:
        return prep.method.apply(prep.states[0], v[0])[0][None]
    return prep.solve(v)
