"""Star identification on simulated centroids (small catalog and database, cached in a temporary folder)."""

import math

import numpy as np
import pytest
from astropy.time import Time

from startrack.sky.attitude import ARCSEC, Attitude
from startrack.sky.camera import Camera
from startrack.sky.catalog import load_catalog
from startrack.sky.simulate import ZERO_POINT, project_stars, random_attitude
from startrack.sky.starid import StarIdentifier, build_database, load_database

T = Time("2026-11-25T22:00:00")
CAM = Camera(800, 600, 1400.0)  # 31.9 x 24.2 deg: a few bright stars suffice, the database stays small


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("starid-cache")


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(6.0, merge_radius=math.atan(2.5 / 1400.0))


@pytest.fixture(scope="module")
def ident(catalog, cache):
    return StarIdentifier(CAM, catalog=catalog, cache=cache)


def centroids(ident, att, rng, *, camera=CAM, sigma=0.05, drop=0.1, false=3, mag=6.0):
    """Noisy positions of the catalog stars in view, some dropped, plus false spots; flux from Hp."""
    vec = ident.catalog_vectors(T)
    st = project_stars(ident.catalog, vec, att, camera, mag_limit=mag)
    st = st[rng.uniform(size=len(st)) >= drop]
    x = np.asarray(st["x"]) + rng.normal(0, sigma, len(st))
    y = np.asarray(st["y"]) + rng.normal(0, sigma, len(st))
    flux = ZERO_POINT * 10 ** (-0.4 * np.asarray(st["hp"])) * rng.lognormal(0, 0.1, len(st))
    x = np.concatenate([x, rng.uniform(0, camera.width - 1, false)])
    y = np.concatenate([y, rng.uniform(0, camera.height - 1, false)])
    flux = np.concatenate([flux, ZERO_POINT * 10 ** (-0.4 * rng.uniform(2, 6, false))])
    return x, y, flux, np.concatenate([np.asarray(st["hip"]), np.zeros(false, int)])


def test_lost_in_space(ident):
    rng = np.random.default_rng(1)
    for _ in range(40):
        att = random_attitude(rng)
        x, y, flux, hip = centroids(ident, att, rng)
        sol = ident.identify(x, y, sigma=0.05, flux=flux, time=T)
        assert sol.solved, sol.reason
        err = np.linalg.norm(sol.attitude.error(att)) / ARCSEC
        assert err < 10 * sol.attitude.sigma_roll_arcsec + 1.0
        assert sol.p_false < 1e-6 and sol.mode == "lost-in-space"
        matched = sol.hip > 0
        assert np.all(sol.hip[matched] == hip[matched])  # every match is the right star
        assert not np.any(matched[hip == 0])  # false spots stay unmatched


def test_covariance_is_consistent(ident):
    """Normalised attitude errors over 100 frames have an RMS near 1 (within 0.7-1.5)."""
    rng = np.random.default_rng(2)
    z = []
    for _ in range(100):
        att = random_attitude(rng)
        x, y, flux, _ = centroids(ident, att, rng, false=0, drop=0.0, sigma=0.1)
        sol = ident.identify(x, y, sigma=0.1, flux=flux, time=T)
        e = sol.attitude.error(att)
        z.append(e / np.sqrt(np.diag(sol.attitude.covariance)))
    rms = np.sqrt(np.mean(np.square(z), axis=0))
    assert np.all((rms > 0.7) & (rms < 1.5)), rms


def test_focal_length_refined(catalog, cache):
    wrong = StarIdentifier(CAM.with_focal_length(1.03 * CAM.focal_length_px), catalog=catalog, cache=cache)
    rng = np.random.default_rng(3)
    for _ in range(10):
        att = random_attitude(rng)
        x, y, flux, _ = centroids(wrong, att, rng)
        sol = wrong.identify(x, y, sigma=0.05, flux=flux, time=T)
        assert sol.solved
        assert abs(sol.focal_length_px / CAM.focal_length_px - 1) < 1e-3


def test_blind(catalog, cache):
    blind = StarIdentifier.blind(800, 600, (20, 40), catalog=catalog, cache=cache)
    rng = np.random.default_rng(4)
    for _ in range(10):
        att = random_attitude(rng)
        x, y, flux, _ = centroids(blind, att, rng)
        sol = blind.identify(x, y, sigma=0.05, flux=flux, time=T)
        assert sol.solved, sol.reason
        assert abs(sol.fov_deg / CAM.fov_deg[0] - 1) < 0.005


def test_tracking_and_fallback(ident):
    rng = np.random.default_rng(5)
    att = random_attitude(rng)
    x, y, flux, _ = centroids(ident, att, rng)
    near = Attitude.from_radec_roll(att.ra + 0.05, att.dec, att.roll)
    sol = ident.identify(x, y, sigma=0.05, flux=flux, time=T, prior=near)
    assert sol.solved and sol.mode == "tracking"
    assert np.linalg.norm(sol.attitude.error(att)) / ARCSEC < 10
    # a camera turning at 0.2 deg/s about its y axis for 1 s: the rate carries the prior along
    rate = np.radians([0.0, 0.2, 0.0])
    moved = Attitude(_turn(att.matrix, rate))
    x, y, flux, _ = centroids(ident, moved, rng)
    sol = ident.identify(x, y, sigma=0.05, flux=flux, time=T, prior=att, rate=rate, dt=1.0)
    assert sol.solved and sol.mode == "tracking"
    assert np.linalg.norm(sol.attitude.error(moved)) / ARCSEC < 10
    # a prior 20 degrees off does not confirm: lost-in-space takes over
    far = Attitude.from_radec_roll((att.ra + 20) % 360, att.dec, att.roll)
    sol = ident.identify(x, y, sigma=0.05, flux=flux, time=T, prior=far)
    assert sol.solved and sol.mode == "lost-in-space"
    assert np.linalg.norm(sol.attitude.error(moved)) / ARCSEC < 10


def _turn(matrix, rate):
    """Camera rotated by rate (rad) about its own axes: stars' camera coordinates turn the other way."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(-np.asarray(rate)).as_matrix() @ matrix


def test_random_points_are_not_identified(ident):
    """Clouds, noise, a frame of hot pixels: random points must never give an attitude."""
    rng = np.random.default_rng(6)
    for n in (5, 20, 60):
        x, y = rng.uniform(0, 799, n), rng.uniform(0, 599, n)
        sol = ident.identify(x, y, flux=rng.uniform(1, 100, n), time=T)
        assert sol.status == "no-solution" and "matched" in sol.reason


@pytest.mark.parametrize("n", [0, 2])
def test_too_few_stars(ident, n):
    sol = ident.identify(np.arange(n) * 10.0, np.arange(n) * 10.0)
    assert sol.status == "no-solution" and "at least 3" in sol.reason


def test_database_is_deterministic_and_cached(catalog, tmp_path):
    a = build_database(catalog, [30.0], per_field=6, spacing=0.6)
    b = build_database(catalog, [30.0], per_field=6, spacing=0.6)
    assert len(a) > 100
    for k in ("stars", "ratios", "largest", "slot_start"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    first = load_database(catalog, [30.0], per_field=6, spacing=0.6, cache=tmp_path)
    again = load_database(catalog, [30.0], per_field=6, spacing=0.6, cache=tmp_path)
    assert not first.from_cache and again.from_cache and again.path.parent == tmp_path
    np.testing.assert_array_equal(first.stars, again.stars)
    other = load_database(catalog, [30.0], per_field=7, spacing=0.6, cache=tmp_path)
    assert other.path != again.path and len(other) > len(again)
    # every stored pattern's ratios are what its stars give
    from startrack.sky.starid.kernels import pattern_geometry

    r = np.empty(5)
    o = np.empty(4, np.int64)
    vec = catalog.propagate(2025.0)
    for p in range(0, len(a), max(1, len(a) // 50)):
        big = pattern_geometry(vec[a.stars[p]], r, o)
        np.testing.assert_allclose(r, a.ratios[p], atol=1e-6)
        assert big == pytest.approx(a.largest[p], rel=1e-6)
        np.testing.assert_array_equal(o, np.arange(4))  # stored in canonical order


@pytest.mark.parametrize("kw, match", [
    ({"camera": "camera.toml"}, "camera must be"),
    ({"camera": CAM, "fov_range": (30, 10)}, "fov_range"),
    ({"camera": CAM, "focal_tolerance": 0.9}, "focal_tolerance"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        StarIdentifier(**kw)


def test_bad_sigma(ident):
    with pytest.raises(ValueError, match="sigma"):
        ident.identify([1.0, 2, 3, 4], [1.0, 2, 3, 4], sigma=[0.1, 0.2])


def test_tracking_never_accepts_a_half_right_attitude(ident):
    """Priors off by about the tracking radius: each frame ends within 1 arcmin, by tracking or lost-in-space."""
    rng = np.random.default_rng(11)
    modes = set()
    for _ in range(100):
        att = random_attitude(rng)
        x, y, flux, _ = centroids(ident, att, rng)
        off = Attitude.from_radec_roll(att.ra + rng.uniform(-0.4, 0.4), att.dec + rng.uniform(-0.4, 0.4),
                                       att.roll + rng.choice([-1, 1]) * rng.uniform(2.0, 6.0))
        sol = ident.identify(x, y, sigma=0.05, flux=flux, time=T, prior=off)
        if sol.solved:
            modes.add(sol.mode)
            assert np.linalg.norm(sol.attitude.error(att)) / ARCSEC < 60, sol.mode
    assert modes == {"tracking", "lost-in-space"}


def test_usable_stars_brightest_first():
    from startrack.sky.starid.kernels import usable_by_brightness

    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    y = np.zeros(6)
    s = np.array([0.1, 0.1, 0.1, 0.0, 0.1, 0.1])  # star 3: no sigma
    flux = np.array([10.0, np.nan, 99.0, 50.0, 30.0, 20.0])
    assert list(usable_by_brightness(x, y, s, s, flux, True)) == [4, 5, 0, 1]  # NaN flux last, bad stars out
    assert list(usable_by_brightness(x, y, s, s, flux, False)) == [0, 1, 4, 5]
