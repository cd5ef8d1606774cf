"""Robust on real skies: the frame defects users report against star trackers, each on a simulated frame.

Every frame is the sample camera (512 x 512, 6.2 deg, Hipparcos stars to Hp 8 through a 0.35 px Gaussian PSF)
at a random attitude, with one defect of :mod:`startrack.simulate` added (or several: the worst night), solved
by :func:`startrack.sky.pipeline.solve_frame` lost-in-space, tracking (the prior 0.02 deg and 0.1 deg of roll
off the truth, as a previous frame's solution is) and with a bad prior (0.3 deg and 4 deg of roll off). The
rules: a solution is within 5 arcsec of the truth across the boresight; where a frame cannot be solved it is a
``no-solution`` with its reason; a false attitude (solved and more than 1 arcmin off) never happens.
"""

import functools

import numpy as np
import pytest

from startrack import GaussianPSF, Sensor
from startrack import simulate as sim
from startrack.io import sample_path
from startrack.sky.attitude import ARCSEC, Attitude
from startrack.sky.camera import Camera
from startrack.sky.pipeline import solve_frame
from startrack.sky.simulate import random_attitude, sky_frame
from startrack.sky.starid import StarIdentifier

T = "2026-11-25T22:00:00"
CAM = Camera.from_toml(sample_path("sample_camera.toml"))
SENSOR = Sensor.from_toml(sample_path("sample_camera.toml"))
PSF = GaussianPSF(0.35)
# an 8-bit consumer camera for the JPEG frames: its PSF is wider than the star sensor's (a tiny PSF is
# mostly lost in JPEG's 8 x 8 blocks: 0.4-0.5 px per star at quality 70) and no sensor model comes with it
SENSOR_8BIT = Sensor(gain=0.2, offset=10.0, dark_var=54.4, saturation=255.0)
PSF_8BIT = GaussianPSF(0.6)
SEEDS = (0, 1, 2, 3)
CORRECT_ARCSEC = 5.0  # across the boresight
FALSE_ARCSEC = 60.0  # total rotation: beyond this a solution is a false attitude
GAIN = SENSOR.gain

DEFECTS = {
    "clean": lambda im, s: im,
    "silhouette": lambda im, s: sim.add_silhouette(im, gain=GAIN, seed=s)[0],
    "silhouette-left": lambda im, s: sim.add_silhouette(im, side="left", fraction=0.4, gain=GAIN, seed=s)[0],
    "clouds": lambda im, s: sim.add_clouds(im, gain=GAIN, seed=s)[0],
    "overcast": lambda im, s: sim.add_clouds(im, cover=1.0, opacity=1.0, gain=GAIN, seed=s)[0],
    "moon": lambda im, s: sim.add_moon(im, saturation=SENSOR.saturation, gain=GAIN, seed=s)[0],
    "trail": lambda im, s: sim.add_trail(im, (-10, 40), (530, 470), gain=GAIN, seed=s),
    "dashed-trail": lambda im, s: sim.add_trail(im, (-10, 400), (530, 100), brightness=200, dash=(15, 10),
                                                gain=GAIN, seed=s),
    "hot-pixels": lambda im, s: sim.add_hot_pixels(im, 100, saturation=SENSOR.saturation, seed=s)[0],
    "gradient": lambda im, s: sim.add_gradient(im, 400, angle=30, gain=GAIN, seed=s),
    "jpeg": None,  # made from an 8-bit frame, see _frame
    "worst-night": lambda im, s: _worst_night(im, s),
}
SOLVABLE = [d for d in DEFECTS if d != "overcast"]


def _worst_night(image, seed):
    """A gradient, some cloud, a roof line, a trail and hot pixels on one frame."""
    rng = np.random.default_rng(seed)
    image = sim.add_gradient(image, 100, angle=200, gain=GAIN, seed=rng)
    image = sim.add_clouds(image, cover=0.3, gain=GAIN, seed=rng)[0]
    image = sim.add_silhouette(image, fraction=0.25, gain=GAIN, seed=rng)[0]
    image = sim.add_trail(image, (-5, 30), (520, 300), gain=GAIN, seed=rng)
    return sim.add_hot_pixels(image, 100, saturation=SENSOR.saturation, seed=rng)[0]
MODES = ("lost-in-space", "tracking")

# What the one-pass frame path (issue 13) still gets wrong on these frames, measured on the 4 seeds:
#: patchy cloud glow varies on the scale of the noise grid's blocks: 7-52 false detections a frame
CLOUD_GLOW = ("cloud glow varies on the scale of the background grid's 64 px blocks, so its brighter patches pass "
              "the threshold (7-52 false detections a frame) and the tracking test's chance level is too high")
#: a ragged, curved rim is neither a star nor a straight line inside a 9 x 9 stamp
RIM = ("the silhouette's ragged rim is neither a star nor a straight line inside a 9 x 9 stamp: 4-12 false "
       "detections a frame survive the elongation test")
#: the dashes' ends and short dashes are compact
DASHES = ("a dash's ends and the shorter dashes are compact inside a 9 x 9 stamp: 6-11 false detections a frame "
          "survive the elongation test")
#: the worst night
WORST = ("gradient, cloud, roof line, trail and hot pixels together leave 16-75 false detections a frame: 3 of 4 "
         "frames are solved lost-in-space, one is an honest no-solution")


def _frame(defect, seed):
    """One frame with its defect, the true attitude and the truth table, and the sensor and PSF to solve it with."""
    rng = np.random.default_rng(seed)
    att = random_attitude(rng)
    vec = _ident().catalog_vectors(T)
    if defect == "jpeg":
        img, truth = sky_frame(_ident().catalog, vec, att, CAM, PSF_8BIT, SENSOR_8BIT, mag_limit=8.0, seed=rng)
        return sim.jpeg_roundtrip(img.astype(np.uint8), 70), att, truth, None, PSF_8BIT
    img, truth = sky_frame(_ident().catalog, vec, att, CAM, PSF, SENSOR, mag_limit=8.0, seed=rng)
    return DEFECTS[defect](img.astype(np.uint16), 1000 + seed), att, truth, SENSOR, PSF


@functools.cache
def _ident():
    return StarIdentifier(CAM)


@functools.cache
def _solved(defect, mode):
    """Per seed: the frame's result, its true attitude and truth table (cached: several tests read them)."""
    out = []
    for seed in SEEDS:
        img, att, truth, sensor, psf = _frame(defect, seed)
        prior = None
        if mode == "tracking":
            prior = Attitude.from_radec_roll(att.ra + 0.02, att.dec - 0.02, att.roll + 0.1)
        elif mode == "bad-prior":  # off by about the tracking radius: tracking must not settle half-right
            prior = Attitude.from_radec_roll(att.ra + 0.3, att.dec - 0.3, att.roll + 4.0)
        out.append((solve_frame(img, _ident(), psf, sensor, time=T, prior=prior), att, truth))
    return out


def _errors(res, att):
    """(cross-boresight, total) attitude error in arcsec."""
    e = res.solution.attitude.error(att) / ARCSEC
    return float(np.hypot(e[0], e[1])), float(np.linalg.norm(e))


def _xfail(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


@pytest.mark.parametrize("mode", MODES + ("bad-prior",))
@pytest.mark.parametrize("defect", list(DEFECTS))
def test_never_a_false_attitude(defect, mode):
    for res, att, _ in _solved(defect, mode):
        if res.solution.solved:
            assert _errors(res, att)[1] < FALSE_ARCSEC, (defect, mode, _errors(res, att))
        else:
            assert res.row["status"] == "no-solution" and res.row["reason"], res.row


@pytest.mark.parametrize("defect, mode", [
    pytest.param(d, m, marks=_xfail(WORST)) if d == "worst-night" else (d, m)
    for d in SOLVABLE for m in MODES])
def test_still_solved_and_correct(defect, mode):
    for res, att, _ in _solved(defect, mode):
        assert res.solution.solved, (defect, mode, res.row["reason"])
        cross, _ = _errors(res, att)
        assert cross < CORRECT_ARCSEC, (defect, mode, cross, res.row["sigma_cross_arcsec"])
        assert res.row["n_matched"] >= 5


@pytest.mark.parametrize("mode", MODES)
def test_overcast_is_no_solution(mode):
    for res, _, _ in _solved("overcast", mode):
        assert res.row["status"] == "no-solution"
        assert "usable star" in res.row["reason"]


@pytest.mark.parametrize("defect", [
    pytest.param(d, marks=_xfail(CLOUD_GLOW)) if d == "clouds"
    else pytest.param(d, marks=_xfail(WORST)) if d == "worst-night" else d
    for d in SOLVABLE])
def test_tracking_keeps_tracking(defect):
    """With a good prior the frame is solved by tracking (0.1-0.3 ms), not by a fall-back to lost-in-space."""
    for res, att, _ in _solved(defect, "tracking"):
        assert res.solution.solved and res.solution.mode == "tracking", (defect, res.row["n_detected"])
        assert _errors(res, att)[0] < CORRECT_ARCSEC


#: At a 5-sigma threshold pure noise gives ~0.1 peaks a frame; this allows a few near bright stars.
MAX_FALSE = 3
MATCH_PX = 1.5


FALSE_LEFT = {"silhouette": RIM, "silhouette-left": RIM, "clouds": CLOUD_GLOW, "dashed-trail": DASHES,
              "worst-night": WORST}


@pytest.mark.parametrize("defect", [pytest.param(d, marks=_xfail(FALSE_LEFT[d])) if d in FALSE_LEFT else d
                                    for d in DEFECTS])
def test_false_detections(defect):
    """Detections (after measure_stars' rejections) with no true star within 1.5 px: at most 3 a frame."""
    for res, _, truth in _solved(defect, "lost-in-space"):
        st = res.stars
        if not len(st):
            continue
        d = np.hypot(np.asarray(st["x"])[:, None] - np.asarray(truth["x"])[None],
                     np.asarray(st["y"])[:, None] - np.asarray(truth["y"])[None])
        n_false = int(np.sum(d.min(axis=1) > MATCH_PX))
        assert n_false <= MAX_FALSE, (defect, n_false, len(st), len(truth))


# -- the defects themselves ------------------------------------------------------------------------------------


@pytest.fixture
def sky():
    rng = np.random.default_rng(5)
    return np.round(rng.normal(100.0, 3.0, (128, 160))).astype(np.uint16)


def test_silhouette(sky):
    out, covered = sim.add_silhouette(sky, fraction=1 / 3, noise=1.0, level=40.0, rim=200.0, seed=1)
    assert out.dtype == np.uint16 and out.shape == sky.shape
    assert 0.28 < covered.mean() < 0.39
    assert covered[-1].all() and not covered[0].any()  # it stands on the bottom edge
    assert abs(np.mean(out[covered]) - 40.0) < 0.5
    # the rim: the sky pixel just above the skyline is far brighter than the open sky
    top = np.argmax(covered, axis=0)
    rim = out[np.maximum(top - 1, 0), np.arange(sky.shape[1])].astype(float)
    assert np.median(rim) > np.median(sky) + 100
    left, lc = sim.add_silhouette(sky.astype(float), side="left", fraction=0.5, seed=1)
    assert left.dtype == np.float64 and lc[:, 0].all() and not lc[:, -1].any()
    with pytest.raises(ValueError, match="side"):
        sim.add_silhouette(sky, side="up")


def test_clouds(sky):
    out, thick = sim.add_clouds(sky, cover=0.5, opacity=1.0, glow=0.0, dark=0.0, seed=2)
    assert 0.4 < np.mean(thick > 0) < 0.6
    thick_px = thick == 1
    assert np.all(out[thick_px] == 0)  # all light stopped, no glow
    clear = thick == 0
    np.testing.assert_array_equal(out[clear], sky[clear])
    full, t = sim.add_clouds(sky, cover=1.0, opacity=0.5, glow=50.0, dark=0.0, gain=1.0, seed=2)
    assert np.all(t == 1) and abs(np.mean(full) - (50 + 50)) < 1.0
    with pytest.raises(ValueError, match="cover"):
        sim.add_clouds(sky, cover=1.5)


def test_moon(sky):
    out, glare = sim.add_moon(sky, edge="right", position=0.5, brightness=2000.0, seed=3)
    assert glare.any() and np.all(out[glare] == np.iinfo(np.uint16).max)
    assert glare[:, -1].any() and not glare[:, 0].any()
    assert out[64, 100:150].mean() > out[64, 0:50].mean() + 300  # the gradient rises towards the moon
    with pytest.raises(ValueError, match="saturation"):
        sim.add_moon(sky.astype(float))


def test_trail(sky):
    out = sim.add_trail(sky, (0, 64), (159, 64), brightness=500.0, width=1.0, seed=4)
    assert np.all(out[64].astype(float) > 400)
    np.testing.assert_array_equal(out[:55], sky[:55])
    dashed = sim.add_trail(sky, (0, 64), (159, 64), brightness=500.0, dash=(10, 10), seed=4)
    lit = dashed[64].astype(float) > 300
    assert 0.4 < lit.mean() < 0.6 and lit[:10].all() and not lit[10:20].any()
    with pytest.raises(ValueError, match="differ"):
        sim.add_trail(sky, (3, 3), (3, 3))


def test_hot_pixels_jpeg_and_gradient(sky):
    out, xy = sim.add_hot_pixels(sky, 100, value_range=(1000, 2000), seed=5)
    assert xy.shape == (100, 2) and np.all(out[xy[:, 1], xy[:, 0]] >= 1000)
    assert np.sum(out != sky) == len({tuple(p) for p in xy})
    eight = np.clip(sky.astype(float) - 50, 0, 255)
    jp = sim.jpeg_roundtrip(eight, 70)
    assert jp.dtype == np.uint8 and jp.shape == sky.shape
    assert 0 < np.mean(np.abs(jp - eight)) < 5  # lossy, but close
    with pytest.raises(ValueError, match="8-bit"):
        sim.jpeg_roundtrip(sky.astype(float) * 10)
    ramp = sim.add_gradient(np.zeros((10, 101)), 100.0, angle=0.0, gain=1e-8, seed=6)
    np.testing.assert_allclose(ramp[3], np.arange(101), atol=1e-2)
    down = sim.add_gradient(np.zeros((11, 5)), 10.0, angle=90.0, gain=1e-8, seed=6)
    np.testing.assert_allclose(down[:, 2], np.arange(11), atol=1e-2)
