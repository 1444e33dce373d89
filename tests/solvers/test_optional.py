"""Optional packages: the presence check and the kernel-only load of a compiled extension."""

import subprocess
import sys

import pytest

from sla.solvers._optional import extension, installed


def test_missing_packages_and_modules_give_none():
    assert not installed("no_such_package_sla")
    assert extension("no_such_package_sla.core") is None
    assert extension("sla.no_such_extension") is None  # a package, but no compiled file of that name


@pytest.mark.skipif(not installed("pyamg"), reason="needs pyamg (pip install pyamg)")
def test_pyamg_kernel_loads_without_the_package():
    """The aggregation kernel alone: neither pyamg's __init__ nor SciPy is imported, and the same
    kernel is what a later ``import pyamg`` uses."""
    code = (
        "import sys\n"
        "from sla.solvers._optional import extension\n"
        "m = extension('pyamg.amg_core.smoothed_aggregation')\n"
        "assert m is not None and 'pyamg' not in sys.modules and 'scipy.sparse' not in sys.modules\n"
        "import numpy as np\n"
        "ap = np.array([0, 1, 3, 5, 6], dtype=np.int32); aj = np.array([1, 0, 2, 1, 3, 2], dtype=np.int32)\n"
        "x = np.empty(4, dtype=np.int32); c = np.empty(4, dtype=np.int32)\n"
        "assert m.standard_aggregation(4, ap, aj, x, c) == 2 and x.tolist() == [0, 0, 1, 1]\n"
        "from pyamg import amg_core\n"
        "y = np.empty(4, dtype=np.int32)\n"
        "assert amg_core.standard_aggregation(4, ap, aj, y, c) == 2 and y.tolist() == x.tolist()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
