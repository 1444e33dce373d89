"""Model problems run by ``python -m sla.run problem=<name>``.

A problem is one module ``problems/<name>.py`` plus one ``configs/problem/<name>.yaml``:

* the module defines ``Config``, a dataclass deriving from :class:`ProblemConfig` whose
  fields (declared with :func:`param`: type, default, range, allowed values) are the
  problem's keys, and ``run(cfg, solver, device, dtype) -> Result``;
* the yaml starts with ``defaults: [base_<name>, _self_]`` (the runner stores ``Config``
  as ``problem/base_<name>`` in Hydra's ConfigStore, so types and unknown keys are
  checked while Hydra composes the config) and sets ``name: <name>`` and the defaults.

The runner checks the ranges before any work and prints one line per bad value.
Each ``run`` builds its system with :mod:`sla.assembly`, solves it with the given
:class:`~sla.SolverConfig`, and reports metrics checked against an independent
reference (a manufactured solution, beam theory, the true field) in
:class:`Result`; the runner prints them as a table and writes ``summary.json``,
``solution.vtu`` and ``solution.png``.  In the installed package this folder is
``sla.problems``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("sla_problem_progress", default=True)


def param(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple | None = None,
    help: str = "",
) -> Any:
    """A config field with its allowed range (``ge``/``gt``/``le``/``lt``) or values (``choices``)."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": tuple(choices) if choices else None, "help": help}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


def allowed(f: dataclasses.Field) -> str:
    """What :func:`param` allows for a field, in words (``'an integer >= 1'``, ``'one of P1, P2'``)."""
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(str(c) for c in m["choices"])
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(f.type, None)
    if kind is None:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
            str(f.type).replace(" | None", ""), "a value"
        )
    bounds = [f"{op} {m[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in m]
    return kind + (" " + " and ".join(bounds) if bounds else "")


def check_fields(schema: type, values: Any, prefix: str) -> None:
    """Check every field of the dataclass ``schema`` in ``values`` (a mapping or config) against its
    :func:`param` range; raises ``ValueError`` naming ``prefix.key``, the value and what is allowed."""
    for f in dataclasses.fields(schema):
        v = values[f.name] if f.name in values else getattr(values, f.name, None)
        if v is None:
            continue
        m = f.metadata
        bad = m.get("choices") and v not in m["choices"]
        for k, test in (
            ("ge", lambda a, b: a >= b),
            ("gt", lambda a, b: a > b),
            ("le", lambda a, b: a <= b),
            ("lt", lambda a, b: a < b),
        ):
            if k in m and not (isinstance(v, int | float) and test(v, m[k])):
                bad = True
        if bad:
            key = f"{prefix}.{f.name}" if prefix else f.name
            raise ValueError(f"{key}={v!r} is not allowed: expected {allowed(f)}")


@dataclass
class ProblemConfig:
    """Base of every problem's ``Config``: the problem's name (the module and yaml name)."""

    name: str = ""


@dataclass
class Result:
    """What a problem run produced.

    ``summary`` is flat (str/int/float values); the runner shows the standard keys first
    (``unknowns``, ``nonzeros``, ``backend``, ``method``, ``preconditioner``, ``iterations``,
    ``residual``, ``assembly_s``, ``setup_s``, ``solve_s``, ``error``, ``error_measure``)
    and then the problem's own.  ``mesh`` with ``point_data``/``cell_data`` is written to
    ``solution.vtu`` and drawn (the field named by ``plot``, else the first) in
    ``solution.png``; ``history`` holds named curves (``'objective'``, ``'residual'``) that
    the runner draws as well.
    """

    summary: dict
    mesh: Any | None = None
    point_data: dict = field(default_factory=dict)
    cell_data: dict = field(default_factory=dict)
    plot: str | None = None
    history: dict = field(default_factory=dict)


class Phases:
    """Wall-clock time per phase, summed over repeats: ``with phases('assembly'): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def summary(self) -> dict:
        return {f"{k}_s": round(v, 4) for k, v in self.seconds.items()}


def set_progress(enabled: bool) -> contextvars.Token:
    """Switch the problems' progress bars on or off (the runner's ``progress=`` key)."""
    return _PROGRESS.set(bool(enabled))


def progress(iterable: Iterable, total: int | None = None, desc: str = "") -> Any:
    """``iterable`` wrapped in a tqdm bar when progress is on and stderr is a terminal (else as is);
    :func:`postfix` shows live numbers (loss, residual) on it."""
    if not _PROGRESS.get() or not sys.stderr.isatty():
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class SolveProgress:
    """``SolverConfig(callback=...)`` for iterative solves: a tqdm bar with the iteration and the
    relative residual that appears only when one solve runs longer than ``delay`` seconds
    (a new solve -- the iteration count starting again -- closes the previous bar)."""

    def __init__(self, delay: float = 2.0) -> None:
        self.delay = delay
        self.bar: Any = None
        self.last = -1

    def __call__(self, iteration: int, relative_residual: float) -> None:
        if iteration <= self.last:
            self.close()
        self.last = iteration
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc="iterative solve", unit="it", delay=self.delay, leave=False, dynamic_ncols=True)
        self.bar.update(iteration - self.bar.n)
        self.bar.set_postfix_str(f"residual {relative_residual:.2e}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.last = None, -1


def solve_progress(device: Any) -> SolveProgress | None:
    """A :class:`SolveProgress` when progress is on, stderr is a terminal, tqdm is installed and the
    solve runs on the CPU (on a GPU the per-iteration callback would synchronise the device)."""
    if not _PROGRESS.get() or not sys.stderr.isatty() or str(device).startswith("cuda"):
        return None
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return None
    return SolveProgress()


def postfix(bar: Any, **values: Any) -> None:
    """Show ``values`` on a :func:`progress` bar (nothing when the bar is off)."""
    if hasattr(bar, "set_postfix"):
        bar.set_postfix({k: f"{v:.3e}" if isinstance(v, float) else v for k, v in values.items()}, refresh=False)


def output_dir() -> str:
    """Hydra's output folder when run by ``sla.run``, else the working directory."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir
    except (ImportError, ValueError):
        return os.getcwd()
