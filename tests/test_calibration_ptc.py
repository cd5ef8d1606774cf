import numpy as np
import pytest
from astropy.table import Table

import startrack as st
from startrack.calibration.dataset import write_frames
from startrack.calibration.ptc import level_statistics, measure_ptc, photon_transfer
from startrack.calibration.synthetic import simulate_ptc
from startrack.cli import main

PAPER = st.Sensor(gain=0.14, offset=37.0, dark_var=54.40)


def _levels(frames, manifest):
    kinds = np.asarray(manifest["kind"])
    t = np.asarray(manifest["exposure_s"])
    rows = []
    for kind in ("dark", "flat"):
        for exp in np.unique(t):
            sel = (kinds == kind) & (t == exp)
            rows.append({"kind": kind, "exposure_s": exp, **level_statistics(frames[sel])})
    return Table(rows=rows)


def test_paper_camera_from_files(tmp_path):
    """Acceptance: K and sd2 within 2 %, s0 within 0.5 DN, through the on-disk dataset path."""
    frames, manifest, truth = simulate_ptc((128, 128), sensor=PAPER, seed=11)
    write_frames(tmp_path / "ptc", frames, manifest)
    res = measure_ptc(tmp_path / "ptc")
    assert abs(res.gain / 0.14 - 1) < 0.02
    assert abs(res.dark_var / 54.40 - 1) < 0.02
    assert abs(res.offset - 37.0) < 0.5
    # The uncertainties describe the errors (4 sigma).
    assert abs(res.gain - 0.14) < 4 * res.gain_err
    assert abs(res.dark_var - 54.40) < 4 * res.dark_var_err
    assert abs(res.offset - 37.0) < 4 * res.offset_err
    # Saturation: EMVA's variance peak lies within two level spacings below the full-well clip.
    assert res.saturated and truth["saturation"] - 300 < res.saturation <= truth["saturation"]
    assert res.linearity_error < 0.1
    assert abs(res.dark_current) < 4 * res.dark_current_err
    s = res.sensor()
    assert s.gain == res.gain and s.saturation == res.saturation


def test_quantisation_is_removed():
    """Without the 1/12 DN^2 correction sd2 would come out ~8 % high at K = 0.14."""
    frames, manifest, _ = simulate_ptc((96, 96), sensor=PAPER, seed=5, levels=12)
    lv = _levels(frames, manifest)
    with_q = photon_transfer(lv)
    without = photon_transfer(lv, quantization=0.0)
    assert abs(with_q.dark_var / 54.40 - 1) < 0.03
    assert without.dark_var / with_q.dark_var - 1 == pytest.approx(1 / 12 / (0.14**2 * 54.40), rel=0.05)


@pytest.mark.slow
def test_uncertainties_are_calibrated():
    """Over 500 realisations the errors divided by the stated uncertainties have unit spread (+-25 %)."""
    pulls = []
    for seed in range(500):
        frames, manifest, _ = simulate_ptc((32, 32), sensor=PAPER, levels=12, seed=1000 + seed)
        r = photon_transfer(_levels(frames, manifest))
        pulls.append(((r.gain - 0.14) / r.gain_err, (r.dark_var - 54.40) / r.dark_var_err,
                      (r.offset - 37.0) / r.offset_err))
    pulls = np.array(pulls)
    assert np.all(np.abs(pulls.mean(axis=0)) < 0.2)
    assert np.all((pulls.std(axis=0) > 0.8) & (pulls.std(axis=0) < 1.25))


def test_read_noise_split_leaves_the_likelihood_unchanged():
    """sd2 + sr^2 is measured; the split only moves s0 -- and the Poisson datum and mean stay the same."""
    truth = st.Sensor(gain=0.14, offset=37.0, dark_var=30.0, read_noise=4.0)
    frames, manifest, _ = simulate_ptc((96, 96), sensor=truth, seed=3, levels=12)
    lv = _levels(frames, manifest)
    poisson = photon_transfer(lv)
    split = photon_transfer(lv, read_noise=4.0)
    assert abs(poisson.dark_var / 46.0 - 1) < 0.03  # all of sd2 + sr^2
    assert abs(split.dark_var / 30.0 - 1) < 0.05
    assert abs(split.offset - 37.0) < 0.5
    assert poisson.offset == pytest.approx(split.offset - split.gain * 16.0, abs=1e-9)
    assert poisson.dark_noise == pytest.approx(split.dark_noise)
    a, b = poisson.sensor(), split.sensor()
    dn = np.array([40.0, 100.0, 900.0])
    assert np.allclose(a.poisson_data(dn), b.poisson_data(dn))
    assert np.allclose(a.poisson_mean(500.0, 3.0), b.poisson_mean(500.0, 3.0))
    with pytest.raises(ValueError, match="read_noise"):
        photon_transfer(lv, read_noise=10.0)


def test_dark_current():
    frames, manifest, _ = simulate_ptc((96, 96), sensor=PAPER, seed=8, levels=16, dark_current=40.0)
    r = photon_transfer(_levels(frames, manifest), at_exposure=0.0)
    assert abs(r.dark_current - 40.0) < 4 * r.dark_current_err
    # Dark values are reported at the exposure asked for: at t = 0 the dark current adds nothing.
    assert abs(r.dark_var / 54.40 - 1) < 0.03 and abs(r.offset - 37.0) < 0.5


def test_nonlinearity():
    linear = photon_transfer(_levels(*simulate_ptc((96, 96), sensor=PAPER, seed=8, levels=16)[:2]))
    bent = photon_transfer(_levels(*simulate_ptc((96, 96), sensor=PAPER, seed=8, levels=16,
                                                 nonlinearity=0.03)[:2]))
    # A 3 % compression at full well bends the curve far beyond the noise of a linear sensor.
    assert linear.linearity_error < 0.05
    assert bent.linearity_error > 0.2 and bent.linearity_error > 20 * bent.linearity_error_err


def test_unsaturated_flats_fit_all_levels():
    frames, manifest, _ = simulate_ptc((64, 64), sensor=PAPER, seed=2, levels=8, max_signal=0.6)
    r = photon_transfer(_levels(frames, manifest))
    assert not r.saturated and r.sensor().saturation is None
    assert np.all(r.levels["used_gain"][r.levels["kind"] == "flat"])
    assert "not reached" in r.summary()


def test_cli_round_trip(tmp_path, capsys):
    data = tmp_path / "d"
    assert main(["simulate", "ptc", str(data), "--shape", "64", "64", "--levels", "10", "--seed", "4",
                 "--format", "tiff", "-q"]) == 0
    out = tmp_path / "sensor.toml"
    assert main(["calib", "ptc", str(data / "manifest.csv"), "--out", str(out), "-q"]) == 0
    s = st.Sensor.from_toml(out)
    assert abs(s.gain / 0.14 - 1) < 0.03 and abs(s.offset - 37) < 0.5
    assert "+-" in out.read_text()
    levels = Table.read(tmp_path / "sensor_levels.ecsv")
    assert set(levels["kind"]) == {"dark", "flat"} and "linearity_dev" in levels.colnames


def _dataset(tmp_path, levels=6, shape=(16, 16)):
    frames, manifest, _ = simulate_ptc(shape, sensor=PAPER, seed=1, levels=levels)
    return write_frames(tmp_path / "d", frames, manifest), frames


@pytest.mark.parametrize("mutate, match", [
    ("missing_file", "frame_0003.fits not found"),
    ("size", "frame_0005.fits: frame is 20x16 px"),
    ("few_levels", "too few flat exposure levels: 3"),
    ("single_flat", "has 1 frame"),
    ("kind", "kind must be 'dark' or 'flat'"),
    ("column", "missing column(s) exposure_s"),
    ("number", "'abc' is not a number"),
    ("no_manifest", "manifest not found"),
])
def test_bad_input_is_one_line(tmp_path, capsys, mutate, match):
    from astropy.io import fits

    manifest, frames = _dataset(tmp_path, levels=3 if mutate == "few_levels" else 6)
    lines = manifest.read_text().splitlines()
    if mutate == "missing_file":
        (manifest.parent / "frame_0003.fits").unlink()
    elif mutate == "size":
        fits.PrimaryHDU(np.zeros((16, 20), np.uint16)).writeto(manifest.parent / "frame_0005.fits", overwrite=True)
    elif mutate == "single_flat":
        manifest.write_text("\n".join(lines[:-1]) + "\n")
    elif mutate == "kind":
        manifest.write_text("\n".join(lines[:2] + [lines[2].replace("dark", "bias")] + lines[3:]) + "\n")
    elif mutate == "column":
        manifest.write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")
    elif mutate == "number":
        manifest.write_text("\n".join(lines[:3] + [lines[3].rsplit(",", 1)[0] + ",abc"] + lines[4:]) + "\n")
    elif mutate == "no_manifest":
        manifest.unlink()
    assert main(["calib", "ptc", str(manifest), "--out", str(tmp_path / "s.toml"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert match in err
