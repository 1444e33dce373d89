"""Incompressible flow on :mod:`sla`: boundary conditions, linear solves and the steady Newton driver.

This layer sits above :mod:`sla.assembly` (mixed spaces and flow forms:
:mod:`sla.assembly.mixed`, :mod:`sla.assembly.flow`) and :mod:`sla.solvers`
(LU, FGMRES, AMG, the block preconditioners of :mod:`sla.solvers.precond.block`).

* :class:`VelocityBC`, :func:`dirichlet_data` -- velocity Dirichlet conditions on tagged
  boundaries, the pressure constant fixed by a pinned dof or a zero mean;
* :class:`FlowLinearSolver` -- ``'direct'`` or ``'iterative'`` (FGMRES + block preconditioner);
* :func:`solve_steady` -- Newton with a Picard start, differentiable through the implicit
  function theorem.
"""

from .boundary import PRESSURE_MODES, VelocityBC, dirichlet_data
from .linear import LINEAR_PATHS, FlowLinearSolver
from .steady import FlowResult, solve_steady

__all__ = [
    "PRESSURE_MODES",
    "LINEAR_PATHS",
    "VelocityBC",
    "dirichlet_data",
    "FlowLinearSolver",
    "FlowResult",
    "solve_steady",
]
