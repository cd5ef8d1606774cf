"""Localise every spot of a microscopy frame with a chosen estimator.

The core's detector (:func:`startrack.detect`) finds the spots; the
estimator then works on each spot's region of interest: the core's Poisson
MLE (with its Cramér–Rao bound), the 2-D phasor, fluoroBancroft or the
least-squares Gaussian fit.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.table import Table

from ..detect import detect
from ..flags import EDGE, FLAGS, NO_FIT
from ..localize import localize
from ..psf import GaussianPSF, roi_origin
from ..sensor import Sensor, as_sensor
from ..simulate import expose
from ..validate import as_image, as_int, as_positions, as_sigma_pair
from .bancroft import fluoro_bancroft
from .gaussfit import gauss_lsq
from .phasor import phasor_2d

__all__ = ["METHODS", "cut_rois", "localize_spots", "simulate_rois"]

#: Estimators :func:`localize_spots` knows.
METHODS = ("mle", "phasor", "bancroft", "gauss")


def cut_rois(image, positions, size):
    """Square ROIs of ``size`` px centred on the pixel holding each position (NaN beyond the image).

    Returns
    -------
    rois : ndarray (n, size, size)
    x0, y0 : ndarray of int (n,)
        Column and row of each ROI's first pixel in the image.
    clipped : ndarray of bool (n,)
        True where the ROI reaches past the image edge.
    """
    img = as_image(image)
    xy = as_positions(positions)
    h, w = img.shape
    x0 = roi_origin(xy[:, 0], size)
    y0 = roi_origin(xy[:, 1], size)
    rows = y0[:, None] + np.arange(size)
    cols = x0[:, None] + np.arange(size)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    rois = np.where(inside, img[np.clip(rows, 0, h - 1)[:, :, None], np.clip(cols, 0, w - 1)[:, None, :]], np.nan)
    return rois, x0, y0, ~inside.all(axis=(1, 2))


def localize_spots(image, sigma, *, method="mle", sensor=None, roi=None, threshold=5.0, max_spots=None):
    """Detect the spots of a frame and localise each with ``method``.

    Parameters
    ----------
    image : 2-D array
        Raw frame (DN; e- without a sensor).
    sigma : float or (sigma_x, sigma_y)
        Gaussian radius of the PSF (px).
    method : {"mle", "phasor", "bancroft", "gauss"}
        The core's Poisson MLE (x, y, flux and background fitted, with the
        CRLB), :func:`~startrack.microscope.phasor_2d`,
        :func:`~startrack.microscope.fluoro_bancroft` (background from the
        detector's background map) or :func:`~startrack.microscope.gauss_lsq`.
    sensor : Sensor, optional
        Gain, offset, dark and read noise, saturation.
    roi : int, optional
        ROI width (px); default ``2 ceil(3 sigma) + 1``.
    threshold : float
        Detection threshold (sigmas of the filtered background noise).
    max_spots : int, optional
        Keep only the brightest spots.

    Returns
    -------
    Table
        ``id, x, y`` (px, frame coordinates), the detection's ``x_cg, y_cg,
        peak, snr``, ``flags`` (:data:`startrack.FLAGS`; ``edge`` when the
        ROI leaves the frame, ``no_fit`` when the estimator gave no
        position) and, for ``mle``, ``x_err, y_err, flux, background``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    sx, sy = as_sigma_pair(sigma)
    size = as_int(int(2 * np.ceil(3.0 * max(sx, sy)) + 1) if roi is None else roi, "roi", minimum=3, maximum=64)
    sensor = as_sensor(sensor)
    img = as_image(image)
    det = detect(img, sensor, threshold=threshold, smooth=max(sx, sy), roi=size, max_stars=max_spots)
    t = Table()
    t["id"] = det["id"]
    if method == "mle":
        fit = localize(img, det, GaussianPSF(sx, sy), sensor, roi=size)
        for col in ("x", "y", "x_err", "y_err", "flux", "background", "converged", "flags"):
            t[col] = fit[col]
    else:
        rois, x0, y0, clipped = cut_rois(img, det, size)
        electrons = (rois - sensor.offset) / sensor.gain
        if method == "phasor":
            # A NaN pixel beyond the edge would spoil the harmonic sums; a flat zero only loses their signal.
            pos = phasor_2d(np.nan_to_num(electrons - np.nanmedian(electrons, axis=(1, 2))[:, None, None]))
        elif method == "bancroft":
            bg = np.maximum((np.asarray(det["background"]) - sensor.offset) / sensor.gain, 0.0)
            pos = fluoro_bancroft(electrons, (sx, sy), bg)
        else:
            bg = (np.asarray(det["background"]) - sensor.offset) / sensor.gain
            pos = gauss_lsq(electrons, (sx, sy), bg)
        t["x"] = (pos[:, 0] + x0) * u.pix
        t["y"] = (pos[:, 1] + y0) * u.pix
        flags = np.where(clipped, EDGE, 0) | np.where(np.all(np.isfinite(pos), axis=1), 0, NO_FIT)
        t["flags"] = flags
    for col in ("x_cg", "y_cg", "peak", "snr"):
        t[col] = det[col]
    t.meta.update(method=method, sigma=[sx, sy], roi=size, flags=dict(FLAGS))
    return t


def simulate_rois(n, size, sigma, flux, background, *, spread=0.5, seed=None):
    """A stack of square ROIs, each holding one Gaussian spot near its centre (Poisson light, e-).

    Parameters
    ----------
    n, size : int
        Number of ROIs and their width (px).
    sigma : float or (sigma_x, sigma_y)
        Gaussian PSF radius (px), integrated over the pixels.
    flux, background : float
        Photo-electrons in the spot and per pixel.
    spread : float
        Spot positions are uniform within +-spread px of the ROI centre.

    Returns
    -------
    rois : ndarray (n, size, size)
    truth : ndarray (n, 2)
        True (x, y) in ROI pixel coordinates.
    """
    rng = np.random.default_rng(seed)
    sx, sy = as_sigma_pair(sigma)
    truth = 0.5 * (size - 1) + rng.uniform(-spread, spread, (n, 2))
    z = np.zeros(n, np.int64)
    val, _, _ = GaussianPSF(sx, sy).render(truth[:, 0], truth[:, 1], z, z, (size, size))
    return expose(flux * val + background, Sensor(gain=1.0), rng), truth
