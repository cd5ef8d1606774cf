"""One rule per kind of argument, with one meaning wherever it is used."""

import numpy as np
import pytest
from astropy.table import Table

import startrack as st
from startrack import validate as v


def test_integers_accept_integral_values_and_nothing_else():
    assert v.as_int(7, "n") == 7 and v.as_int(np.int16(7), "n") == 7 and v.as_int(7.0, "n") == 7
    for bad in (7.5, True, np.bool_(False), "7", None, np.nan, np.inf, [7]):
        with pytest.raises(ValueError, match="^n must be an integer"):
            v.as_int(bad, "n")
    with pytest.raises(ValueError, match="roi must be an odd integer >= 3, got 4"):
        v.as_int(4, "roi", minimum=3, odd=True)
    with pytest.raises(ValueError, match="from 1 to 16"):
        v.as_int(17, "oversampling", minimum=1, maximum=16)


def test_numbers():
    assert v.as_float(np.float32(0.5), "gain", positive=True) == 0.5
    assert v.as_float(0, "dark_var", nonnegative=True) == 0.0
    with pytest.raises(ValueError, match="gain must be a positive number of DN/e-, got 0"):
        v.as_float(0, "gain", positive=True, unit="DN/e-")
    for bad in (np.nan, -np.inf, "1", True, None):
        with pytest.raises(ValueError, match="^x must be"):
            v.as_float(bad, "x")


def test_roi_means_the_same_in_localize_centroid_crlb_and_build_epsf(sensor):
    psf = st.GaussianPSF(0.4)
    img = st.simulate.simulate_frame((30, 30), 15.2, 14.7, 3000, psf, sensor, seed=3)
    a = st.localize(img, [(15, 15)], psf, sensor, roi=7)
    b = st.localize(img, [(15, 15)], psf, sensor, roi=7.0)
    assert a["x"][0] == b["x"][0]
    assert st.centroid(img, [(15, 15)], roi=7.0)["x_cg"][0] == st.centroid(img, [(15, 15)], roi=7)["x_cg"][0]
    assert np.isfinite(st.crlb.precision_limit(psf, 15.2, 14.7, 3000, 0, sensor, roi=7.0)[0])
    for call in (lambda r: st.localize(img, [(15, 15)], psf, sensor, roi=r),
                 lambda r: st.centroid(img, [(15, 15)], roi=r),
                 lambda r: st.detect(img, sensor, roi=r),
                 lambda r: st.build_epsf([img], [[(15.2, 14.7)]], sensor, roi=r)):
        with pytest.raises(ValueError, match="^roi must be"):
            call(7.5)
        with pytest.raises(ValueError, match="^roi must be"):
            call(True)


def test_images_stacks_positions_and_masks():
    assert v.as_image(np.ones((3, 4), np.uint16)).dtype == np.float64
    for bad, msg in ((np.ones(4), "2-D"), (np.ones((2, 0)), "empty"), (np.ones((2, 2), bool), "numeric"),
                     (np.ones((2, 2), complex), "real")):
        with pytest.raises(ValueError, match=msg):
            v.as_image(bad, "frame")
    assert v.as_stack(np.ones((4, 5))).shape == (1, 4, 5)
    with pytest.raises(ValueError, match="at least 3x3"):
        v.as_stack(np.ones((2, 2, 5)), min_size=3)
    t = Table({"x": [1.0, 2.0], "y": [3.0, 4.0]})
    assert v.as_positions(t).tolist() == [[1, 3], [2, 4]]
    assert v.as_positions([5, 6]).shape == (1, 2) and v.as_positions([]).shape == (0, 2)
    with pytest.raises(ValueError, match="positions table needs columns"):
        v.as_positions(Table({"a": [1]}))
    with pytest.raises(ValueError, match="mask shape"):
        v.as_mask(np.zeros((3, 3)), (3, 4))
    assert v.as_mask(None, (3, 3)) is None


def test_sigma_pairs_and_choices():
    assert v.as_sigma_pair(1.5) == (1.5, 1.5) and v.as_sigma_pair((1, 2)) == (1.0, 2.0)
    for bad in (0, -1, (1, 2, 3), "a", True, (1, np.nan)):
        with pytest.raises(ValueError, match="sigma must be a positive number of pixels or a pair"):
            v.as_sigma_pair(bad)
    assert v.one_of("cg", "start", ("cg", "given")) == "cg"
    with pytest.raises(ValueError, match="start must be one of 'cg', 'given'"):
        v.one_of("x", "start", ("cg", "given"))


def test_toml_files(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text("[sensor]\ngain = 0.2\n")
    assert v.load_toml(good) == {"sensor": {"gain": 0.2}}
    bad = tmp_path / "bad.toml"
    bad.write_text("[sensor\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        v.load_toml(bad)
    with pytest.raises(FileNotFoundError, match="camera file not found"):
        v.load_toml(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="is a folder"):
        v.load_toml(tmp_path)
