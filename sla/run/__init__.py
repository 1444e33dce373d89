"""Hydra entry point: ``python -m sla.run problem=poisson2d solver=cg [key=value ...]``.

Composes ``configs/config.yaml`` with one ``configs/problem/*.yaml`` and one
``configs/solver/*.yaml`` against the structured configs of :mod:`sla.run.schema`
(types, ranges, allowed values and unknown keys are checked before any work), runs
``problems/<problem.name>.py`` (``sla.problems`` when installed), prints a table and,
with ``save=true``, writes ``summary.json``, ``solution.vtu`` and ``solution.png`` into
Hydra's output folder.  A bad value or a failed solve prints one line (with a hint)
and exits with code 2; ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import torch

from ..config import (
    BackendUnavailableError,
    ConvergenceError,
    NotPositiveDefiniteError,
    SingularMatrixError,
    SlaError,
    SolverConfig,
)
from . import report
from .schema import ConfigError, check, configs_dir, problem_module, problems_package

log = logging.getLogger("sla.run")

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_CONFIGS = configs_dir()
EXIT_USAGE = 2  # bad configuration or failed run: one line on stderr


def _solver_config(node: Any) -> SolverConfig:
    fields = {k: v for k, v in dict(node).items() if v is not None}
    return SolverConfig(**fields)


def execute(cfg: Any) -> dict:
    """Run one configured problem; returns the summary (also usable without Hydra).

    Raises :class:`~sla.run.schema.ConfigError` for a bad value (before any work) and
    lets library errors (:class:`~sla.ConvergenceError`, ...) through.
    """
    check(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    if cfg.get("dist"):
        return _execute_distributed(cfg)
    name = cfg.problem.name
    problem = problem_module(name)
    problems = problems_package()
    token = problems.set_progress(bool(cfg.get("progress", True)))
    bar = problems.solve_progress(cfg.device)  # iterative solves longer than ~2 s: iteration and residual
    solver = _solver_config(cfg.solver)
    if bar is not None:
        solver = solver.replace(callback=bar)
    try:
        result = problem.run(cfg.problem, solver, torch.device(cfg.device), _DTYPES[cfg.dtype])
    finally:
        problems._PROGRESS.reset(token)
        if bar is not None:
            bar.close()
    summary = report.ordered({"problem": name, "device": str(cfg.device), "dtype": cfg.dtype, **result.summary})
    log.info("%s\n%s", name, report.table(summary))
    if cfg.get("save"):
        out = _output_dir()
        os.makedirs(out, exist_ok=True)
        report.write_summary(os.path.join(out, "summary.json"), summary)
        report.write_outputs(out, result, plot=bool(cfg.get("plot", True)), rtol=cfg.solver.get("rtol"))
        log.info("wrote %s", out)
    return summary


def _execute_distributed(cfg: Any) -> dict:
    from . import distributed

    distributed.check(cfg)
    out = _output_dir() if cfg.get("save") else None
    summary = report.ordered(distributed.execute(cfg, _solver_config(cfg.solver), _DTYPES[cfg.dtype], out))
    import torch.distributed as dist

    if dist.get_rank() == 0:
        log.info("%s (%d ranks)\n%s", cfg.problem.name, dist.get_world_size(), report.table(summary))
        if out is not None:
            report.write_summary(os.path.join(summary["output"], "summary.json"), summary)
            log.info("wrote %s", summary["output"])
    dist.barrier()  # every rank ends together (a rank torn down early could abort at exit)
    dist.destroy_process_group()
    return summary


def _output_dir() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir
    except (ImportError, ValueError):
        return os.getcwd()


# ------------------------------------------------------------------ one-line errors
def hint(exc: BaseException) -> str:
    """What to try after a library error raised during a run."""
    if isinstance(exc, ConvergenceError):
        return "try a preconditioned or direct solver: solver=amg (symmetric positive definite) or solver=lu"
    if isinstance(exc, SingularMatrixError):
        return "the system is singular: check the boundary conditions (pure Neumann needs a constraint)"
    if isinstance(exc, NotPositiveDefiniteError):
        return "the matrix is not symmetric positive definite: try solver=lu or solver=gmres"
    if isinstance(exc, BackendUnavailableError | ImportError):
        return "see what is installed with: python -c 'import sla; sla.show_backends()'"
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "the problem does not fit on the GPU: lower problem.n or use device=cpu"
    return "HYDRA_FULL_ERROR=1 shows the traceback"


def _line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def fail(message: str, exc: BaseException | None = None) -> None:
    """Print one line on stderr and exit with code 2 (re-raise with ``HYDRA_FULL_ERROR=1``)."""
    if exc is not None and os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    sys.stderr.write(f"error: {_line(message)}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)


def _task(cfg: Any) -> None:
    try:
        execute(cfg)
    except ConfigError as exc:
        fail(str(exc), exc)
    except (SlaError, ImportError, ValueError, TypeError, torch.cuda.OutOfMemoryError) as exc:
        fail(f"{type(exc).__name__}: {_line(exc)} -- hint: {hint(exc)}", exc)


# ------------------------------------------------------------------ entry point
def main(argv: list[str] | None = None) -> None:
    """``python -m sla.run [--multirun] [key=value ...]`` (Hydra's command line)."""
    try:
        import hydra
    except ImportError:
        fail("the runner needs Hydra: pip install 'sla-torch[run]'")
    from . import precheck
    from .schema import register

    argv = sys.argv[1:] if argv is None else argv
    register()
    precheck.validate(argv)

    @hydra.main(version_base=None, config_path=_CONFIGS, config_name="config")
    def _main(cfg) -> None:
        _task(cfg)

    sys.argv = [sys.argv[0], *argv]
    _main()
