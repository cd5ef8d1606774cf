"""Fisher information, Cramér–Rao bounds and intra-pixel precision limits.

For a pixel with Poisson mean ``lambda = flux * psf + background + floor``
(``floor = dark_var + read_noise^2``, e-), the Fisher information of the
parameters ``theta = (x, y, flux, background)`` is

    F_ab = sum_pixels (d lambda / d theta_a)(d lambda / d theta_b) / lambda

and the precision limit of x is ``PL_x = sqrt((F^-1)_xx)`` over the fitted
parameter subset. ``params=("x",)`` or ``("x", "y")`` treat flux and background
as known: the small-PSF paper's bound. Fitting all four gives the larger bound
a practical fitter can reach.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from astropy.table import Table

from .likelihood import PARAMS, accumulate, param_mask, param_names
from .psf import PSFModel, render_one, roi_origin, work_shape
from .sensor import Sensor
from .validate import as_int, roi_shape

__all__ = [
    "PARAMS",
    "fisher_information",
    "crlb",
    "precision_limit",
    "intrapixel_map",
    "two_pixel_limit",
    "boundary_optimum",
    "diffraction_limit",
    "diffraction_optimum",
]


@nb.njit(cache=True, parallel=True)
def _fisher_batch(kind, params, table, x, y, x0, y0, ny, nx, flux, bg, floor, nthreads):
    n = x.shape[0]
    out = np.zeros((n, 4, 4))
    per = (n + nthreads - 1) // nthreads
    for t in nb.prange(nthreads):
        r = np.zeros((6, ny, nx))  # second derivatives stay 0: the Fisher matrix does not use them
        work = np.empty(work_shape(ny, nx))
        w = np.ones((ny, nx))
        g = np.empty(4)
        H = np.empty((4, 4))
        scratch = np.empty((2, ny * nx))
        for k in range(t * per, min(n, (t + 1) * per)):
            render_one(kind, params, table, x[k], y[k], x0[k], y0[k], r, work, False)
            accumulate(r, w, w, flux[k], bg[k], floor, g, out[k], H, scratch)
    return out


def invert_subset(F, mask):
    """Inverse of the ``mask`` rows/columns of a stack of Fisher matrices, embedded in 4x4 (NaN elsewhere).

    Singular matrices give NaN rather than an exception.
    """
    n = F.shape[0]
    idx = np.flatnonzero(mask)
    sub = F[:, idx[:, None], idx[None, :]]
    out = np.full((n, 4, 4), np.nan)
    inv = np.full_like(sub, np.nan)
    with np.errstate(all="ignore"):
        ok = np.all(np.isfinite(sub), axis=(1, 2))
        if ok.any():
            det_ok = np.linalg.cond(sub[ok]) < 1e14
            good = np.flatnonzero(ok)[det_ok]
            if good.size:
                inv[good] = np.linalg.inv(sub[good])
    out[:, idx[:, None], idx[None, :]] = inv
    return out


def _broadcast(n, **kw):
    return {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy() for k, v in kw.items()}


def fisher_information(model: PSFModel, x, y, flux, background, sensor: Sensor | None = None, *, roi=None):
    """Fisher information of (x, y, flux, background) for stars at (x, y).

    Parameters
    ----------
    model : PSFModel
    x, y : float or array
        Star positions (px); broadcast with ``flux`` and ``background``.
    flux : float or array
        Photo-electrons in the star (e-).
    background : float or array
        Sky background above the dark level (e-/pixel).
    sensor : Sensor, optional
        Supplies the noise floor ``dark_var + read_noise^2`` (e-^2); none when omitted.
    roi : int or (ny, nx), optional
        Width of the square window the information is summed over, or its
        rows and columns, centred as :func:`startrack.localize` centres it
        (default: the model's own).

    Returns
    -------
    ndarray, shape (n, 4, 4)
        In the order of :data:`PARAMS`; units px, e-, e-/px.
    """
    if not isinstance(model, PSFModel):
        raise ValueError(f"model must be a PSF model (e.g. GaussianPSF), got {type(model).__name__}")
    x, y, flux, background = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float))
                                                   for v in (x, y, flux, background)))
    x, y, flux, background = (np.ascontiguousarray(v.ravel()) for v in (x, y, flux, background))
    ny, nx = roi_shape(model.default_roi() if roi is None else roi)
    floor = 0.0 if sensor is None else sensor.noise_floor
    return _fisher_batch(model.kind, np.ascontiguousarray(model.params, np.float64),
                         np.ascontiguousarray(model.table, np.float64), x, y, roi_origin(x, nx),
                         roi_origin(y, ny), ny, nx, flux, background, floor, nb.get_num_threads())


def crlb(model, x, y, flux, background, sensor=None, *, params=PARAMS, roi=None):
    """Cramér–Rao covariance bound of the fitted ``params`` (n, 4, 4; NaN outside ``params``)."""
    mask = param_mask(params)
    F = fisher_information(model, x, y, flux, background, sensor, roi=roi)
    return invert_subset(F, mask)


def precision_limit(model, x, y, flux, background, sensor=None, *, params=PARAMS, roi=None):
    """Precision limits ``(pl_x, pl_y)`` in pixels: square roots of the CRLB diagonal.

    ``params`` names the parameters treated as unknown; the rest are known.
    ``("x",)`` or ``("x", "y")`` give the small-PSF paper's known-flux bound;
    the default is the bound of a fit of all four. A parameter not in
    ``params`` gives NaN. Scalars in give scalars out.
    """
    cov = crlb(model, x, y, flux, background, sensor, params=params, roi=roi)
    with np.errstate(invalid="ignore"):
        plx = np.sqrt(cov[:, 0, 0])
        ply = np.sqrt(cov[:, 1, 1])
    if np.ndim(x) == 0 and np.ndim(y) == 0 and np.ndim(flux) == 0 and np.ndim(background) == 0:
        return float(plx[0]), float(ply[0])
    shape = np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(flux), np.shape(background))
    return plx.reshape(shape), ply.reshape(shape)


def intrapixel_map(model, flux, background, sensor=None, *, params=PARAMS, n=40, roi=None):
    """Precision limit over an n x n grid of intra-pixel positions.

    Positions ``x, y`` are relative to the pixel centre and run over
    ``[-0.5, 0.5)`` (spacing 1/n; the map is periodic, so this samples each
    position once and the RMS over the table is the intra-pixel average). The
    boundary (-0.5) and, for even n, the centre (0) are on the grid.

    Returns
    -------
    Table
        ``x, y, pl_x, pl_y`` (px); ``meta`` holds the settings and the
        RMS/best/worst of each axis.
    """
    n = as_int(n, "n", minimum=2)
    roi = model.default_roi() if roi is None else as_int(roi, "roi", minimum=2)
    c = float(roi // 2)
    g = -0.5 + np.arange(n) / n
    gx, gy = np.meshgrid(g, g)
    plx, ply = precision_limit(model, c + gx.ravel(), c + gy.ravel(), flux, background, sensor,
                               params=params, roi=roi)
    t = Table({"x": gx.ravel(), "y": gy.ravel(), "pl_x": plx, "pl_y": ply})
    for col in ("x", "y", "pl_x", "pl_y"):
        t[col].unit = "pix"
    t.meta.update(model=getattr(model, "spec", repr(model)), flux=float(flux), background=float(background),
                  dark_var=0.0 if sensor is None else sensor.dark_var, params=list(param_names(params)), roi=roi)
    for axis in ("x", "y"):
        pl = t[f"pl_{axis}"]
        if np.all(np.isfinite(pl)):
            t.meta[f"rms_{axis}"] = float(np.sqrt(np.mean(np.square(pl))))
            t.meta[f"best_{axis}"] = float(np.min(pl))
            t.meta[f"worst_{axis}"] = float(np.max(pl))
    return t


def two_pixel_limit(model, x, y, flux, background=0.0, sensor=None, *, roi=None):
    """Two-pixel approximation of the known-flux PL_x near a pixel boundary (small-PSF paper, Eq. 11).

    Only the two pixel columns on either side of the nearest boundary carry
    information: ``1/PL_x^2 ~ sum over their pixels of (d phi/dx)^2 / (phi + b + sd2)``
    (all e-). For a PSF confined to one row this is the paper's form; for a
    2-D PSF it adds the rows. Valid within ~0.25 px of the boundary for PSFs
    with r < 0.3 px; it over-estimates the information elsewhere.
    """
    x, y = np.broadcast_arrays(np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float)))
    shape = x.shape
    x, y = x.ravel(), y.ravel()
    roi = model.default_roi() if roi is None else int(roi)
    x0 = roi_origin(x, roi)
    y0 = roi_origin(y, roi)
    val, ddx, _ = model.render(x, y, x0, y0, (roi, roi))
    floor = 0.0 if sensor is None else sensor.noise_floor
    left = np.floor(x).astype(np.int64) - x0  # columns left and right of boundary floor(x) + 0.5
    idx = np.arange(len(x))
    info = np.zeros(len(x))
    for col in (left, left + 1):
        ok = (col >= 0) & (col < roi)
        c = np.clip(col, 0, roi - 1)
        v = val[idx, :, c]
        dv = ddx[idx, :, c]
        term = np.sum((flux * dv) ** 2 / (flux * v + background + floor), axis=1)
        info += np.where(ok, term, 0.0)
    with np.errstate(divide="ignore"):
        pl = 1.0 / np.sqrt(info)
    return float(pl[0]) if pl.size == 1 and shape == (1,) else pl.reshape(shape)


def boundary_optimum(radius, photons, dark_var=0.0):
    """Closed-form best PL (px) of a Gaussian PSF centred on a pixel boundary (small-PSF paper, Eq. 14).

    ``PL_opt = (r / N) sqrt(pi (N + 2 sd2) / 2)``, which is ``r sqrt(pi / (2N))``
    without dark noise. Matches the exact known-flux CRLB for r < 0.3 px; for
    wider PSFs the flux spills past the two boundary pixels and the formula
    falls below the exact bound.

    Parameters
    ----------
    radius : float or array
        Gaussian radius r (px).
    photons : float or array
        Photo-electrons N in the star.
    dark_var : float or array
        Dark-signal variance sd2 (e-^2).
    """
    r = np.asarray(radius, dtype=float)
    N = np.asarray(photons, dtype=float)
    sd2 = np.asarray(dark_var, dtype=float)
    if np.any(r <= 0) or np.any(N <= 0) or np.any(sd2 < 0):
        raise ValueError("radius and photons must be positive and dark_var non-negative")
    out = (r / N) * np.sqrt(np.pi * (N + 2.0 * sd2) / 2.0)
    return float(out) if out.ndim == 0 else out


def diffraction_limit(wavelength, f_number, pixel_pitch):
    """Diffraction limit ``DL = 1.22 lambda F / a`` in pixels (wavelength and pitch in the same unit).

    The Gaussian radius that best approximates the Airy core is about ``DL / 3``.
    """
    wl, F, a = (float(v) for v in (wavelength, f_number, pixel_pitch))
    if wl <= 0 or F <= 0 or a <= 0:
        raise ValueError("wavelength, f_number and pixel_pitch must be positive")
    return 1.22 * wl * F / a


def diffraction_optimum(wavelength, f_number, pixel_pitch, photons, dark_var=0.0):
    """Best PL (px) the optics allow: :func:`boundary_optimum` at the smallest radius ``r = DL / 3``.

    Returns
    -------
    (r_min, pl_opt) : tuple of float
    """
    r = diffraction_limit(wavelength, f_number, pixel_pitch) / 3.0
    return r, boundary_optimum(r, photons, dark_var)
