"""-Laplace u = f on the unit square, u = 0 on the boundary; u = x(1-x) y(1-y) e^(x+y)
(no eigenvector of the stencil: iterative solvers do real work).

``discretization: fd`` uses the 5-point stencil on the n x n interior grid;
``fem`` uses P1/P2/Q1 elements on an n x n mesh.  The summary reports the
largest nodal error against the exact solution (O(h^2) for fd and P1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

import sla

from . import ProblemConfig, Result, param
from ._common import poisson_run

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass
class Config(ProblemConfig):
    """``problem=poisson2d``: grid size, discretisation and element."""

    name: str = "poisson2d"
    n: int = param(256, ge=2, help="cells (fem) / interior points (fd) per side")
    discretization: str = param("fd", choices=("fd", "fem"), help="fd (5-point stencil) | fem")
    element: str = param("P1", choices=("P1", "P2", "Q1"), help="fem element")


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    return poisson_run(cfg, solver, device, dtype, dim=2)
