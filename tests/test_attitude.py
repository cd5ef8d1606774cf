import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from startrack.sky.attitude import ARCSEC, Attitude, solve_attitude
from startrack.sky.camera import Camera
from startrack.sky.catalog import radec_to_vector, vector_to_radec


def random_stars(rng, n, att, half_angle=0.1):
    """n unit vectors within half_angle (rad) of the boresight, in ICRS and camera frames."""
    cam = np.column_stack([rng.uniform(-half_angle, half_angle, (n, 2)), np.ones(n)])
    cam /= np.linalg.norm(cam, axis=1, keepdims=True)
    return cam, cam @ att.matrix  # icrs = R^T cam


def perturb(rng, vec, sigma):
    """Move each unit vector by an isotropic Gaussian angle of sigma (rad) per axis."""
    n = rng.normal(0, sigma, vec.shape)
    n -= np.sum(n * vec, axis=1, keepdims=True) * vec
    out = vec + n
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_noise_free_recovery():
    rng = np.random.default_rng(1)
    truth = Attitude.from_radec_roll(123.4, -56.7, 89.0)
    cam, icrs = random_stars(rng, 10, truth)
    att = solve_attitude(cam, icrs, sigma=1e-5)
    np.testing.assert_allclose(att.matrix, truth.matrix, atol=1e-13)
    assert att.ra == pytest.approx(123.4, abs=1e-9)
    assert att.dec == pytest.approx(-56.7, abs=1e-9)
    assert att.roll == pytest.approx(89.0, abs=1e-9)
    assert np.all(att.residuals(cam, icrs) < 1e-6)


def test_covariance_matches_monte_carlo():
    """500 noisy realisations: errors normalised by the reported covariance have RMS 1 (within 10 %)."""
    rng = np.random.default_rng(2)
    truth = Attitude.from_radec_roll(10.0, 20.0, 30.0)
    cam, icrs = random_stars(rng, 25, truth)
    sigma = rng.uniform(0.5, 3.0, 25) * ARCSEC  # heteroscedastic: the weights matter
    z = []
    for _ in range(500):
        att = solve_attitude(perturb(rng, cam, sigma[:, None]), icrs, sigma)
        e = att.error(truth)
        z.append(e / np.sqrt(np.diag(att.covariance)))
    rms = np.sqrt(np.mean(np.square(z), axis=0))
    np.testing.assert_allclose(rms, 1.0, atol=0.1)
    # roll (about the boresight) is much less certain than cross-boresight for a narrow field
    assert att.sigma_roll_arcsec > 5 * att.sigma_cross_arcsec


def test_roll_convention_north_up_east_left():
    cam = Camera(1001, 1001, 5000.0)
    att = Attitude.from_radec_roll(200.0, 30.0, 0.0)
    north = radec_to_vector(math.radians(200.0), math.radians(30.5))
    east = radec_to_vector(math.radians(200.5), math.radians(30.0))
    xn, yn = cam.vector_to_pixel(att.to_camera(north[None]))
    xe, ye = cam.vector_to_pixel(att.to_camera(east[None]))
    assert yn[0] < 500 - 40 and abs(xn[0] - 500) < 1e-6  # north is up (-y)
    assert xe[0] < 500 - 30 and abs(ye[0] - 500) < 2.0  # east is left (-x)
    # roll 90: north has turned from up towards left
    att90 = Attitude.from_radec_roll(200.0, 30.0, 90.0)
    xn, yn = cam.vector_to_pixel(att90.to_camera(north[None]))
    assert xn[0] < 500 - 40 and abs(yn[0] - 500) < 1e-6


def test_quaternion_scalar_last():
    att = Attitude.from_radec_roll(45.0, 10.0, 120.0)
    q = att.quaternion
    assert q[3] >= 0 and q.shape == (4,)
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), att.matrix, atol=1e-14)
    back = Attitude.from_quaternion(q)
    assert (back.ra, back.dec, back.roll) == pytest.approx((45.0, 10.0, 120.0), abs=1e-9)


@pytest.mark.parametrize("dist", [None, (-0.15, 0.05, 2e-4, -1e-4, 0.0)])
def test_wcs_matches_camera_projection(dist):
    cam = Camera(800, 600, 2000.0, principal_point=(401.3, 297.9), distortion=dist)
    att = Attitude.from_radec_roll(300.0, -70.0, 33.0)
    w = att.wcs(cam)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 799, 50), rng.uniform(0, 599, 50)
    ra, dec = w.all_pix2world(x, y, 0)
    v = att.to_icrs(cam.pixel_to_vector(x, y))
    ra2, dec2 = (np.degrees(a) for a in vector_to_radec(v))
    sep = np.hypot((ra - ra2 + 180) % 360 - 180, 0) * np.cos(np.radians(dec2))
    tol = 1e-9 if dist is None else 0.01 / 2000 * 57.3  # SIP fit good to 0.01 px
    assert np.max(np.abs(sep)) < tol and np.max(np.abs(dec - dec2)) < tol
    xb, yb = w.all_world2pix(ra2, dec2, 0)
    assert np.max(np.hypot(xb - x, yb - y)) < (1e-6 if dist is None else 0.01)
    assert w.to_header(relax=True)["CTYPE1"] == ("RA---TAN" if dist is None else "RA---TAN-SIP")


@pytest.mark.parametrize("args, match", [
    ((np.ones((3, 2)), np.ones((3, 2))), r"\(n, 3\)"),
    ((np.ones((1, 3)), np.ones((1, 3))), "at least 2"),
    ((np.eye(3), np.eye(3), [1.0, 0.0, 1.0]), "sigma"),
])
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        solve_attitude(*args)
