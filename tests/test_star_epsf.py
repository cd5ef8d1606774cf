"""Pass 2 of a night-sky sequence: per-star ePSF positions and the attitudes solved from them, against the truth."""

import numpy as np
import pytest
from astropy.table import join
from scipy.spatial.transform import Rotation

from startrack.sky.attitude import ARCSEC
from startrack.sky.star_epsf import EPSF_FRAME_COLUMNS, EPSF_STAR_COLUMNS, per_star_epsf, resolve_attitudes

# the shared sequence's two passes take ~1-3 min on 2 cores (the per-star ePSF builds of ~35 stars)
pytestmark = pytest.mark.slow


def _against_truth(night, stars):
    truth = night["truth"][night["truth"]["hip"] > 0]
    truth.rename_columns(["x", "y", "flux"], ["x_true", "y_true", "flux_true"])
    return join(stars, truth, keys=["frame", "hip"])


def _error_rms(j, x, y):
    """RMS error (px, per axis) against the truth after each star's own mean error is removed."""
    err = np.column_stack([np.asarray(j[x] - j["x_true"]), np.asarray(j[y] - j["y_true"])])
    for h in np.unique(j["hip"]):
        m = np.asarray(j["hip"] == h)
        err[m] -= err[m].mean(axis=0)
    return float(np.sqrt(np.mean(err**2)))


def test_epsf_positions_reach_the_bound_where_the_gaussian_does_not(night):
    s = night["stars2"]
    assert set(EPSF_STAR_COLUMNS) <= set(s.colnames)
    info = s.meta["epsf_stars"]
    assert np.sum(info["n_epsf"] > 0) >= 20 and s["epsf"].mean() > 0.9
    j = _against_truth(night, s[s["epsf"]])
    assert len(j) == int(s["epsf"].sum())  # every identified star is the star the simulation put there
    pl = float(np.sqrt(np.mean(np.concatenate([j["x_epsf_err"], j["y_epsf_err"]]) ** 2)))
    epsf, gauss, cg = (_error_rms(j, *c) for c in (("x_epsf", "y_epsf"), ("x", "y"), ("x_cg", "y_cg")))
    print(f"error RMS vs truth, star means removed: CG {cg:.4f}, Gaussian {gauss:.4f}, ePSF {epsf:.4f}, PL {pl:.4f}")
    # measured 0.93x (Gaussian 1.62x, CG 3.8x); without the track tie in the build it was 1.28x. Below the PL
    # because each star's ePSF, built from these 60 images, learns a little of their noise (0.97x on all stars
    # at the default smoothing, 1.01x over 500 frames: see PER_STAR_SMOOTHING); much lower would be overfitting
    assert 0.85 * pl <= epsf <= 1.15 * pl
    assert epsf < 0.92 * gauss and cg > 2.5 * epsf
    # the ePSF photometry is the star's flux (within 3 %) where the Gaussian's is low
    ratio = np.median(np.asarray(j["flux_epsf"] / j["flux_true"]))
    assert ratio == pytest.approx(1.0, abs=0.03)


def test_epsf_attitude_against_the_truth(night):
    f = night["frames2"]
    assert set(EPSF_FRAME_COLUMNS) <= set(f.colnames) and np.all(f["status"] == "solved")
    truth = Rotation.from_quat(night["truth_quaternions"])
    out = {}
    for sfx in ("", "_epsf"):
        q = np.column_stack([np.asarray(f[f"q{c}{sfx}"], float) for c in "xyzw"])
        err = (Rotation.from_quat(q) * truth.inv()).as_rotvec() / ARCSEC
        out[sfx] = (np.sqrt(np.mean(err[:, :2] ** 2)), np.sqrt(np.mean(err[:, 2] ** 2)))
    print("attitude error vs truth (across, roll) arcsec: Gaussian", out[""], "ePSF", out["_epsf"])
    assert out["_epsf"][0] <= 1.0 and out["_epsf"][0] < out[""][0]
    assert np.all(f["n_epsf"] >= 10) and np.all(f["rms_epsf_arcsec"] < 3 * f["rms_arcsec"])


def test_one_focal_length_for_the_sequence(night):
    d = night
    f = d["frames2"]
    truth = Rotation.from_quat(d["truth_quaternions"])
    f_seq = np.asarray(f["focal_length_epsf_px"])
    assert np.all(f_seq == f_seq[0])
    # the simulation's focal length is 25 mm / 5.3 um; pass 1 refits it in every frame from Gaussian positions
    f_true = d["camera"].focal_length_px
    spread = float(np.std(np.asarray(f["focal_length_px"]) - f_true))
    print(f"focal length: sequence {f_seq[0] - f_true:+.4f} px off, pass 1 frames scatter {spread:.4f} px")
    assert abs(f_seq[0] - f_true) < 0.5 * spread
    per_frame = resolve_attitudes(d["frames"], d["stars2"], d["camera"], d["catalog"], focal_length="frame")

    def jitter(t):
        q = np.column_stack([np.asarray(t[f"q{c}_epsf"], float) for c in "xyzw"])
        err = (Rotation.from_quat(q) * truth.inv()).as_rotvec() / ARCSEC
        return float(np.sqrt(np.mean((err[:, :2] - err[:, :2].mean(axis=0)) ** 2)))

    # with the frames' own focal lengths the attitude moves with their errors across the boresight
    print(f"attitude jitter across vs truth: sequence {jitter(f):.3f}\", frames {jitter(per_frame):.3f}\"")
    assert jitter(f) < 0.9 * jitter(per_frame)
    fixed = resolve_attitudes(d["frames"], d["stars2"], d["camera"], d["catalog"], focal_length=f_true)
    assert np.all(fixed["focal_length_epsf_px"] == f_true)
    with pytest.raises(ValueError, match="focal_length"):
        resolve_attitudes(d["frames"], d["stars2"], d["camera"], d["catalog"], focal_length="best")


def test_stars_in_too_few_frames_keep_the_gaussian(night):
    d = night
    one = d["stars"][d["stars"]["frame"] < 3]
    s2, f2 = per_star_epsf(one, d["stamps"], d["origins"], d["frames"], d["camera"], d["sensor"], d["catalog"],
                           model=d["model"], min_frames=4)
    assert not np.any(s2["epsf"])
    for a, b in (("x_epsf", "x"), ("y_epsf", "y"), ("x_epsf_err", "x_err"), ("flux_epsf", "flux")):
        np.testing.assert_array_equal(s2[a], s2[b])
    assert all("min_frames" in n for n in s2.meta["epsf_stars"]["note"])
    assert list(np.flatnonzero(np.asarray(f2["n_epsf"]) > 0)) == [0, 1, 2]
    # re-solved from the Gaussian positions with the same identities and pass 1's focal lengths: pass 1's
    # attitude again (to 0.1 sigma)
    f2 = resolve_attitudes(d["frames"], s2, d["camera"], d["catalog"], focal_length="frame")
    solved = np.flatnonzero(np.asarray(f2["n_epsf"]) > 0)
    np.testing.assert_array_equal(f2["focal_length_epsf_px"][solved], f2["focal_length_px"][solved])
    for i in solved:
        a = Rotation.from_quat([f2[f"q{c}"][i] for c in "xyzw"])
        b = Rotation.from_quat([f2[f"q{c}_epsf"][i] for c in "xyzw"])
        assert np.linalg.norm((a * b.inv()).as_rotvec()) / ARCSEC < 0.1 * f2["sigma_roll_arcsec"][i]
    assert np.all(np.isnan(f2["qx_epsf"][3:]))


def test_bad_input(night):
    d = night
    args = (d["stamps"], d["origins"], d["frames"], d["camera"], d["sensor"], d["catalog"])
    with pytest.raises(ValueError, match="lacks column"):
        per_star_epsf(d["stars"]["frame", "hip", "x"], *args, model=d["model"])
    bad = d["stars"][:5].copy()
    bad["stamp"] = len(d["stamps"]) + 3
    with pytest.raises(ValueError, match="stamp"):
        per_star_epsf(bad, *args, model=d["model"])
    with pytest.raises(ValueError, match="origins"):
        per_star_epsf(d["stars"], d["stamps"], d["origins"][:10], *args[2:], model=d["model"])
    with pytest.raises(ValueError, match="wide"):
        per_star_epsf(d["stars"], d["stamps"][:, 2:-2, 2:-2], *args[1:], model=d["model"])


def test_track_tie_needs_times(night):
    from startrack.epsf import build_epsf

    d = night
    frames = list(d["stamps"][:20].astype(float))
    pos = [np.array([[5.0, 5.0]])] * 20
    with pytest.raises(ValueError, match="times"):
        build_epsf(frames, pos, d["sensor"], per_star=True, tie="track")
    with pytest.raises(ValueError, match="times"):
        build_epsf(frames, pos, d["sensor"], per_star=True, tie="track", times=np.arange(19.0))
