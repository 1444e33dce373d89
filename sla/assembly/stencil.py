"""Finite-difference operators on structured grids (homogeneous Dirichlet boundaries).

Unknowns are the interior grid points numbered lexicographically, last axis
fastest (axis ``d`` is coordinate ``x_d``) -- the convention of
:mod:`sla.gallery`; every operator records its grid as
``A.pattern.cache["grid"]`` for geometric multigrid.  COO indices are built
already sorted row-major, so construction never runs the coalescing sort
(it is O(nnz) even at millions of unknowns).

>>> from sla.assembly import stencil
>>> A = stencil.laplacian((3, 3))
>>> A.to_dense()[4].tolist()
[0.0, -1.0, 0.0, -1.0, 4.0, -1.0, 0.0, -1.0, 0.0]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from ..gallery import check_grid_shape, stencil_operator
from ..sparse import SparseTensor

Spacing = float | Sequence[float]  # grid spacing, one for all axes or one per axis

__all__ = [
    "stencil_operator",
    "laplacian",
    "anisotropic",
    "variable_diffusion",
    "convection_diffusion",
    "poisson1d_system",
    "poisson2d_system",
    "poisson3d_system",
    "grid_points",
]


def _spacing(h, ndim: int) -> list[float]:
    h = [float(h)] * ndim if isinstance(h, (int, float)) else [float(v) for v in h]
    if len(h) != ndim or any(v <= 0 for v in h):
        raise ValueError(f"h must be a positive number or {ndim} positive numbers, got {h!r}")
    return h


def _grid(shape: int | Sequence[int], h: Spacing) -> tuple[tuple[int, ...], int, list[float]]:
    """Validated grid shape, its dimension and the spacing per axis."""
    shape = check_grid_shape(shape)
    return shape, len(shape), _spacing(h, len(shape))


def _per_axis(values: Sequence[float], nd: int, name: str) -> list[float]:
    v = [float(x) for x in values]
    if len(v) != nd:
        raise ValueError(f"{name} must have {nd} entries for a {nd}D grid, got {v}")
    return v


def _axis_offsets(nd: int):
    for d in range(nd):
        e = [0] * nd
        e[d] = 1
        yield d, tuple(e), tuple(-v for v in e)


def laplacian(
    shape: int | Sequence[int],
    h: Spacing = 1.0,
    points: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> SparseTensor:
    """``-Laplace`` on a 1D/2D/3D grid: 3-, 5-, 7-point, or the compact 9-point stencil in 2D
    (``points=9``: ``[-1 -4 -1; -4 20 -4; -1 -4 -1] / (6 h^2)``, fourth order for harmonic-corrected rhs)."""
    shape, nd, hs = _grid(shape, h)
    default = 2 * nd + 1
    points = default if points is None else points
    if points == 9 and nd == 2:
        if hs[0] != hs[1]:
            raise ValueError(f"the 9-point stencil needs equal spacing, got h={hs}")
        offs = [o for o in itertools.product((-1, 0, 1), repeat=2)]
        wts = [20.0 if o == (0, 0) else (-4.0 if 0 in o else -1.0) for o in offs]
        return stencil_operator(shape, offs, [v / (6 * hs[0] ** 2) for v in wts], dtype, device)
    if points != default:
        raise ValueError(f"points must be {default}" + (" or 9" if nd == 2 else "") + f" on a {nd}D grid, got {points}")
    return anisotropic(shape, [1.0] * nd, h=hs, dtype=dtype, device=device)


def anisotropic(
    shape: int | Sequence[int],
    coeffs: Sequence[float] = (1.0, 1e-3),
    theta: float = 0.0,
    h: Spacing = 1.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> SparseTensor:
    """``-div(D grad u)`` with constant diffusion tensor ``D``.

    Axis-aligned (``theta == 0``): ``D = diag(coeffs)``, a 3/5/7-point stencil.
    Rotated (2D, ``theta != 0``): ``D = R(theta) diag(coeffs) R(theta)^T``, a 9-point stencil
    with the central difference of the mixed derivative.
    """
    shape, nd, hs = _grid(shape, h)
    coeffs = _per_axis(coeffs, nd, "coeffs")
    if theta == 0.0:
        offs, wts = [(0,) * nd], [sum(2 * c / hh**2 for c, hh in zip(coeffs, hs))]
        for d, plus, minus in _axis_offsets(nd):
            offs += [plus, minus]
            wts += [-coeffs[d] / hs[d] ** 2] * 2
        return stencil_operator(shape, offs, wts, dtype, device)
    if nd != 2:
        raise ValueError(f"a rotated anisotropy (theta != 0) needs a 2D grid, got {nd}D")
    import math

    c, s = math.cos(theta), math.sin(theta)
    dxx = c * c * coeffs[0] + s * s * coeffs[1]
    dyy = s * s * coeffs[0] + c * c * coeffs[1]
    dxy = c * s * (coeffs[0] - coeffs[1])
    hx, hy = hs
    offs = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)]
    m = dxy / (2 * hx * hy)  # -2 dxy u_xy, u_xy ~ (u++ - u+- - u-+ + u--) / (4 hx hy)
    wts = [2 * dxx / hx**2 + 2 * dyy / hy**2, -dxx / hx**2, -dxx / hx**2, -dyy / hy**2, -dyy / hy**2, -m, -m, m, m]
    return stencil_operator(shape, offs, wts, dtype, device)


def variable_diffusion(k: torch.Tensor, h: Spacing = 1.0) -> SparseTensor:
    """``-div(k grad u)`` with ``k`` at the grid points (shape = the grid), face values by harmonic
    averages ``2 k_i k_j / (k_i + k_j)`` (``k_i`` on boundary faces).  Differentiable in ``k``."""
    if not isinstance(k, torch.Tensor) or not k.dtype.is_floating_point:
        raise TypeError("k must be a floating tensor with the grid's shape")
    shape, nd, hs = _grid(tuple(k.shape), h)
    diag = torch.zeros_like(k)
    offs, cols = [(0,) * nd], []
    for d, plus, minus in _axis_offsets(nd):
        n_d = shape[d]
        a, b = k.narrow(d, 0, n_d - 1), k.narrow(d, 1, n_d - 1)
        face = 2 * a * b / (a + b) / hs[d] ** 2  # between i and i+1 along d
        up = torch.nn.functional.pad(face, _pad(nd, d, 0, 1), value=0.0)  # face to the + neighbour of i
        lo = torch.nn.functional.pad(face, _pad(nd, d, 1, 0), value=0.0)  # face to the - neighbour of i
        at_max = torch.zeros_like(k, dtype=torch.bool)
        at_max.narrow(d, n_d - 1, 1).fill_(True)
        at_min = torch.zeros_like(k, dtype=torch.bool)
        at_min.narrow(d, 0, 1).fill_(True)
        # boundary faces (to the Dirichlet ghost point) carry k_i
        diag = diag + torch.where(at_max, k / hs[d] ** 2, up) + torch.where(at_min, k / hs[d] ** 2, lo)
        offs += [plus, minus]
        cols += [-up, -lo]
    w = torch.stack([diag] + cols, -1).reshape(-1, len(offs))
    return stencil_operator(shape, offs, w, k.dtype, k.device)


def _pad(nd: int, d: int, before: int, after: int) -> list[int]:
    p = [0, 0] * nd  # torch pads from the last axis backwards
    p[2 * (nd - 1 - d)] = before
    p[2 * (nd - 1 - d) + 1] = after
    return p


def convection_diffusion(
    shape: int | Sequence[int],
    velocity: Sequence[float],
    eps: float = 1.0,
    h: Spacing = 1.0,
    scheme: str = "upwind",
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> SparseTensor:
    """``-eps Laplace u + v . grad u`` with constant ``velocity`` (one entry per axis);
    first-order ``'upwind'`` or second-order ``'central'`` differences for the convection."""
    shape, nd, hs = _grid(shape, h)
    v = _per_axis(velocity, nd, "velocity")
    if scheme not in ("upwind", "central"):
        raise ValueError(f"scheme must be 'upwind' or 'central', got {scheme!r}")
    offs, wts = [(0,) * nd], [0.0]
    for d, plus, minus in _axis_offsets(nd):
        dif = eps / hs[d] ** 2
        wts[0] += 2 * dif
        if scheme == "central":
            cp, cm = v[d] / (2 * hs[d]), -v[d] / (2 * hs[d])
        else:
            cp, cm = min(v[d], 0.0) / hs[d], -max(v[d], 0.0) / hs[d]
            wts[0] += abs(v[d]) / hs[d]
        offs += [plus, minus]
        wts += [-dif + cp, -dif + cm]
    return stencil_operator(shape, offs, wts, dtype, device)


# ------------------------------------------------------------------- gallery
def grid_points(
    shape: int | Sequence[int], dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Coordinates ``[n, ndim]`` of the interior points of the unit box grid (``h = 1/(n_d + 1)``)."""
    shape = check_grid_shape(shape)
    axes = [torch.arange(1, s + 1, dtype=dtype, device=device) / (s + 1) for s in shape]
    g = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x.reshape(-1) for x in g], 1)


def _poisson(shape, f, dtype, device):
    shape = check_grid_shape(shape)
    A = laplacian(shape, h=[1.0 / (s + 1) for s in shape], dtype=dtype, device=device)
    n = A.sparse_shape[0]
    if callable(f):
        b = torch.as_tensor(f(grid_points(shape, dtype, device)), dtype=dtype, device=device).reshape(n)
    else:
        b = torch.full((n,), float(f), dtype=dtype, device=device)
    return A, b


def poisson1d_system(
    n: int,
    f: float | Callable[[torch.Tensor], torch.Tensor] = 1.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[SparseTensor, torch.Tensor]:
    """``(A, b)`` of ``-u'' = f`` on (0, 1), ``u = 0`` at the ends: :func:`poisson2d_system` in 1D
    (``n`` interior points, ``f`` a number or a function of the coordinates ``[n, 1]``).

    >>> from sla.assembly import poisson1d_system
    >>> A, b = poisson1d_system(3)
    >>> A.to_dense()[1].tolist(), b.tolist()
    ([-16.0, 32.0, -16.0], [1.0, 1.0, 1.0])
    """
    return _poisson((n,), f, dtype, device)


def poisson2d_system(
    n: int,
    f: float | Callable[[torch.Tensor], torch.Tensor] = 1.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[SparseTensor, torch.Tensor]:
    """``(A, b)`` of ``-Laplace u = f`` on the unit square (5-point, ``h = 1/(n+1)``, ``n^2`` unknowns).

    Unlike :func:`sla.gallery.poisson2d` (the unscaled matrix, diagonal 4), ``A`` carries the
    ``1/h^2`` scaling and ``b`` samples ``f``, so ``solve(A, b)`` approximates ``u``.

    Parameters
    ----------
    n : int
        Interior grid points per axis.
    f : float or callable
        Constant source, or a function of the coordinates ``[n^2, 2]`` returning ``[n^2]`` values.
    dtype, device
        Of ``A`` and ``b``.

    Returns
    -------
    A : SparseTensor
        ``[n^2, n^2]``, ``A.pattern.cache['grid'] == (n, n)``.
    b : torch.Tensor
        ``[n^2]``.

    Examples
    --------
    >>> from sla.assembly import poisson2d_system
    >>> A, b = poisson2d_system(3)
    >>> A.pattern.cache["grid"], float(A.to_dense()[0, 0])
    ((3, 3), 64.0)
    """
    return _poisson((n, n), f, dtype, device)


def poisson3d_system(
    n: int,
    f: float | Callable[[torch.Tensor], torch.Tensor] = 1.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[SparseTensor, torch.Tensor]:
    """``(A, b)`` of ``-Laplace u = f`` on the unit cube: :func:`poisson2d_system` in 3D
    (7-point, ``n^3`` unknowns, ``f`` a number or a function of the coordinates ``[n^3, 3]``).

    >>> from sla.assembly import poisson3d_system
    >>> A, b = poisson3d_system(2)
    >>> A.shape, float(A.to_dense()[0, 0])
    (torch.Size([8, 8]), 54.0)
    """
    return _poisson((n, n, n), f, dtype, device)
