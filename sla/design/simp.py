"""SIMP compliance minimisation (topology optimisation) on top of assembly and the solvers.

The design ``x`` (one density per cell) is filtered, ``x_phys = H x``
(:func:`~sla.design.density_filter`), penalised, ``E(x_phys) = E_min + x_phys^p
(E_0 - E_min)`` (Bendsøe 1989; the modified SIMP of Sigmund 2007), the
stiffness is assembled with that Young's modulus per cell, and the compliance
``c = f . u`` of ``K(x) u = f`` is minimised subject to a volume fraction by the
optimality-criteria update (:func:`~sla.design.oc_update`).

There is no sensitivity formula here: ``dc/dx`` and ``dV/dx`` are what autograd
returns through the filter, the penalisation, the assembly (a cached
coefficient -> values map: the stiffness is linear in the cell modulus) and the
solve (the adjoint solve of :func:`sla.solve`, reusing the factorisation or
preconditioner).  The pattern of ``K`` is built once, so direct solvers keep
their symbolic analysis and multigrid its aggregates across iterations.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import solvers
from ..assembly import CellBasis, ElementVector, Mesh, apply_dirichlet, elasticity, element_for
from ..assembly.galerkin import GridHierarchy, grid_shape
from ..assembly.plan import CoefficientMap, LinearScatter, plan_index, scatter_plan
from ..config import SolverConfig
from ..solvers.backends.scipy import has_cholmod
from ..solvers.precond.options import GMG, resolve
from ..sparse import SparseTensor
from .filter import cell_volumes, density_filter
from .oc import oc_update

SIMP_MAX_COARSE = 1500
"""Coarsest level of SIMP's element-wise multigrid when no ``max_coarse`` is given: a larger
dense coarse solve than the grid default (500) paid for itself on the H200 (3D cantilever
192 x 96 x 64, 100 design iterations: 95.4 s and a median of 0.85 s per iteration, against
107.6 s and 0.94 s with 500; benchmarks/README.md)."""

__all__ = ["SIMP", "TopologyResult", "lame"]

log = logging.getLogger("sla")

_SOLVERS = {
    "auto": {},
    "direct": {"method": "cholesky"},
    "amg": {"backend": "pytorch", "method": "cg", "preconditioner": "amg"},
    "gmg": {},
}


def lame(young: float, poisson: float, dim: int) -> tuple[float, float]:
    """``(lambda, mu)`` of an isotropic material: plane stress in 2D, 3D elasticity in 3D."""
    mu = young / (2 * (1 + poisson))
    lam = young * poisson / (1 - poisson**2) if dim == 2 else young * poisson / ((1 + poisson) * (1 - 2 * poisson))
    return lam, mu


def _number(name: str, value: Any, lo: float, hi: float | None = None, lo_open=True, hi_open=True) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        lb = "(" if lo_open else "["
        rb = "inf)" if hi is None else (f"{hi})" if hi_open else f"{hi}]")
        raise ValueError(f"{name} must be a number in {lb}{lo}, {rb}, got {value!r}")
    return float(value)


@dataclass
class TopologyResult:
    """Outcome of :meth:`SIMP.optimize`.

    Attributes
    ----------
    x : torch.Tensor
        Final physical (filtered) densities per cell.
    design : torch.Tensor
        Final design variables per cell.
    compliance, volume, change : list[float]
        Per iteration: compliance of the design entering the iteration, its volume fraction,
        and the largest density change of the update.
    iterations : int
    converged : bool
        Whether the change fell below ``tol`` before ``maxiter``.
    seconds : list[float]
        Wall time of each iteration.
    """

    x: torch.Tensor
    design: torch.Tensor
    compliance: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)
    change: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    seconds: list[float] = field(default_factory=list)


class SIMP:
    """Minimum-compliance topology optimisation with SIMP, a density filter and OC updates.

    Parameters
    ----------
    mesh : Mesh
        Quads/hexahedra (Q1 displacements) or triangles/tetrahedra (P1).
    fixed : torch.Tensor
        Constrained displacement dofs (``node * dim + component``), held at zero.
    load : torch.Tensor
        Nodal force vector ``[n_nodes * dim]``; must vanish on ``fixed``.
    volfrac : float
        Volume fraction to meet, in ``(0, 1)``.
    penal : float
        SIMP penalisation ``p >= 1``.
    rmin : float
        Density filter radius ``> 0`` (mesh length units).
    young, young_min, poisson : float
        Solid and void Young's moduli (``0 < young_min < young``) and Poisson's ratio in ``(-1, 0.5)``.
    move : float
        OC move limit.
    solver : str, SolverConfig or dict, optional
        ``'direct'`` (a sparse Cholesky factorisation -- LU where CHOLMOD is missing -- reused by
        the adjoint solve), ``'amg'``
        (CG with smoothed-aggregation AMG), ``'gmg'`` (CG with geometric multigrid whose coarse
        operators are Galerkin products built element by element, rebuilt every iteration at the
        cost of a few dense products: :class:`sla.assembly.galerkin.GridHierarchy`; needs the
        structured grid of :func:`~sla.design.cantilever` / :func:`~sla.design.mbb_beam` with cell
        counts that halve down to a few hundred dofs), ``'auto'`` (default: ``'gmg'`` for a 3D
        hexahedral grid that coarsens, else :func:`sla.solve`'s choice for an SPD matrix: a sparse
        Cholesky factorisation on the CPU), or options of :func:`sla.solve`; a
        config whose preconditioner is ``'gmg'`` (``solver=gmg`` in the runner) or
        ``sla.precond.GMG(...)`` (its ``max_coarse``, ``max_levels``, ``degree``, ``ratio``,
        ``cycle``) selects the element-wise multigrid with that config's tolerances.

    Examples
    --------
    >>> from sla.design import SIMP, mbb_beam
    >>> case = mbb_beam(12, 4)
    >>> res = SIMP(case.mesh, case.fixed, case.load, volfrac=0.5, rmin=1.5).optimize(maxiter=5)
    >>> res.iterations, round(res.volume[-1], 3)
    (5, 0.5)
    """

    def __init__(
        self,
        mesh: Mesh,
        fixed: torch.Tensor,
        load: torch.Tensor,
        volfrac: float = 0.5,
        penal: float = 3.0,
        rmin: float = 1.5,
        young: float = 1.0,
        young_min: float = 1e-9,
        poisson: float = 0.3,
        move: float = 0.2,
        solver: str | SolverConfig | dict | None = "auto",
    ) -> None:
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a sla.assembly.Mesh, got {type(mesh).__name__}")
        self.volfrac = _number("volfrac", volfrac, 0.0, 1.0)
        self.penal = _number("penal", penal, 1.0, lo_open=False)
        self.rmin = _number("rmin", rmin, 0.0)
        self.young = _number("young", young, 0.0)
        self.young_min = _number("young_min", young_min, 0.0, self.young)
        self.poisson = _number("poisson", poisson, -1.0, 0.5)
        self.move = _number("move", move, 0.0, 1.0, hi_open=False)
        self.mesh = mesh
        dim = mesh.points.shape[1]
        self.dim = dim
        dev, dt = mesh.points.device, mesh.points.dtype
        self.basis = CellBasis(mesh, ElementVector(element_for(mesh.cell_type, 1), dim))
        n = self.basis.ndofs
        load = torch.as_tensor(load, dtype=dt, device=dev)
        if load.shape != (n,):
            raise ValueError(f"load must be a nodal force vector [{n}] (n_nodes * dim), got {tuple(load.shape)}")
        fixed = torch.as_tensor(fixed, device=dev).to(torch.int64).flatten()
        if fixed.numel() == 0:
            raise ValueError("fixed must constrain at least one dof (else the stiffness is singular)")
        if int(fixed.min()) < 0 or int(fixed.max()) >= n:
            raise IndexError(f"fixed dofs must lie in [0, {n}), got range [{int(fixed.min())}, {int(fixed.max())}]")
        bad = torch.nonzero(load[fixed] != 0).flatten()
        if bad.numel():
            d = int(fixed[bad[0]])
            raise ValueError(
                f"load acts on constrained dof {d} (node {d // dim}, component {d % dim}): "
                f"a load on a fixed dof does no work; move it or release that dof"
            )
        if not bool(load.abs().sum() > 0):
            raise ValueError("load must not be all zero")
        self.fixed, self.load = fixed, load
        self.filter = density_filter(mesh, self.rmin, dtype=dt)
        vol = cell_volumes(mesh).to(dt)
        self.cell_volume = vol
        self.total_volume = float(vol.sum())
        # unit element stiffness (E = 1): one matrix for a lattice of equal cells, else one per cell
        self._map = self._coefficient_map()
        nnz = self._map.nnz
        self.last_info = None  # SolveInfo of the latest state solve
        self.last_setup_time = 0.0  # seconds of the latest multigrid build (solver 'gmg')
        self._dv_cache: torch.Tensor | None = None
        self._K0 = SparseTensor._make(torch.zeros(nnz, dtype=dt, device=dev), self._plan["pattern"].to(dev))
        self.solver, self.hierarchy = self._solver(solver)

    def set_solver(self, solver: str | SolverConfig | dict | None) -> None:
        """Change the state solver (the choices of the ``solver`` parameter) for later iterations."""
        self.solver, self.hierarchy = self._solver(solver)
        self.last_setup_time = 0.0

    def _solver(self, solver) -> tuple[SolverConfig, GridHierarchy | None]:
        """The solve's config and, for ``'gmg'``, the grid hierarchy (built once)."""
        if solver is None:
            solver = "auto"
        if isinstance(solver, dict):
            solver = SolverConfig(**solver)
        if isinstance(solver, str):
            if solver not in _SOLVERS:
                raise ValueError(f"solver must be one of {list(_SOLVERS)}, a SolverConfig or a dict, got {solver!r}")
            if solver == "gmg" or (solver == "auto" and self._gmg_fits()):
                return self._gmg_config(SolverConfig(), {})
            opts = dict(_SOLVERS[solver])
            if solver == "direct" and self.mesh.points.device.type == "cpu" and not has_cholmod():
                opts["method"] = "lu"  # SuperLU where CHOLMOD is not installed
            # the eliminated stiffness is symmetric positive definite: saying so skips its detection
            return SolverConfig(matrix_type="spd", **opts), None
        if not isinstance(solver, SolverConfig):
            raise TypeError(
                f"solver must be 'auto', 'direct', 'amg', 'gmg', a SolverConfig or a dict of its fields, "
                f"got {type(solver).__name__}"
            )
        pc = solver.preconditioner
        if pc == "gmg" or isinstance(pc, GMG):
            _, opts = resolve(pc, solver.options)
            return self._gmg_config(solver, opts)
        left_auto = all(getattr(solver, f) in (None, "auto") for f in ("backend", "method", "preconditioner"))
        if left_auto and not solver.options and self._gmg_fits():  # the runner's solver=auto
            return self._gmg_config(solver, {})
        if solver.matrix_type in (None, "auto"):
            solver = solver.replace(matrix_type="spd")
        return solver, None

    def _gmg_fits(self) -> bool:
        """Whether ``'auto'`` picks the element-wise multigrid: a 3D hexahedral grid that coarsens."""
        if self.mesh.cell_type != "hexahedron":
            return False
        try:
            return len(GridHierarchy.check(grid_shape(self.mesh), self.dim)) > 1
        except ValueError:
            return False

    def _gmg_config(self, cfg: SolverConfig, opts: dict) -> tuple[SolverConfig, GridHierarchy]:
        known = {"max_coarse", "max_levels", "degree", "ratio", "cycle"}
        extra = sorted(set(opts) - known - {"grid", "transfers"})
        if extra:
            raise ValueError(f"SIMP's geometric multigrid takes the options {sorted(known)}, got {extra}")
        opts = {k: v for k, v in opts.items() if k in known and v != "auto"}
        if "max_coarse" not in opts and len(GridHierarchy.check(grid_shape(self.mesh), self.dim, SIMP_MAX_COARSE)) > 1:
            opts["max_coarse"] = SIMP_MAX_COARSE
        hierarchy = GridHierarchy(self.mesh, self.dim, self.fixed, **opts)
        # CG on the SPD stiffness; the preconditioner is built per design iteration (no caching by values)
        changes = dict(backend="pytorch", method="cg", matrix_type="spd", cache=False, options=None)
        if cfg.backend not in (None, "auto", "pytorch") or cfg.method not in (None, "auto", "cg"):
            raise ValueError(
                f"SIMP's geometric multigrid preconditions CG of the pytorch backend, got backend={cfg.backend!r} "
                f"method={cfg.method!r}"
            )
        return cfg.replace(preconditioner=None, **changes), hierarchy

    # ------------------------------------------------------------------ pieces
    def _unit_matrices(self) -> torch.Tensor:
        lam, mu = lame(1.0, self.poisson, self.dim)
        P, cells = self.mesh.points.detach(), self.mesh.cells
        rel = P[cells] - P[cells[:, :1]]
        if bool(torch.allclose(rel, rel[:1].expand_as(rel), rtol=1e-12, atol=1e-12 * float(rel.abs().max()))):
            one = Mesh(P[cells[0]], torch.arange(cells.shape[1], device=P.device)[None], self.mesh.cell_type)
            b1 = CellBasis(one, self.basis.element)
            ke = elasticity.local_t(b1, b1, {"lam": lam, "mu": mu})  # [nd, nd, 1]
            return ke.reshape(-1, 1, 1).expand(-1, 1, cells.shape[0])
        ke = elasticity.local_t(self.basis, self.basis, {"lam": lam, "mu": mu})
        return ke.reshape(ke.shape[0] * ke.shape[1], 1, -1)

    def _coefficient_map(self) -> CoefficientMap:
        el = self.basis.element
        self._plan = scatter_plan(self.mesh, el, el)
        dev = self.mesh.points.device
        units = self._unit_matrices()  # [nd * nd, 1, E] (expanded when the cells are equal)
        nd = el.n
        self._unit = units[:, 0, 0].reshape(nd, nd) if units.stride(-1) == 0 else units[:, 0].T.reshape(-1, nd, nd)
        return CoefficientMap(units, plan_index(self._plan, dev), self._plan["pattern"].nnz)

    @property
    def stiffness_pattern(self):
        """The :class:`~sla.Pattern` of the stiffness matrix (shared by every iteration)."""
        return self._K0.pattern

    def physical(self, x: torch.Tensor) -> torch.Tensor:
        """Filtered densities ``H x`` (differentiable)."""
        return self.filter @ x

    def modulus(self, x_phys: torch.Tensor) -> torch.Tensor:
        """SIMP Young's modulus per cell, ``E_min + x^p (E_0 - E_min)`` (differentiable)."""
        return self.young_min + x_phys.clamp(0, 1) ** self.penal * (self.young - self.young_min)

    def stiffness(self, x_phys: torch.Tensor) -> SparseTensor:
        """The stiffness of the physical densities (SIMP modulus per cell; differentiable)."""
        return self._K0.with_values(LinearScatter.apply(self.modulus(x_phys).contiguous(), self._map))

    def volume(self, x_phys: torch.Tensor) -> torch.Tensor:
        """Volume fraction of the physical densities."""
        return (x_phys * self.cell_volume).sum() / self.total_volume

    def compliance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c, u)``: the compliance ``f . u`` of design ``x`` and the displacements."""
        E = self.modulus(self.physical(x))
        K = self._K0.with_values(LinearScatter.apply(E.contiguous(), self._map))
        Kb, fb = apply_dirichlet(K, self.load, self.fixed, 0.0)
        cfg = self.solver
        if self.hierarchy is not None:  # the multigrid of this stiffness, from its element matrices
            t0 = time.perf_counter()
            cfg = cfg.replace(preconditioner=self.hierarchy.preconditioner(Kb, E.detach(), self._unit))
            self.last_setup_time = time.perf_counter() - t0
        u, self.last_info = solvers.solve(Kb, fb, config=cfg, return_info=True)
        return self.load @ u, u

    def sensitivities(self, x: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``(c, dc/dx, dV/dx)`` at the design ``x``, by autograd."""
        x = x.detach().requires_grad_(True)
        c, _ = self.compliance(x)
        (dc,) = torch.autograd.grad(c, x)
        return float(c.detach()), dc, self._dv(x)

    def _dv(self, x: torch.Tensor) -> torch.Tensor:
        """The volume is linear in the design: its gradient is computed once (by autograd)."""
        if self._dv_cache is None:
            xx = x.detach().requires_grad_(True)
            (self._dv_cache,) = torch.autograd.grad(self.volume(self.physical(xx)), xx)
        return self._dv_cache

    # -------------------------------------------------------------------- loop
    def optimize(
        self,
        maxiter: int = 100,
        tol: float = 0.01,
        x0: torch.Tensor | None = None,
        callback: Callable[[int, float, float, float], Any] | None = None,
    ) -> TopologyResult:
        """Run OC iterations until the largest density change is below ``tol`` or ``maxiter``.

        ``callback(iteration, compliance, volume, change)`` is called after each iteration
        (progress reporting); iteration numbers start at 1.
        """
        if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
            raise ValueError(f"maxiter must be a positive integer, got {maxiter!r}")
        tol = _number("tol", tol, 0.0)
        E = self.mesh.n_cells
        dt, dev = self.mesh.points.dtype, self.mesh.points.device
        if x0 is None:
            x = torch.full((E,), self.volfrac, dtype=dt, device=dev)
        else:
            x = torch.as_tensor(x0, dtype=dt, device=dev).detach().clone()
            if x.shape != (E,) or bool((x < 0).any() | (x > 1).any()):
                raise ValueError(f"x0 must be densities [{E}] in [0, 1], got shape {tuple(x.shape)}")
        res = TopologyResult(x=self.physical(x), design=x)
        # The volume is linear in x, V(x) = dv . x, so the OC bisection measures candidates with one
        # dot product.  The bisection is invariant to the scale of dv; the multiplier bracket of the
        # 88-line code expects it in units of cells.
        for it in range(1, maxiter + 1):
            t0 = time.perf_counter()
            c, dc, dv = self.sensitivities(x)
            vol = float(dv @ x)
            xnew = oc_update(x, dc, dv * E, lambda xn, dv=dv: dv @ xn, self.volfrac, move=self.move)
            change = float((xnew - x).abs().max())
            x = xnew
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            res.seconds.append(time.perf_counter() - t0)
            res.compliance.append(c)
            res.volume.append(vol)
            res.change.append(change)
            res.iterations = it
            log.debug("topology it %d: compliance %.6g volume %.4f change %.4f", it, c, vol, change)
            if callback is not None:
                callback(it, c, vol, change)
            if change < tol:
                res.converged = True
                break
        res.design = x
        res.x = self.physical(x).detach()
        return res
