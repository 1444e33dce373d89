"""Aggregation for smoothed-aggregation AMG: pyamg's serial algorithm or a parallel one in torch.

All take the strength graph as CSR arrays (self loops allowed) and return aggregate
ids ``agg[n]`` (``-1``: node left unaggregated) and the number of aggregates.

* ``'standard'`` -- pyamg's ``standard_aggregation`` (Vanek, Mandel & Brezina
  1996): a greedy distance-2 maximal independent set in the order of the node
  numbering, each root with its neighbours, the rest joined to a neighbouring
  aggregate.  Serial, on the CPU; the graph makes one trip to the host.
* ``'mis2'`` -- the same construction around a distance-2 maximal independent set
  computed in parallel: Luby-style rounds in which an undecided node whose priority
  is the largest within distance 2 becomes a root and the nodes within distance 2 of
  a root drop out (Bell, Dalton & Olson, *Exposing fine-grained parallelism in
  algebraic multigrid methods*, SISC 2012; Kelley & Rajamanickam 2022).  The
  priorities are the node degree, then a bijective integer hash of the node index,
  computed on the device (no host random numbers), so the aggregates are the same on
  every run and device; nodes of higher degree first make larger aggregates where the
  degree varies (the node graph of P2 elements), as the greedy sweep does.
  A root takes its neighbours; every other node joins the *smallest* neighbouring
  aggregate (ties to the highest id), which evens out the aggregate sizes.
* ``'mis1'`` -- aggregates around a distance-1 maximal independent set (each node
  joins a neighbouring root): what ``'mis2'`` smoothed aggregation uses on the coarse
  levels of a scalar problem, whose Galerkin operators already couple aggregates two
  apart, so that distance-2 aggregates there coarsen several times too fast.

Cost of the parallel ones: every round is one (``mis1``) or two (``mis2``) passes of
a max-reduction over the edges (``scatter_reduce``, int32 keys, in blocks of
:data:`EDGE_CHUNK` edges) and one host synchronisation; the rounds grow like
``log n`` (a handful to about fifteen), plus one or two passes to form the
aggregates.  No per-node Python loop.  Once at most half the nodes a round last covered are
undecided (:data:`RESTRICT`), the rounds read the rows of the undecided nodes and of their
neighbours alone: the same roots, from about 8 edges read per edge of the graph instead of 28
(5-point 1M, 13 rounds; H200, 5-point 16M: the finest level's aggregation 59 ms against 123).

The greedy sweep of ``'standard'`` packs roots tightly when the node numbering is
a structured one (a lexicographic grid); for a numbering without structure it
coarsens like the parallel rounds.
"""

from __future__ import annotations

import logging

import torch

from ..._optional import extension
from ...config import BackendUnavailableError
from ...kernels import any_, count_, shift_right
from ...pattern import row_chunks
from ...staging import to_device, to_host

__all__ = ["EDGE_CHUNK", "EDGE_MIN", "aggregate", "mis_aggregation", "mis2_aggregation", "standard_aggregation"]

log = logging.getLogger("sla")

METHODS = ("auto", "standard", "mis2", "mis1")

EDGE_CHUNK = 1 << 25
"""Edges per block of a neighbourhood reduction at most; a block holds ``max(EDGE_MIN, n)`` edges
below it, so a pass's temporaries (a block's rows, int64, and its gathered keys) stay near 16 bytes
per node (they were 16 bytes per edge up to this cap, beside a row array of 8 bytes per edge: 230
bytes per unknown of a P1 tetrahedral mesh)."""

EDGE_MIN = 1 << 20


def _host_int32(t: torch.Tensor):
    """``t`` as an int32 NumPy array on the host; from a GPU through :mod:`sla.staging`'s pinned
    stage, not one pinned buffer of ``t``'s size: locking that buffer's pages made the first AMG
    setup of a size slow, and torch's host cache then kept it locked for the process.  H200, AMG-CG
    of a new 16M 5-point matrix (``bench_staging.py --setup``, three processes each): the first
    solve of its size 0.88 / 0.89 / 1.26 s against 0.90 / 1.00 / 1.18 s, later new patterns about
    0.07 s slower (0.55-1.14 against 0.52-0.75 s, alternated in one process)."""
    return to_host(t.detach().to(torch.int32)).numpy()


def standard_aggregation(crow: torch.Tensor, col: torch.Tensor, n: int):
    """pyamg's standard aggregation (CPU), called at its C++ core on the CSR arrays.

    The same kernel as ``pyamg.aggregation.standard_aggregation`` without its wrapper,
    which builds a SciPy matrix and the aggregation operator around it; the kernel's compiled
    module is loaded on its own (:func:`~sla._optional.extension`: ``import pyamg``
    would import SciPy's sparse module and every pyamg solver first).
    """
    import numpy as np

    core = extension("pyamg.amg_core.smoothed_aggregation")
    if core is None:
        try:
            from pyamg import amg_core as core
        except ImportError as exc:
            raise BackendUnavailableError(
                "AMG aggregation 'standard' needs pyamg: pip install pyamg (or aggregation='mis2', which runs in torch)"
            ) from exc
    Ap, Aj = _host_int32(crow), _host_int32(col)
    agg = np.empty(n, dtype=np.int32)  # aggregate of each node, -1 where none
    roots = np.empty(n, dtype=np.int32)
    nagg = int(core.standard_aggregation(n, Ap, Aj, agg, roots))
    return to_device(torch.from_numpy(agg), crow.device), nagg


def _priorities(n: int, device, degree: torch.Tensor | None = None) -> torch.Tensor:
    """Distinct priorities: a bijection of ``[0, 2^k)`` (``2^k >= n``) applied to the node index,
    pseudo-random and the same on every device (exact: integer products and masks, shifts as
    power-of-two scalings in double precision, :func:`~sla.kernels.shift_right`); with ``degree``, the
    degree (capped) in the high bits, so that a node of higher degree comes first.

    int32 up to ``2^24`` nodes (6 bits of degree, capped at 63), int64 beyond (20 bits)."""
    k = max(1, (n - 1).bit_length())
    mask = (1 << k) - 1
    s = max(1, k // 2)
    x = torch.arange(n, device=device, dtype=torch.int64)
    for c in (0x9E3779B1, 0x85EBCA77):  # odd multipliers: x -> c x mod 2^k is a bijection
        x = ((x ^ shift_right(x, s)) * c) & mask
    x = x ^ shift_right(x, s)
    small = k <= 24
    if degree is not None:  # (in the bits above x's: a sum is an or, a product by 2^k a shift)
        x += degree.to(torch.int64).clamp(0, (1 << (6 if small else 20)) - 1) * (1 << k)
    return x.to(torch.int32 if small else torch.int64)


class _Graph:
    """The CSR graph for blockwise max-reductions over the edges: blocks of whole rows whose rows
    are made per pass (int64: the index type of ``scatter_reduce``), no row array of every edge.

    A :meth:`restricted` graph holds the rows of some ``nodes`` of a larger one by reference: their
    row starts and, per row, the offset of its edges in the larger graph's arrays, whose columns a
    pass gathers block by block (no copy of their edges); its passes count towards the larger
    graph's ``stats``."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, n: int, nodes=None, offset=None, stats=None, chunk=None):
        self.n = n
        self.crow = crow
        self.col = col
        self.nodes = nodes
        self.offset = offset
        self.nnz = col.numel() if offset is None else int(crow[-1])
        self.chunk = min(EDGE_CHUNK, max(EDGE_MIN, n)) if chunk is None else chunk
        self.stats = {"passes": 0, "edges": 0} if stats is None else stats  # edges: those read

    def blocks(self):
        """``(rows, cols)`` of blocks of whole rows (rows int64, numbered within this graph)."""
        for lo, hi, rows in row_chunks(self.crow, self.nnz, self.chunk):
            if self.offset is None:
                yield rows, self.col[lo:hi]
            else:
                yield rows, self.col[torch.arange(lo, hi, device=rows.device).add_(self.offset[rows])]

    def nbr_max(self, key: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        """``max(own[i], max_{j in N(i)} key[j])`` for every row i (``own`` default ``key``)."""
        self.stats["passes"] += 1
        self.stats["edges"] += self.nnz
        out = (key if own is None else own).clone()
        for rows, cols in self.blocks():
            out.scatter_reduce_(0, rows, key[cols], reduce="amax")
        return out

    def restricted(self, nodes: torch.Tensor) -> _Graph:
        """The rows of ``nodes`` (int64, distinct, ascending) alone."""
        start = self.crow[nodes]
        crow = torch.zeros(nodes.numel() + 1, dtype=torch.int64, device=nodes.device)
        torch.cumsum(self.crow[nodes + 1] - start, 0, out=crow[1:])
        # entry e of row r sits at e + (start[r] - crow[r]) in the larger graph's arrays; a pass also
        # holds each edge's position (int64) and column: blocks of half as many edges
        return _Graph(crow, self.col, nodes.numel(), nodes, start - crow[:-1], self.stats, self.chunk // 2)


RESTRICT = 0.5
"""The independent-set rounds run on the rows of the undecided nodes (and their neighbours') alone
once at most this fraction of the nodes the rounds last covered is undecided: after the first few
rounds most nodes are decided, and a pass over every edge would read mostly settled keys."""


def _restrict(g: _Graph, und: torch.Tensor, distance: int) -> tuple[_Graph, _Graph | None]:
    """``(U, V)``: the rows of the undecided nodes ``und`` and (distance 2) of those and their
    neighbours, whose maxima are all a round reads."""
    U = g.restricted(torch.nonzero(und).squeeze(-1))
    if distance == 1:
        return U, None
    near = und.clone()
    for _, cols in U.blocks():
        near.scatter_(0, cols.long(), True)  # (a scatter: no indexing family of its own)
    return U, g.restricted(torch.nonzero(near).squeeze(-1))


def _round(g: _Graph, key: torch.Tensor, und: torch.Tensor, top: int, distance: int, sub) -> torch.Tensor:
    """One round: an undecided node whose key is the largest within ``distance`` becomes a root
    (``top``); one that sees a root within ``distance`` drops out (``-1``).  ``sub``: ``None`` (every
    row) or the ``(U, V)`` of :func:`_restrict` for a superset of the undecided nodes."""
    if sub is None:
        m = key
        for _ in range(distance):
            m = g.nbr_max(m)
        return torch.where(und & (m == key), top, torch.where(und & (m == top), -1, key))
    U, V = sub
    m = key if V is None else key.scatter(0, V.nodes, V.nbr_max(key, key[V.nodes]))
    mu = U.nbr_max(m, m[U.nodes])
    ku, uu = key[U.nodes], und[U.nodes]
    return key.scatter(0, U.nodes, torch.where(uu & (mu == ku), top, torch.where(uu & (mu == top), -1, ku)))


def _mis(g: _Graph, distance: int) -> tuple[torch.Tensor, int]:
    """Roots (bool mask) of a distance-``distance`` maximal independent set, and the rounds.

    Keys: undecided nodes their priority (``>= 0``), roots ``TOP``, nodes within
    ``distance`` of a root ``-1``.  A round takes the largest key within ``distance``:
    an undecided node that holds it becomes a root; one that sees ``TOP`` drops out.
    The undecided node of largest priority is decided in every round, so it ends.
    Once few nodes are undecided (:data:`RESTRICT`) a round reads the rows of those and of their
    neighbours alone, with the same result.

    Distance 2: nodes of higher degree first (larger aggregates where the degree varies, as the
    greedy sweep makes them); distance 1: the hash alone (degree first coarsens the coarse
    levels faster there)."""
    key = _priorities(g.n, g.col.device, g.crow[1:] - g.crow[:-1] if distance == 2 else None)
    top = torch.iinfo(key.dtype).max
    rounds = 0
    sub, covered = None, g.n  # the restricted rows (None: all), and the undecided nodes they were made for
    while True:
        und = key >= 0
        und &= key != top
        left = int(und.sum())  # (one host look a round, as before)
        if left == 0:
            break
        rounds += 1
        if left <= RESTRICT * covered:
            sub, covered = _restrict(g, und, distance), left
        key = _round(g, key, und, top, distance, sub)
    return key == top, rounds


def _numbered(roots: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``agg``: ``0..nagg-1`` on the roots in index order, ``-1`` elsewhere (int32)."""
    ids = torch.cumsum(roots, 0, dtype=torch.int32) - 1
    nagg = int(ids[-1]) + 1 if roots.numel() else 0
    return torch.where(roots, ids, -1), nagg


def _join_smallest(g: _Graph, agg: torch.Tensor, nagg: int) -> torch.Tensor:
    """Every unaggregated node with an aggregated neighbour joins the smallest neighbouring
    aggregate (ties: the highest id); sizes are those before any of them joins."""
    a = agg.long()
    has = a >= 0
    size = count_(a.new_zeros(nagg), a[has])
    b = max(1, (nagg - 1).bit_length())
    # an aggregated node offers (n - size of its aggregate) in the high bits and the id in the low
    # bits; an unaggregated one offers nothing (-1): the largest offer is the smallest aggregate
    ac = a.clamp(min=0)
    offer = torch.where(has, (g.n - size[ac]) * (1 << b) + ac, -1)  # (ac < 2^b: the sum is an or)
    best = g.nbr_max(offer)
    pick = torch.where(best >= 0, best & ((1 << b) - 1), -1)
    return torch.where(has, a, pick).to(agg.dtype)


def mis_aggregation(crow: torch.Tensor, col: torch.Tensor, n: int, distance: int = 2):
    """``(agg, nagg, rounds)``: aggregates around a distance-``distance`` maximal independent set.

    Parallel (any device).  ``distance=2``: every root with its neighbours, every other node
    joined to the smallest neighbouring aggregate (pyamg's standard aggregation with the greedy
    sweep replaced by parallel rounds).  ``distance=1``: every non-root node joins a
    neighbouring root (the highest id).  A node without neighbours is an aggregate of its own.
    ``rounds`` counts the independent-set rounds (each one host synchronisation).
    """
    if distance not in (1, 2):
        raise ValueError(f"distance must be 1 or 2, got {distance!r}")
    if n == 0:
        return torch.zeros(0, dtype=torch.int32, device=col.device), 0, 0
    g = _Graph(crow, col, n)
    roots, rounds = _mis(g, distance)
    agg, nagg = _numbered(roots)
    agg = torch.where(agg >= 0, agg, g.nbr_max(agg))  # neighbours of a root (unique for distance 2)
    if distance == 2 and bool(any_(agg < 0)):
        agg = _join_smallest(g, agg, nagg)  # within distance 2 of a root: next to an aggregated node
    log.debug(
        "aggregation mis%d: %d nodes, %d aggregates, %d rounds, %d edge passes reading %.1f edges per edge",
        distance,
        n,
        nagg,
        rounds,
        g.stats["passes"],
        g.stats["edges"] / max(1, col.numel()),
    )
    return agg, nagg, rounds


def mis2_aggregation(crow: torch.Tensor, col: torch.Tensor, n: int):
    """Aggregates around a maximal distance-2 independent set (parallel, any device): ``(agg, nagg)``."""
    agg, nagg, _ = mis_aggregation(crow, col, n, 2)
    return agg, nagg


def aggregate(crow: torch.Tensor, col: torch.Tensor, n: int, method: str = "auto"):
    """``(agg, nagg)`` by ``method``: 'standard' (pyamg), 'mis2' or 'mis1' (torch, parallel),
    'auto' (standard on the CPU, else mis2).

    ``agg`` is int32 below 2**31 nodes (it is cached on the pattern with the hierarchy's structure)."""
    if method not in METHODS:
        raise ValueError(f"aggregation must be 'auto', 'standard' or 'mis2' (or 'mis1'), got {method!r}")
    if method == "auto":
        method = "standard" if col.device.type == "cpu" else "mis2"
    if method == "standard":
        agg, nagg = standard_aggregation(crow, col, n)
    else:
        agg, nagg, _ = mis_aggregation(crow, col, n, 2 if method == "mis2" else 1)
    return agg.to(torch.int32 if n < 2**31 - 1 else torch.int64), nagg
