"""The Earth's rotation and a ground-fixed camera's mounting, against independent references."""

import math

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import GCRS, AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from scipy.spatial.transform import Rotation

from startrack.sky.catalog import offline_astropy
from startrack.sky.earth import Site, earth_rotation
from startrack.sky.simulate import ground_attitudes, write_ground_sequence

T0 = "2026-03-20T22:00:00"


def test_the_earth_turns_once_a_sidereal_day_about_its_pole():
    t = Time(T0) + np.array([0.0, 3600.0]) * u.s
    r = earth_rotation(t)
    assert r.shape == (2, 3, 3)
    np.testing.assert_allclose(r @ np.transpose(r, (0, 2, 1)), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    rotvec = Rotation.from_matrix(r[1] @ r[0].T).as_rotvec()
    # 360.9856 deg per day (IAU Earth rotation angle rate 1.00273781191135448 turns per UT1 day)
    assert math.degrees(np.linalg.norm(rotvec)) * 24 == pytest.approx(360.98561, abs=2e-4)
    # a fixed direction turns westwards in the Earth-fixed frame, about the pole (polar motion < 1 arcsec)
    axis = rotvec / np.linalg.norm(rotvec)
    assert math.degrees(math.acos(-axis[2])) * 3600 < 1.0


def test_a_zenith_camera_looks_where_astropy_puts_the_zenith():
    offline_astropy()
    site = Site(47.0, 8.0, 500.0)
    loc = EarthLocation.from_geodetic(8.0 * u.deg, 47.0 * u.deg, 500.0 * u.m)
    times = Time(T0) + np.array([0.0, 4000.0, 30000.0]) * u.s
    for att, t in zip(ground_attitudes(times, site, altitude_deg=90.0), times, strict=True):
        for alt, az in ((90.0, 0.0), (60.0, 10.0), (45.0, 250.0)):
            sky = SkyCoord(alt=alt * u.deg, az=az * u.deg, frame=AltAz(obstime=t, location=loc, pressure=0))
            v = sky.transform_to(GCRS(obstime=t)).cartesian.xyz.value
            m = site.mounting(alt, az, 0.0)
            b = (m @ earth_rotation(t)[0])[2]
            # AltAz is topocentric (diurnal aberration, <= 0.32 arcsec); the camera model is geocentric
            assert math.degrees(math.acos(min(1.0, float(v @ b)))) * 3600 < 0.5
        assert att.dec == pytest.approx(47.0, abs=0.3)  # the zenith's declination is the latitude (to ~0.2 deg)


def test_mounting_is_a_rotation_with_the_asked_pointing_and_roll():
    site = Site(-33.0, 150.0)
    for alt, az, roll in ((90.0, 0.0, 0.0), (30.0, 90.0, 0.0), (70.0, 200.0, 45.0)):
        m = site.mounting(alt, az, roll)
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(m) == pytest.approx(1.0)
        b = m[2]
        assert math.degrees(math.asin(b @ site.up)) == pytest.approx(alt, abs=1e-9)
        if alt < 90:
            assert math.degrees(math.atan2(b @ site.east, b @ site.north)) % 360 == pytest.approx(az, abs=1e-9)
    # at the zenith, roll 0 puts north image-up (camera -y) and roll 90 puts it image-left (camera -x)
    np.testing.assert_allclose(-site.mounting()[1], site.north, atol=1e-12)
    np.testing.assert_allclose(-site.mounting(roll_deg=90.0)[0], site.north, atol=1e-12)


def test_site_table(tmp_path):
    site = Site(47.5, -8.25, 1200.0)
    path = tmp_path / "camera.toml"
    path.write_text("[camera]\nfocal_length_px = 1000\nwidth = 10\nheight = 10\n\n" + site.to_toml())
    assert Site.from_toml(path) == site
    (tmp_path / "nosite.toml").write_text("[camera]\nfocal_length_px = 1000\nwidth = 10\nheight = 10\n")
    assert Site.from_toml(tmp_path / "nosite.toml") is None
    with pytest.raises(ValueError, match="latitude_deg"):
        Site.from_dict({"longitude_deg": 3.0})
    with pytest.raises(ValueError, match="unknown"):
        Site.from_dict({"latitude_deg": 3.0, "longitude_deg": 3.0, "lat": 1})
    with pytest.raises(ValueError, match="latitude_deg must be in"):
        Site(95.0, 0.0)


def test_write_ground_sequence(tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    import startrack as st
    from startrack.sky.camera import Camera
    from startrack.sky.catalog import load_catalog

    cam = Camera(width=256, height=192, focal_length_px=1200.0, pixel_pitch_um=5.3)
    sensor = st.Sensor(gain=0.14, offset=37.0, dark_var=54.4)
    site = Site(47.0, 8.0)
    paths = write_ground_sequence(tmp_path, cam, st.GaussianPSF(0.4), sensor, site, 3, start=T0, cadence=0.5,
                                  catalog=load_catalog(6.0), mag_limit=6.0, seed=1)
    assert [p.name for p in paths] == ["frame_00000.fits", "frame_00001.fits", "frame_00002.fits"]
    hdr = fits.getheader(paths[2])
    assert Time(hdr["DATE-OBS"]).isot == "2026-03-20T22:00:01.000"
    assert fits.getdata(paths[0]).shape == (192, 256)
    assert Site.from_toml(tmp_path / "camera.toml") == site
    assert Camera.from_toml(tmp_path / "camera.toml") == cam
    assert st.Sensor.from_toml(tmp_path / "camera.toml") == sensor
    frames = Table.read(tmp_path / "truth_frames.ecsv")
    assert list(frames["file"]) == [p.name for p in paths]
    # the true attitude is the mounting times the Earth's rotation at the frame time
    want = ground_attitudes([frames["time"][1]], site)[0].quaternion
    np.testing.assert_allclose([frames[c][1] for c in ("qx", "qy", "qz", "qw")], want, atol=1e-12)
    truth = Table.read(tmp_path / "truth.ecsv")
    assert set(truth["frame"]) <= {0, 1, 2} and {"hip", "x", "y", "flux", "hp"} <= set(truth.colnames)
