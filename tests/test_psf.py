import numpy as np
import pytest
from scipy.special import ndtr

from startrack import GaussianPSF, parse_psf
from startrack.psf import roi_origin


def _reference(x, y, sx, sy, x0, y0, ny, nx):
    cx = np.arange(x0, x0 + nx)
    cy = np.arange(y0, y0 + ny)
    fx = ndtr((cx + 0.5 - x) / sx) - ndtr((cx - 0.5 - x) / sx)
    fy = ndtr((cy + 0.5 - y) / sy) - ndtr((cy - 0.5 - y) / sy)
    return np.outer(fy, fx)


@pytest.mark.parametrize("sx, sy", [(0.1, 0.1), (0.3, 0.3), (1.0, 1.0), (0.25, 0.6)])
def test_gaussian_matches_erf_reference(sx, sy, rng):
    m = GaussianPSF(sx, sy)
    x = rng.uniform(3, 4, 20)
    y = rng.uniform(3, 4, 20)
    x0 = np.full(20, 0)
    y0 = np.full(20, 0)
    val, ddx, ddy = m.render(x, y, x0, y0, (9, 8))
    for k in range(20):
        ref = _reference(x[k], y[k], sx, sy, 0, 0, 9, 8)
        assert np.allclose(val[k], ref, atol=1e-15, rtol=1e-12)
        h = 1e-6
        num_dx = (_reference(x[k] + h, y[k], sx, sy, 0, 0, 9, 8)
                  - _reference(x[k] - h, y[k], sx, sy, 0, 0, 9, 8)) / (2 * h)
        num_dy = (_reference(x[k], y[k] + h, sx, sy, 0, 0, 9, 8)
                  - _reference(x[k], y[k] - h, sx, sy, 0, 0, 9, 8)) / (2 * h)
        assert np.allclose(ddx[k], num_dx, atol=1e-7)
        assert np.allclose(ddy[k], num_dy, atol=1e-7)


def test_tails_keep_relative_precision():
    # A pixel 6 sigma from the star must still get its (tiny) share right:
    # 1 - Phi would cancel to zero in double precision.
    m = GaussianPSF(0.1)
    val, _, _ = m.render([0.0], [0.0], [-3], [-3], (7, 7))
    ref = (ndtr(-5.0) - ndtr(-15.0)) * (ndtr(0.5 / 0.1) - ndtr(-0.5 / 0.1))
    assert val[0, 3, 3 + 1] == pytest.approx(ref, rel=1e-10)
    assert val[0].sum() == pytest.approx(1.0, abs=1e-12)


def test_flux_sums_to_one_in_a_wide_roi():
    # sigma = 1.2 px: the sampled centroid's periodic error, ~exp(-2 pi^2 sigma^2), is 1e-12.
    m = GaussianPSF(1.2)
    img = m.image(10.3, 9.8, (21, 21))
    assert img.sum() == pytest.approx(1.0, abs=1e-9)
    yy, xx = np.mgrid[:21, :21]
    assert (img * xx).sum() == pytest.approx(10.3, abs=1e-9)
    assert (img * yy).sum() == pytest.approx(9.8, abs=1e-9)


def test_roi_origin_centres_the_window():
    assert roi_origin(10.4, 5) == 8
    assert roi_origin(10.6, 5) == 9
    assert roi_origin(10.4, 4) == 9  # pixels 9..12 straddle 10.5, the nearest corner


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_sigma(bad):
    with pytest.raises(ValueError, match="sigma"):
        GaussianPSF(bad)


def test_parse_psf():
    assert parse_psf("gaussian:0.3").sigma_x == 0.3
    m = parse_psf("gaussian:0.3,0.5")
    assert (m.sigma_x, m.sigma_y) == (0.3, 0.5)
    assert parse_psf(m.spec).spec == m.spec
    for bad, match in [("gauss", "look like"), ("gaussian:abc", "number"), ("airy:1", "unknown PSF"),
                       ("gaussian:1,2,3", "SIGMA or SX,SY")]:
        with pytest.raises(ValueError, match=match):
            parse_psf(bad)


