"""Aggregation for smoothed-aggregation AMG: pyamg's serial algorithm or a parallel MIS(2) in torch.

Both take the strength graph as CSR arrays (no self loops) and return aggregate
ids ``agg[n]`` (``-1``: node left unaggregated) and the number of aggregates.

* ``'standard'`` -- pyamg's ``standard_aggregation`` (Vanek, Mandel & Brezina
  1996), serial, on the CPU; the graph makes one trip to the host.
* ``'mis2'`` -- aggregates grown around a maximal distance-2 independent set,
  computed with Luby-style rounds of neighbourhood maxima (Bell, Dalton & Olson,
  *Exposing fine-grained parallelism in algebraic multigrid methods*, SISC 2012).
  Pure torch: it runs on the graph's device with a handful of host syncs.
"""

from __future__ import annotations

import torch

from ...config import BackendUnavailableError

__all__ = ["aggregate", "mis2_aggregation", "standard_aggregation"]


def standard_aggregation(crow: torch.Tensor, col: torch.Tensor, n: int):
    """pyamg's standard aggregation (CPU), called at its C++ core on the CSR arrays.

    The same kernel as ``pyamg.aggregation.standard_aggregation`` without its wrapper,
    which builds a SciPy matrix and the aggregation operator around it.
    """
    try:
        import numpy as np
        from pyamg import amg_core
    except ImportError as exc:
        raise BackendUnavailableError(
            "AMG aggregation 'standard' needs pyamg: pip install pyamg (or aggregation='mis2', which runs in torch)"
        ) from exc
    Ap = crow.detach().cpu().numpy().astype(np.int32, copy=False)
    Aj = col.detach().cpu().numpy().astype(np.int32, copy=False)
    agg = np.empty(n, dtype=np.int32)  # aggregate of each node, -1 where none
    roots = np.empty(n, dtype=np.int32)
    nagg = int(amg_core.standard_aggregation(n, Ap, Aj, agg, roots))
    return torch.from_numpy(agg).to(device=crow.device), nagg


def _nbr_max(key: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``max(key[i], max_{j in N(i)} key[j])`` for every node i."""
    return key.clone().scatter_reduce_(0, row, key[col], reduce="amax")


def mis2_aggregation(crow: torch.Tensor, col: torch.Tensor, n: int, seed: int = 0):
    """Aggregates around a maximal distance-2 independent set (parallel, any device)."""
    dev = col.device
    row = torch.repeat_interleave(torch.arange(n, device=dev), crow[1:] - crow[:-1])
    g = torch.Generator().manual_seed(seed)
    prio = torch.randperm(n, generator=g).to(dev)
    # 1. MIS(2): a node joins when its key is the largest within distance 2; nodes with
    #    a root within distance 2 drop out.  Keys: root 2n + p > undecided n + p > out -1.
    state = torch.zeros(n, dtype=torch.int8, device=dev)  # 0 undecided, 1 root, -1 out
    while True:
        und = state == 0
        if not bool(und.any()):
            break
        key = torch.where(state == 1, 2 * n + prio, torch.where(und, n + prio, torch.full_like(prio, -1)))
        m2 = _nbr_max(_nbr_max(key, row, col), row, col)
        state = torch.where(und & (m2 == key), torch.ones_like(state), state)
        state = torch.where((state == 0) & (m2 >= 2 * n), torch.full_like(state, -1), state)
    # 2. aggregates: roots number them; neighbours of a root join it (unique: roots are
    #    3 apart); the rest join a neighbour's aggregate (MIS(2) leaves none further away).
    roots = state == 1
    nagg = int(roots.sum())
    agg = torch.full((n,), -1, dtype=torch.int64, device=dev)
    agg[roots] = torch.arange(nagg, device=dev)
    for _ in range(2):
        cand = _nbr_max(agg, row, col)
        agg = torch.where(agg < 0, cand, agg)
    return agg, nagg


def aggregate(crow: torch.Tensor, col: torch.Tensor, n: int, method: str = "auto"):
    """``(agg, nagg)`` by ``method``: 'standard' (pyamg), 'mis2' (torch), 'auto' (standard on CPU, else mis2).

    ``agg`` is int32 below 2**31 nodes (it is cached on the pattern with the hierarchy's structure)."""
    if method == "auto":
        method = "standard" if col.device.type == "cpu" else "mis2"
    if method == "standard":
        agg, nagg = standard_aggregation(crow, col, n)
    elif method == "mis2":
        agg, nagg = mis2_aggregation(crow, col, n)
    else:
        raise ValueError(f"aggregation must be 'auto', 'standard' or 'mis2', got {method!r}")
    return agg.to(torch.int32 if n < 2**31 - 1 else torch.int64), nagg
