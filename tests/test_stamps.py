"""Fitting stamps (cut-outs placed in the frame by their origins) is fitting the frame they were cut from."""

import numpy as np
import pytest

import startrack as st
from startrack import FLAGS
from startrack.psf import PixelEPSF
from startrack.simulate import spot_grid

PSF = st.GaussianPSF(0.4)
COLUMNS = ("x", "y", "flux", "background", "x_err", "y_err", "flux_err", "background_err", "x_start", "y_start",
           "loglike", "iterations", "converged", "flags")


def _cut(image, xy, half, shift=(0, 0)):
    """Stamps of (2 half + 1)^2 px around the pixel holding each position (moved by ``shift``), and their origins."""
    org = np.floor(xy + 0.5).astype(np.int64) - half + np.asarray(shift)
    size = 2 * half + 1
    stamps = np.stack([image[r:r + size, c:c + size] for c, r in org])
    assert stamps.shape == (len(xy), size, size)  # every stamp inside the frame
    return stamps, org


def _stars(sensor, n=40, seed=4):
    rng = np.random.default_rng(seed)
    img, truth = spot_grid(PSF, rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n), 3000.0, sensor,
                           background=5.0, seed=seed + 1, spacing=14)
    xy = np.column_stack([truth["x"], truth["y"]]) + rng.uniform(-0.6, 0.6, (n, 2))
    return img, xy


def _same(a, b, columns):
    for c in columns:
        np.testing.assert_array_equal(np.asarray(a[c]), np.asarray(b[c]), err_msg=c)


def test_stamps_give_the_frame_table_bit_for_bit(sensor):
    img, xy = _stars(sensor)
    mask = np.zeros(img.shape, bool)
    mask[::7, ::5] = True  # some ROIs lose a pixel or two
    stamps, org = _cut(img, xy, 5)
    masks, _ = _cut(mask, xy, 5)
    for start in ("cg", "given"):
        frame = st.localize(img, xy, PSF, sensor, mask=mask, start=start)
        stack = st.localize(stamps, xy, PSF, sensor, origins=org, mask=masks, start=start)
        assert np.all(frame["converged"]) and np.any(frame["flags"] & FLAGS["masked"])
        _same(frame, stack, COLUMNS)
    # Without origins the positions are stamp coordinates, and so are the results.
    local = st.localize(stamps, xy - org, PSF, sensor)
    assert np.allclose(np.asarray(local["x"]) + org[:, 0], st.localize(img, xy, PSF, sensor)["x"], atol=1e-9)
    # Fixed flux and background, and a non-square window, take the same path.
    kw = dict(fit=("x", "y"), flux=3000.0, background=5.0, roi=(5, 7))
    _same(st.localize(img, xy, PSF, sensor, **kw), st.localize(stamps, xy, PSF, sensor, origins=org, **kw), COLUMNS)


def test_centroid_of_stamps_is_the_frame_centroid_bit_for_bit(sensor):
    img, xy = _stars(sensor, n=12)
    stamps, org = _cut(img, xy, 4)
    for kw in ({}, dict(threshold=None), dict(background=37.0, roi=3)):
        _same(st.centroid(img, xy, **kw), st.centroid(stamps, xy, origins=org, **kw),
              ("x_cg", "y_cg", "flux_cg", "background", "npix"))


def test_a_stamp_that_clips_the_roi_is_an_edge(sensor):
    img, xy = _stars(sensor, n=6)
    xy = np.floor(xy + 0.5) + 0.2  # the start pixel is the position's pixel
    stamps, org = _cut(img, xy, 2, shift=(1, 0))  # 5x5 stamps one column right of each 5x5 ROI
    frame = st.localize(img, xy, PSF, sensor, start="given")
    stack = st.localize(stamps, xy, PSF, sensor, origins=org, start="given")
    assert not np.any(frame["flags"] & FLAGS["edge"])
    assert np.all(stack["flags"] & FLAGS["edge"]) and np.all(stack["converged"])
    assert np.all(np.abs(stack["x"] - frame["x"]) < 3 * stack["x_err"])
    # A position off its own stamp is not fitted, wherever it is in the frame.
    off = st.localize(stamps, xy + [[-3.0, 0.0]], PSF, sensor, origins=org)
    assert np.all(off["flags"] & FLAGS["no_fit"]) and np.all(np.isnan(off["x"]))


def test_pixel_epsf_sees_frame_coordinates_through_origins():
    g = st.GaussianPSF(0.4)
    u, v = np.linspace(-1.5, 1.5, 13), np.linspace(-1.5, 1.5, 13)
    vals = np.array([[g.image(6.0 + a, 5.0 + b, (11, 12)) for b in v] for a in u])
    model = PixelEPSF(vals, u, v, col0=0, row0=0, transform=(6.0, 5.0, np.eye(2))).shifted(20, 30)
    sensor = st.Sensor(gain=0.2, offset=37.0, dark_var=25.0)
    truth = (26.3, 34.6)
    img = sensor.mean_dn(4000.0 * model.render([truth[0]], [truth[1]], [0], [0], (50, 40))[0][0])
    kw = dict(fit=("x", "y"), flux=4000.0, background=0.0)
    frame = st.localize(img, [(26, 35)], model, sensor, **kw)
    stamps, org = _cut(img, np.array([[26.0, 35.0]]), 4)
    stack = st.localize(stamps, [(26, 35)], model, sensor, origins=org, **kw)
    assert frame["converged"][0] and abs(frame["x"][0] - truth[0]) < 1e-6 and abs(frame["y"][0] - truth[1]) < 1e-6
    _same(frame, stack, COLUMNS)
    # The same pixels at the wrong place: the model sees the star outside its calibrated block.
    lost = st.localize(stamps, np.array([[26.0, 35.0]]) - org, model, sensor, **kw)
    assert not (lost["converged"][0] and abs(lost["x"][0] + org[0, 0] - truth[0]) < 0.05)


@pytest.mark.parametrize("origins, match", [
    (np.zeros((2, 3)), r"origins must be an \(2, 2\) array"),
    (np.zeros((3, 2)), r"origins must be an \(2, 2\) array"),
    (np.zeros((2, 2), bool), "origins must be an"),
    ([["a", "b"], ["c", "d"]], "origins must be an"),
    (np.full((2, 2), 0.5), "origins must be integers"),
    (np.full((2, 2), np.nan), "origins must be integers"),
])
def test_bad_origins_are_one_line_errors(sensor, origins, match):
    stamps = np.zeros((2, 7, 7))
    for call in (lambda: st.localize(stamps, [(3, 3), (3, 3)], PSF, sensor, origins=origins),
                 lambda: st.centroid(stamps, [(3, 3), (3, 3)], origins=origins)):
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert len(str(err.value).splitlines()) == 1


def test_stamps_need_one_position_each_and_a_frame_takes_no_origins(sensor):
    with pytest.raises(ValueError, match="3 stamps for 2 positions"):
        st.localize(np.zeros((3, 7, 7)), [(3, 3), (3, 3)], PSF, sensor)
    with pytest.raises(ValueError, match="origins place the stamps"):
        st.centroid(np.zeros((7, 7)), [(3, 3)], origins=[(0, 0)])
    with pytest.raises(ValueError, match="mask shape"):
        st.localize(np.zeros((2, 7, 7)), [(3, 3), (3, 3)], PSF, sensor, mask=np.zeros((7, 7), bool))
    with pytest.raises(ValueError, match="stack of stamps"):
        st.localize(np.zeros((2, 2, 7, 7)), [(3, 3)], PSF, sensor)
