"""float32 end to end: the default tolerance is reachable (rtol, or the rounding level of the
precision, whichever is larger), on CPU and GPU; an explicit unreachable rtol still fails loudly."""

import pytest
import torch
from devices import DEVICES

import sla


def _check(n, device, **kw):
    A = sla.gallery.poisson2d(n, device=device).float()
    b = torch.ones(n * n, device=device)
    x, info = A.solve(b, return_info=True, **kw)
    assert info.converged
    ref = sla.gallery.poisson2d(n).solve(torch.ones(n * n, dtype=torch.float64), backend="scipy", method="lu")
    err = float((x.double().cpu() - ref).norm() / ref.norm())
    assert err < 1e-4, err  # the forward error is what float32 can give
    return info


@pytest.mark.parametrize("device", DEVICES)
def test_float32_default_tolerance_is_reachable(device):
    info = _check(120, device, backend="pytorch", method="cg", preconditioner="gmg")
    assert info.residual < 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_float32_auto_at_52900_unknowns(device):
    # the case: auto picks multigrid CG at 50K+, float32 cannot reach 1e-5 relative residual
    _check(230, device)


def test_explicit_unreachable_rtol_is_an_error():
    A = sla.gallery.poisson2d(120).float()
    with pytest.raises(sla.ConvergenceError, match="stagnated|attainable"):
        A.solve(torch.ones(14400), backend="pytorch", method="cg", preconditioner="gmg", rtol=1e-6)
