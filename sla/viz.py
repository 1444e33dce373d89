"""Pictures: a field on a mesh, the sparsity pattern of a matrix, residual and objective histories.

Used by the runner (``solution.png``) and the notebooks.  Every function draws into
``path`` (a ``.png``) and returns it, or, without ``path``, returns the matplotlib
``Figure`` (:func:`plot_field` with pyvista: the image as a ``[H, W, 3]`` array).
:func:`plot_field` renders with pyvista off-screen when it is installed and falls back
to matplotlib; both are imported only when a function is called
(``pip install 'sla-torch[viz]'``).

Examples
--------
>>> import sla, sla.viz
>>> from sla.assembly import unit_square
>>> mesh = unit_square(4)
>>> fig = sla.viz.plot_field(mesh, mesh.points[:, 0], engine="matplotlib")
>>> fig = sla.viz.spy(sla.gallery.poisson2d(4))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

log = logging.getLogger("sla")

_ENGINES = ("auto", "pyvista", "matplotlib")
# VTK cell type ids of meshio's / sla.assembly's cell names
_VTK = {"line": 3, "triangle": 5, "quad": 9, "tetra": 10, "hexahedron": 12}


def _numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.is_complex():
            values = values.abs()
        return values.numpy()
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(values).__name__}") from None


def _figure(figsize: tuple[float, float] = (6.4, 4.8)) -> Any:
    """A matplotlib ``Figure`` outside pyplot (no GUI, no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("sla.viz needs matplotlib: pip install 'sla-torch[viz]'") from exc
    return Figure(figsize=figsize)


def _finish(fig: Any, path: str | os.PathLike | None) -> Any:
    if path is None:
        return fig
    fig.savefig(os.fspath(path), dpi=120, bbox_inches="tight", format="png")
    return os.fspath(path)


def _field(mesh: Any, values: Any) -> tuple[np.ndarray, str]:
    """``values`` as a scalar per point or per cell (vectors: their length), and which."""
    v = _numpy(values, "values")
    if v.ndim == 2:
        v = np.linalg.norm(v, axis=1)
    if v.ndim != 1:
        raise ValueError(f"values must be [n] or [n, components], got shape {tuple(v.shape)}")
    if v.shape[0] == mesh.n_points:
        return v, "point"
    if v.shape[0] == mesh.n_cells:
        return v, "cell"
    raise ValueError(
        f"values must have one row per point ({mesh.n_points}) or per cell ({mesh.n_cells}), got {v.shape[0]}"
    )


def plot_field(
    mesh: Any,
    values: Any,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    engine: str = "auto",
    cmap: str = "viridis",
) -> Any:
    """Draw a scalar (or the length of a vector) field on a :class:`~sla.assembly.Mesh`.

    Parameters
    ----------
    mesh : sla.assembly.Mesh
    values : tensor or array ``[n_points]``, ``[n_cells]`` or ``[n, components]``
    path : str, optional
        Write a PNG there and return the path.
    title : str, optional
        Colour-bar / figure title.
    engine : {'auto', 'pyvista', 'matplotlib'}
        ``'auto'``: pyvista off-screen when installed, else matplotlib.
    cmap : str
        Colour map.
    """
    if engine not in _ENGINES:
        raise ValueError(f"engine must be one of {_ENGINES}, got {engine!r}")
    v, where = _field(mesh, values)
    if engine in ("auto", "pyvista"):
        try:
            return _pyvista_field(mesh, v, where, path, title, cmap)
        except ImportError:
            if engine == "pyvista":
                raise
        except Exception as exc:  # no OpenGL context here: fall back rather than lose the picture
            if engine == "pyvista":
                raise
            log.info("pyvista could not render (%s); drawing with matplotlib", exc)
    return _matplotlib_field(mesh, v, where, path, title, cmap)


def _pyvista_field(mesh, v, where, path, title, cmap):
    try:
        import pyvista as pv
    except ImportError as exc:
        raise ImportError("plot_field(engine='pyvista') needs pyvista: pip install 'sla-torch[viz]'") from exc
    if hasattr(pv, "vtk_verbosity"):
        pv.vtk_verbosity("off")
    pts = mesh.points.detach().cpu().numpy().astype(float)
    dim = pts.shape[1]
    if dim < 3:
        pts = np.concatenate([pts, np.zeros((len(pts), 3 - dim))], 1)
    C = mesh.cells.cpu().numpy()
    cells = np.concatenate([np.full((len(C), 1), C.shape[1]), C], 1).ravel()
    grid = pv.UnstructuredGrid(cells, np.full(len(C), _VTK[mesh.cell_type], dtype=np.uint8), pts)
    name = title or "value"
    (grid.point_data if where == "point" else grid.cell_data)[name] = v
    plotter = pv.Plotter(off_screen=True, window_size=(800, 600))
    plotter.add_mesh(grid, scalars=name, cmap=cmap, show_edges=len(C) <= 4000)
    if dim < 3:
        plotter.view_xy()
    else:
        plotter.view_isometric()
    image = plotter.screenshot(os.fspath(path) if path is not None else None, return_img=path is None)
    plotter.close()
    return os.fspath(path) if path is not None else image


def _triangles(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of a 2D mesh, and the cell each came from (quads are split in two)."""
    C = mesh.cells.cpu().numpy()
    if mesh.cell_type == "triangle":
        return C, np.arange(len(C))
    if mesh.cell_type == "quad":
        tri = np.concatenate([C[:, [0, 1, 2]], C[:, [0, 2, 3]]])
        return tri, np.concatenate([np.arange(len(C))] * 2)
    raise ValueError(f"matplotlib draws triangle and quad meshes in 2D, got {mesh.cell_type!r}")


def _matplotlib_field(mesh, v, where, path, title, cmap):
    pts = mesh.points.detach().cpu().numpy()
    fig = _figure()
    if pts.shape[1] == 2:
        ax = fig.add_subplot()
        tri, owner = _triangles(mesh)
        if where == "point":
            art = ax.tripcolor(pts[:, 0], pts[:, 1], tri, v, shading="gouraud", cmap=cmap)
        else:
            art = ax.tripcolor(pts[:, 0], pts[:, 1], tri, facecolors=v[owner], cmap=cmap)
        ax.set_aspect("equal")
    else:  # 3D: the points (or cell centres), coloured
        ax = fig.add_subplot(projection="3d")
        xyz = pts if where == "point" else pts[mesh.cells.cpu().numpy()].mean(1)
        art = ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=v, cmap=cmap, s=4)
    fig.colorbar(art, ax=ax, label=title or "")
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def _coo(A: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    if hasattr(A, "pattern") and hasattr(A, "sparse_shape"):  # sla.SparseTensor
        p = A.pattern
        return p.rows().cpu().numpy(), p.ccol.cpu().numpy(), tuple(A.sparse_shape)
    if isinstance(A, torch.Tensor):
        if A.layout == torch.strided:
            A = A.to_sparse()
        A = A.to_sparse_coo().coalesce()
        i = A.indices().cpu().numpy()
        return i[0], i[1], tuple(A.shape[-2:])
    if hasattr(A, "tocoo"):  # SciPy
        c = A.tocoo()
        return c.row, c.col, c.shape
    raise TypeError(f"A must be a sla.SparseTensor, a torch tensor or a SciPy sparse matrix, got {type(A).__name__}")


def spy(
    A: Any, path: str | os.PathLike | None = None, title: str | None = None, markersize: float | None = None
) -> Any:
    """The sparsity pattern of ``A`` (``sla.SparseTensor``, torch sparse/dense, SciPy sparse)."""
    rows, cols, (m, n) = _coo(A)
    fig = _figure((5, 5 * m / max(n, 1) if n else 5))
    ax = fig.add_subplot()
    ms = markersize if markersize is not None else max(0.05, min(4.0, 400.0 / max(m, n, 1)))
    ax.plot(cols, rows, "s", markersize=ms, markeredgewidth=0, color="tab:blue")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(m - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_title(title or f"{m} x {n}, {len(rows)} stored entries")
    return _finish(fig, path)


def _curve(values: Sequence[float] | Any, name: str) -> np.ndarray:
    v = _numpy(values, name).ravel()
    if v.size == 0:
        raise ValueError(f"{name} is empty: nothing to plot")
    return v


def plot_residuals(
    history: Sequence[float] | Any,
    path: str | os.PathLike | None = None,
    rtol: float | None = None,
    title: str = "residual history",
) -> Any:
    """Relative residual per iteration on a log scale (e.g. ``SolveInfo.history``); ``rtol`` drawn as a line."""
    v = _curve(history, "history")
    fig = _figure((6.4, 4))
    ax = fig.add_subplot()
    ax.semilogy(np.arange(len(v)), np.where(v > 0, v, np.nan), "-", lw=1.5)
    if rtol is not None:
        ax.axhline(rtol, color="tab:red", ls="--", lw=1, label=f"rtol = {rtol:g}")
        ax.legend()
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative residual")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, path)


def plot_objective(
    values: Sequence[float] | Any, path: str | os.PathLike | None = None, title: str = "objective", log: bool = True
) -> Any:
    """Objective per optimiser step (log scale when all values are positive and ``log``)."""
    v = _curve(values, "values")
    fig = _figure((6.4, 4))
    ax = fig.add_subplot()
    if log and (v > 0).all():
        ax.semilogy(np.arange(len(v)), v, "-", lw=1.5)
    else:
        ax.plot(np.arange(len(v)), v, "-", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("objective")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, path)


def plot_flow(
    mesh: Any,
    u: Any,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    samples: tuple[int, int] = (101, 101),
    density: float | tuple[float, float] = 1.6,
    obstacles: Sequence[tuple[tuple[float, float], float]] = (),
    figsize: tuple[float, float] = (5.5, 5.0),
) -> Any:
    """Speed (colour) and streamlines of a 2D velocity field on a triangle mesh.

    Parameters
    ----------
    mesh : sla.assembly.Mesh
        Triangles (2D points).
    u : tensor or array ``[n_points, 2]``
        Velocity at the mesh points (e.g. the P2 velocity's vertex values).
    path : str, optional
        Write a PNG there and return the path; else return the matplotlib ``Figure``.
    samples : (nx, ny)
        Grid on the mesh's bounding box on which the streamlines are traced (linear
        interpolation; points outside the mesh, e.g. inside a cylinder, carry no streamline).
    obstacles : sequence of ``((x, y), radius)``
        Discs drawn in grey (bodies the flow goes around).
    """
    C, _ = _triangles(mesh)
    P = _numpy(mesh.points, "mesh.points")[:, :2]
    U = _numpy(u, "u")
    if U.ndim != 2 or U.shape != (P.shape[0], 2):
        raise ValueError(f"u must have shape [{P.shape[0]}, 2] (one 2D velocity per mesh point), got {U.shape}")
    from matplotlib.patches import Circle
    from matplotlib.tri import LinearTriInterpolator, Triangulation

    tri = Triangulation(P[:, 0], P[:, 1], C)
    X, Y = np.meshgrid(
        np.linspace(P[:, 0].min(), P[:, 0].max(), samples[0]), np.linspace(P[:, 1].min(), P[:, 1].max(), samples[1])
    )
    ui = LinearTriInterpolator(tri, U[:, 0])(X, Y).filled(np.nan)
    vi = LinearTriInterpolator(tri, U[:, 1])(X, Y).filled(np.nan)
    fig = _figure(figsize)
    ax = fig.subplots()
    tc = ax.tripcolor(tri, np.hypot(U[:, 0], U[:, 1]), shading="gouraud", cmap="viridis")
    ax.streamplot(X, Y, ui, vi, color="w", linewidth=0.6, density=density)
    for centre, radius in obstacles:
        ax.add_patch(Circle(centre, radius, color="0.3"))
    fig.colorbar(tc, ax=ax, label="|u|", fraction=0.046 if figsize[0] <= figsize[1] * 2 else 0.03)
    ax.set_aspect("equal")
    ax.set_xlim(P[:, 0].min(), P[:, 0].max())
    ax.set_ylim(P[:, 1].min(), P[:, 1].max())
    if title:
        ax.set_title(title)
    return _finish(fig, path)
