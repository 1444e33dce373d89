"""The runner's structured configs: the top level, the solver, and each problem's ``Config``.

They are stored in Hydra's ConfigStore (``base_config``, ``solver/base_solver``,
``problem/base_<name>``); the yaml files name them in their defaults list, so Hydra
checks types while it composes.  :func:`check` then checks what types cannot say
(ranges, allowed values, unknown keys, a CUDA device that is not there) before any
work, raising :class:`ConfigError` with one line naming the key, the value and what
is allowed.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from ..config import SlaError

log = logging.getLogger("sla.run")


class ConfigError(SlaError, ValueError):
    """A bad value in the runner's configuration (one line: key, value, what is allowed)."""


def _param(default: Any, **meta: Any) -> Any:
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


@dataclass
class SolverSchema:
    """``solver=<name>`` (configs/solver/*.yaml): the :class:`~sla.SolverConfig` keys the runner exposes."""

    backend: str = "auto"
    method: str = "auto"
    preconditioner: str = "auto"
    rtol: float | None = _param(None, gt=0, lt=1)
    atol: float = _param(0.0, ge=0)
    maxiter: int | None = _param(None, ge=1)
    restart: int | None = _param(None, ge=1)
    timeout: float | None = _param(None, gt=0)
    on_failure: str = _param("raise", choices=("raise", "warn", "ignore"))


@dataclass
class RunSchema:
    """The top level of ``configs/config.yaml``."""

    problem: Any = None
    solver: Any = None
    device: str = "cpu"
    dtype: str = _param("float64", choices=("float32", "float64"))
    threads: int | None = _param(None, ge=1)
    save: bool = True
    plot: bool = True
    progress: bool = True
    dist: bool = False


def configs_dir() -> str:
    """The config folder: ``sla/configs`` in an installed wheel, ``configs/`` in a checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    packaged = os.path.join(here, "configs")
    return packaged if os.path.isdir(packaged) else os.path.join(os.path.dirname(here), "configs")


def known_problems() -> list[str]:
    """Problem names: the yaml files in ``configs/problem``."""
    folder = os.path.join(configs_dir(), "problem")
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def known_solvers() -> list[str]:
    folder = os.path.join(configs_dir(), "solver")
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def problems_package() -> Any:
    """``sla.problems`` (installed from ``problems/``); in a checkout, loaded from ``problems/``."""
    import sys

    try:
        return importlib.import_module("sla.problems")
    except ModuleNotFoundError:
        pass
    folder = os.path.join(os.path.dirname(configs_dir()), "problems")
    spec = importlib.util.spec_from_file_location(
        "sla.problems", os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["sla.problems"] = module
    spec.loader.exec_module(module)
    return module


def problem_module(name: str) -> Any:
    """The module ``sla.problems.<name>``; :class:`ConfigError` for an unknown name."""
    if name not in known_problems():
        raise ConfigError(f"problem={name!r} is not allowed: expected one of {', '.join(known_problems())}")
    problems_package()
    return importlib.import_module(f"sla.problems.{name}")


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunSchema)
    cs.store(group="solver", name="base_solver", node=SolverSchema)
    for name in known_problems():
        try:  # a problem that does not import is reported when it is selected, not here
            schema = getattr(problem_module(name), "Config", None)
        except Exception:
            continue
        if schema is not None:
            cs.store(group="problem", name=f"base_{name}", node=schema)


def _check_keys(schema: type, node: Any, prefix: str, what: str) -> None:
    names = [f.name for f in dataclasses.fields(schema)]
    for key in node:
        if key not in names:
            shown = ", ".join(n for n in names if n != "name")
            raise ConfigError(f"{prefix}{key} is not a key of {what}: expected one of {shown}")


def check(cfg: Any) -> None:
    """Everything the types cannot say, before any work: ranges, choices, unknown keys, device."""
    import torch

    from ..solvers.linear.registry import backend_names, get_backend_methods

    check_fields = problems_package().check_fields
    name = cfg.problem.name
    schema = getattr(problem_module(name), "Config", None)
    try:
        _check_keys(RunSchema, cfg, "", "the runner's config")
        check_fields(RunSchema, cfg, "")
        if schema is None:
            log.warning("problem %r defines no Config dataclass: its keys are not checked", name)
        else:
            _check_keys(schema, cfg.problem, "problem.", f"problem {name!r}")
            check_fields(schema, cfg.problem, "problem")
        _check_keys(SolverSchema, cfg.solver, "solver.", "the solver config")
        check_fields(SolverSchema, cfg.solver, "solver")
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    backends = ["auto", *backend_names()]
    if cfg.solver.backend not in backends:
        raise ConfigError(
            f"solver.backend={cfg.solver.backend!r} is not allowed: expected one of {', '.join(backends)}"
        )
    methods = sorted({"auto", *(m for b in backend_names() for m in get_backend_methods(b))})
    if cfg.solver.method not in methods:
        raise ConfigError(f"solver.method={cfg.solver.method!r} is not allowed: expected one of {', '.join(methods)}")
    device = str(cfg.device)
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not allowed: expected cpu or cuda[:index]") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r} is not allowed: expected cpu or cuda[:index]")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device={device!r} is not allowed here: torch sees no CUDA device (use device=cpu)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device={device!r} is not allowed: torch sees {count} CUDA device(s)")


def schema_for(key: str, problem: str | None = None) -> dataclasses.Field | None:
    """The schema field of a dotted key; ``problem.<key>`` is looked up in the ``Config`` of
    ``problem`` (or, when not given, of every problem)."""
    head, _, rest = key.partition(".")
    if not rest:
        fields = {f.name: f for f in dataclasses.fields(RunSchema)}
        return fields.get(head)
    if head == "solver":
        return {f.name: f for f in dataclasses.fields(SolverSchema)}.get(rest)
    if head == "problem":
        for name in [problem] if problem in known_problems() else known_problems():
            try:
                fields = {f.name: f for f in dataclasses.fields(problem_module(name).Config)}  # type: ignore
            except Exception:  # a broken problem module must not hide the user's typo
                continue
            if rest in fields:
                return fields[rest]
    return None
