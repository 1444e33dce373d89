"""``sla.warmup``: a process's one-off solver costs, paid when the caller chooses."""

from __future__ import annotations

import time

import torch

__all__ = ["warmup"]

_PRECONDITIONERS = ("amg", "gmg", "jacobi", "none")
_N = 64  # grid side of the warm-up matrix: 4,096 unknowns, a three-level AMG hierarchy


def warmup(
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.float64,
    preconditioners: tuple[str, ...] = ("amg", "gmg"),
) -> float:
    """Solve a small system on ``device`` once per preconditioner, so that the process's first real
    solves there do not pay the process's one-off costs.

    On a GPU, CUDA loads each kernel family on its first call in a process and cuSPARSE starts on
    its first product: the first AMG-CG solve of a process costs about 0.2-0.4 s more than a later
    one on an H200 (``benchmarks/bench_first_solve.py``).  Call this at startup, or while other
    work (loading data, meshing) keeps the program busy; solves on matrices of any size then start
    warm.  The single-precision coarse levels of AMG and GMG (from 1M unknowns on GPUs) have kernels
    of their own that only a solve of that size loads.

    Parameters
    ----------
    device : str or torch.device
        Where the solves will run (``'cuda'``, ``'cuda:1'``, ``'cpu'``).
    dtype : torch.dtype
        Their precision (each dtype has its own kernels).
    preconditioners : tuple of str
        Conjugate gradients with each of ``'amg'``, ``'gmg'``, ``'jacobi'``, ``'none'``.

    Returns
    -------
    float
        The seconds it took.
    """
    from ... import gallery
    from .solve import solve

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}: CUDA is not available here")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if isinstance(preconditioners, str):
        preconditioners = (preconditioners,)
    bad = [p for p in preconditioners if p not in _PRECONDITIONERS]
    if bad:
        raise ValueError(f"preconditioners must be among {_PRECONDITIONERS}, got {bad}")
    t0 = time.perf_counter()
    A = gallery.poisson2d(_N, dtype=dtype, device=device)
    b = torch.ones(A.shape[0], dtype=dtype, device=device)
    rtol = 1e-4 if dtype == torch.float32 else 1e-8
    for pc in preconditioners:  # the kernels are the point, not the answer: a stagnated float32 solve is fine
        solve(A, b, backend="pytorch", method="cg", preconditioner=pc, rtol=rtol, on_failure="ignore")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0
