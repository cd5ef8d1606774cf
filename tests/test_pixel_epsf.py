import numpy as np
import pytest
from scipy.interpolate import CubicSpline, RectBivariateSpline

import startrack as st
from startrack.psf import PixelEPSF

SENSOR = st.Sensor(gain=0.14, offset=37.0, dark_var=54.40)


def _gaussian_values(x, y, shape, sigma=0.35):
    g = st.GaussianPSF(sigma)
    return np.array([g.image(xx, y, shape) for xx in x])


@pytest.fixture
def model_1d():
    rng = np.random.default_rng(0)
    x = np.linspace(3.0, 8.0, 15) + rng.uniform(-0.05, 0.05, 15)
    vals = _gaussian_values(x, 4.2, (9, 12))[:, 1:8, 1:11] * (1 + 0.02 * rng.standard_normal((15, 7, 10)))
    return PixelEPSF(vals, x, 4.2, col0=1, row0=1, meta={"flux": 1500.0})


def test_1d_matches_scipy_spline_and_its_derivatives(model_1d):
    m = model_1d
    cs = CubicSpline(m.x, m.values.reshape(len(m.x), -1), axis=0, bc_type="not-a-knot")
    xs = np.array([3.2, 5.55, 7.9])
    x0, y0 = np.array([2, 4, 5]), np.array([2, 2, 2])
    v, dx, dy, hxx, hxy, hyy = m.render(xs, 4.2, x0, y0, (5, 5), second=True)
    for k in range(3):
        for i in range(5):
            for j in range(5):
                p = (y0[k] + i - 1) * 10 + (x0[k] + j - 1)
                assert v[k, i, j] == pytest.approx(cs(xs[k])[p], abs=1e-14)
                assert dx[k, i, j] == pytest.approx(cs(xs[k], 1)[p], abs=1e-12)
                assert hxx[k, i, j] == pytest.approx(cs(xs[k], 2)[p], abs=1e-10)
    assert np.all(dy == 0) and np.all(hxy == 0) and np.all(hyy == 0)  # y is not a variable of a 1-D scan


def test_pixels_outside_the_block_record_nothing(model_1d):
    v, _, _ = model_1d.render([5.0], [4.2], [-3], [0], (5, 5))
    assert np.all(v[0, :, :4] == 0) and np.any(v[0, :, 4] != 0)


def test_2d_grid_with_rotation_matches_tensor_spline_and_finite_differences():
    g = st.GaussianPSF(0.4)
    u, v = np.linspace(-1, 1, 9), np.linspace(-0.8, 0.8, 7)
    th = np.radians(20.0)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    t = np.array([6.3, 4.1])
    vals = np.array([[g.image(*(t + R @ [a, b]), (9, 12)) for b in v] for a in u])
    m = PixelEPSF(vals, u, v, col0=0, row0=0, transform=(t[0], t[1], R.T))
    x, y = 6.55, 4.32
    out = m.render([x], [y], [4], [2], (5, 5), second=True)
    uu, vv = R.T @ ([x, y] - t)
    p = (2 + 2) * 12 + (4 + 1)  # pixel (row 4, column 5)
    ref = RectBivariateSpline(u, v, vals.reshape(9, 7, -1)[:, :, p], s=0)  # s = 0: the not-a-knot interpolant
    assert out[0][0, 2, 1] == pytest.approx(ref(uu, vv)[0, 0], abs=1e-13)

    def f(k, xx, yy):
        return m.render([xx], [yy], [4], [2], (5, 5))[k][0]

    h = 1e-5
    scale = np.abs(out[0][0]).max()
    assert np.allclose(out[1][0], (f(0, x + h, y) - f(0, x - h, y)) / (2 * h), atol=1e-8 * scale / h)
    assert np.allclose(out[2][0], (f(0, x, y + h) - f(0, x, y - h)) / (2 * h), atol=1e-8 * scale / h)
    assert np.allclose(out[3][0], (f(1, x + h, y) - f(1, x - h, y)) / (2 * h), atol=1e-6)
    assert np.allclose(out[4][0], (f(1, x, y + h) - f(1, x, y - h)) / (2 * h), atol=1e-6)
    assert np.allclose(out[5][0], (f(2, x, y + h) - f(2, x, y - h)) / (2 * h), atol=1e-6)
    # A fine grid of an exact model interpolates it closely.
    assert np.allclose(out[0][0], g.render([x], [y], [4], [2], (5, 5))[0][0], atol=1e-3)


def test_save_load_shift_and_stamps(tmp_path, model_1d):
    path = tmp_path / "pe.fits"
    model_1d.save(path)
    back = st.parse_psf(f"pixel-epsf:{path}")
    assert isinstance(back, PixelEPSF) and back.spec == f"pixel-epsf:{path}"
    assert np.array_equal(back.params, model_1d.params) and np.array_equal(back.table, model_1d.table)
    assert back.meta["flux"] == 1500.0
    a = model_1d.render([5.3], [4.2], [3], [2], (5, 5))[0]
    b = model_1d.shifted(10, 20).render([15.3], [24.2], [13], [22], (5, 5))[0]
    assert np.allclose(a, b, rtol=1e-9, atol=1e-15)
    # A stack of frames fitted as stamps: each stamp's model is the frame's, bit for bit.
    m = model_1d
    frames = np.stack([SENSOR.mean_dn(1500.0 * m.render([x], [4.2], [0], [0], (10, 12))[0][0]) for x in (5.1, 5.37)])
    stamps = st.localize(frames, [(5.0, 4.2), (5.2, 4.2)], m, SENSOR, fit=("x",), flux=1500.0, background=0.0)
    for k in range(2):
        one = st.localize(frames[k], [stamps["x_start"][k], 4.2], m, SENSOR, fit=("x",), flux=1500.0,
                          background=0.0, start="given")
        assert one["x"][0] == stamps["x"][k] and one["x_err"][0] == stamps["x_err"][k]


def test_localize_takes_it(model_1d):
    """Noise-free data from the model itself: the MLE returns the position, the CRLB is finite."""
    m = model_1d
    x_true = 5.37
    img = SENSOR.mean_dn(1500.0 * m.render([x_true], [4.2], [0], [0], (10, 12))[0][0])
    res = st.localize(img, [(5.0, 4.2)], m, SENSOR, fit=("x",), flux=1500.0, background=0.0)
    assert res["converged"][0] and abs(res["x"][0] - x_true) < 1e-5
    assert 0 < res["x_err"][0] < 0.1
    pl = st.crlb.precision_limit(m, x_true, 4.2, 1500.0, 0.0, SENSOR, params=("x",), roi=5)[0]
    assert pl == pytest.approx(res["x_err"][0], rel=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    ({"values": np.zeros((5, 3, 3)), "x": np.arange(4.0), "y": 1.0}, "shape"),
    ({"values": np.zeros((4, 3, 3)), "x": [0, 1, 1, 2], "y": 1.0}, "increasing"),
    ({"values": np.zeros((3, 3, 3)), "x": [0, 1, 2], "y": 1.0}, "at least 4"),
    ({"values": np.zeros((4, 3, 3)), "x": np.arange(4.0), "y": 1.0, "transform": (1, 0, np.eye(2))}, "2-D"),
])
def test_bad_models(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PixelEPSF(col0=0, row0=0, **kwargs)


def test_load_rejects_other_files(tmp_path):
    from astropy.io import fits

    p = tmp_path / "x.fits"
    fits.PrimaryHDU(np.zeros((3, 3))).writeto(p)
    with pytest.raises(ValueError, match="not a per-pixel ePSF"):
        PixelEPSF.load(p)
