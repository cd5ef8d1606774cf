"""fluoroBancroft: algebraic 2-D localisation of a Gaussian spot without numerical fitting.

Andersson (Opt. Express 16, 18714, 2008), after Bancroft's GPS solution:
each pixel's intensity above the background gives a range to the source,
``r_i^2 = 2 s^2 ln m - 2 s^2 ln(I_i - N_B)``. Stacking the pixels gives the
linear system ``B (x0, y0, c)^T = alpha + Lambda e`` with rows ``(x_i, y_i, 1)``
and ``alpha_i = (x_i^2 + y_i^2 + P_i^2) / 2``, ``P_i^2 = 2 s^2 ln(I_i - N_B)``;
because the pseudo-inverse of B maps the all-ones vector e to the last unit
vector, ``(x0, y0)`` are the first two entries of ``B^+ alpha``: one 3x3
solve, no iteration. An anisotropic spot is made round by scaling y by
``s_x / s_y``.

The paper's least squares weighs every pixel's range equation equally, so
the logarithm of the noisiest pixels (tails near the background) counts as
much as the peak's: measured here it is 3-9x less precise than a Gaussian fit
(``benchmarks/bench_micro.py``). The default weighs each equation by the
Poisson information of ``ln(I - N_B)``, ``(I - N_B)^2 / I``: first from the
data, then twice from the Gaussian the previous solve describes, which keeps
noise out of the weights. Still three 3x3 solves, no iteration to convergence.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .._kernels import log_into
from ..validate import as_float, as_sigma_pair, as_stack

__all__ = ["fluoro_bancroft"]

_REWEIGHT = 2  # model-weighted solves after the data-weighted one; a third changes RMSE by < 1 %


@nb.njit(cache=True, error_model="numpy")
def _solve(M, r):
    """Solve the symmetric 3x3 system M t = r by Cramer's rule; NaN when singular."""
    a, b, c = M[0, 0], M[0, 1], M[0, 2]
    d, e, f = M[1, 1], M[1, 2], M[2, 2]
    c00 = d * f - e * e
    c01 = c * e - b * f
    c02 = b * e - c * d
    det = a * c00 + b * c01 + c * c02
    scale = abs(a * d * f) + 1e-300
    if not abs(det) > 1e-12 * scale:
        return np.nan, np.nan, np.nan
    c11 = a * f - c * c
    c12 = b * c - a * e
    c22 = a * d - b * b
    x = (c00 * r[0] + c01 * r[1] + c02 * r[2]) / det
    y = (c01 * r[0] + c11 * r[1] + c12 * r[2]) / det
    z = (c02 * r[0] + c12 * r[1] + c22 * r[2]) / det
    return x, y, z


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _accumulate(X, Y, alpha, w, M, r):
    """Weighted normal equations of the rows (x, y, 1) against alpha, into M (3x3) and r (3)."""
    sxx = sxy = sx = syy = sy = s1 = rx = ry = r1 = 0.0  # scalars: array accumulators would not stay in registers
    for q in range(X.shape[0]):
        x = X[q]
        y = Y[q]
        wq = w[q]
        wx = wq * x
        wy = wq * y
        sxx += wx * x
        sxy += wx * y
        sx += wx
        syy += wy * y
        sy += wy
        s1 += wq
        a = alpha[q]
        rx += wx * a
        ry += wy * a
        r1 += wq * a
    M[0, 0], M[0, 1], M[0, 2] = sxx, sxy, sx
    M[1, 0], M[1, 1], M[1, 2] = sxy, syy, sy
    M[2, 0], M[2, 1], M[2, 2] = sx, sy, s1
    r[0], r[1], r[2] = rx, ry, r1


@nb.njit(cache=True)
def _grid(ny, nx, ys, work):
    """Centred pixel coordinates (x; y scaled by ``ys``) into work[0], work[1] and half their squared radius into
    work[2]; centred coordinates keep the normal equations well conditioned."""
    for i in range(ny):
        for j in range(nx):
            q = i * nx + j
            work[0, q] = j - 0.5 * (nx - 1)
            work[1, q] = (i - 0.5 * (ny - 1)) * ys
            work[2, q] = 0.5 * (work[0, q] ** 2 + work[1, q] ** 2)


@nb.njit(cache=True, error_model="numpy", fastmath={"nsz", "arcp", "contract"})
def _bancroft_one(roi, sx, sy, bg, weighted, work):
    """fluoroBancroft position of one ROI in ROI pixel coordinates.

    ``work`` is (7, ny*nx): x, y and half the squared radius of every pixel
    (from :func:`_grid`), then scratch for ``I - bg``, alpha, the weights
    and the pixels in use (``I - bg`` is overwritten by the logarithm). Pixels at or
    below the background (or not finite) get weight 0 rather than being
    skipped, which keeps the loops free of branches.
    """
    ny, nx = roi.shape
    ys = sx / sy  # y scaled to make the spot round with radius sx
    s2 = sx * sx
    X, Y, R2, D, alpha, w, use = work[0], work[1], work[2], work[3], work[4], work[5], work[6]
    flat = roi.ravel()
    m = 0
    for q in range(ny * nx):
        d = flat[q] - bg
        ok = (d > 1e-300) & (d < np.inf)  # no range from the background or a non-finite pixel
        D[q] = d if ok else 1.0
        w[q] = (d * d / (d + bg) if weighted else 1.0) if ok else 0.0
        use[q] = 1.0 if ok else 0.0
        m += ok
    if m < 3:
        return np.nan, np.nan
    log_into(D, alpha, ny * nx)
    for q in range(ny * nx):
        alpha[q] = R2[q] + s2 * alpha[q]
    M = np.empty((3, 3))
    r = np.empty(3)
    _accumulate(X, Y, alpha, w, M, r)
    x0, y0, c = _solve(M, r)
    if weighted:
        ex = np.empty(nx)
        ey = np.empty(ny)
        for _ in range(_REWEIGHT):
            if not math.isfinite(x0):
                break
            # The Gaussian of the last solve: ln m = (c + (x0^2 + y0^2) / 2) / s^2; it factorises in x and y.
            lnm = (c + 0.5 * (x0 * x0 + y0 * y0)) / s2
            _gauss_row(X[0] - x0, 1.0, s2, lnm, ex)
            _gauss_row(Y[0] - y0, ys, s2, 0.0, ey)
            _model_weights(ex, ey, bg, use, w)
            _accumulate(X, Y, alpha, w, M, r)
            x0, y0, c = _solve(M, r)
    return x0 + 0.5 * (nx - 1), y0 / ys + 0.5 * (ny - 1)


@nb.njit(cache=True, error_model="numpy")
def _gauss_row(u0, du, s2, lnm, out):
    """out[k] = exp(lnm - (u0 + k du)^2 / (2 s2)) by the exact two-term recurrence (three exps, not one per pixel)."""
    g = math.exp(lnm - 0.5 * u0 * u0 / s2)
    r = math.exp(-(u0 * du + 0.5 * du * du) / s2)  # g[k+1] / g[k] at k = 0
    c = math.exp(-du * du / s2)  # the ratio's own ratio
    for k in range(out.shape[0]):
        out[k] = g
        g *= r
        r *= c


@nb.njit(cache=True, fastmath={"reassoc", "contract", "arcp"}, error_model="numpy")
def _model_weights(ex, ey, bg, use, w):
    """Poisson information mu^2 / (mu + bg) of ln(I - bg) at the model mu = ex[j] ey[i], on the pixels in use."""
    nx = ex.shape[0]
    for i in range(ey.shape[0]):
        for j in range(nx):
            mu = ex[j] * ey[i]
            w[i * nx + j] = use[i * nx + j] * mu * mu / (mu + bg)


@nb.njit(cache=True)
def _bancroft_single(roi, sx, sy, bg, weighted):
    """One ROI without the thread pool (a tracker's per-frame call)."""
    work = np.empty((7, roi.size))
    _grid(roi.shape[0], roi.shape[1], sx / sy, work)
    return _bancroft_one(roi, sx, sy, bg, weighted, work)


@nb.njit(cache=True, parallel=True)
def _bancroft_batch(rois, sx, sy, bg, weighted, out, nthreads):
    n, ny, nx = rois.shape
    per = (n + nthreads - 1) // nthreads
    for t in nb.prange(nthreads):
        work = np.empty((7, ny * nx))
        _grid(ny, nx, sx / sy, work)
        for k in range(t * per, min(n, (t + 1) * per)):
            out[k, 0], out[k, 1] = _bancroft_one(rois[k], sx, sy, bg[k], weighted, work)


def fluoro_bancroft(roi, sigma, background, *, weighted=True):
    """Position of a Gaussian spot in a region of interest by fluoroBancroft (no fitting).

    Parameters
    ----------
    roi : array, shape (ny, nx) or (n, ny, nx)
        Pixel values in photo-electrons, background included; a stack runs
        in parallel. Pixels at or below ``background`` (and NaN pixels) are
        left out; at least 3 must remain.
    sigma : float or (sigma_x, sigma_y)
        Gaussian radius of the spot as the pixels record it (px). For a
        Gaussian PSF of radius s integrated over square pixels,
        ``sqrt(s^2 + 1/12)`` is the closer value.
    background : float or array (n,)
        Mean background per pixel (e-), known (e.g. measured off the spot).
    weighted : bool
        True (default): range equations weighted by their Poisson
        information (see the module notes). False: exactly the paper's
        derivation, every pixel above the background weighted equally.

    Returns
    -------
    (x, y) tuple of float, or ndarray (n, 2)
        Position in ROI pixel coordinates (pixel (i, j) centred at x=j, y=i);
        NaN when fewer than 3 pixels are above the background or they lie on
        a line.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:9, 0:9]
    >>> spot = 50 + 400 * np.exp(-((xx - 4.3) ** 2 + (yy - 3.8) ** 2) / (2 * 1.5 ** 2))
    >>> x, y = fluoro_bancroft(spot, 1.5, 50)
    >>> round(x, 6), round(y, 6)
    (4.3, 3.8)
    """
    arr = as_stack(roi, "roi")
    sx, sy = as_sigma_pair(sigma)
    if np.ndim(roi) == 2:
        bg = as_float(background, "background", nonnegative=True, unit="photo-electrons per pixel")
        return _bancroft_single(arr[0], sx, sy, bg, bool(weighted))
    n = arr.shape[0]
    bg = np.asarray(background, dtype=np.float64)
    if bg.ndim == 0:
        bg = np.full(n, as_float(bg, "background", nonnegative=True, unit="photo-electrons per pixel"))
    elif bg.shape != (n,):
        raise ValueError(f"background must be a number or one value per ROI ({n}), got shape {bg.shape}")
    elif not (np.all(np.isfinite(bg)) and np.all(bg >= 0)):
        raise ValueError("background must be finite and >= 0 (photo-electrons per pixel)")
    out = np.empty((n, 2))
    _bancroft_batch(arr, sx, sy, bg, bool(weighted), out, nb.get_num_threads())
    return out


