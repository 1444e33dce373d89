"""The linear solves of a flow Newton step: a direct path and a block-preconditioned Krylov path.

:class:`FlowLinearSolver` solves ``J dx = rhs`` with ``dx = 0`` on the constrained dofs:

* ``'direct'``: :func:`sla.solve` with LU on the eliminated system (SuperLU/UMFPACK on the
  CPU, cuDSS or cuSOLVER on CUDA; the symbolic work is cached on the space's pattern);
* ``'iterative'``: FGMRES with :class:`~sla.solvers.precond.block.BlockTriangular` -- the
  velocity block by AMG (one V-cycle of the component-averaged scalar block, all components
  as columns), the Schur complement by the viscosity-scaled pressure mass (``schur='mass'``,
  Stokes), by the least-squares commutator (``schur='lsc'``, Navier--Stokes; the default when a
  state is given) or by pressure convection--diffusion (``schur='pcd'``).  Measured on the cavity
  (16^2 mesh): LSC 35-40 FGMRES iterations per Newton step at Re = 100, 55-95 at Re = 400; at
  Re = 1000 the AMG velocity solve is the weak part (use ``velocity='lu'`` or the direct path).
"""

from __future__ import annotations

import torch

import sla

from ..assembly import advection, apply_dirichlet, assemble
from ..assembly.flow import _velocity_at_qp, pressure_operators
from ..assembly.mixed import TaylorHood
from ..config import ConvergenceError, SolverConfig
from ..pattern import Pattern
from ..solvers.krylov import fgmres
from ..solvers.precond.block import BlockTriangular, ComponentwiseSolve, LSCSchur, MassSchur, PCDSchur
from ..sparse import SparseTensor

__all__ = ["FlowLinearSolver", "LINEAR_PATHS"]

LINEAR_PATHS = ("direct", "iterative")
SCHUR = ("auto", "mass", "pcd", "lsc")
#: AMG options of the velocity block.  Stokes: the strength threshold drops the stored zeros between
#: components (P2 cavity Laplacians 16^2..64^2: 12-13 GMRES iterations flat, against 17-21 growing
#: with the defaults).  Navier--Stokes: a degree-1 smoother (higher Chebyshev degrees are unstable on
#: convection-dominated blocks) inside 10 GMRES steps.
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
    schur : ``'auto'``, ``'mass'`` or ``'pcd'``
    velocity : preconditioner of the scalar velocity block (``'amg'``, ``'lu'``, ``'jacobi'``, ...)
    velocity_options : its options (AMG default :data:`VELOCITY_AMG`)
    velocity_block : ``'full'`` (the coupled ``uu`` block) or ``'component'`` (component average,
        all components as columns of one scalar preconditioner)
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
    ) -> None:
        if kind not in LINEAR_PATHS:
            raise ValueError(f"linear must be one of {LINEAR_PATHS}, got {kind!r}")
        if schur not in SCHUR:
            raise ValueError(f"schur must be one of {SCHUR}, got {schur!r}")
        if not 0 < rtol < 1:
            raise ValueError(f"rtol must lie in (0, 1), got {rtol!r}")
        self.space, self.kind, self.dofs = space, kind, dofs
        if solver is None:  # LU; on the CPU without SuperLU's condition estimate (a third of a Newton step)
            cpu = space.mesh.points.device.type == "cpu"
            solver = SolverConfig(method="lu", options={"rcond": False} if cpu else None)
        self.direct_config = solver
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

    def solve(
        self,
        J: SparseTensor,
        rhs: torch.Tensor,
        state: torch.Tensor | None = None,
        nu: float = 1.0,
        newton: bool = True,
    ) -> tuple[torch.Tensor, int]:
        """``(dx, linear iterations)`` with ``J dx = rhs`` on the free rows, ``dx = 0`` on ``dofs``."""
        A, b = apply_dirichlet(J, rhs, self.dofs, 0.0)
        if self.kind == "direct":
            return sla.solve(A, b, config=self.direct_config), 0
        M = self.preconditioner(A, state, nu)
        res = fgmres(
            lambda v: A.detach() @ v if v.dim() == 1 else _block_mv(A, v),
            b.detach()[None, :, None],
            precond=M,
            rtol=self.rtol,
            maxiter=self.maxiter,
            restart=self.restart,
        )
        its = int(res.iterations.max())
        self.last_iterations = its
        if not bool(res.converged.all()):
            raise ConvergenceError(
                f"FGMRES with the block preconditioner did not reach rtol={self.rtol:g} in {self.maxiter} "
                f"iterations (relative residual {float(res.residual.max() / b.norm()):.2e})"
            )
        return res.x[0, :, 0], its

    def preconditioner(self, A: SparseTensor, state: torch.Tensor | None, nu: float) -> BlockTriangular:
        """The block-triangular preconditioner of the eliminated system ``A``."""
        V = self.space
        opts = dict(self._velocity_options or {})
        if self.velocity == "amg":
            opts = dict(VELOCITY_AMG["stokes" if state is None else "navier-stokes"], **opts)
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
