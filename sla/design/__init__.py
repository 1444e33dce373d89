"""Inverse design: topology optimisation (SIMP compliance minimisation with a density filter and
optimality-criteria updates) and observation operators for inverse problems.

Sits above assembly and the solvers; gradients come from autograd through the
assembly and the adjoint solve (no hand-derived sensitivities).

>>> import torch
>>> from sla.design import SIMP, mbb_beam
>>> case = mbb_beam(30, 10)
>>> opt = SIMP(case.mesh, case.fixed, case.load, volfrac=0.5, penal=3.0, rmin=1.5)
>>> res = opt.optimize(maxiter=3)
>>> res.compliance[0] > res.compliance[-1]
True
"""

from .cases import TopologyCase, cantilever, mbb_beam
from .filter import cell_centres, cell_volumes, density_filter
from .observe import point_evaluation
from .oc import oc_update
from .simp import SIMP, TopologyResult, lame

__all__ = [
    "SIMP",
    "TopologyResult",
    "TopologyCase",
    "mbb_beam",
    "cantilever",
    "density_filter",
    "cell_centres",
    "cell_volumes",
    "oc_update",
    "point_evaluation",
    "lame",
]
