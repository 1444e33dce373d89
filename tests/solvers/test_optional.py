"""Optional packages: the presence check and the kernel-only load of a compiled extension."""

import subprocess
import sys

import pytest

from sla._optional import extension, installed


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
        "from sla._optional import extension\n"
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


@pytest.mark.parametrize("index", ["int32", "int64"])
def test_cpu_transpose_by_scipy_kernel_matches_the_public_path(index, monkeypatch):
    """``Pattern.transpose`` on the CPU runs SciPy's counting sort from its compiled module alone:
    the same transpose (row starts, columns, permutation) as SciPy's public ``tocsc``, on a
    rectangular pattern with empty rows and columns, in either index type."""
    import numpy as np
    import scipy.sparse as sp

    from sla import pattern

    rng = np.random.default_rng(0)
    S = sp.random(40, 70, density=0.08, random_state=rng, format="csr")
    S = S[np.r_[0:10, 12:40]][:, np.r_[0:60, 63:70]].tocsr()  # (the slices keep empty rows and columns)
    S.sort_indices()
    crow, col = S.indptr.astype(index), S.indices.astype(index)
    got = pattern._csr_to_csc(crow, col, *S.shape)
    monkeypatch.setattr("sla._optional.extension", lambda name: None)  # the public path
    ref = pattern._csr_to_csc(crow, col, *S.shape)
    for g, r in zip(got, ref):
        assert np.array_equal(g.numpy(), r.numpy())
    assert (
        got[0].numpy().dtype == crow.dtype and got[1].numpy().dtype == crow.dtype and got[2].numpy().dtype == np.int64
    )
    T = S.T.tocsr()
    assert np.array_equal(got[0].numpy(), T.indptr) and np.array_equal(got[1].numpy(), T.indices)
    assert np.array_equal(S.tocoo().col[got[2].numpy()], np.repeat(np.arange(S.shape[1]), np.diff(T.indptr)))


def test_cpu_transpose_does_not_import_scipy_sparse():
    """``import scipy.sparse`` took 0.16-0.21 s of a CPU process's first solve, for one kernel."""
    code = (
        "import sys, torch\n"
        "from sla import SparseTensor\n"
        "A = SparseTensor(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]), (3, 3))\n"
        "pt, perm = A.pattern.transpose()\n"
        "assert pt.crow.tolist() == [0, 1, 2, 3] and pt.ccol.tolist() == [2, 0, 1] and perm.tolist() == [2, 0, 1]\n"
        "assert 'scipy.sparse' not in sys.modules, 'scipy.sparse imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
