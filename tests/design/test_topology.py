"""SIMP topology optimisation against an independent NumPy/SciPy port of the 88-line code
(Andreassen, Clausen, Schevenels, Lazarov & Sigmund 2011, density filter ft=2), written here."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from sla.design import SIMP, cantilever, density_filter, mbb_beam


# --------------------------------------------------------------- the oracle
def _top88_setup(nelx, nely, rmin, nu=0.3):
    A11 = np.array([[12, 3, -6, -3], [3, 12, 3, 0], [-6, 3, 12, -3], [-3, 0, -3, 12]])
    A12 = np.array([[-6, -3, 0, 3], [-3, -6, -3, -6], [0, -3, -6, 3], [3, -6, 3, -6]])
    B11 = np.array([[-4, 3, -2, 9], [3, -4, -9, 4], [-2, -9, -4, -3], [9, 4, -3, -4]])
    B12 = np.array([[2, -3, 4, -9], [-3, 2, 9, -2], [4, 9, 2, 3], [-9, -2, 3, 2]])
    KE = 1 / (1 - nu**2) / 24 * (np.block([[A11, A12], [A12.T, A11]]) + nu * np.block([[B11, B12], [B12.T, B11]]))
    nodenrs = np.arange(1, (1 + nelx) * (1 + nely) + 1).reshape(1 + nely, 1 + nelx, order="F")
    edofVec = (2 * nodenrs[:-1, :-1] + 1).reshape(-1, order="F")
    edofMat = edofVec[:, None] + np.array([0, 1, 2 * nely + 2, 2 * nely + 3, 2 * nely, 2 * nely + 1, -2, -1])
    edofMat -= 1  # 0-based
    iK = np.kron(edofMat, np.ones((8, 1), dtype=int)).reshape(-1)
    jK = np.kron(edofMat, np.ones((1, 8), dtype=int)).reshape(-1)
    ndof = 2 * (nelx + 1) * (nely + 1)
    F = np.zeros(ndof)
    F[1] = -1
    fixed = np.union1d(np.arange(0, 2 * (nely + 1), 2), [ndof - 1])
    free = np.setdiff1d(np.arange(ndof), fixed)
    iH, jH, sH = [], [], []
    r = int(np.ceil(rmin)) - 1
    for i1 in range(nelx):
        for j1 in range(nely):
            e1 = i1 * nely + j1
            for i2 in range(max(i1 - r, 0), min(i1 + r, nelx - 1) + 1):
                for j2 in range(max(j1 - r, 0), min(j1 + r, nely - 1) + 1):
                    iH.append(e1)
                    jH.append(i2 * nely + j2)
                    sH.append(max(0.0, rmin - np.hypot(i1 - i2, j1 - j2)))
    H = sp.csr_array((sH, (iH, jH)), shape=(nelx * nely,) * 2)
    Hs = np.asarray(H.sum(1)).ravel()
    return dict(KE=KE, edofMat=edofMat, iK=iK, jK=jK, F=F, free=free, H=H, Hs=Hs, ndof=ndof)


def _top88_sens(s, xPhys, penal, E0=1.0, Emin=1e-9):
    """Compliance, dc/dx, dv/dx (the hand formulas of the 88-line code) at physical densities."""
    KE, edofMat = s["KE"], s["edofMat"]
    sK = (KE.reshape(-1)[:, None] * (Emin + xPhys**penal * (E0 - Emin))).reshape(-1, order="F")
    K = sp.csc_array((sK, (s["iK"], s["jK"])), shape=(s["ndof"],) * 2)
    K = (K + K.T) / 2
    U = np.zeros(s["ndof"])
    free = s["free"]
    U[free] = spla.spsolve(K[free][:, free], s["F"][free])
    Ue = U[edofMat]
    ce = np.sum((Ue @ KE) * Ue, 1)
    c = np.sum((Emin + xPhys**penal * (E0 - Emin)) * ce)
    dc = -penal * (E0 - Emin) * xPhys ** (penal - 1) * ce
    H, Hs = s["H"], s["Hs"]
    return c, H @ (dc / Hs), H @ (np.ones_like(dc) / Hs)


def top88(nelx, nely, volfrac, penal, rmin, maxiter=300):
    s = _top88_setup(nelx, nely, rmin)
    H, Hs = s["H"], s["Hs"]
    x = np.full(nelx * nely, volfrac)
    xPhys = x.copy()
    change, it, hist = 1.0, 0, []
    while change > 0.01 and it < maxiter:
        it += 1
        c, dc, dv = _top88_sens(s, xPhys, penal)
        hist.append(c)
        l1, l2, move = 0.0, 1e9, 0.2
        while (l2 - l1) / (l1 + l2) > 1e-3:
            lmid = 0.5 * (l2 + l1)
            xnew = np.maximum(
                0, np.maximum(x - move, np.minimum(1, np.minimum(x + move, x * np.sqrt(-dc / dv / lmid))))
            )
            xPhys = (H @ xnew) / Hs
            if xPhys.sum() > volfrac * nelx * nely:
                l1 = lmid
            else:
                l2 = lmid
        change = np.abs(xnew - x).max()
        x = xnew
    return xPhys, hist, it


def _to_top88_order(case, nely):
    """Index map: sla cell -> 88-line element (column-major, y counted from the top)."""
    c = case.mesh.points[case.mesh.cells].mean(1)
    elx = torch.floor(c[:, 0]).long()
    ely = nely - 1 - torch.floor(c[:, 1]).long()
    return (elx * nely + ely).numpy()


# ------------------------------------------------------------------- tests
def test_filter_matches_the_88_line_filter():
    case = mbb_beam(12, 5)
    H = density_filter(case.mesh, 1.5).to_scipy().toarray()
    s = _top88_setup(12, 5, 1.5)
    ref = (s["H"] / s["Hs"][:, None]).toarray() if hasattr(s["H"], "toarray") else None
    ref = s["H"].toarray() / s["Hs"][:, None]
    o = _to_top88_order(case, 5)
    np.testing.assert_allclose(H, ref[np.ix_(o, o)], atol=1e-15)


def test_sensitivities_equal_the_hand_formula():
    nelx, nely, penal = 60, 20, 3.0
    case = mbb_beam(nelx, nely)
    opt = SIMP(case.mesh, case.fixed, case.load, volfrac=0.5, penal=penal, rmin=1.5)
    o = _to_top88_order(case, nely)
    s = _top88_setup(nelx, nely, 1.5)
    g = np.random.default_rng(0)
    x88 = g.uniform(0.05, 1.0, nelx * nely)
    x = torch.from_numpy(x88[o])
    c, dc, dv = opt.sensitivities(x)
    c88, dc88, dv88 = _top88_sens(s, (s["H"] @ x88) / s["Hs"], penal)
    assert abs(c - c88) <= 1e-10 * abs(c88)
    np.testing.assert_allclose(dc.numpy(), dc88[o], rtol=0, atol=1e-10 * np.abs(dc88).max())
    np.testing.assert_allclose(dv.numpy() * nelx * nely, dv88[o], rtol=0, atol=1e-12)


def test_mbb_beam_design_and_compliance_agree_with_top88():
    nelx, nely = 60, 20
    x88, hist88, it88 = top88(nelx, nely, 0.5, 3.0, 1.5)
    case = mbb_beam(nelx, nely)
    res = SIMP(case.mesh, case.fixed, case.load, volfrac=0.5, penal=3.0, rmin=1.5).optimize(maxiter=300)
    o = _to_top88_order(case, nely)
    assert res.converged and it88 < 300
    assert abs(res.compliance[-1] - hist88[-1]) <= 0.01 * hist88[-1]
    assert np.linalg.norm(res.x.numpy() - x88[o]) <= 0.01 * np.linalg.norm(x88)
    assert abs(res.volume[-1] - 0.5) < 2e-3


def test_cantilever_3d_small_against_the_2d_limit_and_volume():
    case = cantilever(6, 3, 2)
    res = SIMP(case.mesh, case.fixed, case.load, volfrac=0.3, rmin=1.5).optimize(maxiter=8)
    assert res.compliance[-1] < res.compliance[0]
    assert abs(res.volume[-1] - 0.3) < 5e-3


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(volfrac=0.0), "volfrac"),
        (dict(volfrac=1.0), "volfrac"),
        (dict(volfrac=1.2), "volfrac"),
        (dict(penal=0.5), "penal"),
        (dict(rmin=0.0), "rmin"),
        (dict(rmin=-1.0), "rmin"),
        (dict(poisson=0.5), "poisson"),
        (dict(young_min=2.0), "young_min"),
    ],
)
def test_bad_parameters_are_named(kw, match):
    case = mbb_beam(6, 2)
    with pytest.raises(ValueError, match=match):
        SIMP(case.mesh, case.fixed, case.load, **kw)


def test_load_on_a_constrained_dof_is_an_error():
    case = mbb_beam(6, 2)
    load = case.load.clone()
    load[int(case.fixed[0])] = 1.0
    with pytest.raises(ValueError, match="load acts on constrained dof"):
        SIMP(case.mesh, case.fixed, load)


def test_filter_radius_must_be_positive():
    with pytest.raises(ValueError, match="rmin"):
        density_filter(mbb_beam(4, 2).mesh, 0)
