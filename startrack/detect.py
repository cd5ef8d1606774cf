"""Star detection and the centre-of-gravity (CG) start.

:func:`detect` finds stars in a frame (background map, matched filter,
local maxima, non-maximum suppression); :func:`centroid` is the windowed,
background-subtracted, optionally thresholded CG for many ROIs at once. CG is
biased for small PSFs (an S-shaped error of 0.03-0.10 px): it is where the
maximum-likelihood fit starts, never the answer.
"""

from __future__ import annotations

import math
import warnings

import cv2
import numba as nb
import numpy as np
from astropy.table import Table

from ._kernels import median_inplace
from .psf import roi_origin
from .sensor import Sensor
from .validate import as_float, as_image, as_int, as_mask, as_positions, as_stamps, roi_shape

__all__ = ["centroid", "detect", "background_map"]


@nb.njit(cache=True)
def _usable(image, mask, use_mask, r, c):
    return math.isfinite(image[r, c]) and not (use_mask and mask[r, c])


@nb.njit(cache=True)
def cg_window(image, mask, use_mask, ox, oy, x0, y0, ny, nx, bg, threshold, use_threshold, buf, out):
    """Centre of gravity of one ``ny`` x ``nx`` window whose first pixel is frame (x0, y0).

    ``image`` (and ``mask``) hold the frame pixels from column ``ox`` and row
    ``oy`` on: a whole frame at (0, 0), or a stamp cut from it. The moments
    are taken in frame coordinates, so a stamp gives bit for bit what its
    frame gives. ``bg`` NaN means "median of the window's border"; pixels off
    the image, non-finite and masked are skipped. ``buf`` is scratch of at
    least ``2 (ny + nx)`` values. Fills ``out`` with (x_cg, y_cg, flux,
    background, npix); the position is NaN when the window holds no
    positive signal.
    """
    h, w = image.shape
    out[0] = np.nan
    out[1] = np.nan
    out[2] = 0.0
    out[3] = np.nan
    out[4] = 0.0
    if math.isnan(bg):
        m = 0
        for i in range(ny):
            r = y0 + i - oy
            if r < 0 or r >= h:
                continue
            for j in range(nx):
                if 0 < i < ny - 1 and 0 < j < nx - 1:
                    continue
                c = x0 + j - ox
                if 0 <= c < w and _usable(image, mask, use_mask, r, c):
                    buf[m] = image[r, c]
                    m += 1
        if m == 0:
            return
        bg = median_inplace(buf, m)
    out[3] = bg
    s = 0.0
    sx = 0.0
    sy = 0.0
    cnt = 0
    for i in range(ny):
        r = y0 + i
        if r - oy < 0 or r - oy >= h:
            continue
        for j in range(nx):
            c = x0 + j
            if c - ox < 0 or c - ox >= w or not _usable(image, mask, use_mask, r - oy, c - ox):
                continue
            v = image[r - oy, c - ox] - bg
            # A select, not a branch: which noise pixels pass the threshold is a coin toss.
            keep = not use_threshold or v > threshold
            v = v if keep else 0.0
            s += v
            sx += v * c
            sy += v * r
            cnt += 1 if keep else 0
    out[2] = s
    out[4] = cnt
    if s > 0.0:
        out[0] = sx / s
        out[1] = sy / s


@nb.njit(cache=True, parallel=True)
def _centroid_kernel(images, masks, use_mask, origins, stacked, x0, y0, ny, nx, bg_in, threshold, use_threshold,
                     nthreads):
    """Every window's CG; window k lies in stamp k of a stack, or all in the one frame ``images[0]``."""
    n = x0.shape[0]
    res = np.empty((n, 5))
    per = (n + nthreads - 1) // nthreads
    for t in nb.prange(nthreads):
        buf = np.empty(2 * (ny + nx))
        for k in range(t * per, min(n, (t + 1) * per)):
            s = k if stacked else 0
            cg_window(images[s], masks[s if use_mask else 0], use_mask, origins[s, 0], origins[s, 1], x0[k], y0[k],
                      ny, nx, bg_in[k], threshold, use_threshold, buf, res[k])
    return res


def centroid(image, positions, *, origins=None, roi=5, background="border", threshold=0.0, mask=None):
    """Centre of gravity of many windows at once, in one frame or in one stamp per star.

    Parameters
    ----------
    image : 2-D array, or (n, ny, nx) stack
        Frame in any linear unit (DN or e-), or a stack of cut-outs
        ("stamps"), one per position: window k then sees only stamp k's
        pixels (those beyond it count as off the image). Non-finite pixels
        are ignored.
    positions : (n, 2) array or Table
        Rough (x, y) of each star (px, frame coordinates); each window is
        ``roi`` x ``roi`` pixels centred on the pixel holding the position
        (clipped at the image edge).
    origins : (n, 2) int array, optional
        With stamps: the frame (column, row) of each stamp's pixel [0, 0]
        (default zeros: positions in stamp coordinates). The results are
        in the same frame coordinates.
    roi : int or (ny, nx)
        Window width in pixels, or its rows and columns (e.g. ``(1, 9)`` for
        a line-sensor signal stored as one image row).
    background : "border", float or array
        Level subtracted before the moments: ``"border"`` takes the median of
        each window's outermost ring of pixels.
    threshold : float or None
        Only pixels whose background-subtracted value exceeds this take part
        (default 0: negative noise does not pull the centroid). ``None`` uses
        every pixel of the window.
    mask : bool array of the image's shape, optional
        True where a pixel must be ignored.

    Returns
    -------
    Table
        ``x_cg, y_cg`` (px; NaN when the window holds no positive signal),
        ``flux_cg`` (sum above background, image units), ``background``, ``npix``.
    """
    xy = as_positions(positions)
    n = len(xy)
    images, org, stacked = as_stamps(image, n, origins)
    ny, nx = roi_shape(roi)
    mask = as_mask(mask, images.shape if stacked else images.shape[1:])
    use_mask = mask is not None
    masks = np.ascontiguousarray(mask).reshape(images.shape) if use_mask else np.zeros((1, 1, 1), dtype=bool)
    if isinstance(background, str):
        if background != "border":
            raise ValueError(f"background must be 'border' or a number, got {background!r}")
        bg = np.full(n, np.nan)
    else:
        bg = np.broadcast_to(np.asarray(background, dtype=float), (n,)).copy()
    use_thr = threshold is not None
    thr = float(threshold) if use_thr else 0.0
    finite = np.all(np.isfinite(xy), axis=1)
    far = -10 * max(ny, nx)  # a window wholly off its image: NaN result
    x0 = np.where(finite, roi_origin(np.where(finite, xy[:, 0], 0), nx), far + org[:, 0])
    y0 = np.where(finite, roi_origin(np.where(finite, xy[:, 1], 0), ny), far + org[:, 1])
    res = _centroid_kernel(images, masks, use_mask, org, stacked, x0, y0, ny, nx, bg, thr, use_thr,
                           nb.get_num_threads())
    return Table({"x_cg": res[:, 0], "y_cg": res[:, 1], "flux_cg": res[:, 2], "background": res[:, 3],
                  "npix": res[:, 4].astype(np.int64)})


def background_map(image, tile=64, mask=None):
    """Smooth sky background and robust noise (both in image units).

    Sigma-clipped medians over ``tile`` x ``tile`` blocks, interpolated back
    to full resolution (bilinear), so a moonlit gradient or vignetting does not
    lift faint stars over the threshold in one corner and bury them in another.

    Returns
    -------
    background : 2-D array
    sigma : float
        Robust (MAD) standard deviation of the background-subtracted pixels.
    """
    img = as_image(image)
    valid = np.isfinite(img)
    if mask is not None:
        valid &= ~np.asarray(mask, dtype=bool)
    if not valid.any():
        raise ValueError("image has no finite pixels")
    h, w = img.shape
    ty = max(1, int(math.ceil(h / tile)))
    tx = max(1, int(math.ceil(w / tile)))
    work = np.where(valid, img, np.nan)
    pad = np.full((ty * tile, tx * tile), np.nan)
    pad[:h, :w] = work
    blocks = pad.reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3).reshape(ty, tx, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(blocks, axis=2)
    # One clipping pass drops the stars in the block before the final median.
    mad = np.nanmedian(np.abs(blocks - med[..., None]), axis=2)
    with np.errstate(invalid="ignore"):
        keep = np.abs(blocks - med[..., None]) <= 3.0 * 1.4826 * mad[..., None] + 1e-12
    clipped = np.where(keep, blocks, np.nan)
    with warnings.catch_warnings():  # all-NaN blocks (masked areas) are expected
        warnings.simplefilter("ignore", RuntimeWarning)
        med2 = np.nanmedian(clipped, axis=2)
    global_med = np.nanmedian(work)
    med2 = np.where(np.isfinite(med2), med2, global_med)
    if ty == 1 and tx == 1:
        bg = np.full((h, w), med2[0, 0])
    else:
        bg = cv2.resize(med2.astype(np.float32), (tx * tile, ty * tile), interpolation=cv2.INTER_LINEAR)
        bg = bg[:h, :w].astype(np.float64)
    resid = (img - bg)[valid]
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    if not sigma > 0:
        sigma = float(np.std(resid))
    return bg, sigma


def detect(image, sensor: Sensor | None = None, *, threshold=5.0, smooth=1.0, roi=5, min_separation=2.5,
           max_stars=None, mask=None, tile=64, border=0):
    """Find stars in a frame and measure their centre of gravity.

    Parameters
    ----------
    image : 2-D array
        Raw frame (DN). Non-finite pixels are ignored.
    sensor : Sensor, optional
        When given, saturated pixels are recognised and ``flux`` is in e-;
        otherwise fluxes stay in image units.
    threshold : float
        Detection threshold in standard deviations of the matched-filtered
        background noise.
    smooth : float
        Radius (px) of the Gaussian matched filter applied before
        thresholding; 0 disables it. About the PSF radius, and at least 0.7 px
        for small PSFs so that single hot pixels do not win.
    roi : int
        CG window width (px).
    min_separation : float
        A star must be the brightest point of the filtered image within this
        radius (px); fainter maxima nearer to it are taken for its wings.
    max_stars : int, optional
        Keep only the brightest ``max_stars``.
    mask : 2-D bool array, optional
        True where pixels must be ignored.
    tile : int
        Block size (px) of the background map.
    border : int
        Ignore maxima closer than this to the image edge.

    Returns
    -------
    Table
        One row per star, brightest first: ``id, x_cg, y_cg, peak`` (above
        background, image units), ``flux`` (e- with a sensor, else image
        units), ``background`` (image units), ``snr`` (peak over noise of the
        filtered image), ``npix`` and ``saturated``. Empty when the sky is empty.
    """
    img = as_image(image)
    roi = as_int(roi, "roi", minimum=2)
    threshold = as_float(threshold, "threshold", positive=True, unit="sigmas")
    mask = as_mask(mask, img.shape)
    valid = np.isfinite(img)
    if mask is not None:
        valid &= ~mask
    if not valid.any():
        raise ValueError("image has no finite pixels")
    bg, _ = background_map(img, tile=tile, mask=~valid)
    resid = np.where(valid, img - bg, 0.0)
    if smooth and smooth > 0:
        k = int(2 * math.ceil(3 * smooth) + 1)
        filt = cv2.GaussianBlur(resid, (k, k), smooth, borderType=cv2.BORDER_REFLECT)
    else:
        filt = resid
    fv = filt[valid]
    sig = 1.4826 * float(np.median(np.abs(fv - np.median(fv))))
    if not sig > 0:
        sig = float(np.std(fv)) or 1.0
    above = (filt > threshold * sig) & valid
    # A star is a pixel that is the maximum of the filtered image within min_separation;
    # ties (flat saturated tops) are merged into one peak per connected plateau.
    rad = max(1, int(min_separation))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rad + 1, 2 * rad + 1))
    peaks = above & (filt >= cv2.dilate(filt, disk))
    if border:
        peaks[:border] = peaks[-border:] = False
        peaks[:, :border] = peaks[:, -border:] = False
    nlab, lab, _, cents = cv2.connectedComponentsWithStats(peaks.astype(np.uint8), connectivity=8)
    px = np.rint(cents[1:, 0]).astype(np.int64)
    py = np.rint(cents[1:, 1]).astype(np.int64)
    strength = filt[py, px]
    order = np.argsort(-strength, kind="stable")
    py, px, strength = py[order], px[order], strength[order]
    if max_stars is not None:
        py, px, strength = py[:max_stars], px[:max_stars], strength[:max_stars]
    xy = np.column_stack([px, py]).astype(float)
    cg = centroid(np.where(valid, img - bg, np.nan), xy, roi=roi, background=0.0, threshold=0.0)
    x_cg = np.where(np.isfinite(cg["x_cg"]), cg["x_cg"], px)
    y_cg = np.where(np.isfinite(cg["y_cg"]), cg["y_cg"], py)
    flux = np.asarray(cg["flux_cg"], float)
    sat = np.zeros(len(px), bool)
    if sensor is not None:
        flux = flux / sensor.gain
        if sensor.saturation is not None:
            satmap = (img >= sensor.saturation).astype(np.uint8)
            satmap = cv2.dilate(satmap, np.ones((roi, roi), np.uint8))
            sat = satmap[py, px].astype(bool)
    t = Table()
    t["id"] = np.arange(1, len(px) + 1)
    t["x_cg"] = x_cg
    t["y_cg"] = y_cg
    t["peak"] = resid[py, px]
    t["flux"] = flux
    t["background"] = bg[py, px]
    t["snr"] = strength / sig
    t["npix"] = np.asarray(cg["npix"])
    t["saturated"] = sat
    t.meta["noise_sigma_filtered"] = sig
    t.meta["threshold_sigma"] = float(threshold)
    return t
