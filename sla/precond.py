"""Typed preconditioner choices, accepted wherever a preconditioner name is
(``sla.solve(A, b, backend='pytorch', preconditioner=sla.precond.AMG(cycle='W'))``,
``sla.SolverConfig(preconditioner=...)``, :func:`make_preconditioner`).  Each is a
frozen dataclass validated at construction, so an option cannot be misspelt or dropped.

>>> import sla
>>> sla.precond.BlockJacobi(block_size=2)
BlockJacobi(block_size=2)
>>> sla.precond.Chebyshev(degree=0)
Traceback (most recent call last):
...
ValueError: Chebyshev: degree must be a positive integer, got 0

A vector problem assembled elsewhere hands AMG its near-null space (an ``sla.assembly`` matrix
records its dof points, and AMG takes the rigid-body modes by itself):

>>> import torch
>>> sla.precond.rigid_body_modes(torch.rand(10, 3)).shape  # 3 translations, 3 rotations
torch.Size([30, 6])
"""

from .solvers.precond import (
    AMG,
    GMG,
    PRECONDITIONERS,
    BlockJacobi,
    Chebyshev,
    Jacobi,
    Preconditioner,
    PreconditionerSpec,
    make_preconditioner,
)
from .solvers.precond.nullspace import rigid_body_modes

__all__ = [
    "AMG",
    "GMG",
    "PRECONDITIONERS",
    "BlockJacobi",
    "Chebyshev",
    "Jacobi",
    "Preconditioner",
    "PreconditionerSpec",
    "make_preconditioner",
    "rigid_body_modes",
]
