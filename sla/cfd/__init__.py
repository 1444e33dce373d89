"""Incompressible flow on :mod:`sla`: boundary conditions, linear solves and the steady Newton driver.

This layer sits above :mod:`sla.assembly` (mixed spaces and flow forms:
:mod:`sla.assembly.mixed`, :mod:`sla.assembly.flow`) and :mod:`sla.solvers`
(LU, FGMRES, AMG, the block preconditioners of :mod:`sla.solvers.precond.block`).

* :class:`VelocityBC`, :func:`dirichlet_data` -- velocity Dirichlet conditions on tagged
  boundaries, the pressure constant fixed by a pinned dof or a zero mean;
* :class:`FlowLinearSolver` -- ``'direct'`` (on the CPU: LU factors held across Newton steps as a
  GMRES preconditioner, :class:`LaggedLU`) or ``'iterative'`` (FGMRES + block preconditioner:
  LSC, PCD, pressure mass or augmented Lagrangian);
* :mod:`sla.cfd.multigrid` -- monolithic geometric multigrid on nested meshes (exact Taylor--Hood
  transfers, Galerkin levels, batched Vanka smoothing): the ``'iterative'`` path's preconditioner
  when ``FlowLinearSolver`` gets a ``hierarchy`` (:func:`refined_spaces`);
* :func:`solve_steady` -- inexact Newton (Eisenstat--Walker forcing) with a Picard start,
  differentiable through the implicit function theorem;
* :func:`solve_unsteady` -- semi-implicit BDF2, the LU factors reused across steps;
* :func:`boundary_force`, :func:`reaction_force`, :func:`point_pressure` -- forces on a body by
  the volume-integral form, pressures at points;
* :mod:`sla.cfd.dfg` -- the DFG cylinder benchmarks (2D-1 steady, 2D-2 unsteady).
"""

from .boundary import PRESSURE_MODES, VelocityBC, dirichlet_data
from .forces import boundary_force, point_pressure, reaction_force
from .linear import LINEAR_PATHS, FlowLinearSolver, LaggedLU
from .multigrid import FlowHierarchy, FlowMultigrid, refined_spaces
from .steady import FlowResult, solve_steady
from .unsteady import Step, UnsteadyResult, solve_unsteady

__all__ = [
    "PRESSURE_MODES",
    "LINEAR_PATHS",
    "VelocityBC",
    "dirichlet_data",
    "FlowLinearSolver",
    "LaggedLU",
    "FlowHierarchy",
    "FlowMultigrid",
    "refined_spaces",
    "FlowResult",
    "solve_steady",
    "solve_unsteady",
    "UnsteadyResult",
    "Step",
    "boundary_force",
    "reaction_force",
    "point_pressure",
]
