"""-Laplace u = f on the unit cube, u = 0 on the boundary; u = prod_d x_d (1 - x_d) e^(x_d)
(no eigenvector of the stencil: iterative solvers do real work).

``fd``: 7-point stencil on the n^3 interior grid; ``fem``: P1 tetrahedra (or
Q1 hexahedra with ``element: Q1``).  Reports the largest nodal error.
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
    """``problem=poisson3d``: grid size, discretisation and element."""

    name: str = "poisson3d"
    n: int = param(48, ge=2, help="cells (fem) / interior points (fd) per side")
    discretization: str = param("fd", choices=("fd", "fem"), help="fd (7-point stencil) | fem")
    element: str = param("P1", choices=("P1", "P2", "Q1"), help="fem element")


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    return poisson_run(cfg, solver, device, dtype, dim=3)
