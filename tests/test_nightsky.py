"""The night-sky job's mechanics: blocks identical whoever runs them, bad frames as rows, kill and resume, Dask."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

from startrack.io import read_table, sample_path
from startrack.psf import GaussianPSF
from startrack.sensor import Sensor
from startrack.sky.attitude import Attitude
from startrack.sky.camera import Camera
from startrack.sky.catalog import load_catalog, parse_time
from startrack.sky.nightsky import run_pass1
from startrack.sky.simulate import sky_frame

ROOT = Path(__file__).resolve().parents[1]
CAMERA = sample_path("sample_camera.toml")
N = 16
BLOCK = 4


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """16 frames of a slowly drifting 512x512 sky (0.12 px per frame), each with its DATE-OBS."""
    folder = tmp_path_factory.mktemp("seq")
    cam, sensor = Camera.from_toml(CAMERA), Sensor.from_toml(CAMERA)
    meta = read_table(sample_path("sample_truth.ecsv")).meta
    cat = load_catalog(7.0)
    t0 = parse_time("2026-11-25T22:00:00")
    vec = cat.apparent(t0)
    for k in range(N):
        att = Attitude.from_radec_roll(meta["ra_deg"] + 0.0015 * k, meta["dec_deg"], meta["roll_deg"])
        img, _ = sky_frame(cat, vec, att, cam, GaussianPSF(0.5), sensor, seed=k)
        t = t0 + k * 0.366 * u.s
        t.precision = 6
        hdr = fits.Header()
        hdr["DATE-OBS"] = t.isot
        fits.PrimaryHDU(img.astype(np.uint16), header=hdr).writeto(folder / f"f{k:03d}.fits")
    return folder


def _same(a, b):
    """Tables equal in every column but the wall times."""
    assert a.colnames == b.colnames
    for c in a.colnames:
        if not c.endswith("_ms"):
            np.testing.assert_array_equal(np.asarray(a[c]), np.asarray(b[c]), err_msg=c)


@pytest.fixture(scope="module")
def reference(sequence, tmp_path_factory):
    return run_pass1(sequence, CAMERA, out=tmp_path_factory.mktemp("ref"), workers=1, block_frames=BLOCK,
                     progress=False)


def test_pass1_tables(reference):
    frames, stars, stamps, origins = reference
    assert list(frames["frame"]) == list(range(N))
    assert np.all(frames["status"] == "solved")
    assert list(frames.colnames[:5]) == ["frame", "file", "time", "status", "reason"]
    assert np.all(stars["hip"] > 0) and len(stars) == len(stamps) == len(origins)
    assert stamps.shape[1:] == (11, 11) and stamps.dtype == np.float32
    # each stamp is centred on the pixel holding its star
    np.testing.assert_array_equal(origins[:, 0], np.floor(np.asarray(stars["x"]) + 0.5).astype(int) - 5)
    assert list(stars["stamp"]) == list(range(len(stars)))


def test_two_workers_give_the_same_tables(sequence, reference, tmp_path):
    other = run_pass1(sequence, CAMERA, out=tmp_path, workers=2, block_frames=BLOCK, progress=False)
    _same(reference[0], other[0])
    _same(reference[1], other[1])
    np.testing.assert_array_equal(reference[2], other[2])
    np.testing.assert_array_equal(reference[3], other[3])


def test_resume_refuses_other_options(sequence, reference, tmp_path):
    run_pass1(sorted(sequence.iterdir())[:2], CAMERA, out=tmp_path, workers=1, block_frames=BLOCK, progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        run_pass1(sorted(sequence.iterdir())[:2], CAMERA, out=tmp_path, workers=1, block_frames=BLOCK, progress=False)
    with pytest.raises(ValueError, match="other psf"):
        run_pass1(sorted(sequence.iterdir())[:2], CAMERA, out=tmp_path, psf="gaussian:0.6", resume=True,
                  block_frames=BLOCK, progress=False)


def test_bad_frames_are_rows(sequence, reference, tmp_path):
    paths = sorted(sequence.iterdir())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.fits").write_bytes(b"SIMPLE  =                    T / garbage\n" * 3)
    fits.PrimaryHDU(np.full((512, 512), 100, np.uint16), header=fits.getheader(paths[0])).writeto(
        bad / "cloudy.fits")
    fits.PrimaryHDU(np.full((512, 512), 4095, np.uint16), header=fits.getheader(paths[0])).writeto(bad / "sat.fits")
    fits.PrimaryHDU(np.full((64, 64), 100, np.uint16), header=fits.getheader(paths[0])).writeto(bad / "small.fits")
    fits.PrimaryHDU(fits.getdata(paths[0])).writeto(bad / "notime.fits")
    # each bad frame at the end of a block, so the good frames' blocks are those of the reference
    seq = [paths[0], paths[1], paths[2], bad / "corrupt.fits", paths[4], paths[5], paths[6], bad / "missing.fits",
           paths[8], paths[9], paths[10], bad / "cloudy.fits", paths[12], paths[13], paths[14], bad / "sat.fits",
           bad / "small.fits", bad / "notime.fits"]
    frames, stars, _, _ = run_pass1(seq, CAMERA, out=tmp_path / "out", workers=1, block_frames=BLOCK, progress=False)
    why = dict(zip([Path(f).name for f in frames["file"]], zip(frames["status"], frames["reason"], strict=True),
                   strict=True))
    assert why["corrupt.fits"][0] == "error" and "cannot read" in why["corrupt.fits"][1]
    assert why["missing.fits"][0] == "error" and "no such file" in why["missing.fits"][1]
    assert why["cloudy.fits"][0] == "no-solution" and why["cloudy.fits"][1]
    assert why["sat.fits"][0] != "solved" and why["sat.fits"][1]
    assert why["small.fits"][0] == "error" and "64x64" in why["small.fits"][1]
    assert why["notime.fits"][0] == "error" and "no time" in why["notime.fits"][1]
    assert all("\n" not in r for r in frames["reason"])
    good = [k for k in range(N) if k % 4 != 3]
    ref = reference[0]
    for k in good:
        for c in ("status", "ra_deg", "dec_deg", "roll_deg", "n_matched"):
            assert frames[c][k] == ref[c][k], (k, c)


def test_kill_and_resume(sequence, reference, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # the CLI's blocks (16 frames) would hold this whole sequence: the killed run is the API's, with 4-frame blocks
    code = ("import sys; from startrack.sky.nightsky import run_pass1; "
            f"run_pass1({str(sequence)!r}, {str(CAMERA)!r}, out={str(out)!r}, workers=1, block_frames={BLOCK}, "
            "progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    parts = out / "parts"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.frames.ecsv"))) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(list(parts.glob("*.frames.ecsv")))
    assert 1 <= n_done < N // BLOCK
    frames, stars, stamps, origins = run_pass1(sequence, CAMERA, out=out, resume=True, workers=1,
                                               block_frames=BLOCK, progress=False)
    assert list(frames["frame"]) == list(range(N))
    _same(reference[0], frames)
    _same(reference[1], stars)
    np.testing.assert_array_equal(reference[2], stamps)


@pytest.mark.optional
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning", "ignore::UserWarning")
def test_dask_gives_the_same_tables(sequence, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        other = run_pass1(sequence, CAMERA, out=tmp_path, scheduler=c.scheduler_address, block_frames=BLOCK,
                          progress=False)
    _same(reference[0], other[0])
    _same(reference[1], other[1])
    np.testing.assert_array_equal(reference[2], other[2])
