import math

import numpy as np
import pytest

from startrack.sky.camera import Camera

DIST = (-0.2, 0.05, 1e-3, -5e-4, 0.01)


def brown(u, v, k1, k2, p1, p2, k3):
    """Brown-Conrady distortion written out from its definition (OpenCV documentation)."""
    r2 = u * u + v * v
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    return (u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u),
            v * radial + p1 * (r2 + 2 * v * v) + 2 * p2 * u * v)


def test_from_mm_and_defaults():
    cam = Camera.from_dict({"focal_length_mm": 25.0, "pixel_pitch_um": 5.3, "width": 1024, "height": 768})
    assert cam.focal_length_px == pytest.approx(25.0 / 5.3e-3)
    assert cam.principal_point == (511.5, 383.5)
    assert cam.focal_length_mm == pytest.approx(25.0)
    fx, fy, fd = cam.fov_deg
    assert fx == pytest.approx(2 * math.degrees(math.atan(1024 * 5.3e-3 / 2 / 25.0)), rel=1e-12)
    assert fy == pytest.approx(2 * math.degrees(math.atan(768 * 5.3e-3 / 2 / 25.0)), rel=1e-12)
    assert fd == pytest.approx(2 * math.degrees(math.atan(1280 * 5.3e-3 / 2 / 25.0)), rel=1e-12)
    assert cam.pixel_scale_arcsec == pytest.approx(5.3e-3 / 25.0 * 206264.806, rel=1e-6)


def test_axes_and_angles():
    cam = Camera(101, 51, 100.0)
    v = cam.pixel_to_vector([50, 150, 50], [25, 25, 125])
    np.testing.assert_allclose(v[0], [0, 0, 1], atol=1e-15)
    # x to the right, y down the image; one focal length off axis is 45 degrees
    np.testing.assert_allclose(v[1], [math.sqrt(0.5), 0, math.sqrt(0.5)], atol=1e-15)
    np.testing.assert_allclose(v[2], [0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-15)
    x, y = cam.vector_to_pixel([[0, 0, -1], [1, 0, 1]])
    assert np.isnan(x[0]) and np.isnan(y[0]) and x[1] == pytest.approx(150) and y[1] == pytest.approx(25)


def test_distortion_matches_brown_model_and_round_trips():
    cam = Camera(1024, 1024, 4716.98, principal_point=(500.0, 520.0), distortion=DIST)
    rng = np.random.default_rng(3)
    u, v = rng.uniform(-0.11, 0.11, (2, 500))
    x, y = cam.vector_to_pixel(np.column_stack([u, v, np.ones_like(u)]))
    ud, vd = brown(u, v, *DIST)
    np.testing.assert_allclose(x, 500.0 + 4716.98 * ud, atol=1e-9)
    np.testing.assert_allclose(y, 520.0 + 4716.98 * vd, atol=1e-9)
    back = cam.pixel_to_vector(x, y)
    np.testing.assert_allclose(back[:, 0] / back[:, 2], u, atol=1e-12)
    np.testing.assert_allclose(back[:, 1] / back[:, 2], v, atol=1e-12)


@pytest.mark.parametrize("dist", [None, DIST])
def test_jacobian_matches_finite_differences(dist):
    cam = Camera(1024, 1024, 4716.98, distortion=dist)
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, 1023, (2, 20))
    jac = cam.jacobian(x, y)
    h = 1e-3
    num_x = (cam.pixel_to_vector(x + h, y) - cam.pixel_to_vector(x - h, y)) / (2 * h)
    num_y = (cam.pixel_to_vector(x, y + h) - cam.pixel_to_vector(x, y - h)) / (2 * h)
    np.testing.assert_allclose(jac[:, :, 0], num_x, atol=1e-12)
    np.testing.assert_allclose(jac[:, :, 1], num_y, atol=1e-12)


def test_angular_sigma():
    cam = Camera(1025, 1025, 5000.0)
    # at the axis a pixel is 1/f rad; 45 degrees off axis along x, the x step shrinks by cos^2 = 1/2
    s = cam.angular_sigma([512, 512 + 5000], [512, 512], 0.1, 0.1)
    assert s[0] == pytest.approx(0.1 / 5000.0, rel=1e-12)
    expect = math.sqrt(((0.1 / 5000 * 0.5) ** 2 + (0.1 / 5000 / math.sqrt(2)) ** 2) / 2)
    assert s[1] == pytest.approx(expect, rel=1e-12)
    cov = cam.vector_covariance([700], [300], [0.05], [0.2])
    vec = cam.pixel_to_vector(700, 300)[0]
    np.testing.assert_allclose(cov[0] @ vec, 0, atol=1e-20)  # no error along the vector itself


def test_from_fov_and_focal_change():
    cam = Camera.from_fov(20.0, 1000, 800)
    assert cam.fov_deg[0] == pytest.approx(20.0, rel=1e-12)
    assert cam.with_focal_length(2 * cam.focal_length_px).fov_deg[0] < 10.1


def test_sample_camera_toml_and_round_trip(tmp_path):
    from startrack.io import sample_path

    cam = Camera.from_toml(sample_path("sample_camera.toml"))
    assert cam.focal_length_px == pytest.approx(25.0 / 5.3e-3)
    p = tmp_path / "c.toml"
    for cam2 in (Camera(640, 480, 900.0, principal_point=(320.2, 240.7), distortion=DIST, pixel_pitch_um=3.45),
                 Camera(1024, 768, 1000.0 * 25.0 / 5.3, pixel_pitch_um=5.3), Camera(100, 50, 321.5)):
        p.write_text(cam2.to_toml())
        assert Camera.from_toml(p) == cam2


@pytest.mark.parametrize("table, match", [
    ({"pixel_pitch_um": 5.3, "width": 10, "height": 10}, "focal_length_mm"),
    ({"focal_length_mm": 25, "pixel_pitch_um": 5.3, "height": 10}, "width"),
    ({"focal_length_mm": -25, "pixel_pitch_um": 5.3, "width": 10, "height": 10}, "focal_length_mm"),
    ({"focal_length_mm": 25, "pixel_pitch_um": 5.3, "width": 10.5, "height": 10}, "width"),
    ({"focal_length_px": 100, "width": 10, "height": 10, "distortion": [0.1, 0.2]}, "distortion"),
    ({"focal_length_px": 100, "width": 10, "height": 10, "principal_point": [1]}, "principal_point"),
    ({"focal_length_px": 100, "width": 10, "height": 10, "focal": 3}, "unknown"),
])
def test_bad_camera_tables(table, match):
    with pytest.raises(ValueError, match=match):
        Camera.from_dict(table)


def test_missing_camera_table(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[sensor]\ngain = 1.0\n")
    with pytest.raises(ValueError, match=r"no \[camera\] table"):
        Camera.from_toml(p)
