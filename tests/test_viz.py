"""sla.viz: a field on a mesh (pyvista off-screen and matplotlib), spy plots, histories."""

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib", reason="sla.viz needs matplotlib (pip install 'sla-torch[viz]')")

import sla
from sla import viz
from sla.assembly import unit_cube, unit_square

VIRIDIS_LOW, VIRIDIS_HIGH = np.array([68, 1, 84]), np.array([253, 231, 37])


def _rgb(fig_or_image):
    if isinstance(fig_or_image, np.ndarray):
        return fig_or_image[..., :3].astype(int)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig_or_image)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(int)


def _centre_x(rgb, colour, tol=30):
    """Mean column of the pixels within ``tol`` of ``colour`` (None when there are none)."""
    near = np.abs(rgb - colour).sum(-1) < tol
    cols = np.nonzero(near)[1]
    return cols.mean() if len(cols) > 50 else None


def _low_left_high_right(image):
    """The field x is drawn dark purple on the left and yellow on the right (viridis)."""
    low, high = _centre_x(_rgb(image), VIRIDIS_LOW), _centre_x(_rgb(image), VIRIDIS_HIGH)
    assert low is not None and high is not None and low < high


@pytest.mark.parametrize("cell", ["tri", "quad"])
def test_matplotlib_point_field_follows_the_values(cell):
    mesh = unit_square(6, cell=cell)
    fig = viz.plot_field(mesh, mesh.points[:, 0], engine="matplotlib")
    _low_left_high_right(fig)
    assert fig.axes[1].get_ylabel() == ""  # the colour bar


def test_matplotlib_cell_field_and_file(tmp_path):
    mesh = unit_square(6)
    centres = mesh.points[mesh.cells].mean(1)
    path = viz.plot_field(mesh, centres[:, 0], path=tmp_path / "k.png", title="k", engine="matplotlib")
    data = (tmp_path / "k.png").read_bytes()
    assert path == str(tmp_path / "k.png") and data[:4] == b"\x89PNG" and len(data) > 5000


def test_vector_field_drawn_as_its_length_and_3d_mesh():
    mesh = unit_square(4)
    v = torch.stack([mesh.points[:, 0], torch.zeros(mesh.n_points, dtype=mesh.points.dtype)], 1)
    _low_left_high_right(viz.plot_field(mesh, v, engine="matplotlib"))
    cube = unit_cube(3)
    fig = viz.plot_field(cube, cube.points.sum(1), engine="matplotlib")
    art = fig.axes[0].collections[0]
    assert np.allclose(np.sort(art.get_array()), np.sort(cube.points.sum(1).numpy()))


def test_pyvista_off_screen():
    pytest.importorskip("pyvista", reason="pyvista not installed")
    mesh = unit_square(6)
    try:
        image = viz.plot_field(mesh, mesh.points[:, 0], engine="pyvista")
    except Exception as exc:  # no off-screen OpenGL here (no OSMesa/EGL): the auto engine falls back
        pytest.skip(f"pyvista cannot render off-screen here: {exc}")
    assert image.ndim == 3 and image.shape[2] >= 3
    _low_left_high_right(image)


def test_bad_input_is_named():
    mesh = unit_square(3)
    with pytest.raises(ValueError, match=r"one row per point \(16\) or per cell \(18\), got 5"):
        viz.plot_field(mesh, torch.zeros(5))
    with pytest.raises(ValueError, match="engine must be one of"):
        viz.plot_field(mesh, torch.zeros(16), engine="vtk")
    with pytest.raises(TypeError, match="A must be a sla.SparseTensor"):
        viz.spy([[1, 2]])
    with pytest.raises(ValueError, match="history is empty"):
        viz.plot_residuals([])


def test_spy_marks_exactly_the_stored_entries():
    import scipy.sparse as sp

    A = sla.gallery.poisson2d(5)
    ref = sp.coo_matrix(A.to_dense().numpy())  # the independent reference: SciPy's nonzeros
    fig = viz.spy(A)
    line = fig.axes[0].lines[0]
    got = sorted(zip(line.get_ydata().tolist(), line.get_xdata().tolist(), strict=True))
    assert got == sorted(zip(ref.row.tolist(), ref.col.tolist(), strict=True))
    assert fig.axes[0].get_title() == f"25 x 25, {ref.nnz} stored entries"
    assert viz.spy(sp.csr_matrix(ref)).axes[0].lines[0].get_xdata().size == ref.nnz


def test_histories():
    r = [1.0, 1e-2, 0.0, 1e-9]
    ax = viz.plot_residuals(r, rtol=1e-8).axes[0]
    y = ax.lines[0].get_ydata()
    assert ax.get_yscale() == "log" and np.isnan(y[2]) and y[3] == 1e-9
    assert ax.lines[1].get_ydata()[0] == 1e-8  # the rtol line
    ax = viz.plot_objective(torch.tensor([3.0, 2.0, 1.0])).axes[0]
    assert ax.get_yscale() == "log" and list(ax.lines[0].get_ydata()) == [3.0, 2.0, 1.0]
    assert viz.plot_objective([1.0, -1.0]).axes[0].get_yscale() == "linear"


def test_plot_flow_draws_speed_and_refuses_a_wrong_shape(tmp_path):
    pytest.importorskip("matplotlib")
    from sla.assembly import unit_square

    mesh = unit_square(8)
    x = mesh.points
    u = torch.stack([x[:, 1], -x[:, 0]], 1)  # solid-body rotation: speed |x|, largest at (1, 1)
    fig = viz.plot_flow(mesh, u, title="rotation")
    colours = [c for ax in fig.axes for c in ax.collections if hasattr(c, "get_clim")]
    lo, hi = colours[0].get_clim()
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(2**0.5)
    path = viz.plot_flow(mesh, u, tmp_path / "flow.png", obstacles=[((0.5, 0.5), 0.1)])
    assert (tmp_path / "flow.png").stat().st_size > 1000 and str(path).endswith("flow.png")
    with pytest.raises(ValueError, match=r"u must have shape \[81, 2\]"):
        viz.plot_flow(mesh, u[:, :1])
