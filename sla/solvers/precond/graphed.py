"""CUDA graph replay of a fixed preconditioner application (a multigrid cycle).

A V-cycle on a GPU is a few hundred small kernels; launched one by one from Python their launch
and dispatch time exceeds the memory traffic of the coarse levels (16M unknowns on an H200:
6.6 ms per cycle against a 0.52 ms fine-grid SpMV).  Captured once into a CUDA graph
(``torch.cuda.CUDAGraph``) and replayed, the whole cycle is one launch.

:class:`GraphedApply` wraps ``fn(r) -> z``: the first call for a given input shape runs eagerly
(the libraries' lazy initialisation and workspaces happen outside the capture), the second
captures ``fn`` on a static input buffer, and every call from then on copies its input into that
buffer, replays the graph and returns a copy of the static output (a caller may keep what it is
given: FGMRES stores every ``M(v)``).  Eager instead, always: CPU tensors, autograd through the
input, a stream that is itself being captured, and after a capture that failed (logged once; the
fallback runs the same ops, so results agree to rounding).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

__all__ = ["GraphedApply", "check_graph"]

log = logging.getLogger("sla")


def check_graph(graph, device: torch.device) -> bool:
    """Whether to capture: ``graph`` is ``'auto'`` (on CUDA devices), ``True`` (a CUDA device is
    needed) or ``False``."""
    if graph == "auto":
        return device.type == "cuda"
    if not isinstance(graph, bool):
        raise ValueError(f"graph must be True, False or 'auto', got {graph!r}")
    if graph and device.type != "cuda":
        raise ValueError(f"graph=True captures a CUDA graph and needs a CUDA matrix, got one on {device}")
    return graph


class GraphedApply:
    """``fn(r)`` replayed from a CUDA graph per input shape (see the module docstring).

    Parameters
    ----------
    fn : callable
        ``r -> z``: tensor operations only (no host synchronisation, no data-dependent shapes),
        the same work on every call.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.graphs: dict = {}
        self.seen: set = set()
        self.failed: str | None = None  # why the capture failed (then eager from now on)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        if (
            self.failed is not None
            or not r.is_cuda
            or (r.requires_grad and torch.is_grad_enabled())
            or torch.cuda.is_current_stream_capturing()
        ):
            return self.fn(r)
        key = (tuple(r.shape), tuple(r.stride()), r.dtype, r.device)
        entry = self.graphs.get(key)
        if entry is None:
            if key not in self.seen:  # first call: eager (lazy initialisation outside the capture)
                self.seen.add(key)
                return self.fn(r)
            entry = self._capture(r, key)
            if entry is None:
                return self.fn(r)
        static_in, static_out, graph = entry
        static_in.copy_(r)
        with torch.cuda.device(r.device):
            graph.replay()
        return static_out.clone()

    def _capture(self, r: torch.Tensor, key):
        static_in = torch.empty_strided(r.shape, r.stride(), dtype=r.dtype, device=r.device)
        static_in.copy_(r)
        graph = torch.cuda.CUDAGraph()
        # capture_begin/end on a side stream rather than torch.cuda.graph(), which would also run
        # gc.collect() and empty the allocator's cache on every capture
        stream = torch.cuda.Stream(device=r.device)
        stream.wait_stream(torch.cuda.current_stream(r.device))
        try:
            with torch.no_grad(), torch.cuda.device(r.device), torch.cuda.stream(stream):
                graph.capture_begin()
                try:
                    static_out = self.fn(static_in)
                finally:
                    graph.capture_end()
        except Exception as exc:  # an op that cannot be captured: eager from now on
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning("CUDA graph capture of the preconditioner failed, it runs eagerly: %s", self.failed)
            try:
                torch.cuda.synchronize(r.device)
            except Exception:  # the failed capture's own error, already reported
                pass
            return None
        finally:
            torch.cuda.current_stream(r.device).wait_stream(stream)
        self.graphs[key] = (static_in, static_out, graph)
        return self.graphs[key]

    def reset(self) -> None:
        """Drop the captured graphs (and the memory their pools hold)."""
        self.graphs.clear()
        self.seen.clear()
