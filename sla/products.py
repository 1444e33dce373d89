"""Products on patterns: SpMV / SpMM with an adjoint, sparse x sparse, unions.

Everything here works on canonical shapes -- values ``[B, nnz]`` and dense
operands ``[B, N, K]`` -- and on any device.  :class:`~sla.SparseTensor` maps
user shapes onto these.
"""

from __future__ import annotations

import weakref

import torch

from .blocked import RowBlockedCSR
from .kernels import repeat_rows
from .pattern import Pattern

__all__ = [
    "spmm",
    "spmm_nograd",
    "spspmm",
    "union",
    "intersection",
    "csr_matmul",
    "csr_residual",
    "csr_add_matmul_",
]


def csr_matmul(C: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``C @ x`` for a torch CSR ``C`` and a dense ``x`` ``[n, K]``.

    One column goes through ``torch.mv`` (SpMV), which is faster than torch's SpMM
    path ``C @ x`` on the CPU.
    """
    if isinstance(C, RowBlockedCSR):
        return C.matmul(x)
    if x.shape[-1] == 1:
        return torch.mv(C, x[:, 0]).unsqueeze(1)
    return C @ x


def csr_residual(b: torch.Tensor, C: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``b - C x`` (``[n, K]``) with a single new allocation.

    On the CPU one column takes an SpMV then an in-place subtraction, faster there than
    the fused product; on GPUs one column takes the fused SpMV (``addmv``), several the fused
    SpMM (``addmm``).
    """
    if isinstance(C, RowBlockedCSR):
        return C.residual(b, x)
    if x.shape[-1] == 1:
        if x.device.type == "cpu":
            y = torch.mv(C, x[:, 0])
            return torch.sub(b[:, 0], y, out=y).unsqueeze(1)
        return torch.addmv(b[:, 0], C, x[:, 0], alpha=-1).unsqueeze(1)
    return torch.addmm(b, C, x, alpha=-1)


def csr_add_matmul_(x: torch.Tensor, C: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x += C @ y`` into ``x`` (``[n, K]``), returned.

    One column on a GPU is one fused SpMV (``addmv``); on the CPU an SpMV then an addition (faster
    there).  Single columns never take ``addmm``'s SpMM: on a GPU it is a kernel family apart from
    the SpMV, which a process would load on first use (see :mod:`sla.kernels`)."""
    if y.shape[-1] == 1 and x.device.type != "cpu" and not isinstance(C, RowBlockedCSR):
        x[:, 0].addmv_(C, y[:, 0])
        return x
    return x.add_(csr_matmul(C, y))


def spmm_nograd(pattern: Pattern, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y[b] = A[b] @ x[b]`` for values ``[B, nnz]``, x ``[B, N, K]``; no autograd."""
    B = values.shape[0]
    M = pattern.shape[0]
    if pattern.nnz == 0:
        return x.new_zeros(B, M, x.shape[-1])
    out = []
    for b in range(B):
        xb = x[b] if x.shape[0] == B else x[0]
        out.append(csr_matmul(pattern.csr(values[b]), xb))
    return torch.stack(out)


def _spmm_gather(pattern: Pattern, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A @ x`` with plain gather/index_add (works on functorch-wrapped tensors)."""
    prod = values[:, :, None] * x[:, pattern.col, :]
    B = max(values.shape[0], x.shape[0])
    return prod.new_zeros(B, pattern.shape[0], x.shape[-1]).index_add(1, pattern.row, prod.expand(B, -1, -1))


class _SpMM(torch.autograd.Function):
    """y = A x with gradients to the stored values and to x.

    grad_x = A^H g (on the cached transposed pattern);
    grad_values[k] = sum_j g[row_k, j] * conj(x[col_k, j]).
    """

    @staticmethod
    def forward(values, x, pattern):
        return spmm_nograd(pattern, values, x)

    @staticmethod
    def setup_context(ctx, inputs, output):  # the functorch-compatible form (torch.func.jvp works)
        values, x, pattern = inputs
        ctx.pattern = pattern
        ctx.save_for_backward(values, x)
        ctx.save_for_forward(values, x)

    @staticmethod
    def jvp(ctx, dvalues, dx, _):
        """Forward mode: ``dy = A(dvalues) x + A dx`` (exact JVPs for Newton-Krylov)."""
        values, x = ctx.saved_tensors
        p = ctx.pattern
        dy = None
        if dvalues is not None:
            dy = _spmm_gather(p, dvalues, x)
        if dx is not None:
            t = _spmm_gather(p, values, dx)
            dy = t if dy is None else dy + t
        return dy

    @staticmethod
    def backward(ctx, g):
        # built from differentiable pieces under create_graph=True (second derivatives, e.g.
        # Hessian-vector products); plain products otherwise
        values, x = ctx.saved_tensors
        p = ctx.pattern
        gv = gx = None
        if ctx.needs_input_grad[0]:
            gv = (g[:, p.row, :] * x[:, p.col, :].conj()).sum(-1)
            if gv.shape[0] != values.shape[0]:
                gv = gv.sum(0, keepdim=True)
        if ctx.needs_input_grad[1]:
            pt, perm = p.transpose()
            prod = _SpMM.apply if torch.is_grad_enabled() else spmm_nograd
            gx = prod(values[:, perm].conj(), g, pt) if torch.is_grad_enabled() else prod(pt, values[:, perm].conj(), g)
            if gx.shape[0] != x.shape[0]:
                gx = gx.sum(0, keepdim=True)
        return gv, gx, None


def spmm(pattern: Pattern, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Differentiable ``A @ x`` on canonical shapes (``[B, nnz]``, ``[B, N, K]``)."""
    # always through the Function: forward-mode duals (torch.func.jvp, also under no_grad)
    # carry no requires_grad flag, and apply() costs microseconds
    return _SpMM.apply(values, x, pattern)


def _cached(a: Pattern, b: Pattern, tag: str, build):
    key = (tag, id(b))
    hit = a.cache.get(key)
    if hit is not None and hit[0]() is b:
        return hit[1]
    out = build()
    a.cache[key] = (weakref.ref(b), out)
    return out


def spspmm(pa: Pattern, va: torch.Tensor, pb: Pattern, vb: torch.Tensor) -> tuple[Pattern, torch.Tensor]:
    """Sparse x sparse product; values differentiable (sparse gradients).

    Enumerates the products ``A[i,k] B[k,j]`` once per pair of patterns
    (cached), then sums them into the result pattern with one ``index_add``.
    """

    def build():
        crow = pb.crow.to(torch.int64)
        start = crow[pa.col]
        counts = crow[pa.col + 1] - start
        total = int(counts.sum())
        ia = repeat_rows(counts, 0, total)
        offs = torch.cumsum(counts, 0) - counts
        ib = start[ia] + torch.arange(total, device=pa.device) - offs[ia]
        N = pb.shape[1]
        key = pa.row[ia] * N + pb.col[ib]
        uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
        pc = Pattern(uniq // N, uniq % N, (pa.shape[0], N))
        return pc, ia, ib, inv

    pc, ia, ib, inv = _cached(pa, pb, "spspmm", build)
    prod = va[:, ia] * vb[:, ib]
    vc = torch.zeros(prod.shape[0], pc.nnz, dtype=prod.dtype, device=prod.device).index_add(1, inv, prod)
    return pc, vc


def union(pa: Pattern, pb: Pattern) -> tuple[Pattern, torch.Tensor, torch.Tensor]:
    """``(pattern, ia, ib)``: the union pattern and where A's / B's entries land."""

    def build():
        N = pa.shape[1]
        keys = torch.cat([pa.row * N + pa.col, pb.row * N + pb.col])
        uniq, inv = torch.unique(keys, sorted=True, return_inverse=True)
        return Pattern(uniq // N, uniq % N, pa.shape), inv[: pa.nnz], inv[pa.nnz :]

    return _cached(pa, pb, "union", build)


def intersection(pa: Pattern, pb: Pattern) -> tuple[Pattern, torch.Tensor, torch.Tensor]:
    """``(pattern, ia, ib)``: the common entries and their positions in A and B."""

    def build():
        N = pa.shape[1]
        ka = pa.row * N + pa.col
        kb = pb.row * N + pb.col
        if pb.nnz == 0:
            ia = torch.zeros(0, dtype=torch.int64, device=pa.device)
            return Pattern(ia, ia, pa.shape), ia, ia
        pos = torch.searchsorted(kb, ka).clamp(max=pb.nnz - 1)
        hit = kb[pos] == ka
        ia = torch.nonzero(hit).flatten()
        ib = pos[ia]
        return Pattern(pa.row[ia], pa.col[ia], pa.shape), ia, ib

    return _cached(pa, pb, "intersection", build)
