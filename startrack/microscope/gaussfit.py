"""Gaussian fits of microscopy spots: the references the fast estimators are measured against.

:func:`gauss_lsq` is the classic least-squares fit of a Gaussian (amplitude,
position, two widths) with :func:`scipy.optimize.least_squares`, the fit
fluoroBancroft's paper compares with. :func:`gauss_mle` is the core's Poisson
maximum-likelihood fit (:func:`startrack.localize`) on a stack of ROIs, with
the Cramér–Rao bound of every position.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from ..localize import localize
from ..psf import GaussianPSF
from ..validate import as_sigma_pair, as_stack, one_of

__all__ = ["gauss_lsq", "gauss_mle"]


def _gauss_residual(t, xx, yy, d):
    m, x0, y0, sx, sy = t[:5]
    g = m * np.exp(-0.5 * ((xx - x0) / sx) ** 2 - 0.5 * ((yy - y0) / sy) ** 2)
    return g + (t[5] if t.size == 6 else 0.0) - d


def _gauss_jacobian(t, xx, yy, d):
    m, x0, y0, sx, sy = t[:5]
    u = (xx - x0) / sx
    v = (yy - y0) / sy
    e = np.exp(-0.5 * u * u - 0.5 * v * v)
    cols = [e, m * e * u / sx, m * e * v / sy, m * e * u * u / sx, m * e * v * v / sy]
    if t.size == 6:
        cols.append(np.ones_like(e))
    return np.column_stack(cols)


def gauss_lsq(roi, sigma, background=None, *, jac="analytic"):
    """Least-squares Gaussian fit of each ROI with :func:`scipy.optimize.least_squares`.

    The model is ``m exp(-(x - x0)^2 / 2 sx^2 - (y - y0)^2 / 2 sy^2)`` with
    m, x0, y0, sx, sy fitted (Andersson 2008, Eq. 18), on the data minus a
    known ``background``, or with a fitted offset when ``background`` is None.
    Started from the brightest pixel, its value and ``sigma``.

    Parameters
    ----------
    roi : array (ny, nx) or (n, ny, nx)
        Pixel values (any linear unit).
    sigma : float or (sigma_x, sigma_y)
        Start widths (px).
    background : float or array (n,), optional
        Known background per pixel (same unit as ``roi``).
    jac : {"analytic", "2-point"}
        The model's analytic Jacobian (default, about twice as fast), or
        scipy's finite differences, as a plain ``least_squares`` call makes.

    Returns
    -------
    (x, y) tuple of float, or ndarray (n, 2)
        ROI pixel coordinates; NaN when the fit fails or ends outside the ROI.
    """
    stack = as_stack(roi, "roi", min_size=3)
    single = np.ndim(roi) == 2
    sx, sy = as_sigma_pair(sigma)
    one_of(jac, "jac", ("analytic", "2-point"))
    jacobian = _gauss_jacobian if jac == "analytic" else "2-point"
    n, ny, nx = stack.shape
    bg = None if background is None else np.broadcast_to(np.asarray(background, dtype=float), (n,))
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    xx, yy = xx.ravel(), yy.ravel()
    out = np.full((n, 2), np.nan)
    for k in range(n):
        d = stack[k].ravel()
        if not np.all(np.isfinite(d)):
            continue
        if bg is not None:
            d = d - bg[k]
            start = [0.0, 0.0, 0.0, sx, sy]
        else:
            start = [0.0, 0.0, 0.0, sx, sy, float(np.median(d))]
        p = int(np.argmax(d))
        start[0] = d[p] - (start[5] if bg is None else 0.0)
        start[1], start[2] = xx[p], yy[p]
        res = least_squares(_gauss_residual, np.array(start), jac=jacobian, args=(xx, yy, d))
        x0, y0 = res.x[1], res.x[2]
        if res.status > 0 and -0.5 <= x0 <= nx - 0.5 and -0.5 <= y0 <= ny - 0.5:
            out[k] = x0, y0
    return (float(out[0, 0]), float(out[0, 1])) if single else out


def gauss_mle(roi, sigma, sensor=None, *, fit=("x", "y", "flux", "background"), background=None):
    """Poisson MLE of a pixel-integrated Gaussian in each ROI of a stack, with the CRLB (the core's fitter).

    :func:`startrack.localize` fits each ROI of the stack as its own stamp,
    in a window of the ROI's size, started at the ROI centre (the spot should
    be within a pixel or two of it).

    Parameters
    ----------
    roi : array (ny, nx) or (n, ny, nx)
        Raw pixel values (DN; e- without a sensor).
    sigma : float or (sigma_x, sigma_y)
        Known Gaussian radius of the PSF (px), before pixel integration.
    sensor : Sensor, optional
    fit : sequence of str
        Fitted parameters (:func:`startrack.localize`).
    background : float or array, optional
        Known background (e-/px) when it is not fitted.

    Returns
    -------
    Table
        :func:`startrack.localize`'s columns with ``x, y`` (and ``x_start,
        y_start``) in ROI pixel coordinates, and ``roi`` (index in the stack).
    """
    stack = as_stack(roi, "roi", min_size=3)
    n, ny, nx = stack.shape
    sx, sy = as_sigma_pair(sigma)
    centre = np.column_stack([np.full(n, 0.5 * (nx - 1)), np.full(n, 0.5 * (ny - 1))])
    t = localize(stack, centre, GaussianPSF(sx, sy), sensor, fit=fit, roi=(ny, nx), start="given",
                 background=background)
    t.add_column(np.arange(n), name="roi", index=0)
    return t
