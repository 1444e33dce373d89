"""Reference interpolation for the geometric multigrid tests, from point positions alone (independent
of sla): the points of each level on the fine grid's axis, coarse point ``I`` on fine point ``2I + 1``,
the unknown zero at ``-1`` and at the fine grid's length."""

import numpy as np


def coarse_points(x: list) -> list:
    """The next level's points: every second one, from the second."""
    return x[1::2][: len(x) // 2]


def hat_interpolation(x: list, lo: float, hi: float) -> np.ndarray:
    """Dense 1-D linear interpolation ``[len(x), len(x) // 2]`` from ``coarse_points(x)`` to ``x``
    (each coarse point's hat function spans its neighbours, or ``lo`` / ``hi`` at the ends)."""
    xc = coarse_points(x)
    knots = [lo, *xc, hi]
    P = np.zeros((len(x), len(xc)))
    for i, xi in enumerate(x):
        for j, c in enumerate(xc):
            left, right = knots[j], knots[j + 2]
            if left <= xi <= c:
                P[i, j] = (xi - left) / (c - left)
            elif c < xi <= right:
                P[i, j] = (right - xi) / (right - c)
    return P
