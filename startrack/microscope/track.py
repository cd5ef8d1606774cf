"""Line-sensor drift tracking: positions of a reflected beam on a linear image sensor, frame after frame.

A drift-stabilisation system (a focus lock, a chromatic confocal sensor)
projects a beam onto a line sensor (e.g. a 3648-pixel TCD1304) and follows
its position. :func:`track1d` turns a stack of readouts into a table of
positions with :func:`~startrack.microscope.ephasor`; :func:`step_precision`
gives the per-step standard deviation of a stage-step experiment (Ma et al.:
100 positions per 100 nm step). :func:`mle_1d` and :func:`crlb_1d` are the
core's Poisson MLE and Cramér–Rao bound applied to line signals, the
reference every 1-D estimator is measured against, and
:func:`simulate_signals` renders line signals through the core's PSF and
sensor model.

A line signal is a one-row image: a :class:`~startrack.GaussianPSF` whose y
radius is negligible (:data:`LINE_SIGMA_Y`) records all of its flux in that
row, so :func:`startrack.localize` with a ``(1, W)`` window fits x, flux and
background of each row unchanged.
"""

from __future__ import annotations

import math

import numpy as np
from astropy import units as u
from astropy.table import Table

from ..crlb import precision_limit
from ..flags import PHASOR_FLAGS
from ..localize import localize
from ..psf import GaussianPSF
from ..sensor import Sensor
from ..simulate import expose
from ..validate import as_float, as_int
from .phasor import CENTROID, EPHASOR, FIXED_PHASOR, OPTIMAL_WINDOW, as_signals, line_kernel

__all__ = ["track1d", "step_precision", "mle_1d", "crlb_1d", "simulate_signals", "line_psf", "LINE_SIGMA_Y"]

#: y radius (px) of the Gaussian that models a line signal: the row then holds
#: all of the flux (the neighbouring rows' share underflows to exactly 0).
LINE_SIGMA_Y = 1e-3

_LINE_FIT = ("x", "flux", "background")


def line_psf(sigma):
    """The pixel-integrated Gaussian of radius ``sigma`` (px) along a one-row signal."""
    return GaussianPSF(sigma, sigma_y=LINE_SIGMA_Y)


def _default_half_width(sigma):
    return int(math.ceil(4.0 * sigma))


def _check_half_width(half_width, sigma):
    if half_width is None:
        return _default_half_width(sigma)
    half_width = as_int(half_width, "half_width", minimum=1)
    return int(half_width)


def simulate_signals(n, length, x, sigma, peak, background, *, read_noise=0.0, gain=1.0, offset=0.0, seed=None):
    """Line-sensor readouts of a Gaussian spot through the core's PSF and sensor model.

    Parameters
    ----------
    n, length : int
        Number of signals and pixels per signal.
    x : float or array (n,)
        True spot positions (px).
    sigma : float
        Gaussian radius (px); pixels integrate it.
    peak : float
        Amplitude of the Gaussian in photo-electrons (the total is
        ``peak sqrt(2 pi) sigma``), the "peak intensity" of the ePhasor paper.
    background : float
        Photo-electrons per pixel.
    read_noise, gain, offset : float
        Gaussian read noise (e-), gain (DN/e-) and offset (DN) of the sensor.
    seed : int, optional

    Returns
    -------
    signals : ndarray (n, length), float64, DN (rounded)
    """
    rng = np.random.default_rng(seed)
    x = np.broadcast_to(np.asarray(x, dtype=float), (n,))
    psf = line_psf(sigma)
    sensor = Sensor(gain=gain, offset=offset, read_noise=read_noise)
    flux = peak * math.sqrt(2.0 * math.pi) * sigma
    out = np.empty((n, length))
    step = max(1, 2 ** 22 // (6 * length))  # rows per render call: bounds its (rows, 6, 1, length) work array
    for lo in range(0, n, step):
        k = slice(lo, min(n, lo + step))
        m = k.stop - k.start
        val, _, _ = psf.render(x[k], np.zeros(m), np.zeros(m, np.int64), np.zeros(m, np.int64), (1, length))
        out[k] = expose(flux * val[:, 0, :] + background, sensor, rng)
    return out


def mle_1d(signals, sigma, *, half_width=None, sensor=None, start=None):
    """Poisson maximum-likelihood position of the spot on each line signal (the core's fitter).

    Fits x, flux and background of a pixel-integrated Gaussian of known
    radius over a window of ``2 half_width + 1`` pixels, with the Cramér–Rao
    bound of the same fit (``x_err``).

    Parameters
    ----------
    signals : array (n_pixels,) or (n_signals, n_pixels)
        Raw signals (DN; e- without a sensor).
    sigma : float
        Known Gaussian radius of the spot (px).
    half_width : int, optional
        Window half-width (px; default ceil(4 sigma)). The ePhasor paper's
        "MLE(4)" and "MLE(20)" are half-widths 4 and 20.
    sensor : Sensor, optional
        Gain, offset and read noise (photo-electrons and no read noise
        without it).
    start : array (n_signals,), optional
        Where each window is centred and the fit starts (default: the peak pixel).

    Returns
    -------
    Table
        ``signal`` (row index), ``x``, ``x_err`` (px), ``flux`` (e-),
        ``background`` (e-/px), ``converged``, ``iterations``, ``flags``
        (:data:`startrack.FLAGS`) and ``loglike``.
    """
    sig, _ = as_signals(signals, "signals")
    hw = _check_half_width(half_width, sigma)
    n = sig.shape[0]
    if start is None:
        x0 = np.argmax(sig, axis=1).astype(float)
    else:
        x0 = np.broadcast_to(np.asarray(start, dtype=float), (n,))
    # Each signal is a one-row stamp.
    t = localize(sig[:, None, :], np.column_stack([x0, np.zeros(n)]), line_psf(sigma), sensor, fit=_LINE_FIT,
                 roi=(1, 2 * hw + 1), start="given")
    t.remove_columns(["y", "y_err", "y_start"])
    t.add_column(np.arange(n), name="signal", index=0)
    return t


def crlb_1d(sigma, x, flux, background, sensor=None, *, half_width=None):
    """Cramér–Rao bound (px) of a line-signal position when x, flux and background are fitted.

    ``x`` is the spot position (only its place inside the pixel matters), the
    window of ``2 half_width + 1`` px is centred on the pixel holding it, as
    :func:`mle_1d` centres it. Arguments as :func:`simulate_signals` and
    :func:`mle_1d`; arrays broadcast. Scalars in give a scalar out.
    """
    hw = _check_half_width(half_width, sigma)
    return precision_limit(line_psf(sigma), x, 0.0, flux, background, sensor, params=_LINE_FIT,
                           roi=(1, 2 * hw + 1))[0]


_METHODS = {"ephasor": EPHASOR, "phasor": FIXED_PHASOR, "atca": CENTROID}


def track1d(signals, *, pixel_nm=None, method="ephasor", smooth=None, window=OPTIMAL_WINDOW, half_width=8,
            fraction=0.2):
    """Spot position in every readout of a line sensor.

    Parameters
    ----------
    signals : array (n_pixels,) or (n_frames, n_pixels)
        Readouts, one per row, in any real dtype (integers are read as they are).
    pixel_nm : float, optional
        Pixel size in the object plane (nm), to add positions in nm.
    method : {"ephasor", "phasor", "atca"}
        :func:`~startrack.microscope.ephasor` (default), the fixed-window
        :func:`~startrack.microscope.phasor` or the adaptive centroid
        :func:`~startrack.microscope.atca`.
    smooth : odd int, optional
        Running-mean width (px) for finding the peak and width of weak signals.
    window : float
        ePhasor window half-width in sigmas.
    half_width : int
        Window half-width (px) of the fixed-window phasor.
    fraction : float
        Threshold of the adaptive centroid (fraction of peak above baseline).

    Returns
    -------
    Table
        ``frame``, ``x`` (px; NaN on failure), ``x_nm`` (with ``pixel_nm``),
        ``sigma`` (spot width, px; ePhasor), ``half_width`` (window, px),
        ``peak`` and ``baseline`` (signal units) and ``flags``
        (:data:`~startrack.microscope.PHASOR_FLAGS`; 0 = clean).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    if pixel_nm is not None:
        pixel_nm = as_float(pixel_nm, "pixel_nm", positive=True, unit="nanometres")
    sig, _ = as_signals(signals, "signals")
    mode = _METHODS[method]
    if mode == EPHASOR:
        window = as_float(window, "window", positive=True, unit="sigmas")
    if mode == FIXED_PHASOR:
        half_width = as_int(half_width, "half_width", minimum=1)
    if mode == CENTROID and not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    param = {EPHASOR: window, FIXED_PHASOR: half_width, CENTROID: 0.0}[mode]
    x, sigma, hw, peak, base, flags = line_kernel(sig, mode, param, frac=fraction, smooth=smooth)
    t = Table()
    t["frame"] = np.arange(sig.shape[0])
    t["x"] = x * u.pix
    if pixel_nm is not None:
        t["x_nm"] = x * pixel_nm * u.nm
    t["sigma"] = sigma * u.pix
    t["half_width"] = hw * u.pix
    t["peak"] = peak
    t["baseline"] = base
    t["flags"] = flags
    t.meta.update(method=method, pixel_nm=pixel_nm, flags=dict(PHASOR_FLAGS))
    if mode == EPHASOR:
        t.meta["window_sigmas"] = float(window)
    return t


def step_precision(positions, frames_per_step, *, pixel_nm=None):
    """Mean and standard deviation of the position in each step of a stage-step experiment.

    The stage rests at each position for ``frames_per_step`` consecutive
    frames (Ma et al.: 100 frames per 100 nm step); the per-step standard
    deviation is the tracking precision. A last incomplete step is dropped.
    NaN positions (flagged frames) are left out.

    Returns
    -------
    Table
        ``step``, ``n`` (finite positions), ``mean``, ``std`` (px, ``ddof=1``)
        and with ``pixel_nm`` also ``mean_nm``, ``std_nm``, ``step_nm`` (the
        difference to the previous step's mean).
    """
    pos = np.asarray(positions, dtype=float).ravel()
    frames_per_step = as_int(frames_per_step, "frames_per_step", minimum=2)
    nstep = pos.size // frames_per_step
    if nstep == 0:
        raise ValueError(f"frames_per_step ({frames_per_step}) exceeds the number of frames ({pos.size})")
    blocks = pos[:nstep * frames_per_step].reshape(nstep, frames_per_step)
    good = np.isfinite(blocks)
    n = good.sum(axis=1)
    filled = np.where(good, blocks, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=1) / n
        std = np.sqrt(np.where(good, (blocks - mean[:, None]) ** 2, 0.0).sum(axis=1) / (n - 1))
    t = Table({"step": np.arange(nstep), "n": n, "mean": mean * u.pix, "std": std * u.pix})
    if pixel_nm is not None:
        t["mean_nm"] = mean * pixel_nm * u.nm
        t["std_nm"] = std * pixel_nm * u.nm
        t["step_nm"] = np.concatenate([[np.nan], np.diff(mean)]) * pixel_nm * u.nm
    t.meta["frames_per_step"] = int(frames_per_step)
    return t
