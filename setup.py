"""Package layout (the metadata is in pyproject.toml).

The repository keeps ``problems/`` and ``configs/`` at the top; the wheel ships them
inside the ``sla`` namespace as ``sla.problems`` and ``sla/configs`` (package data),
so no generic top-level ``problems`` package lands in site-packages.  The Eigen
backend's C++ source is package data as well (it is compiled on first use).
"""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# configs/ and each config group in it (configs/problem, configs/solver, ...): yaml-only packages
CONFIGS = ["sla.configs"] + [
    f"sla.configs.{d}"
    for d in sorted(os.listdir(os.path.join(HERE, "configs")))
    if os.path.isdir(os.path.join(HERE, "configs", d))
]

setup(
    packages=[*find_packages(include=["sla", "sla.*"]), "sla.problems", *CONFIGS],
    package_dir={"sla.problems": "problems", "sla.configs": "configs"},
    package_data={"sla": ["py.typed", "solvers/backends/eigen_ext.cpp"], **{c: ["*.yaml"] for c in CONFIGS}},
)
