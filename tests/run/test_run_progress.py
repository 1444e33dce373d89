"""Progress bars: off when stderr is not a terminal or progress=false; the iterative-solve bar follows
the solver's callback (iteration, relative residual) and starts again with each solve."""

import io
import sys

import pytest
import torch

pytest.importorskip("tqdm", reason="progress bars need tqdm (pip install 'sla-torch[run]')")

import sla
from sla.run.schema import problems_package

problems = problems_package()


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_off_without_a_terminal_or_when_disabled(monkeypatch):
    steps = range(3)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert problems.progress(steps, total=3) is steps
    assert problems.solve_progress("cpu") is None
    monkeypatch.setattr(sys, "stderr", _Tty())
    token = problems.set_progress(False)
    try:
        assert problems.progress(steps, total=3) is steps and problems.solve_progress("cpu") is None
    finally:
        problems._PROGRESS.reset(token)
    bar = problems.progress(steps, total=3, desc="time steps")
    assert list(bar) == [0, 1, 2] and bar is not steps
    assert problems.solve_progress("cuda:0") is None  # no per-iteration device synchronisation on GPUs


def test_solve_bar_follows_the_solver_callback(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Tty())
    bar = problems.SolveProgress(delay=0.0)
    A = sla.gallery.poisson2d(12)
    b = torch.rand(A.sparse_shape[0], dtype=torch.float64)
    seen = []

    def spy(it, rel):
        seen.append((it, rel))
        bar(it, rel)

    x, info = sla.solve(A, b, backend="pytorch", method="cg", preconditioner="none", callback=spy, return_info=True)
    assert bar.bar is not None and bar.bar.n == seen[-1][0] == info.iterations
    first = bar.bar
    sla.solve(A, b, backend="pytorch", method="cg", preconditioner="none", callback=bar)
    assert bar.bar is not first and first.disable  # a new solve: the old bar closed, a new one
    bar.close()
    assert bar.bar is None
