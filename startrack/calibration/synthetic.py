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

from ..sensor import Sensor

__all__ = ["simulate_ptc"]


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
    ny, nx = (int(s) for s in shape)
    rate = float(full_well if rate is None else rate)
    exposures = np.linspace(max_signal / levels, max_signal, int(levels)) * full_well / rate
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
