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
]
