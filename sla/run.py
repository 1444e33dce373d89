"""Hydra entry point: ``python -m sla.run problem=poisson2d solver=cg [key=value ...]``.

Composes ``configs/config.yaml`` with one ``configs/problem/*.yaml`` and one
``configs/solver/*.yaml``, runs ``problems/<problem.name>.py``, logs a summary
and (with ``save=true``) writes ``summary.json`` -- and a ``.vtu`` of the
fields where the problem has a mesh -- into Hydra's output folder.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys

import torch

from .config import SolverConfig

log = logging.getLogger("sla.run")

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _solver_config(node) -> SolverConfig:
    fields = {k: v for k, v in dict(node).items() if v is not None}
    return SolverConfig(**fields)


def execute(cfg) -> dict:
    """Run one configured problem; returns the summary (also usable without Hydra)."""
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {cfg.dtype!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} asked for, but torch sees no CUDA device")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    root = os.path.dirname(_CONFIGS)
    if root not in sys.path:
        sys.path.insert(0, root)
    name = cfg.problem.name
    try:
        problem = importlib.import_module(f"problems.{name}")
    except ModuleNotFoundError as exc:
        known = sorted(f[:-5] for f in os.listdir(os.path.join(_CONFIGS, "problem")) if f.endswith(".yaml"))
        raise ValueError(f"unknown problem {name!r}; known problems: {known}") from exc
    solver = _solver_config(cfg.solver)
    result = problem.run(cfg.problem, solver, torch.device(cfg.device), _DTYPES[cfg.dtype])
    summary = {"problem": name, "device": cfg.device, "dtype": cfg.dtype, **result.summary}
    for k, v in summary.items():
        log.info("%-28s %s", k, v)
    if cfg.get("save"):
        out = _output_dir()
        with open(os.path.join(out, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2, default=str)
        if result.mesh is not None:
            from .assembly import write_mesh

            write_mesh(
                os.path.join(out, f"{name}.vtu"), result.mesh, point_data=result.point_data, cell_data=result.cell_data
            )
        log.info("wrote %s", out)
    return summary


def _output_dir() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir
    except (ImportError, ValueError):
        return os.getcwd()


def main() -> None:
    try:
        import hydra
    except ImportError as exc:
        raise SystemExit("the runner needs Hydra: pip install 'sla[run]'") from exc

    @hydra.main(version_base=None, config_path=_CONFIGS, config_name="config")
    def _main(cfg) -> None:
        execute(cfg)

    _main()


if __name__ == "__main__":
    main()
