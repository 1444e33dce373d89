"""Model problems run by ``python -m sla.run problem=<name>``.

Each module defines ``run(cfg, solver, device, dtype) -> Result``: it builds a
system with :mod:`sla.assembly`, solves it with the given
:class:`~sla.SolverConfig`, and reports metrics checked against an independent
reference (a manufactured solution, beam theory, the true field).
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """What a problem run produced: a flat summary, and optionally fields on a mesh."""

    summary: dict
    mesh: Any | None = None
    point_data: dict = field(default_factory=dict)
    cell_data: dict = field(default_factory=dict)
