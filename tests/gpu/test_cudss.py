"""cuDSS backend: zoo x methods x dtypes against SciPy on the CPU, gradients, plan reuse, failures.

GPU tests run on the device machine; without CUDA / nvmath-python they skip with the
backend's own reason.  The CPU-side tests (errors, show_backends text, 'auto' choice
logic) run everywhere.
"""

import os

import pytest
import torch
import zoo

import sla
from sla import SparseTensor, gallery
from sla.solvers.backends import cudss as cb
from sla.solvers.linear import registry

_WHY = registry.get_backend("cudss").check()
needs_cudss = pytest.mark.skipif(_WHY is not None, reason=f"cudss backend unavailable: {_WHY}")
cpu_only = pytest.mark.skipif(
    _WHY is None, reason="cudss is available here: the unavailable-path test needs a machine without it"
)

DTYPES = [torch.float64, torch.float32, torch.complex128, torch.complex64]
CASES = [  # (method, kind)
    ("cholesky", "spd"),
    ("ldlt", "spd"),
    ("ldlt", "symmetric"),
    ("lu", "general"),
    ("lu", "symmetric"),
    ("ldlt", "csym"),
]


def _tol(dtype):
    return 1e-3 if dtype in (torch.float32, torch.complex64) else 1e-9


# ------------------------------------------------------------------ CPU side
@cpu_only
def test_unavailable_backend_names_the_extra():
    A = gallery.poisson1d(4)
    with pytest.raises(sla.BackendUnavailableError, match=r"pip install 'sla-torch\[cuda\]'"):
        A.solve(torch.ones(4, dtype=torch.float64), backend="cudss", method="lu")
    assert not sla.is_cudss_available()


@cpu_only
def test_show_backends_says_why():
    with open(os.devnull, "w") as f:
        text = sla.show_backends(file=f)
    line = next(ln for ln in text.splitlines() if ln.startswith("cudss"))
    assert "cholesky,ldlt,lu" in line and "no: " in line and "sla-torch[cuda]" in line
    assert ("nvmath-python" in line) or ("CUDA" in line) or ("cuDSS" in line)


def test_registered_first_on_cuda():
    assert registry.priority("cuda")[0] == "cudss"
    assert set(registry.get_backend_methods("cudss")) == {"cholesky", "ldlt", "lu"}


def test_choose_by_type_and_size(monkeypatch):
    c = registry.get_backend("cudss").choose
    assert c(100, torch.float64, "spd") == "cholesky"
    assert c(100, torch.complex128, "hpd") == "cholesky"
    assert c(100, torch.float64, "symmetric") == "ldlt"
    assert c(100, torch.complex128, "hermitian") == "ldlt"
    assert c(100, torch.float64, "general") == "lu"
    assert c(100, torch.float64, "spd", "iterative") is None
    big = cb.AUTO_MAX_N + 1
    monkeypatch.setattr(cb, "_others_take_large", lambda n, dtype, mtype: True)
    assert c(big, torch.float64, "spd") is None  # 'auto' leaves large systems to the Krylov backend
    assert c(big, torch.float64, "spd", "direct") == "cholesky"  # A.lu() still factorises
    monkeypatch.setattr(cb, "_others_take_large", lambda n, dtype, mtype: False)
    assert c(big, torch.float64, "spd") == "cholesky"  # nobody else: stay direct


def test_explicit_backend_ignores_the_auto_size_limit(monkeypatch):
    monkeypatch.setattr(cb, "AUTO_MAX_N", 2)
    monkeypatch.setattr(cb, "_others_take_large", lambda n, dtype, mtype: True)
    dev = "cuda" if _WHY is None else "cpu"
    A = gallery.poisson1d(4, device=dev)
    b = torch.ones(4, dtype=torch.float64, device=dev)
    if _WHY is None:
        _, info = A.solve(b, backend="cudss", return_info=True)
        assert info.method == "cholesky"
    else:  # the choice goes through; only then the missing package is reported
        with pytest.raises(sla.BackendUnavailableError):
            A.solve(b, backend="cudss")


def test_mtlayer_from_environment(monkeypatch, tmp_path):
    lib = tmp_path / "libcudss_mtlayer_gomp.so.0"
    lib.write_bytes(b"")
    monkeypatch.setenv("CUDSS_MTLAYER", str(lib))
    assert cb.mtlayer_path() == str(lib)
    monkeypatch.setenv("CUDSS_MTLAYER", str(tmp_path / "missing.so"))
    monkeypatch.delenv("CUDSS_THREADING_LIB", raising=False)
    assert cb.mtlayer_path() != str(tmp_path / "missing.so")


# ------------------------------------------------------------------ GPU side
@pytest.mark.gpu
@needs_cudss
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method,kind", CASES)
@pytest.mark.parametrize("batch", [None, 3])
def test_zoo_matches_scipy(method, kind, dtype, batch):
    if kind == "csym" and not dtype.is_complex:
        pytest.skip("complex symmetric needs a complex dtype")
    A = zoo.matrix(kind, dtype=dtype, batch=batch, device="cuda")
    shape = (batch, A.shape[-1], 4) if batch else (A.shape[-1], 4)
    b = torch.randn(*shape, dtype=dtype, device="cuda")
    x, info = A.solve(b, backend="cudss", method=method, return_info=True)
    assert info.backend == "cudss" and info.method == method and x.shape == b.shape and x.is_cuda
    ref = zoo.scipy_solve(
        A.to(torch.complex128 if dtype.is_complex else torch.float64),
        b.to(torch.complex128 if dtype.is_complex else torch.float64),
    )
    err = (x.cpu().to(ref.dtype) - ref).norm() / ref.norm()
    assert err < _tol(dtype)
    assert info.residual < _tol(dtype)


@pytest.mark.gpu
@needs_cudss
@pytest.mark.parametrize(
    "kind,dtype,method",
    [
        ("spd", torch.float64, "cholesky"),
        ("symmetric", torch.float64, "ldlt"),
        ("general", torch.float64, "lu"),
        ("spd", torch.complex128, "cholesky"),
        ("symmetric", torch.complex128, "ldlt"),
        ("csym", torch.complex128, "ldlt"),
        ("general", torch.complex128, "lu"),
    ],
)
def test_gradcheck(kind, dtype, method):
    A = zoo.matrix(kind, n=10, dtype=dtype, device="cuda")
    v = A.values.clone().requires_grad_(True)
    b = torch.randn(10, 2, dtype=dtype, device="cuda", requires_grad=True)

    _, perm = A.pattern.transpose()
    mtype = {"csym": "symmetric", "general": "general"}.get(kind, kind)
    if dtype.is_complex and kind in ("spd", "symmetric"):
        mtype = {"spd": "hpd", "symmetric": "hermitian"}[kind]

    def f(v, b):
        if kind in ("spd", "symmetric"):  # perturb symmetrically: these factorisations read a Hermitian matrix
            v = (v + v[perm].conj()) / 2
        elif kind == "csym":
            v = (v + v[perm]) / 2
        return A.with_values(v).solve(b, backend="cudss", method=method, matrix_type=mtype)

    assert torch.autograd.gradcheck(f, (v, b), atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
@needs_cudss
def test_batched_gradient_matches_dense():
    A = zoo.matrix("general", n=12, batch=3, device="cuda")
    v = A.values.clone().requires_grad_(True)
    b = torch.randn(3, 12, 2, dtype=torch.float64, device="cuda")
    A.with_values(v).solve(b, backend="cudss").square().sum().backward()
    v2 = A.values.clone().requires_grad_(True)
    D = A.with_values(v2).to_dense()
    torch.linalg.solve(D, b).square().sum().backward()
    assert torch.allclose(v.grad, v2.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.gpu
@needs_cudss
def test_plan_cached_on_pattern_and_refactorised():
    A = gallery.poisson2d(20, device="cuda")
    b = torch.randn(A.shape[0], dtype=torch.float64, device="cuda")
    x1 = A.solve(b, backend="cudss")
    plans = [k for k in A.pattern.cache if isinstance(k, tuple) and k[0] == "cudss"]
    assert len(plans) == 1
    plan = A.pattern.cache[plans[0]]
    A2 = A.with_values(A.values * 2.0)
    x2, info = A2.solve(b, backend="cudss", return_info=True)
    assert not info.cached and A.pattern.cache[plans[0]] is plan  # new values: refactorised, same plan
    assert torch.allclose(x2, x1 / 2, rtol=1e-10, atol=1e-12)
    _, info = A2.solve(b, backend="cudss", return_info=True)
    assert info.cached  # same values version: the factors are reused


@pytest.mark.gpu
@needs_cudss
def test_stale_state_refactorises_for_its_own_backward():
    """Forward with A1, forward with A2 (same pattern, same plan), then backward of A1."""
    A = zoo.matrix("general", n=15, device="cuda")
    b = torch.randn(15, dtype=torch.float64, device="cuda")
    v1 = A.values.clone().requires_grad_(True)
    x1 = A.with_values(v1).solve(b, backend="cudss")
    v2 = (A.values * 3).requires_grad_(True)
    x2 = A.with_values(v2).solve(b, backend="cudss")
    (x1.sum() + 0 * x2.sum()).backward()
    w = A.values.clone().requires_grad_(True)
    torch.linalg.solve(A.with_values(w).to_dense(), b).sum().backward()
    assert torch.allclose(v1.grad, w.grad, rtol=1e-8, atol=1e-10)
    assert torch.allclose(x1, torch.linalg.solve(A.to_dense(), b), rtol=1e-9, atol=1e-12)
    # the cached state of v1 solves again after v2 used the plan: it must refactorise first
    x1b = A.with_values(v1).solve(b, backend="cudss")
    assert torch.allclose(x1b, x1, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@needs_cudss
def test_singular_raises():
    D = torch.randn(8, 8, dtype=torch.float64)
    D[3] = D[5]  # rank deficient
    A = SparseTensor.from_dense(D).to("cuda")
    b = torch.randn(8, dtype=torch.float64, device="cuda")
    for method in ("lu",):
        with pytest.raises(sla.SingularMatrixError):
            A.solve(b, backend="cudss", method=method)
    S = D @ D.T  # symmetric positive semidefinite, singular
    with pytest.raises(sla.SingularMatrixError):
        SparseTensor.from_dense(S).to("cuda").solve(b, backend="cudss", method="ldlt")


@pytest.mark.gpu
@needs_cudss
def test_auto_picks_cudss_and_cholesky_falls_back():
    A = gallery.poisson2d(16, device="cuda")
    b = torch.randn(A.shape[0], dtype=torch.float64, device="cuda")
    x, info = A.solve(b, return_info=True)
    assert (info.backend, info.method) == ("cudss", "cholesky") and info.residual < 1e-12
    # symmetric, positive diagonal, indefinite: guessed SPD, Cholesky fails, LDL^T takes over
    D = torch.diag(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    D[0, 1] = D[1, 0] = 2.0
    B = SparseTensor.from_dense(D).to("cuda")
    c = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, device="cuda")
    y, info = B.solve(c, return_info=True)
    assert info.backend == "cudss" and info.method in ("ldlt", "lu")
    assert torch.allclose(y.cpu(), torch.linalg.solve(D, c.cpu()), rtol=1e-10)


@pytest.mark.gpu
@needs_cudss
def test_lu_factorization_holds_cudss():
    A = zoo.matrix("general", n=20, device="cuda")
    lu = A.lu()
    assert lu.backend == "cudss" and lu.method == "lu"
    v = A.values.clone().requires_grad_(True)
    lu = A.with_values(v).lu()
    b = torch.randn(20, 3, dtype=torch.float64, device="cuda")
    x = lu.solve(b)
    ref = torch.linalg.solve(A.to_dense(), b)
    assert torch.allclose(x, ref, rtol=1e-9, atol=1e-12)
    x.sum().backward()
    w = A.values.clone().requires_grad_(True)
    torch.linalg.solve(A.with_values(w).to_dense(), b).sum().backward()
    assert torch.allclose(v.grad, w.grad, rtol=1e-8, atol=1e-10)
