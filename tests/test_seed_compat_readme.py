"""The seed project's README code blocks run on sla with only the import renamed.

Each block below is copied verbatim from the seed's README (``torch_sla``); the test
renames ``torch_sla`` to ``sla`` and runs it.  Where a block uses names the README
defines elsewhere in prose (``val``, ``row``, ``col``, ``n``, ``x``), the test provides
them (``CONTEXT``), as a reader would.  Results are checked against dense torch.
"""

import os

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")

# the README's 3 x 3 example matrix as COO (the prose around its batched/persistence/nonlinear blocks)
CONTEXT = """
import torch
val = torch.tensor([4.0, -1.0, -1.0, 4.0, -1.0, -1.0, 4.0], dtype=torch.float64)
row = torch.tensor([0, 0, 1, 1, 1, 2, 2])
col = torch.tensor([0, 1, 0, 1, 2, 1, 2])
shape = (3, 3)
n = 3
x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
"""

SHOW_BACKENDS = """
import torch_sla
torch_sla.show_backends()
"""

QUICK_START = """
import torch
from torch_sla import SparseTensor
# Create sparse matrix from dense (for small matrices)
dense = torch.tensor([[4.0, -1.0, 0.0],
[-1.0, 4.0, -1.0],
[ 0.0, -1.0, 4.0]], dtype=torch.float64)
A = SparseTensor.from_dense(dense)
# Solve Ax = b
b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
x = A.solve(b)
# Specify backend and method
x = A.solve(b, backend='scipy', method='lu')
"""

CUDA_SOLVE = """
# Move to CUDA
A_cuda = A.cuda()
b_cuda = b.cuda()
# Auto-selects cudss+cholesky (best for CUDA)
x = A_cuda.solve(b_cuda)
# Or explicitly specify
x = A_cuda.solve(b_cuda, backend='cudss', method='cholesky')
# For very large problems (DOF > 2M), use iterative
x = A_cuda.solve(b_cuda, backend='pytorch', method='cg')
"""

BATCHED = """
from torch_sla import SparseTensor
batch_size = 4
val_batch = val.unsqueeze(0).expand(batch_size, -1).clone()
# Create batched SparseTensor [B, M, N]
A = SparseTensor(val_batch, row, col, (batch_size, 3, 3))
b = torch.randn(batch_size, 3, dtype=torch.float64)
x = A.solve(b) # Shape: [batch_size, 3]
"""

MULTI_RHS = """
from torch_sla import SparseTensor
A = SparseTensor(val, row, col, (3, 3))
b = torch.randn(3, 5, dtype=torch.float64) # 5 right-hand sides
x = A.solve(b) # Shape: [3, 5]
"""

GRADIENTS_SETUP = """
from torch_sla import SparseTensor
A = SparseTensor(val, row, col, (3, 3))
b = torch.randn(3, dtype=torch.float64)
"""

GRADIENTS = """
val = val.requires_grad_(True)
b = b.requires_grad_(True)
x = A.solve(b)
loss = x.sum()
loss.backward()
print(val.grad) # Gradient w.r.t. matrix values
print(b.grad) # Gradient w.r.t. RHS
"""

PERSISTENCE = """
from torch_sla import SparseTensor, save_sparse, load_sparse
A = SparseTensor(val, row, col, shape)
A.save("matrix.safetensors")
A = SparseTensor.load("matrix.safetensors", device="cuda")
# Matrix Market interop
from torch_sla import save_mtx, load_mtx
save_mtx(A, "matrix.mtx")
A = load_mtx("matrix.mtx")
"""

NONLINEAR = """
from torch_sla import SparseTensor
# Create sparse matrix (e.g., FEM stiffness matrix)
A = SparseTensor(val, row, col, (n, n))
# Define nonlinear residual: A @ u + u² = f
def residual(u, A, f):
    return A @ u + u**2 - f
# Parameters with gradients
f = torch.randn(n, requires_grad=True)
u0 = torch.zeros(n)
# Solve with Newton-Raphson
u = A.nonlinear_solve(residual, u0, f, method='newton')
# Gradients flow via adjoint method
loss = u.sum()
loss.backward()
print(f.grad) # ∂L/∂f via implicit differentiation
"""

PROPERTIES = """
from torch_sla import SparseTensor
# Create sparse matrix from dense (for small matrices)
dense = torch.tensor([[4.0, -1.0, 0.0],
[-1.0, 4.0, -1.0],
[ 0.0, -1.0, 4.0]], dtype=torch.float64)
A = SparseTensor.from_dense(dense)
# Norms
norm = A.norm('fro') # Frobenius norm
# Determinant (with gradient support)
det = A.det() # ∂det/∂A = det(A)·(A⁻¹)ᵀ
# Note: CPU is faster for sparse matrices (CUDA uses dense conversion)
# For CUDA tensors: A_cuda.cpu().det() is ~3x faster than A_cuda.det()
# Eigenvalues
eigenvalues, eigenvectors = A.eigsh(k=6)
# SVD
U, S, Vt = A.svd(k=10)
# Matrix-vector product
y = A @ x
# LU factorization for repeated solves
lu = A.lu()
x = lu.solve(b)
"""

DET_CUDA = """
# ❌ Slow for sparse matrices
det = A_cuda.det() # 2.5 ms
# ✅ Fast - use CPU even for CUDA tensors
det = A_cuda.cpu().det() # 1.3 ms (1.9x faster!)
"""

DISTRIBUTED = """
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch_sla import SparseTensor, DSparseTensor, solve, SolverConfig
dist.init_process_group(backend="nccl") # or "gloo" for CPU
"""


def run(*blocks: str, dtype: str = "float64") -> dict:
    scope: dict = {}
    exec(compile(CONTEXT.replace("float64", dtype), "CONTEXT", "exec"), scope)
    for block in blocks:
        exec(compile(block.replace("torch_sla", "sla"), "seed README", "exec"), scope)
    return scope


def dense3():
    return torch.tensor([[4.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 4.0]], dtype=torch.float64)


def test_show_backends(capsys):
    run(SHOW_BACKENDS)
    assert "scipy" in capsys.readouterr().out


def test_quick_start():
    s = run(QUICK_START)
    torch.testing.assert_close(s["x"], torch.linalg.solve(dense3(), s["b"]))


def test_batched_matrices():
    s = run(BATCHED)
    assert s["x"].shape == (4, 3)
    torch.testing.assert_close(s["x"], torch.linalg.solve(dense3(), s["b"].T).T)


def test_multiple_right_hand_sides():
    s = run(MULTI_RHS)
    assert s["x"].shape == (3, 5)
    torch.testing.assert_close(s["x"], torch.linalg.solve(dense3(), s["b"]))


def test_gradients(capsys):
    s = run(GRADIENTS_SETUP, GRADIENTS)  # the README builds A from val before this block
    D = dense3()
    lam = torch.linalg.solve(D.T, torch.ones(3, dtype=torch.float64))
    xs = torch.linalg.solve(D, s["b"].detach())
    torch.testing.assert_close(s["b"].grad, lam)
    torch.testing.assert_close(s["val"].grad, -lam[s["row"]] * xs[s["col"]])
    assert "tensor" in capsys.readouterr().out


def test_persistence(tmp_path, monkeypatch):
    """On a machine without CUDA the load goes to the CPU (the block's only edit)."""
    pytest.importorskip("safetensors")
    monkeypatch.chdir(tmp_path)
    block = PERSISTENCE if torch.cuda.is_available() else PERSISTENCE.replace('device="cuda"', 'device="cpu"')
    s = run(block)
    torch.testing.assert_close(s["A"].to_dense().cpu(), dense3())
    assert os.path.exists("matrix.safetensors") and os.path.exists("matrix.mtx")


def test_nonlinear(capsys):
    s = run(NONLINEAR, dtype="float32")  # the block's f and u0 are float32 (torch's default), so is A
    A, u, f = s["A"], s["u"].detach(), s["f"]
    D = A.to_dense()
    torch.testing.assert_close(D @ u + u**2, f.detach(), rtol=1e-5, atol=1e-5)  # float32, as in the block
    J = D + torch.diag(2 * u)
    torch.testing.assert_close(f.grad, torch.linalg.solve(J.T, torch.ones(3)), rtol=1e-4, atol=1e-5)


def test_properties():
    s = run(QUICK_START, PROPERTIES)
    D = dense3()
    torch.testing.assert_close(s["norm"], torch.linalg.matrix_norm(D))
    torch.testing.assert_close(s["det"], torch.linalg.det(D))
    torch.testing.assert_close(s["eigenvalues"], torch.linalg.eigvalsh(D))
    torch.testing.assert_close(s["S"].sort(descending=True).values, torch.linalg.svdvals(D))
    torch.testing.assert_close(s["y"], s["b"])  # y = A @ x with x = A^{-1} b from the quick start
    torch.testing.assert_close(s["x"], torch.linalg.solve(D, s["b"]))


@pytest.mark.gpu
@CUDA
def test_cuda_blocks():
    pytest.importorskip("nvmath", reason="the block names backend='cudss' (nvmath-python)")
    s = run(QUICK_START, CUDA_SOLVE, DET_CUDA)
    torch.testing.assert_close(s["x"].cpu(), torch.linalg.solve(dense3(), s["b"]), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(s["det"], torch.linalg.det(dense3()))


def test_distributed_blocks(monkeypatch):
    """The README's distributed preamble, in a one-process gloo world (its comment's CPU choice);
    the multi-rank code that follows it runs in tests/distributed/test_api.py."""
    import torch.distributed as dist

    import sla

    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    try:
        s = run(DISTRIBUTED.replace('backend="nccl"', 'backend="gloo"'))
        assert dist.is_initialized() and dist.get_world_size() == 1
        assert s["DSparseTensor"] is sla.DSparseTensor and s["solve"] is sla.solve
        assert s["SolverConfig"] is sla.SolverConfig and callable(s["init_device_mesh"])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
