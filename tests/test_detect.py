import numpy as np
import pytest
from scipy.spatial import cKDTree

import startrack as st
from startrack.simulate import spot_grid, star_field


def test_detect_finds_the_stars(sensor):
    psf = st.GaussianPSF(0.4)
    img, truth = star_field((300, 400), 40, psf, sensor, flux=(2000, 50000), background=10.0, seed=3)
    det = st.detect(img, sensor)
    d, _ = cKDTree(np.column_stack([truth["x"], truth["y"]])).query(np.column_stack([det["x_cg"], det["y_cg"]]))
    assert len(det) == len(truth)
    assert np.all(d < 0.5)
    assert det["flux"].max() > 10000  # in e- with a sensor


def test_empty_sky_gives_empty_table(sensor, rng):
    img = st.simulate.expose(np.full((128, 128), 15.0), sensor, rng)
    det = st.detect(img, sensor)
    assert len(det) == 0
    assert "x_cg" in det.colnames


def test_flat_image_and_nan_image():
    assert len(st.detect(np.full((50, 50), 100.0))) == 0
    with pytest.raises(ValueError, match="no finite pixels"):
        st.detect(np.full((50, 50), np.nan))


def test_saturated_star_is_marked():
    sensor = st.Sensor(gain=1.0, offset=10, dark_var=4, saturation=1000)
    img, _ = star_field((64, 64), 1, st.GaussianPSF(0.5), sensor, flux=(1e5, 1e5 + 1), seed=1)
    det = st.detect(img, sensor)
    assert len(det) == 1 and det["saturated"][0]


def test_centroid_matches_direct_moments(rng):
    img = rng.uniform(0, 1, (40, 40))
    img[18:23, 10:15] += rng.uniform(5, 10, (5, 5))
    t = st.centroid(img, [(12.2, 20.1)], roi=5, background=0.5, threshold=None)
    w = img[18:23, 10:15] - 0.5
    yy, xx = np.mgrid[18:23, 10:15]
    assert t["x_cg"][0] == pytest.approx((w * xx).sum() / w.sum())
    assert t["y_cg"][0] == pytest.approx((w * yy).sum() / w.sum())


def test_centroid_has_the_small_psf_s_curve(sensor):
    # Noise-free CG of a r = 0.2 px spot: error up to ~0.1 px inside the pixel (the paper's S-curve).
    psf = st.GaussianPSF(0.2)
    dx = np.linspace(-0.5, 0.5, 21)
    errs = []
    for d in dx:
        img = psf.image(10 + d, 10, (21, 21), flux=1000.0)
        errs.append(st.centroid(img, [(10, 10)], roi=5, background=0.0)["x_cg"][0] - (10 + d))
    errs = np.array(errs)
    assert 0.05 < np.abs(errs).max() < 0.4
    assert np.allclose(errs, -errs[::-1], atol=1e-9)  # odd about the pixel centre


def test_centroid_at_edge_and_empty_window():
    img = np.zeros((20, 20))
    img[0, 0] = 10.0
    t = st.centroid(img, [(0.2, 0.1), (10, 10)], roi=5, background=0.0)
    assert t["x_cg"][0] == 0 and t["y_cg"][0] == 0
    assert np.isnan(t["x_cg"][1])  # no positive signal: NaN, not a made-up position


def test_centroid_is_vectorised(sensor):
    psf = st.GaussianPSF(0.5)
    img, truth = spot_grid(psf, np.linspace(-0.5, 0.5, 7), 0.2, 3000, sensor, repeats=30, seed=2)
    t = st.centroid(img, truth, roi=5)
    assert len(t) == len(truth)
    assert np.sqrt(np.mean((t["x_cg"] - truth["x"]) ** 2)) < 0.1
