"""Check the command line before Hydra runs anything: compose every job of the run (each
combination of a ``--multirun`` sweep) and check it, so a bad value stops the run with one
line (key, value, what is allowed) and exit code 2 instead of Hydra's multi-line report
or a failure minutes later."""

from __future__ import annotations

import dataclasses
import os
import re

from .schema import ConfigError, check, configs_dir, known_problems, known_solvers, problem_module, schema_for

# Hydra flags that take a value, and flags after which nothing runs
_VALUE_FLAGS = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-p", "--package", "-c"}
_NO_RUN = {"-h", "--help", "--hydra-help", "--version", "-i", "--info", "--cfg", "--shell-completion", "-sc"}
_GROUPS = {"problem": known_problems, "solver": known_solvers}


def validate(argv: list[str]) -> None:
    """Compose and :func:`~sla.run.schema.check` every job ``argv`` asks for; one line and exit 2 on error."""
    from . import fail

    if any(a in _NO_RUN or a.split("=")[0] in _NO_RUN for a in argv) or any(a in _VALUE_FLAGS for a in argv):
        return  # Hydra's own modes, or another config: the job itself still checks its config
    overrides = [a for a in argv if not a.startswith("-")]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    try:
        jobs = _jobs(overrides, multirun)
        for job in jobs:
            _compose_and_check(job)
    except ConfigError as exc:
        fail(str(exc), exc)
    except Exception as exc:  # Hydra's and OmegaConf's composition errors
        fail(explain(exc, overrides), exc)


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    ours = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    if not multirun:
        return [ours]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(ours)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _compose_and_check(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=configs_dir(), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    check(cfg)


def _values(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides:
        key, eq, value = o.lstrip("+~").partition("=")
        if eq:
            out[key] = value
    return out


def _chain(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def explain(exc: BaseException, overrides: list[str]) -> str:
    """One line for a Hydra/OmegaConf composition error: the key, the value, what is allowed."""
    values = _values(overrides)
    problem = values.get("problem") or _default_problem()
    for e in _chain(exc):
        text = str(e)
        missing = re.search(r"Could not find '(\w+)/([^']*)'", text)
        if missing and missing.group(1) in _GROUPS:
            group, name = missing.groups()
            return f"{group}={name!r} is not allowed: expected one of {', '.join(_GROUPS[group]())}"
        key = getattr(e, "full_key", None)
        if not key:
            continue
        if type(e).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
            return _unknown_key(key, problem)
        f = schema_for(key, problem)
        value = values.get(key, getattr(e, "value", None))
        if f is not None:
            return f"{key}={value!r} is not allowed: expected {_allowed(f)}"
        return f"{key}={value!r}: {text.splitlines()[0]}"
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    if "Ambiguous value" in first:
        return first + " (to sweep over the values, add --multirun)"
    return first


def _allowed(f: dataclasses.Field) -> str:
    from .schema import problems_package

    return problems_package().allowed(f)


def _unknown_key(key: str, problem: str | None) -> str:
    head, _, rest = key.rpartition(".")
    if head == "problem":
        name = problem or _default_problem()
        schema = getattr(problem_module(name), "Config", None)
        if schema is None:
            return f"{key} is not a key of problem {name!r}"
        names = [f.name for f in dataclasses.fields(schema) if f.name != "name"]
        return f"{key} is not a key of problem {name!r}: expected one of {', '.join(names)}"
    if head == "solver":
        from .schema import SolverSchema

        return f"{key} is not a key of the solver config: expected one of {', '.join(_names(SolverSchema))}"
    from .schema import RunSchema

    return f"{key} is not a key of the runner's config: expected one of {', '.join(_names(RunSchema))}"


def _names(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _default_problem() -> str:
    with open(os.path.join(configs_dir(), "config.yaml")) as fh:
        m = re.search(r"-\s*problem:\s*(\w+)", fh.read())
    return m.group(1) if m else "poisson2d"
