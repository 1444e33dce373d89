"""The Eigen backend against SciPy: CG, BiCGSTAB, SimplicialLDLT, SparseLU; adjoint gradients; failures.

The extension is compiled once per test session (and loaded from torch's
extension cache in later sessions).
"""

import os

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
import zoo

import sla
from sla import gallery
from sla.config import BackendUnavailableError, ConvergenceError, SingularMatrixError
from sla.solvers.backends import eigen as E
from sla.solvers.linear import registry

pytestmark = pytest.mark.skipif(
    not sla.is_eigen_available(), reason=f"Eigen backend unavailable: {registry.get_backend('eigen').check()}"
)


@pytest.fixture(scope="session", autouse=True)
def eigen_ext():
    """Build (or load) the extension once for the whole session."""
    return E.extension()


KINDS = {"spd": "spd", "nonsymmetric": "general", "indefinite": "symmetric"}  # case name -> zoo kind
CASES = [
    ("spd", "cg"),
    ("spd", "bicgstab"),
    ("spd", "ldlt"),
    ("spd", "lu"),
    ("nonsymmetric", "bicgstab"),
    ("nonsymmetric", "lu"),
    ("indefinite", "ldlt"),
    ("indefinite", "lu"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("matrix,method", CASES)
def test_matches_scipy(matrix, method, dtype):
    A = zoo.matrix(KINDS[matrix], dtype=dtype)
    n = A.shape[0]
    gen = torch.Generator().manual_seed(1)
    b = torch.randn(n, 3, dtype=torch.float64, generator=gen).to(dtype)
    ref = spla.spsolve(A.to_scipy("csc").astype(np.float64), b.double().numpy())
    x, info = A.solve(b, backend="eigen", method=method, return_info=True)
    assert info.backend == "eigen" and info.method == method and x.dtype == dtype
    direct = method in ("ldlt", "lu")
    tol = (1e-10 if direct else 1e-6) if dtype == torch.float64 else 1e-3
    np.testing.assert_allclose(x.double().numpy(), ref, rtol=tol, atol=tol * np.abs(ref).max())
    if not direct:
        assert info.converged and info.iterations > 0


@pytest.mark.parametrize(
    "matrix,method",
    [("spd", "cg"), ("spd", "ldlt"), ("nonsymmetric", "bicgstab"), ("nonsymmetric", "lu"), ("indefinite", "ldlt")],
)
def test_gradcheck_through_eigen_solve(matrix, method):
    A = zoo.matrix(KINDS[matrix], 12, seed=2)
    v = A.values.detach().clone().requires_grad_()
    b = torch.randn(A.shape[0], 2, dtype=torch.float64, requires_grad=True)
    perm = A.pattern.transpose()[1]
    symmetric = method in ("cg", "ldlt")  # these read one triangle: perturb symmetrically
    mtype = {"cg": "spd", "ldlt": "symmetric"}.get(method, "general")

    def f(v, b):
        w = (v + v[perm]) / 2 if symmetric else v
        return A.with_values(w).solve(b, backend="eigen", method=method, matrix_type=mtype, rtol=1e-13, atol=0.0)

    assert torch.autograd.gradcheck(f, (v, b), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["lu", "bicgstab"])
def test_transposed_apply_solves_with_A_transpose(method):
    A = zoo.matrix("general", 30, seed=3)
    st = E.BACKEND.method(method).setup(A, sla.SolverConfig(rtol=1e-13, atol=0.0), "general")
    b = torch.randn(30, 2, dtype=torch.float64)
    x, _ = E.BACKEND.method(method).apply(st, b, transpose=True)
    ref = spla.spsolve(A.to_scipy("csc").T.tocsc(), b.numpy())
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-9, atol=1e-11)


def test_batched_and_cached_state():
    A = gallery.poisson2d(6)
    vals = torch.stack([A.values, 2 * A.values])
    B = sla.SparseTensor._make(vals, A.pattern)
    b = torch.ones(36, dtype=torch.float64)
    x, info = B.solve(b, backend="eigen", method="ldlt", return_info=True)
    torch.testing.assert_close(x[1], x[0] / 2)
    _, info2 = B.solve(b, backend="eigen", method="ldlt", return_info=True)
    assert info2.cached


def test_failures_are_clear():
    S = sla.SparseTensor.from_dense(torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64))
    with pytest.raises(SingularMatrixError, match="eigen/lu"):
        S.solve(torch.ones(2, dtype=torch.float64), backend="eigen", method="lu")
    with pytest.raises(SingularMatrixError, match="eigen/ldlt"):
        S.solve(torch.ones(2, dtype=torch.float64), backend="eigen", method="ldlt", matrix_type="symmetric")
    A = gallery.poisson2d(20)
    with pytest.raises(ConvergenceError):
        A.solve(torch.ones(400, dtype=torch.float64), backend="eigen", method="cg", maxiter=3)
    with pytest.raises(TypeError, match="supports dtypes"):
        A.to(torch.complex128).solve(torch.ones(400, dtype=torch.complex128), backend="eigen", method="lu")
    with pytest.raises(ValueError, match="diagonal \\(Jacobi\\) preconditioner"):
        A.solve(torch.ones(400, dtype=torch.float64), backend="eigen", method="cg", preconditioner="none")
    with pytest.raises(ValueError, match="needs a matrix of type"):
        zoo.matrix("general").solve(torch.ones(40, dtype=torch.float64), backend="eigen", method="cg")


def test_missing_headers_are_reported(monkeypatch):
    monkeypatch.setattr(E, "eigen_include_dir", lambda: None)
    assert not sla.is_eigen_available()
    text = sla.show_backends(file=open("/dev/null", "w"))
    assert "Eigen headers not found" in text and "sla-torch[eigen]" in text
    monkeypatch.setattr(E, "_module", None)
    with pytest.raises(BackendUnavailableError, match="Eigen headers not found"):
        gallery.poisson2d(3).solve(torch.ones(9, dtype=torch.float64), backend="eigen", method="lu")


def test_failed_compile_says_why(monkeypatch, tmp_path):
    bad = tmp_path / "broken_ext.cpp"
    bad.write_text("this is not C++;\n")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setattr(E, "_module", None)
    monkeypatch.setattr(E, "_build_error", None)
    monkeypatch.setattr(E, "_SOURCE", str(bad))
    monkeypatch.setattr(E, "_NAME", "sla_eigen_broken_test")
    with pytest.raises(RuntimeError, match="broken_ext.cpp.*failed"):
        E.extension()
    assert "error" in E._build_error.lower()
    assert "failed to compile" in E.BACKEND.check()


def test_include_dir_from_environment(monkeypatch, tmp_path):
    (tmp_path / "Eigen").mkdir()
    (tmp_path / "Eigen" / "Sparse").write_text("// stand-in header\n")
    monkeypatch.setenv("EIGEN_INCLUDE_DIR", str(tmp_path))
    assert E.eigen_include_dir() == str(tmp_path)
    monkeypatch.setenv("EIGEN_INCLUDE_DIR", str(tmp_path / "nowhere"))
    assert E.eigen_include_dir() != str(tmp_path / "nowhere")


# ------------------------------------------------------- an interrupted first build
def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_stale_lock_of_a_killed_build_is_removed(tmp_path, caplog):
    """torch waits forever on the ``lock`` a killed build leaves; the recorded dead builder frees it."""
    import socket

    lock = tmp_path / "lock"
    lock.write_text("")
    (tmp_path / E._OWNER).write_text(f"{_dead_pid()} {socket.gethostname()}")
    with caplog.at_level("WARNING", logger="sla"):
        E._clear_stale_lock(str(tmp_path), timeout=30)
    assert not lock.exists()
    assert "stale lock" in caplog.text and "no longer running" in caplog.text
    # no builder recorded: stale once older than the timeout
    lock.write_text("")
    (tmp_path / E._OWNER).unlink()
    old = lock.stat().st_mtime - 100
    os.utime(lock, (old, old))
    E._clear_stale_lock(str(tmp_path), timeout=50)
    assert not lock.exists()


def test_a_live_build_is_waited_for_then_a_clear_error(tmp_path, monkeypatch):
    import socket

    lock = tmp_path / "lock"
    lock.write_text("")
    (tmp_path / E._OWNER).write_text(f"{os.getpid()} {socket.gethostname()}")  # alive: this process
    with pytest.raises(RuntimeError, match=rf"timed out after 1 s .*pid {os.getpid()}.*delete that file"):
        E._clear_stale_lock(str(tmp_path), timeout=1, poll=0.1)
    assert lock.exists()
    monkeypatch.setenv("SLA_EIGEN_BUILD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SLA_EIGEN_BUILD_TIMEOUT must be a number of seconds, got 'soon'"):
        E.build_timeout()


def test_build_eigen_module_builds_ahead(caplog):
    from sla import build_eigen

    with caplog.at_level("INFO", logger="sla"):
        assert build_eigen.main([]) == 0
    assert "ready" in caplog.text and E.is_built()
