"""Realistic synthetic calibration datasets, in the formats the calibration scripts read.

Each ``simulate_*`` function returns the frames (or centroids), the manifest
rows and the truth; :func:`startrack.calibration.dataset.write_frames` puts
frames on disk as a folder with ``manifest.csv``. ``startrack simulate
ptc|turntable|intrinsics`` wraps them, and the tests run the calibration on
exactly these datasets.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

from ..psf import GaussianPSF
from ..sensor import Sensor
from ..simulate import expose
from ..validate import as_float, as_int

__all__ = ["simulate_ptc", "simulate_turntable", "simulate_intrinsics", "FOCUSED_SPOT", "spot_image"]

#: A focused star-sensor spot, (weight, sigma px, dx px, dy px) per Gaussian component: a sharp core
#: (r = 0.2 px) with an offset halo, a little coma-like, so the spot is neither Gaussian nor symmetric
#: (rms radius ~0.27 px). Chosen so that, at the flux of :func:`simulate_turntable`, the precision
#: limit over a 10 px scan matches the small-PSF paper's lab spot (0.010 px rms, below 0.005 px at
#: pixel boundaries).
FOCUSED_SPOT = ((0.88, 0.20, 0.0, 0.0), (0.12, 0.55, 0.12, 0.06))


def simulate_ptc(shape=(128, 128), *, sensor=None, full_well=20000.0, bits=12, levels=24, max_signal=1.15,
                 rate=None, flats=2, darks=2, prnu=0.005, dsnu=0.5, dark_current=0.0, nonlinearity=0.0,
                 seed=None):
    """Dark frames and flat-field pairs at ``levels`` exposure times (EMVA 1288 photon transfer).

    Per pixel, ``e = min(Poisson(mu_e (1 + prnu_ij)) + Poisson(dark_var + dark_current t), full_well)``
    electrons, ``P = round(s0 + dsnu_ij + K e (1 - nonlinearity e / full_well) + K Normal(0, read_noise))``
    DN clipped to ``[0, 2^bits - 1]``. Dark frames are taken at every flat exposure time, as EMVA 1288 asks.

    Parameters
    ----------
    shape : (ny, nx)
        Frame size in px.
    sensor : Sensor, optional
        Gain, offset, dark variance, read noise (default: the small-PSF paper's
        lab camera, K = 0.14 DN/e-, s0 = 37 DN, sd2 = 54.40 e-^2).
    full_well : float
        Electrons at which a pixel saturates.
    bits : int
        ADC resolution.
    levels : int
        Number of exposure times, equally spaced up to ``max_signal * full_well``.
    rate : float, optional
        Photo-electrons per second (default: ``full_well`` per second, so the
        exposure times run to ``max_signal`` s).
    flats, darks : int
        Frames per exposure time (>= 2 for pairs).
    prnu : float
        Photo-response non-uniformity (relative rms gain of the pixels).
    dsnu : float
        Dark-signal non-uniformity: rms offset of the pixels in DN.
    dark_current : float
        Dark electrons per second (on top of ``dark_var``).
    nonlinearity : float
        Relative compression at full well (0: linear).
    seed : int, optional

    Returns
    -------
    frames : (n, ny, nx) ndarray
        Raw frames in DN.
    manifest : Table
        ``kind, exposure_s`` per frame.
    truth : dict
        The values the calibration should find.
    """
    sensor = sensor or Sensor(gain=0.14, offset=37.0, dark_var=54.40)
    rng = np.random.default_rng(seed)
    ny, nx = (as_int(s, "shape", minimum=2) for s in shape)
    full_well = as_float(full_well, "full_well", positive=True, unit="e-")
    bits = as_int(bits, "bits", minimum=1, maximum=32)
    levels = as_int(levels, "levels", minimum=1)
    flats = as_int(flats, "flats", minimum=1)
    darks = as_int(darks, "darks", minimum=1)
    rate = as_float(full_well if rate is None else rate, "rate", positive=True, unit="e-/s")
    exposures = np.linspace(max_signal / levels, max_signal, levels) * full_well / rate
    gain_map = 1.0 + prnu * rng.standard_normal((ny, nx))
    offset_map = sensor.offset + dsnu * rng.standard_normal((ny, nx))
    top = 2.0**bits - 1.0
    frames, kinds, times = [], [], []
    for t in exposures:
        for kind, count, light in (("dark", darks, 0.0), ("flat", flats, rate * t)):
            for _ in range(count):
                e = rng.poisson(light * gain_map).astype(float)
                e += rng.poisson(sensor.dark_var + dark_current * t, size=(ny, nx))
                e = np.minimum(e, full_well)
                e *= 1.0 - nonlinearity * e / full_well
                if sensor.read_noise > 0:
                    e += rng.normal(0.0, sensor.read_noise, size=(ny, nx))
                frames.append(np.clip(np.round(offset_map + sensor.gain * e), 0.0, top))
                kinds.append(kind)
                times.append(float(t))
    truth = {"gain": sensor.gain, "offset": sensor.offset, "dark_var": sensor.dark_var,
             "read_noise": sensor.read_noise, "full_well": float(full_well),
             "saturation": sensor.offset + sensor.gain * full_well}
    return np.array(frames), Table({"kind": kinds, "exposure_s": times}), truth


def spot_image(x, y, shape, spot=FOCUSED_SPOT):
    """Pixel-integrated images (n, ny, nx) of unit-flux spots at (x, y): a sum of Gaussian components.

    ``spot`` holds ``(weight, sigma, dx, dy)`` per component (px); the star
    position is the reference point, component c is centred at ``(x + dx, y + dy)``.
    """
    x, y = np.broadcast_arrays(np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float)))
    ny, nx = (int(v) for v in shape)
    zero = np.zeros(x.size, np.int64)
    out = np.zeros((x.size, ny, nx))
    for w, sigma, dx, dy in spot:
        out += w * GaussianPSF(sigma).render(x.ravel() + dx, y.ravel() + dy, zero, zero, (ny, nx))[0]
    return out


def simulate_turntable(*, focal_length_mm=25.0, pixel_pitch_um=5.3, step_deg=0.0005, steps=244, elevations=1,
                       repeats=30, flux=3800.0, spot=FOCUSED_SPOT, sensor=None, background=0.0, prnu=0.005,
                       start=(4.23, 4.1), rotation_deg=0.2, position_noise_arcsec=0.0, margin=4, seed=None):
    """Frames of a turntable scan of a collimated point source (the small-PSF paper's lab setting).

    The turntable steps the azimuth by ``step_deg`` (and, for a 2-D grid, the
    elevation); the spot moves ``f tan(theta) / a`` px per axis, along axes
    rotated by ``rotation_deg`` from the pixel rows (the camera's mounting),
    starting at ``start``. Every step is imaged ``repeats`` times through the
    sensor model; pixels respond with a fixed non-uniformity ``prnu``.

    Parameters
    ----------
    focal_length_mm, pixel_pitch_um : float
        25 mm and 5.3 um: 0.0005 deg is 0.041 px.
    step_deg : float
        Turntable step in degrees (both axes).
    steps : int
        Azimuth steps (244 x 0.041 px ~ 10 px).
    elevations : int
        Elevation steps (1: a 1-D scan along the azimuth direction).
    repeats : int
        Frames per step.
    flux : float
        Photo-electrons in the spot.
    spot : sequence of (weight, sigma, dx, dy)
        Spot shape, see :func:`spot_image`.
    sensor : Sensor, optional
        Default: K = 0.14 DN/e-, s0 = 37 DN, sd2 = 54.40 e-^2.
    background : float
        Light background in e-/px (a lab collimator has none).
    prnu : float
        Relative rms response of the pixels (photo-response non-uniformity).
    position_noise_arcsec : float
        Random turntable positioning error per step (rms, per axis).
    margin : int
        Pixels around the scanned region in the frames.
    seed : int, optional

    Returns
    -------
    frames : (steps * elevations * repeats, ny, nx) ndarray
        Raw frames in DN.
    manifest : Table
        ``azimuth_deg, elevation_deg, repeat`` per frame.
    truth : Table
        Per step: ``azimuth_deg, elevation_deg, x, y`` (true spot reference
        position, px) and ``meta`` with the settings and the PRNU map.
    """
    sensor = sensor or Sensor(gain=0.14, offset=37.0, dark_var=54.40)
    rng = np.random.default_rng(seed)
    f_px = (1000.0 * as_float(focal_length_mm, "focal_length_mm", positive=True, unit="mm")
            / as_float(pixel_pitch_um, "pixel_pitch_um", positive=True, unit="um"))
    steps = as_int(steps, "steps", minimum=1)
    elevations = as_int(elevations, "elevations", minimum=1)
    repeats = as_int(repeats, "repeats", minimum=1)
    margin = as_int(margin, "margin", minimum=0)
    az_i, el_i = np.meshgrid(np.arange(steps), np.arange(elevations), indexing="ij")
    az = az_i.ravel() * step_deg
    el = el_i.ravel() * step_deg
    uv = np.column_stack([f_px * np.tan(np.radians(az)), f_px * np.tan(np.radians(el))])
    if position_noise_arcsec > 0:
        uv += rng.normal(0.0, f_px * math.radians(position_noise_arcsec / 3600.0), uv.shape)
    a = math.radians(rotation_deg)
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    xy = uv @ R.T + np.asarray(start, float)
    if xy.min() < margin - 0.5:
        raise ValueError(f"start {start} puts the spot closer than margin={margin} px to the frame edge")
    shape = (int(math.ceil(xy[:, 1].max() + 0.5)) + margin, int(math.ceil(xy[:, 0].max() + 0.5)) + margin)
    response = 1.0 + prnu * rng.standard_normal(shape)
    light = flux * spot_image(xy[:, 0], xy[:, 1], shape, spot) * response + background
    frames = np.empty((len(xy) * repeats,) + shape)
    for k in range(len(xy)):
        frames[k * repeats:(k + 1) * repeats] = expose(np.broadcast_to(light[k], (repeats,) + shape), sensor, rng)
    manifest = Table({"azimuth_deg": np.repeat(az, repeats), "elevation_deg": np.repeat(el, repeats),
                      "repeat": np.tile(np.arange(repeats), len(xy))})
    truth = Table({"azimuth_deg": az, "elevation_deg": el, "x": xy[:, 0], "y": xy[:, 1]})
    truth.meta.update(focal_length_mm=focal_length_mm, pixel_pitch_um=pixel_pitch_um, flux=flux,
                      spot=[list(c) for c in spot], prnu=prnu, rotation_deg=rotation_deg, repeats=repeats,
                      background=background, response=response)
    return frames, manifest, truth


def simulate_intrinsics(*, camera=None, mounting_deg=(0.3, -0.5, 1.2), grid=21, half_angle_deg=5.5,
                        centroid_noise=0.01, margin=5.0, seed=None):
    """Spot centroids of a collimated star over a grid of turntable angles (camera intrinsics calibration).

    Parameters
    ----------
    camera : Camera, optional
        The true camera (default: 25 mm, 5.3 um, 1024 x 1024, principal point
        (520.3, 505.7) px, distortion k1 = -0.25, k2 = 0.4, p1 = 2e-4, p2 = -1e-4:
        about 4 px at the corners).
    mounting_deg : (3,) float
        True turntable-to-camera rotation vector in degrees (a small misalignment).
    grid : int
        Azimuth and elevation steps each, over +-``half_angle_deg``.
    centroid_noise : float
        Gaussian centroid error per axis (px rms).
    margin : float
        Spots closer than this to the image edge are left out (px).
    seed : int, optional

    Returns
    -------
    centroids : Table
        ``azimuth_deg, elevation_deg, x, y, x_err, y_err``.
    truth : dict
        ``camera`` (the true Camera) and ``mounting_deg``.
    """
    from scipy.spatial.transform import Rotation

    from ..sky.camera import Camera
    from .intrinsics import turntable_directions

    if camera is None:
        camera = Camera(width=1024, height=1024, focal_length_px=25000.0 / 5.3, principal_point=(520.3, 505.7),
                        distortion=(-0.25, 0.4, 2e-4, -1e-4, 0.0), pixel_pitch_um=5.3)
    rng = np.random.default_rng(seed)
    grid = as_int(grid, "grid", minimum=2)
    half_angle_deg = as_float(half_angle_deg, "half_angle_deg", positive=True, unit="degrees")
    centroid_noise = as_float(centroid_noise, "centroid_noise", nonnegative=True, unit="px")
    a = np.linspace(-half_angle_deg, half_angle_deg, grid)
    az, el = (v.ravel() for v in np.meshgrid(a, a, indexing="ij"))
    d = Rotation.from_rotvec(np.radians(mounting_deg)).apply(turntable_directions(az, el))
    x, y = camera.vector_to_pixel(d)
    keep = camera.in_image(x, y, margin=margin)
    n = int(keep.sum())
    noise = rng.normal(0.0, centroid_noise, (2, n)) if centroid_noise > 0 else np.zeros((2, n))
    t = Table({"azimuth_deg": az[keep], "elevation_deg": el[keep], "x": x[keep] + noise[0], "y": y[keep] + noise[1],
               "x_err": np.full(n, float(centroid_noise)), "y_err": np.full(n, float(centroid_noise))})
    return t, {"camera": camera, "mounting_deg": tuple(float(v) for v in mounting_deg)}
