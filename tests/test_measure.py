"""``startrack.measure_stars``: detection + CG start + Poisson MLE, one row per star."""

import numpy as np
import pytest

import startrack as st
from startrack.flags import BAD_FIT
from startrack.simulate import simulate_frame

PSF = st.GaussianPSF(0.5)
SENSOR = st.Sensor(gain=0.2, offset=37.0, dark_var=25.0, saturation=4095.0)
STARS = np.array([[12.3, 14.6, 9000.0], [40.2, 30.7, 3000.0], [25.5, 45.1, 20000.0]])
HOT = (50, 8)  # (row, column) of a single hot pixel


def _frame(hot=True):
    img = simulate_frame((64, 64), STARS[:, 0], STARS[:, 1], STARS[:, 2], PSF, SENSOR, background=5.0, seed=3)
    if hot:
        img[HOT] += 1500.0
    return img


def test_stars_with_detection_and_fit_columns_brightest_first():
    t = st.measure_stars(_frame(hot=False), PSF, SENSOR)
    assert len(t) == 3
    assert {"id", "x_cg", "y_cg", "peak", "snr", "saturated", "x", "y", "flux", "background", "x_err", "y_err",
            "flags", "converged", "hot_pixel"} <= set(t.colnames)
    assert np.all(np.diff(np.asarray(t["flux"])) < 0)
    truth = STARS[np.argsort(-STARS[:, 2])]
    assert np.all(np.abs(t["x"] - truth[:, 0]) < 5 * t["x_err"])
    assert np.all(np.abs(t["y"] - truth[:, 1]) < 5 * t["y_err"])
    assert t.meta["hot_pixels_rejected"] == 0


def test_a_hot_pixel_is_dropped_or_marked():
    img = _frame()
    good = st.measure_stars(img, PSF, SENSOR)
    assert len(good) == 3 and good.meta["hot_pixels_rejected"] == 1 and not good["hot_pixel"].any()
    assert not np.any((np.rint(good["x_cg"]) == HOT[1]) & (np.rint(good["y_cg"]) == HOT[0]))
    every = st.measure_stars(img, PSF, SENSOR, keep_bad=True)
    assert len(every) == 4 and every.meta["hot_pixels_rejected"] == 0
    hot = every[every["hot_pixel"]]
    assert len(hot) == 1 and (round(hot["x_cg"][0]), round(hot["y_cg"][0])) == (HOT[1], HOT[0])


def test_keep_bad_keeps_what_the_default_drops_and_only_that():
    img = _frame()
    # a star with only its three brightest pixels left: detected, but too few pixels to fit
    img = simulate_frame((64, 64), [54.2], [54.1], [8000.0], PSF, SENSOR, seed=4) + img - SENSOR.offset
    keep = img[54, 54], img[54, 55], img[55, 54]
    img[51:58, 51:58] = np.nan
    img[54, 54], img[54, 55], img[55, 54] = keep
    good = st.measure_stars(img, PSF, SENSOR)
    every = st.measure_stars(img, PSF, SENSOR, keep_bad=True)
    assert set(good["id"]) <= set(every["id"])
    dropped = every[~np.isin(every["id"], good["id"])]
    assert len(dropped) == 2  # the hot pixel and the star without pixels
    bad = ((np.asarray(dropped["flags"]) & BAD_FIT) != 0) | ~np.isfinite(np.asarray(dropped["x_err"], float))
    bad |= ~(np.asarray(dropped["flux"], float) > 0) | np.asarray(dropped["hot_pixel"])
    assert bad.all()
    kept_ok = ((np.asarray(good["flags"]) & BAD_FIT) == 0) & np.isfinite(np.asarray(good["x_err"], float))
    assert kept_ok.all()
    # failed fits (NaN flux) sort last
    flux = np.asarray(every["flux"], float)
    assert not np.any(np.isnan(flux[:-1]) & np.isfinite(flux[1:]))


def test_fit_xy_holds_flux_and_background_at_the_detection():
    t = st.measure_stars(_frame(hot=False), PSF, SENSOR, fit="xy")
    assert len(t) == 3 and np.all(np.isnan(t["flux_err"])) and np.all(np.isfinite(t["x_err"]))
    truth = STARS[np.argsort(-STARS[:, 2])]
    assert np.all(np.abs(t["x"] - truth[:, 0]) < 5 * t["x_err"])


def test_empty_sky_and_bad_input():
    t = st.measure_stars(np.full((32, 32), 40.0), PSF, SENSOR)
    assert len(t) == 0 and {"x", "y", "x_err", "x_cg", "hot_pixel"} <= set(t.colnames)
    with pytest.raises(ValueError, match="finite"):
        st.measure_stars(np.full((32, 32), np.nan), PSF, SENSOR)
    with pytest.raises(ValueError, match="fit"):
        st.measure_stars(_frame(), PSF, SENSOR, fit="flux")
    with pytest.raises(ValueError, match="model"):
        st.measure_stars(_frame(), 0.5, SENSOR)
    with pytest.raises(ValueError, match="roi"):
        st.measure_stars(_frame(), PSF, SENSOR, roi=1)


def test_without_a_sensor_pixels_are_photo_electrons():
    img = simulate_frame((48, 48), [20.4], [22.8], [5000.0], PSF, st.Sensor(gain=1.0), background=3.0, seed=5)
    t = st.measure_stars(img, PSF)
    assert len(t) == 1 and t["flux"][0] == pytest.approx(5000.0, rel=0.1)
