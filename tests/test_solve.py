"""``startrack solve`` and the pipeline: one row per frame whatever goes wrong with it."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from startrack.cli import main
from startrack.io import sample_path


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(8)
    corrupt = d / "corrupt.fits"
    corrupt.write_bytes(b"SIMPLE  =                    T / garbage\n" * 3)
    np.save(d / "allnan.npy", np.full((512, 512), np.nan))
    few = rng.normal(100, 3, (512, 512))
    for x, y in ((100.2, 200.7), (300.6, 50.1)):
        yy, xx = np.mgrid[:512, :512]
        few += 3000 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.6**2))
    np.save(d / "two_stars.npy", few)
    # clouds: smooth structure at all scales plus noise and a few blotches, no stars
    import cv2

    clouds = 400 + 60 * cv2.GaussianBlur(rng.normal(0, 1, (512, 512)), (0, 0), 12) * 12
    clouds += 20 * cv2.GaussianBlur(rng.normal(0, 1, (512, 512)), (0, 0), 2) * 3 + rng.normal(0, 4, (512, 512))
    np.save(d / "clouds.npy", clouds)
    np.save(d / "small.npy", np.ones((64, 64)))
    return d


def test_solve_frames_with_bad_input(frames, tmp_path, capsys):
    names = ["two_stars.npy", "corrupt.fits", "allnan.npy", "clouds.npy", "small.npy"]
    argv = ["solve", str(sample_path("sample_frame.fits"))] + [str(frames / n) for n in names]
    out = tmp_path / "results.ecsv"
    stars = tmp_path / "stars.ecsv"
    wcs = tmp_path / "wcs"
    rc = main(argv + ["--camera", str(sample_path("sample_camera.toml")), "--psf", "gaussian:0.35",
                      "--out", str(out), "--stars", str(stars), "--wcs-dir", str(wcs), "-q"])
    assert rc == 0
    t = Table.read(out)
    assert list(t.colnames) == ["file", "status", "reason", "ra_deg", "dec_deg", "roll_deg", "qx", "qy", "qz", "qw",
                                "fov_deg", "focal_length_px", "n_detected", "n_matched", "rms_arcsec",
                                "sigma_cross_arcsec", "sigma_roll_arcsec", "p_false", "time_ms", "t_read_ms",
                                "t_background_ms", "t_detect_ms", "t_cg_ms", "t_mle_ms", "t_identify_ms",
                                "t_attitude_ms"]
    status = dict(zip([r.split("/")[-1] for r in t["file"]], zip(t["status"], t["reason"], strict=True),
                      strict=True))
    assert status["sample_frame.fits"][0] == "solved"
    assert status["two_stars.npy"] == ("no-solution", status["two_stars.npy"][1])
    assert "at least 3" in status["two_stars.npy"][1]
    assert status["corrupt.fits"][0] == "error" and "cannot read" in status["corrupt.fits"][1]
    assert status["allnan.npy"][0] == "error" and "NaN" in status["allnan.npy"][1]
    assert status["clouds.npy"][0] == "no-solution" and status["clouds.npy"][1]
    assert status["small.npy"][0] == "error" and "64x64" in status["small.npy"][1]
    row = t[t["status"] == "solved"][0]
    truth = Table.read(sample_path("sample_truth.ecsv")).meta
    assert row["ra_deg"] == pytest.approx(truth["ra_deg"], abs=2e-4)
    assert row["dec_deg"] == pytest.approx(truth["dec_deg"], abs=2e-4)
    assert row["roll_deg"] == pytest.approx(truth["roll_deg"], abs=5e-3)
    np.testing.assert_allclose([row[c] for c in ("qx", "qy", "qz", "qw")], truth["quaternion"], atol=1e-5)
    assert row["n_matched"] > 40 and row["p_false"] < 1e-9 and row["sigma_cross_arcsec"] < 1
    # stars: CRLB and the matched HIP numbers, which are the truth's
    s = Table.read(stars)
    assert {"x", "y", "x_err", "y_err", "flux", "hip", "file"} <= set(s.colnames)
    tr = Table.read(sample_path("sample_truth.ecsv"))
    mine = s[(s["hip"] > 0) & np.array(["sample_frame" in f for f in s["file"]])]
    d = np.hypot(mine["x"][:, None] - tr["x"][None], mine["y"][:, None] - tr["y"][None])
    assert np.mean(tr["hip"][np.argmin(d, axis=1)] == mine["hip"]) > 0.95
    # a WCS for the solved frame only, and it maps a star's pixel to its catalog position
    files = sorted(p.name for p in wcs.iterdir())
    assert files == ["sample_frame.wcs"]
    w = WCS(fits.Header.fromfile(wcs / "sample_frame.wcs"))
    ra, dec = w.all_pix2world(np.asarray(mine["x"]), np.asarray(mine["y"]), 0)
    sep = np.hypot((ra - np.asarray(mine["ra_deg"])) * np.cos(np.radians(dec)), dec - np.asarray(mine["dec_deg"]))
    assert np.median(sep) < 1e-6


def test_no_readable_frame_fails(frames, tmp_path, capsys):
    rc = main(["solve", str(frames / "corrupt.fits"), "--camera", str(sample_path("sample_camera.toml")),
               "--out", str(tmp_path / "r.ecsv")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no frame could be read" in err[-1]


@pytest.mark.parametrize("extra, match", [
    (["--fov-range", "30", "5"], "fov-range"),
    (["--camera", "{toml}", "--time", "yesterday"], "time"),
])
def test_usage_errors(frames, tmp_path, capsys, extra, match):
    extra = [e.format(toml=sample_path("sample_camera.toml")) for e in extra]
    rc = main(["solve", str(sample_path("sample_frame.fits")), "--out", str(tmp_path / "r.ecsv")] + extra)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


def test_camera_or_fov_range_required(capsys):
    with pytest.raises(SystemExit) as e:
        main(["solve", "x.fits"])
    assert e.value.code == 2


def test_unknown_sensor_noise_from_image():
    """Without a [sensor] table the noise comes from the frame, and the sample frame still solves."""
    from startrack import GaussianPSF
    from startrack.io import read_frame
    from startrack.sky.camera import Camera
    from startrack.sky.pipeline import estimate_sensor, solve_frame
    from startrack.sky.starid import StarIdentifier

    rng = np.random.default_rng(9)
    flat = 1000.0 + rng.normal(0, 5.0, (256, 256))
    sensor = estimate_sensor(flat)
    # gain 1: the Poisson variance of the background, level - offset, is the measured 25 DN^2
    assert 1000.0 - sensor.offset == pytest.approx(25.0, rel=0.05)
    assert sensor.gain == 1.0 and sensor.saturation is None
    assert estimate_sensor(flat, 12).saturation == 4095.0
    image, meta = read_frame(sample_path("sample_frame.fits"))
    ident = StarIdentifier(Camera.from_toml(sample_path("sample_camera.toml")))
    res = solve_frame(image, ident, GaussianPSF(0.35), None, time=meta["header"]["DATE-OBS"])
    assert res.solution.solved and res.row["n_matched"] > 40
