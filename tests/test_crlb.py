import numpy as np
import pytest

import startrack as st
from startrack import crlb
from startrack.crlb import boundary_optimum, diffraction_limit, diffraction_optimum, precision_limit


def _numeric_fisher(model, x, y, flux, bg, floor, roi, h=1e-5):
    from startrack.psf import roi_origin

    x0, y0 = roi_origin(x, roi), roi_origin(y, roi)

    def lam(th):
        v, _, _ = model.render([th[0]], [th[1]], [x0], [y0], (roi, roi))
        return th[2] * v[0] + th[3] + floor

    th = np.array([x, y, flux, bg], float)
    J = []
    for a in range(4):
        e = np.zeros(4)
        e[a] = h * max(1.0, abs(th[a]))
        J.append((lam(th + e) - lam(th - e)) / (2 * e[a]))
    J = np.array(J).reshape(4, -1)
    return (J / lam(th).ravel()) @ J.T


def test_fisher_matches_finite_differences():
    m = st.GaussianPSF(0.3, 0.45)
    s = st.Sensor(gain=1, dark_var=20, read_noise=2)
    F = crlb.fisher_information(m, 7.23, 6.81, 2000.0, 12.0, s, roi=7)[0]
    Fn = _numeric_fisher(m, 7.23, 6.81, 2000.0, 12.0, 24.0, 7)
    assert np.allclose(F, Fn, rtol=1e-5)


def test_known_flux_bound_is_smaller():
    m = st.GaussianPSF(0.5)
    s = st.Sensor(gain=1, dark_var=25)
    full = precision_limit(m, 5.2, 5.35, 1500, 0, s)
    known = precision_limit(m, 5.2, 5.35, 1500, 0, s, params=("x", "y"))
    onlyx = precision_limit(m, 5.2, 5.35, 1500, 0, s, params=("x",))
    # Away from the symmetric points, not knowing the flux costs precision.
    assert known[0] < full[0] * 0.9999 and known[1] < full[1] * 0.9999
    assert onlyx[0] <= known[0] * (1 + 1e-9) and np.isnan(onlyx[1])


@pytest.mark.parametrize("sd2", [25.0, 250.0])
@pytest.mark.parametrize("r", [0.1, 0.15, 0.2, 0.25])
def test_boundary_optimum_matches_exact_crlb(r, sd2):
    # Paper Eq. 14 against the exact known-flux CRLB of a spot centred on a boundary (N = 1500).
    s = st.Sensor(gain=0.2, dark_var=sd2)
    exact = precision_limit(st.GaussianPSF(r), 10.5, 10.0, 1500.0, 0.0, s, params=("x",))[0]
    assert boundary_optimum(r, 1500.0, sd2) == pytest.approx(exact, rel=0.03)


def test_boundary_optimum_stops_holding_for_wide_psfs():
    # Beyond r ~ 0.3 px the flux spills past the two boundary pixels: with the high
    # dark noise (sd2 = 250) the closed form is 5.6 % low at r = 0.3 and 13 % at r = 0.4.
    s = st.Sensor(gain=0.2, dark_var=250.0)
    exact = precision_limit(st.GaussianPSF(0.4), 10.5, 10.0, 1500.0, 0.0, s, params=("x",))[0]
    assert boundary_optimum(0.4, 1500.0, 250.0) / exact - 1 < -0.1


def test_boundary_optimum_values():
    assert boundary_optimum(0.2, 1500) == pytest.approx(0.2 * np.sqrt(np.pi / 3000))
    assert boundary_optimum(0.2, 1500, 25) == pytest.approx(0.2 / 1500 * np.sqrt(np.pi * 1550 / 2))
    with pytest.raises(ValueError, match="radius"):
        boundary_optimum(-0.1, 1500)


def test_two_pixel_limit_near_boundary():
    m = st.GaussianPSF(0.2)
    s = st.Sensor(gain=0.2, dark_var=25.0)
    for dx in (0.4, 0.5, 0.6):
        exact = precision_limit(m, 10 + dx, 10.0, 1500.0, 0.0, s, params=("x",))[0]
        assert crlb.two_pixel_limit(m, 10 + dx, 10.0, 1500.0, 0.0, s) == pytest.approx(exact, rel=0.03)


def test_diffraction():
    # 550 nm, F/1.2, 5.3 um pixels: DL = 1.22 * 0.55 * 1.2 / 5.3 = 0.152 px
    assert diffraction_limit(0.55, 1.2, 5.3) == pytest.approx(0.1519, abs=1e-4)
    r, pl = diffraction_optimum(0.55, 1.2, 5.3, 1500, 25)
    assert r == pytest.approx(0.1519 / 3, abs=1e-4)
    assert pl == pytest.approx(boundary_optimum(r, 1500, 25))


def test_intrapixel_map():
    m = st.GaussianPSF(0.2)
    s = st.Sensor(gain=0.2, dark_var=25.0)
    t = crlb.intrapixel_map(m, 1500.0, 0.0, s, params=("x", "y"), n=20)
    assert len(t) == 400
    # x is best on the vertical boundaries and worst on the pixel's central column
    # (worst of all where that column meets a horizontal boundary: the flux is split
    # between two rows and neither pixel pair carries x information).
    best = t[np.argmin(t["pl_x"])]
    assert abs(abs(best["x"]) - 0.5) < 1e-9
    worst = t[np.argmax(t["pl_x"])]
    assert abs(worst["x"]) < 1e-9
    assert t.meta["rms_x"] == pytest.approx(t.meta["rms_y"], rel=1e-9)


def test_bad_params():
    with pytest.raises(ValueError, match="params"):
        precision_limit(st.GaussianPSF(0.3), 1, 1, 1, 0, params=("z",))


