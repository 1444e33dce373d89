"""-Laplace u = f on the unit cube, u = 0 on the boundary; u = sin(pi x) sin(pi y) sin(pi z).

``fd``: 7-point stencil on the n^3 interior grid; ``fem``: P1 tetrahedra (or
Q1 hexahedra with ``element: Q1``).  Reports the largest nodal error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

import sla

from . import Result
from ._common import poisson_run

if TYPE_CHECKING:
    from omegaconf import DictConfig


def run(cfg: DictConfig, solver: sla.SolverConfig, device: torch.device, dtype: torch.dtype) -> Result:
    return poisson_run(cfg, solver, device, dtype, dim=3)
