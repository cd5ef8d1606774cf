"""The one-pass frame path: the frame's own dtype, region and max_stars, gradients, NaNs, lines, stamps vs frame."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

import startrack as st
from startrack.simulate import add_gradient, add_trail, star_field

SENSOR = st.Sensor(gain=0.2, offset=37.0, dark_var=25.0, saturation=65535.0)
PSF = st.GaussianPSF(0.45)


@pytest.fixture(scope="module")
def field():
    img, truth = star_field((256, 320), 30, PSF, SENSOR, flux=(3000, 60000), background=20.0, seed=11)
    return np.clip(np.rint(img), 0, 65535).astype(np.uint16), truth


def _matched(det, truth, tol=0.7):
    d, _ = cKDTree(np.column_stack([truth["x"], truth["y"]])).query(np.column_stack([det["x_cg"], det["y_cg"]]))
    return d < tol


def test_every_dtype_gives_the_same_stars(field):
    img, truth = field
    ref = st.detect(img, SENSOR)
    assert _matched(ref, truth).all() and len(ref) == len(truth)
    for other in (img.astype(np.float64), img.astype(np.float32), img.astype(np.int32)):
        det = st.detect(other, SENSOR)
        np.testing.assert_allclose(det["x_cg"], ref["x_cg"], atol=1e-9)
        np.testing.assert_allclose(det["y_cg"], ref["y_cg"], atol=1e-9)


def test_fit_on_stamps_equals_fit_on_the_frame(field):
    img, _ = field
    stars = st.measure_stars(img, PSF, SENSOR)
    frame = st.localize(img.astype(np.float64), np.column_stack([stars["x_cg"], stars["y_cg"]]), PSF, SENSOR)
    np.testing.assert_allclose(stars["x"], frame["x"], atol=1e-9)
    np.testing.assert_allclose(stars["y_err"], frame["y_err"], rtol=1e-9)


def test_max_stars_keeps_the_brightest(field):
    img, _ = field
    full = st.detect(img, SENSOR)
    top = st.detect(img, SENSOR, max_stars=5)
    assert len(top) == 5
    np.testing.assert_allclose(top["x_cg"], full["x_cg"][:5])
    assert len(st.measure_stars(img, PSF, SENSOR, max_stars=7)) == 7


def test_region_box_and_mask(field):
    img, truth = field
    box = st.detect(img, SENSOR, region=(0, 0, 160, 256))
    assert len(box) and np.all(box["x_cg"] < 160.5)
    assert len(box) == int(np.sum(truth["x"] < 159.5)) or len(box) == int(np.sum(truth["x"] < 160.5))
    mask = np.zeros(img.shape, bool)
    mask[128:] = True
    lower = st.detect(img, SENSOR, region=mask)
    assert len(lower) and np.all(lower["y_cg"] > 127.0)
    with pytest.raises(ValueError, match="region"):
        st.detect(img, SENSOR, region=(1, 2, 3))
    with pytest.raises(ValueError, match="does not overlap"):
        st.detect(img, SENSOR, region=(400, 0, 500, 10))


def test_nan_block_leaves_the_other_stars_alone(field):
    img, truth = field
    bad = img.astype(np.float64)
    bad[:, :64] = np.nan
    det = st.detect(bad, SENSOR)
    clear = np.asarray(det["x_cg"]) > 70  # nearer the hole, the visible halves of hidden stars
    assert _matched(det[clear], truth).all()
    assert clear.sum() == int(np.sum(truth["x"] > 70))
    assert np.all(det["x_cg"] > 63.5)


def test_a_strong_gradient_costs_no_star_and_adds_no_false_one(field):
    img, truth = field
    ramp = add_gradient(img, 400.0, angle=30.0, gain=SENSOR.gain, seed=2)
    det = st.detect(ramp, SENSOR)
    assert _matched(det, truth).sum() == len(truth)
    assert len(det) - _matched(det, truth).sum() <= 2


def test_a_trail_is_marked_elongated_and_dropped(field):
    img, truth = field
    trailed = add_trail(img, (0, 10), (320, 240), brightness=400.0, gain=SENSOR.gain, seed=4)
    det = st.detect(trailed, SENSOR)
    on_line = ~_matched(det, truth, tol=1.5)
    assert on_line.sum() > 5 and det["elongated"][on_line].mean() > 0.8
    assert not det["elongated"][~on_line].any()
    stars = st.measure_stars(trailed, PSF, SENSOR)
    assert stars.meta["elongated_rejected"] > 5
    assert (~_matched(stars, truth, tol=1.5)).sum() <= 2
