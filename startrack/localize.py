"""Batch Poisson maximum-likelihood localisation at the Cramér–Rao bound.

This is where a star's position is refined. Every star's region of
interest is fitted by damped Newton steps on the Poisson log-likelihood
(Fisher scoring with Levenberg–Marquardt damping), started from the centre
of gravity, and reported with the Cramér–Rao bound of the fitted parameters
at the estimate. The PSF model enters only through
:func:`startrack.psf.render_one`, so the Gaussian, the data-built ePSF and the
turntable per-pixel ePSF all use this fitter unchanged. One numba kernel
fits every star to convergence; nothing is allocated per star. The stars
come from one frame, or each from its own stamp (a cut-out placed in the
frame by its origin, as the ePSF build and the turntable calibration fit
them): the same kernels, a frame being one image shared by every star.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np
from astropy import units as u
from astropy.table import Table

from ._kernels import median_inplace
from .detect import cg_window
from .flags import (
    BAD_MODEL,
    BAD_START,
    BELOW_OFFSET,
    CONVERGED,
    EDGE,
    FLAGS,
    ITERATION_LIMIT,
    MASKED,
    MOVED,
    NO_FIT,
    NOT_CONVERGED,
    SATURATED,
)
from .likelihood import PARAMS, accumulate, param_mask
from .psf import PSFModel, origin, render_one, work_shape
from .sensor import Sensor, as_sensor
from .validate import as_int, as_mask, as_positions, as_stamps, one_of, roi_shape

__all__ = ["localize", "FLAGS"]


# Stars per kernel call: one chunk's gathered ROIs (1.6 MB at 5x5) are still in cache when they are fitted.
_CHUNK = 4096

# The kernels' arguments in named bundles (numba passes namedtuples of arrays and scalars as they are).
#: The pixels stars are cut from: (m, h, w) ``images`` whose pixel [0, 0] is at frame (column, row)
#: ``origins[s]``, their ``masks`` (used when ``use_mask``), and ``which`` image each star of a chunk reads.
_Pixels = namedtuple("_Pixels", "images masks use_mask origins which")
#: Raw DN to fitted data ``(P - offset) / gain + shift``, the noise ``floor`` (e-), the ``saturation`` level
#: (DN) and the ``below`` threshold of the below-offset flag (e-).
_Levels = namedtuple("_Levels", "offset gain shift floor saturation below")
#: Gathered ROIs: data, 0/1 weights and the frame column and row of their first pixel.
_Rois = namedtuple("_Rois", "data weight x0 y0")
#: A PSF model as the renderer sees it (:func:`startrack.psf.render_one`).
_Model = namedtuple("_Model", "kind params table")
#: The fit's settings: which parameters are ``free``, the noise ``floor`` and :func:`localize`'s stopping rules.
_Options = namedtuple("_Options", "free floor tol max_step max_iter")
#: Per-star results: ``theta`` (the start in, the estimate out), CRLB variances, log-likelihood, iterations, status.
_Fits = namedtuple("_Fits", "theta var loglike iters status")


@nb.njit(cache=True)
def _ldl_free(A, free, mu, M, dinv):
    """LDL' factors of A + mu diag(A) on the free parameters, identity elsewhere; False unless positive definite.

    M holds the unit lower factor below its diagonal and D on it, ``dinv`` the
    reciprocals of D. The square-root-free form keeps one division per row on
    the critical path: a fit factors four of these matrices.
    """
    for a in range(4):
        for c in range(4):
            M[a, c] = A[a, c] if (free[a] and free[c]) else 0.0
        if free[a]:
            M[a, a] *= 1.0 + mu
        else:
            M[a, a] = 1.0
    for a in range(4):
        for e in range(a + 1, 4):
            t = M[e, a]
            for c in range(a):
                t -= M[e, c] * M[a, c] * M[c, c]
            M[e, a] = t  # L * D for now; divided by D once D is known
        s = M[a, a]
        for c in range(a):
            s -= M[a, c] * M[a, c] * M[c, c]
        if not s > 0.0:
            return False
        M[a, a] = s
        dinv[a] = 1.0 / s
        for e in range(a + 1, 4):
            M[e, a] *= dinv[a]
    return True


@nb.njit(cache=True)
def _ldl_solve(M, dinv, b, free, out):
    for a in range(4):
        s = b[a] if free[a] else 0.0
        for c in range(a):
            s -= M[a, c] * out[c]
        out[a] = s
    for a in range(3, -1, -1):
        s = out[a] * dinv[a]
        for c in range(a + 1, 4):
            s -= M[c, a] * out[c]
        out[a] = s


@nb.njit(cache=True)
def _solve_free(A, b, free, mu, M, dinv, out):
    """Solve (A + mu diag(A)) out = b on the free parameters; False if not positive definite."""
    if not _ldl_free(A, free, mu, M, dinv):
        return False
    _ldl_solve(M, dinv, b, free, out)
    return True


@nb.njit(cache=True)
def _inverse_free(F, free, M, dinv, unit, col, out):
    """CRLB: inverse of F on the free parameters, NaN elsewhere and when F is singular."""
    out[:, :] = np.nan
    if not _ldl_free(F, free, 0.0, M, dinv):
        return
    for a in range(4):
        if not free[a]:
            continue
        unit[:] = 0.0
        unit[a] = 1.0
        _ldl_solve(M, dinv, unit, free, col)
        for c in range(4):
            if free[c]:
                out[a, c] = col[c]


@nb.njit(cache=True)
def _propose(th, step, free, max_step, x0, y0, nx, ny, out):
    """th + step with the position step capped, the flux kept positive and the position inside the ROI."""
    size = max(abs(step[0]), abs(step[1]))
    scale = max_step / size if size > max_step else 1.0
    flux = th[2]
    for a in range(4):
        out[a] = th[a] + scale * step[a]
    if out[2] <= 0.0 and free[2]:
        out[2] = 0.1 * flux
    out[0] = min(max(out[0], x0 - 0.5), x0 + nx - 0.5)
    out[1] = min(max(out[1], y0 - 0.5), y0 + ny - 0.5)


@nb.njit(cache=True, parallel=True)
def _fit_kernel(rois, model, opt, use, fits, nthreads):
    """Damped Newton fit of every star to convergence, one star after another per thread.

    Steps use the observed Hessian of the log-likelihood when it is
    positive definite (quadratic convergence, as in the small-PSF paper)
    and the Fisher matrix otherwise (scoring: always an ascent direction);
    Levenberg–Marquardt damping rejects steps that lower the likelihood.
    ``fits.theta`` holds the start and receives the estimate, ``fits.var``
    the CRLB variances, ``fits.status`` one of
    :data:`startrack.flags.FIT_STATUS`; stars with ``use`` False are left
    untouched.
    Work arrays are per thread, so the loop allocates nothing per star.
    """
    data, weight, x0, y0 = rois
    kind, params, table = model
    free, floor, tol, max_step, max_iter = opt
    theta, var, loglike, iters, status = fits
    n, ny, nx = data.shape
    per = (n + nthreads - 1) // nthreads
    for t in nb.prange(nthreads):
        r = np.empty((6, ny, nx))
        work = np.empty(work_shape(ny, nx))
        g = np.empty(4)
        F = np.empty((4, 4))
        H = np.empty((4, 4))
        gt = np.empty(4)
        Ft = np.empty((4, 4))
        Ht = np.empty((4, 4))
        M = np.empty((4, 4))
        dinv = np.empty(4)
        step = np.empty(4)
        th = np.empty(4)
        tr = np.empty(4)
        unit = np.empty(4)
        scratch = np.empty((2, ny * nx))
        for k in range(t * per, min(n, (t + 1) * per)):
            if not use[k]:
                continue
            for a in range(4):
                th[a] = theta[k, a]
            render_one(kind, params, table, th[0], th[1], x0[k], y0[k], r, work, True)
            L = accumulate(r, data[k], weight[k], th[2], th[3], floor, g, F, H, scratch)
            if not L > -np.inf:
                status[k] = BAD_MODEL
                continue
            mu = 1e-3
            it = 0
            st = ITERATION_LIMIT
            fresh = True  # at a newly accepted point, where mu is small
            while True:
                if not _solve_free(H, g, free, mu, M, dinv, step):
                    # Hessian not positive definite here: take the scoring step.
                    if not _solve_free(F, g, free, mu, M, dinv, step):
                        mu = mu * 10.0 + 1e-3
                        fresh = False
                        if mu > 1e10:
                            break
                        continue
                if fresh:
                    # Newton decrement g' H^-1 g: how far the log-likelihood can still rise.
                    dec = 0.0
                    for a in range(4):
                        dec += g[a] * step[a]
                    if dec < tol:
                        # The remaining step is below sqrt(tol) of the precision limit:
                        # take it without paying for another evaluation.
                        _propose(th, step, free, max_step, x0[k], y0[k], nx, ny, th)
                        st = CONVERGED
                        break
                if it >= max_iter:
                    break
                it += 1
                _propose(th, step, free, max_step, x0[k], y0[k], nx, ny, tr)
                render_one(kind, params, table, tr[0], tr[1], x0[k], y0[k], r, work, True)
                Lt = accumulate(r, data[k], weight[k], tr[2], tr[3], floor, gt, Ft, Ht, scratch)
                if Lt >= L - 1e-12 * abs(L):
                    L = Lt
                    for a in range(4):
                        th[a] = tr[a]
                        g[a] = gt[a]
                        for c in range(4):
                            F[a, c] = Ft[a, c]
                            H[a, c] = Ht[a, c]
                    mu = max(mu * 0.3, 1e-7)
                    fresh = True
                else:
                    mu *= 10.0
                    fresh = False
                    if mu > 1e10:  # no ascent direction left: at the optimum to rounding
                        st = CONVERGED
                        break
            for a in range(4):
                theta[k, a] = th[a]
            loglike[k] = L
            iters[k] = it
            status[k] = st
            _inverse_free(F, free, M, dinv, unit, gt, Ht)  # the trial point's arrays are free now
            for a in range(4):
                var[k, a] = Ht[a, a]


@nb.njit(cache=True, parallel=True, error_model="numpy")
def _gather(pixels, xy, use_cg, free_xy, levels, start, rois, flags, npix, nthreads):
    """Start position and ROI of every star, cut from the raw frame (or its stamp) in one pass.

    With ``use_cg`` the start is the centre of gravity of the window around
    the given position (on raw DN: CG is affine-invariant in intensity),
    for the free coordinates; a window without positive signal keeps the
    given position and is flagged ``bad_start``. The ROI is then centred on
    the pixel holding the start. Star k reads image ``which[k]`` of
    ``pixels``, placed in the frame at its origin: one shared frame, or its
    own stamp, whose edges are then the image's edges. Fills the start (x,
    y, flux, background), the data ``(P - s0)/K + read_noise^2``, 0/1
    weights (0 for off-image, non-finite, masked and saturated pixels), the
    ROI origins (frame coordinates), the flags describing what was left out
    and the number of usable pixels. The caller's arrays are reused from
    chunk to chunk: fresh ones would cost a page fault per 4 kB, more than
    the copy.
    """
    images, masks, use_mask, origins, which = pixels
    offset, gain, shift, floor, saturation, below = levels
    data, weight, x0, y0 = rois
    n = xy.shape[0]
    h, w = images.shape[1], images.shape[2]
    ny, nx = data.shape[1], data.shape[2]
    inv_gain = 1.0 / gain
    per = (n + nthreads - 1) // nthreads
    for t in nb.prange(nthreads):
        ring = np.empty(2 * (ny + nx))
        cg = np.empty(5)
        img = images[0]
        mask = masks[0]
        ox = origins[0, 0]
        oy = origins[0, 1]
        current = 0
        for k in range(t * per, min(n, (t + 1) * per)):
            if which[k] != current:  # a new stamp (never in a frame, whose stars all read image 0)
                current = which[k]
                img = images[current]
                mask = masks[current if use_mask else 0]
                ox = origins[current, 0]
                oy = origins[current, 1]
            sx = xy[k, 0]
            sy = xy[k, 1]
            f = 0
            data[k] = 0.0
            weight[k] = 0.0
            start[k, 2] = 0.0
            start[k, 3] = 0.0
            cx0 = origin(sx, nx)
            cy0 = origin(sy, ny)
            if use_cg:
                cg_window(img, mask, use_mask, ox, oy, cx0, cy0, ny, nx, np.nan, 0.0, True, ring, cg)
                if math.isnan(cg[0]):
                    f |= BAD_START
                else:
                    if free_xy[0]:
                        sx = cg[0]
                    if free_xy[1]:
                        sy = cg[1]
            start[k, 0] = sx
            start[k, 1] = sy
            x0[k] = origin(sx, nx)
            y0[k] = origin(sy, ny)
            # Usually the ROI is the CG window itself, whose border median (raw DN) is known.
            same = use_cg and x0[k] == cx0 and y0[k] == cy0 and not math.isnan(cg[3])
            inside = 0
            used = 0
            m = 0
            total = 0.0
            lo = np.inf
            for i in range(ny):
                r = y0[k] + i - oy
                for j in range(nx):
                    c = x0[k] + j - ox
                    if r < 0 or r >= h or c < 0 or c >= w:
                        continue
                    inside += 1
                    p = img[r, c]
                    if not math.isfinite(p) or (use_mask and mask[r, c]):
                        f |= MASKED
                        continue
                    if p >= saturation:
                        f |= SATURATED
                        continue
                    d = (p - offset) * inv_gain + shift
                    data[k, i, j] = d
                    weight[k, i, j] = 1.0
                    used += 1
                    total += d
                    lo = min(lo, d)
                    if d < below:
                        f |= BELOW_OFFSET
                    if i == 0 or j == 0 or i == ny - 1 or j == nx - 1:
                        ring[m] = d
                        m += 1
            if inside < ny * nx:
                f |= EDGE
            flags[k] = f
            npix[k] = used
            if used == 0:
                continue
            if same and not f & SATURATED:  # the median commutes with the increasing map DN -> e-
                ring_median = (cg[3] - offset) * inv_gain + shift
            else:
                ring_median = median_inplace(ring, m) if m > 0 else lo
            bg = max(ring_median - floor, -0.5 * floor)
            start[k, 2] = max(total - used * (bg + floor), 1.0)
            start[k, 3] = bg


def _column_or(value, positions, col, n, name):
    if value is None and isinstance(positions, Table) and col in positions.colnames:
        value = np.asarray(positions[col], dtype=float)
    if value is None:
        return None
    arr = np.asarray(value, dtype=float)
    try:
        return np.broadcast_to(arr, (n,)).astype(float)
    except ValueError:
        raise ValueError(f"{name} must be a scalar or have one value per star ({n}), got shape {arr.shape}") from None


def localize(image, positions, model: PSFModel, sensor: Sensor | None = None, *, origins=None,
             fit=PARAMS, roi=5, flux=None, background=None, mask=None, start="cg",
             max_iter=50, tol=1e-3, max_step=1.0):
    """Poisson maximum-likelihood positions of many stars in one frame or one stamp each, with their CRLB.

    Parameters
    ----------
    image : 2-D array, or (n, ny, nx) stack
        Raw frame in DN, or a stack of cut-outs ("stamps") in DN, one per
        star: star k is then fitted on stamp k's pixels only (ROI pixels
        beyond the stamp count as off the image, flag ``edge``). NaN/inf
        pixels, ``mask`` pixels and saturated pixels are left out of the
        likelihood.
    positions : (n, 2) array or Table
        Rough (x, y) per star in frame coordinates (a detection table with
        ``x_cg, y_cg`` works).
    model : PSFModel
        E.g. ``GaussianPSF(0.3)`` or an :class:`~startrack.EPSF`.
    sensor : Sensor, optional
        Gain, offset, dark variance, read noise, saturation. Without it the
        image is taken to be in photo-electrons with no dark noise.
    origins : (n, 2) int array, optional
        With stamps: the frame (column, row) of each stamp's pixel [0, 0]
        (default zeros: positions in stamp coordinates). Positions, results
        and a model that depends on where it is (:class:`~startrack.PixelEPSF`)
        are all in these frame coordinates.
    fit : sequence of str
        Fitted parameters, a subset of ``("x", "y", "flux", "background")``.
        Parameters not fitted are held at ``flux``/``background`` (or at the
        given position for x, y).
    roi : int or (ny, nx)
        Width of the square fitting window (px), centred on the pixel holding
        the CG start; or its rows and columns, e.g. ``(1, 9)`` to fit a
        line-sensor signal stored as one image row.
    flux, background : float or array, optional
        Known star flux (e-) and sky background (e-/pixel above the dark
        level), required when those parameters are not fitted; may also come
        from ``flux``/``background`` columns of a positions Table.
    mask : bool array of the image's shape, optional
        True where a pixel must be ignored ((n, ny, nx) with stamps).
    start : {"cg", "given"}
        Start each fit from the centre of gravity around the given position
        (default) or from the given position itself.
    max_iter : int
        Iteration limit; stars that reach it are flagged ``not_converged``.
    tol : float
        Convergence threshold on the Newton decrement ``g' F^-1 g`` (how much
        the log-likelihood could still rise). Below it the last Newton step,
        at most ``sqrt(tol)`` of the precision limit (3 % by default), is
        taken without re-evaluating the likelihood.
    max_step : float
        Largest position step per iteration (px).

    Returns
    -------
    Table
        One row per input position: ``x, y`` (px), ``flux`` (e-),
        ``background`` (e-/px above the dark level), ``x_err, y_err,
        flux_err, background_err`` (square roots of the CRLB of the fitted
        parameter set at the estimate; NaN for parameters held fixed),
        ``x_start, y_start``, ``loglike`` (sum of ``d ln(lambda) - lambda``
        over the ROI, the Poisson log-likelihood without its data-only
        constant), ``iterations``, ``converged`` and ``flags`` (bits in
        :data:`FLAGS`). The Poisson mean of a pixel is ``flux * psf +
        background + dark_var (+ read_noise^2)``.

    Examples
    --------
    >>> import startrack as st
    >>> sensor = st.Sensor(gain=0.2, offset=37, dark_var=25)
    >>> psf = st.GaussianPSF(0.3)
    >>> img = st.simulate.simulate_frame((32, 32), 15.3, 16.5, 1500, psf, sensor, seed=1)
    >>> t = st.localize(img, [(15, 16)], psf, sensor)
    >>> bool(abs(t["x"][0] - 15.3) < 5 * t["x_err"][0])
    True
    """
    if not isinstance(model, PSFModel) or model.kind < 0:
        raise ValueError(f"model must be a startrack PSF model (e.g. GaussianPSF(0.3)), got {type(model).__name__}")
    sensor = as_sensor(sensor)
    free = param_mask(fit, "fit")
    ny, nx = roi_shape(roi)
    one_of(start, "start", ("cg", "given"))
    max_iter = as_int(max_iter, "max_iter", minimum=1)
    xy = as_positions(positions)
    n = len(xy)
    images, org, stacked = as_stamps(image, n, origins)
    fixed_flux = _column_or(flux, positions, "flux", n, "flux")
    fixed_bg = _column_or(background, positions, "background", n, "background")
    if not free[2] and fixed_flux is None:
        raise ValueError("flux is not fitted: pass flux= (e-) or a positions table with a 'flux' column")
    if not free[3] and fixed_bg is None:
        raise ValueError("background is not fitted: pass background= (e-/pixel) or a positions table "
                         "with a 'background' column")
    mask = as_mask(mask, images.shape if stacked else images.shape[1:])

    h, w = images.shape[1:]
    flags = np.zeros(n, np.int64)
    finite = np.all(np.isfinite(xy), axis=1)
    inner = xy - org if stacked else xy  # where each star sits in its own image
    on_img = (finite & (inner[:, 0] >= -0.5) & (inner[:, 0] < w - 0.5)
              & (inner[:, 1] >= -0.5) & (inner[:, 1] < h - 0.5))
    flags[~on_img] |= NO_FIT
    start_xy = np.where(on_img[:, None], xy, np.nan)
    theta = np.full((n, 4), np.nan)
    var = np.full((n, 4), np.nan)
    loglike = np.full(n, np.nan)
    iters = np.zeros(n, np.int64)
    status = np.zeros(n, np.int64)
    floor = sensor.noise_floor
    below = -5.0 * math.sqrt(max(floor, 1.0))
    sat = np.inf if sensor.saturation is None else sensor.saturation
    use_mask = mask is not None
    masks = np.ascontiguousarray(mask).reshape(images.shape) if use_mask else np.zeros((1, 1, 1), dtype=bool)
    levels = _Levels(float(sensor.offset), float(sensor.gain), float(sensor.read_noise) ** 2, floor, float(sat), below)
    min_pixels = max(int(free.sum()) + 1, 3)
    psf = _Model(model.kind, np.ascontiguousarray(model.params, np.float64),
                 np.ascontiguousarray(model.table, np.float64))
    opt = _Options(free, floor, float(tol), float(max_step), int(max_iter))
    nthreads = nb.get_num_threads()
    size = min(n, _CHUNK)
    shared = np.zeros(size, np.int64)  # every star of a frame reads image 0
    th, data, weight = np.empty((size, 4)), np.empty((size, ny, nx)), np.empty((size, ny, nx))
    x0, y0, f, npix = (np.empty(size, np.int64) for _ in range(4))
    v, ll, it, stt = np.empty((size, 4)), np.empty(size), np.empty(size, np.int64), np.empty(size, np.int64)
    for lo in range(0, n, _CHUNK):
        idx = np.flatnonzero(on_img[lo:lo + _CHUNK]) + lo
        m = idx.size
        if m == 0:
            continue
        pixels = _Pixels(images, masks, use_mask, org, idx if stacked else shared[:m])
        if m == min(_CHUNK, n - lo):  # the usual case: a slice instead of fancy indexing
            idx = slice(lo, lo + m)
        rois = _Rois(data[:m], weight[:m], x0[:m], y0[:m])
        _gather(pixels, np.ascontiguousarray(xy[idx]), start == "cg", free[:2].copy(), levels, th[:m], rois, f[:m],
                npix[:m], nthreads)
        enough = npix[:m] >= min_pixels
        flags[idx] |= f[:m] | np.where(enough, 0, NO_FIT)
        start_xy[idx] = th[:m, :2]
        if not free[2]:
            th[:m, 2] = fixed_flux[idx]
        if not free[3]:
            th[:m, 3] = fixed_bg[idx]
        v[:m], ll[:m], it[:m], stt[:m] = np.nan, np.nan, 0, 0
        _fit_kernel(rois, psf, opt, enough, _Fits(th[:m], v[:m], ll[:m], it[:m], stt[:m]), nthreads)
        theta[idx], var[idx], loglike[idx], iters[idx], status[idx] = th[:m], v[:m], ll[:m], it[:m], stt[:m]

    flags[status == BAD_MODEL] |= NO_FIT
    nofit = (flags & NO_FIT) > 0
    flags[~nofit & (status != CONVERGED)] |= NOT_CONVERGED
    theta[nofit] = np.nan
    var[nofit] = np.nan
    loglike[nofit] = np.nan
    with np.errstate(invalid="ignore"):
        moved = np.any(np.abs(theta[:, :2] - start_xy) > (np.array([nx, ny]) - 1) / 2.0, axis=1)
    flags[moved] |= MOVED
    return _table(theta, var, start_xy, loglike, iters, status, flags, model, sensor, fit,
                  ny if ny == nx else [ny, nx])


def _table(theta, var, start_xy, loglike, iters, status, flags, model, sensor, fit, roi):
    with np.errstate(invalid="ignore"):
        err = np.sqrt(var)
    pix, e, e_pix = u.pix, u.electron, u.electron / u.pix
    columns = {"x": (theta[:, 0], pix), "y": (theta[:, 1], pix), "flux": (theta[:, 2], e),
               "background": (theta[:, 3], e_pix), "x_err": (err[:, 0], pix), "y_err": (err[:, 1], pix),
               "flux_err": (err[:, 2], e), "background_err": (err[:, 3], e_pix),
               "x_start": (start_xy[:, 0], pix), "y_start": (start_xy[:, 1], pix), "loglike": (loglike, None),
               "iterations": (iters, None), "converged": (status == CONVERGED, None), "flags": (flags, None)}
    t = Table([c for c, _ in columns.values()], names=list(columns),
              units={name: unit for name, (_, unit) in columns.items() if unit is not None})
    t.meta["psf"] = getattr(model, "spec", repr(model))
    t.meta["fit"] = [p for p, m in zip(PARAMS, param_mask(fit), strict=True) if m]
    t.meta["roi"] = roi
    t.meta["crlb"] = "sqrt of the CRLB of the fitted parameters, evaluated at the estimate"
    t.meta["flags"] = dict(FLAGS)
    t.meta["sensor"] = {"gain": sensor.gain, "offset": sensor.offset, "dark_var": sensor.dark_var,
                        "read_noise": sensor.read_noise, "saturation": sensor.saturation}
    return t
