import numpy as np
import pytest
from astropy.table import Table

from startrack.calibration.intrinsics import fit_intrinsics, turntable_directions
from startrack.calibration.synthetic import simulate_intrinsics
from startrack.cli import main
from startrack.sky.camera import Camera

NOMINAL = Camera(width=1024, height=1024, focal_length_px=25000.0 / 5.3, pixel_pitch_um=5.3)


def _fit(table, **kw):
    return fit_intrinsics(table["azimuth_deg"], table["elevation_deg"], table["x"], table["y"], NOMINAL, **kw)


def test_turntable_directions():
    d = turntable_directions([0.0, 90.0, 0.0], [0.0, 0.0, 90.0])
    assert np.allclose(d, [[0, 0, 1], [-1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_noise_free_data_give_the_truth():
    t, truth = simulate_intrinsics(centroid_noise=0.0, grid=15)
    r = _fit(t)
    cam = truth["camera"]
    assert r.camera.focal_length_px == pytest.approx(cam.focal_length_px, rel=1e-10)
    assert np.allclose(r.camera.principal_point, cam.principal_point, atol=1e-6)
    assert np.allclose(r.camera.distortion, cam.distortion, atol=1e-8)
    assert np.allclose([r.params[k] for k in ("mount_x", "mount_y", "mount_z")], truth["mounting_deg"], atol=1e-8)
    assert r.rms < 1e-8


def test_acceptance_focal_length_principal_point_residuals():
    """f within 0.01 %, principal point within 0.05 px, residual RMS <= 1.2x the centroid noise.

    The principal point needs centroid noise / sqrt(points) of ~3e-5 px for 0.05 px (it trades off
    against the mounting tilt): 0.002 px centroids on a 61 x 61 grid.
    """
    t, truth = simulate_intrinsics(centroid_noise=0.002, grid=61, seed=5)
    r = _fit(t)
    cam = truth["camera"]
    assert abs(r.camera.focal_length_px / cam.focal_length_px - 1) < 1e-4
    assert np.all(np.abs(np.subtract(r.camera.principal_point, cam.principal_point)) < 0.05)
    assert r.rms <= 1.2 * 0.002


def test_realistic_noise_errors_within_stated_uncertainty():
    t, truth = simulate_intrinsics(centroid_noise=0.01, grid=21, seed=2)
    r = _fit(t, x_err=t["x_err"], y_err=t["y_err"])
    cam = truth["camera"]
    assert abs(r.camera.focal_length_px / cam.focal_length_px - 1) < 1e-4
    for k, true in (("cx", cam.principal_point[0]), ("cy", cam.principal_point[1]),
                    ("focal_length_px", cam.focal_length_px)):
        assert abs(r.params[k] - true) < 4 * r.errors[k]
    assert 0.1 < r.errors["cx"] < 0.6  # the principal point is the weak parameter (module notes)
    assert r.rms <= 1.2 * 0.01 and r.residuals.meta["chi2_reduced"] == pytest.approx(1.0, abs=0.2)


@pytest.mark.slow
def test_uncertainties_are_calibrated():
    """500 realisations: errors / stated uncertainties have unit spread (+-15 %) and no bias.

    A pinhole camera on a 7 x 7 grid keeps it fast; the distortion terms enter the same covariance.
    """
    pinhole = Camera(width=1024, height=1024, focal_length_px=25000.0 / 5.3, principal_point=(520.3, 505.7),
                     pixel_pitch_um=5.3)
    pulls = []
    for seed in range(500):
        t, truth = simulate_intrinsics(camera=pinhole, centroid_noise=0.01, grid=7, seed=100 + seed)
        r = _fit(t, distortion=())
        cam = truth["camera"]
        pulls.append(((r.params["focal_length_px"] - cam.focal_length_px) / r.errors["focal_length_px"],
                      (r.params["cx"] - cam.principal_point[0]) / r.errors["cx"]))
    pulls = np.array(pulls)
    assert np.all(np.abs(pulls.mean(axis=0)) < 0.15)
    assert np.all(np.abs(pulls.std(axis=0) - 1) < 0.15)


def test_cli_round_trip(tmp_path, capsys):
    data = tmp_path / "i"
    assert main(["simulate", "intrinsics", str(data), "--grid", "15", "--seed", "3", "-q"]) == 0
    out = tmp_path / "camera.toml"
    assert main(["calib", "intrinsics", str(data / "centroids.ecsv"), "--camera", str(data / "nominal.toml"),
                 "--out", str(out)]) == 0
    assert "principal point" in capsys.readouterr().out
    cam, truth = Camera.from_toml(out), Camera.from_toml(data / "truth.toml")
    assert abs(cam.focal_length_mm / truth.focal_length_mm - 1) < 1e-4
    assert np.all(np.abs(np.subtract(cam.principal_point, truth.principal_point)) < 2.0)
    res = Table.read(tmp_path / "camera_residuals.ecsv")
    assert {"dx", "dy", "x_fit"} <= set(res.colnames)


@pytest.mark.parametrize("mutate, match", [
    ("column", "missing column(s) elevation_deg"),
    ("few", "too few spot centroids"),
    ("line", "both azimuth and elevation"),
    ("term", "distortion terms must be among"),
    ("camera", "needs 'width'"),
])
def test_bad_input_is_one_line(tmp_path, capsys, mutate, match):
    t, _ = simulate_intrinsics(grid=9, seed=1)
    nominal = tmp_path / "nominal.toml"
    nominal.write_text(NOMINAL.to_toml())
    argv_extra = []
    if mutate == "column":
        t.remove_column("elevation_deg")
    elif mutate == "few":
        t = t[:4]
    elif mutate == "line":
        t["elevation_deg"] = 0.0
    elif mutate == "term":
        argv_extra = ["--distortion", "k1,k4"]
    elif mutate == "camera":
        nominal.write_text("[camera]\nfocal_length_mm = 25.0\npixel_pitch_um = 5.3\n")
    path = tmp_path / "c.csv"
    t.write(path, format="ascii.csv")
    assert main(["calib", "intrinsics", str(path), "--camera", str(nominal), "--out", str(tmp_path / "o.toml"),
                 "-q", *argv_extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert match in err
