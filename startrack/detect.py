"""Star detection and the centre-of-gravity (CG) start.

:func:`detect` finds stars in a frame (background map, matched filter,
local maxima, non-maximum suppression); :func:`centroid` is the windowed,
background-subtracted, optionally thresholded CG for many ROIs at once. CG is
biased for small PSFs (an S-shaped error of 0.03-0.10 px): it is where the
maximum-likelihood fit starts, never the answer.
"""

from __future__ import annotations

import math
from time import perf_counter

import cv2
import numba as nb
import numpy as np
from astropy.table import Table

from ._kernels import median_inplace
from .psf import roi_origin
from .sensor import Sensor
from .validate import as_float, as_frame, as_int, as_mask, as_positions, as_stamps, roi_shape

__all__ = ["centroid", "detect", "background_map", "cut_stamps", "stamp_origins"]


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


@nb.njit(cache=True)
def _node(grid, tile, r, c):
    """Bilinear value of the block grid at pixel (r, c), as :func:`_upsample` (edges held)."""
    ty, tx = grid.shape
    fy = min(max((r + 0.5) / tile - 0.5, 0.0), ty - 1.0)
    fx = min(max((c + 0.5) / tile - 0.5, 0.0), tx - 1.0)
    i = min(int(fy), ty - 2) if ty > 1 else 0
    j = min(int(fx), tx - 2) if tx > 1 else 0
    a = fy - i
    b = fx - j
    i1 = min(i + 1, ty - 1)
    j1 = min(j + 1, tx - 1)
    return ((1 - a) * ((1 - b) * grid[i, j] + b * grid[i, j1]) + a * ((1 - b) * grid[i1, j] + b * grid[i1, j1]))


@nb.njit(cache=True)
def _block_samples(image, mask, use_mask, tile, step, offset, bi, bj, surface, buf):
    """Every ``step``-th usable pixel each way of block (bi, bj), from ``offset``, into ``buf``, less the
    interpolated ``surface`` (absolute) when one is given (a 0 x 0 array means none); returns how many."""
    h, w = image.shape
    about = surface.shape[0] > 0
    m = 0
    for r in range(bi * tile + offset, min(h, (bi + 1) * tile), step):
        for c in range(bj * tile + offset, min(w, (bj + 1) * tile), step):
            v = float(image[r, c])
            if math.isfinite(v) and not (use_mask and mask[r, c]):
                buf[m] = abs(v - _node(surface, tile, r, c)) if about else v
                m += 1
    return m


@nb.njit(cache=True)
def _grid_stats(image, mask, use_mask, tile, step, apart, bg, sig):
    """Per ``tile`` block, from every ``step``-th pixel each way (NaN if < 8 usable): the background and the noise.

    One pass over a decimated grid in the frame's own dtype (numba's median
    is a selection, not a sort). Background: the median of what lies within
    3 robust sigmas of the block's median (the stars clipped). Noise: 1.4826
    MAD about the background interpolated between the blocks, not about the
    block's median, so that a moonlit gradient across a block is not taken
    for noise.
    """
    ty, tx = bg.shape
    side = (tile + step - 1) // step
    buf = np.empty(side * side)
    dev = np.empty(side * side)
    none = np.empty((0, 0))
    for bi in range(ty):
        for bj in range(tx):
            m = _block_samples(image, mask, use_mask, tile, step, 0, bi, bj, none, buf)
            if m < 8:
                bg[bi, bj] = np.nan
                continue
            med = np.median(buf[:m])
            for k in range(m):
                dev[k] = abs(buf[k] - med)
            lim = 3.0 * 1.4826 * np.median(dev[:m]) + 1e-12
            k = 0
            for i in range(m):
                if abs(buf[i] - med) <= lim:
                    dev[k] = buf[i]
                    k += 1
            bg[bi, bj] = np.median(dev[:k])
    fill = np.median(bg.ravel()[np.isfinite(bg.ravel())]) if np.isfinite(bg).any() else np.nan
    surface = np.where(np.isfinite(bg), bg, fill)
    for bi in range(ty):
        for bj in range(tx):
            # ``apart``: other pixels than the background's, since residuals about an estimate made from the
            # same pixels shrink (~4 % in sigma); detection keeps the same pixels, slightly the more sensitive
            m = _block_samples(image, mask, use_mask, tile, step, step // 2 if apart else 0, bi, bj, surface, buf)
            sig[bi, bj] = 1.4826 * np.median(buf[:m]) if m >= 8 else np.nan


def _fill(grid):
    """NaN nodes (blocks with no usable pixel) take the median of the usable ones."""
    ok = np.isfinite(grid)
    if not ok.any():
        raise ValueError("image has no finite pixels")
    return np.where(ok, grid, np.median(grid[ok]))


def _sky_grid(image, tile, mask=None, samples=16, apart=False):
    """Background and noise on the block grid of ``image`` (any real dtype), ``samples`` x ``samples`` per block."""
    h, w = image.shape
    tile = max(1, min(int(tile), h, w))
    ty, tx = -(-h // tile), -(-w // tile)
    bg = np.empty((ty, tx))
    sig = np.empty((ty, tx))
    use_mask = mask is not None
    _grid_stats(image, mask if use_mask else np.zeros((1, 1), bool), use_mask, tile, max(1, tile // samples), apart,
                bg, sig)
    return _fill(bg), _fill(sig), tile


def _upsample(grid, tile, shape):
    """The block grid bilinearly interpolated to full resolution (block centres at ``tile (i + 1/2) - 1/2``)."""
    if grid.size == 1:
        return np.full(shape, grid[0, 0])
    ty, tx = grid.shape
    full = cv2.resize(grid.astype(np.float32), (tx * tile, ty * tile), interpolation=cv2.INTER_LINEAR)
    return full[: shape[0], : shape[1]].astype(np.float64)


def background_map(image, tile=64, mask=None):
    """Smooth sky background and robust noise (both in image units).

    Sigma-clipped medians of ``tile`` x ``tile`` blocks, each from a 16 x 16
    grid of its pixels (one pass in the frame's own dtype), interpolated back
    to full resolution (bilinear), so a moonlit gradient or vignetting does
    not lift faint stars over the threshold in one corner and bury them in
    another. :func:`detect` uses the same block statistics without the
    full-resolution map.

    Returns
    -------
    background : 2-D array
    sigma : float
        Robust (MAD) standard deviation of the pixels about their block's
        background: the median over the blocks.
    """
    img = as_frame(image)
    mask = as_mask(mask, img.shape)
    bg, sig, tile = _sky_grid(img, as_int(tile, "tile", minimum=4), mask, apart=True)
    return _upsample(bg, tile, img.shape), float(np.median(sig))


@nb.njit(cache=True)
def _find_peaks(filt, image, mask, use_mask, bg, sig, tile, threshold, gain_y, gain_x, dy, dx, box, out):
    """Local maxima of the filtered frame above ``threshold`` local sigmas, brightest test last.

    A block's pixels are first compared with the lowest threshold any pixel
    of the block can have (its 3 x 3 nodes' least background and noise), so
    that only candidates pay for the interpolation and the neighbourhood
    test. A peak is at least every pixel at offsets ``(dy, dx)``; of equal
    neighbours the first in raster order wins (one peak per flat top).
    ``out`` rows: row, column, filtered height above background, local
    sigma, background. ``gain_y``, ``gain_x`` raise the threshold near the
    edges (:func:`_edge_gain`). Returns the number of peaks (at most ``len(out)``).
    """
    h, w = filt.shape
    ty, tx = bg.shape
    r0, r1, c0, c1 = box
    n = 0
    for bi in range(ty):
        for bj in range(tx):
            lo_b = np.inf
            lo_s = np.inf
            for i in range(max(bi - 1, 0), min(bi + 2, ty)):
                for j in range(max(bj - 1, 0), min(bj + 2, tx)):
                    lo_b = min(lo_b, bg[i, j])
                    lo_s = min(lo_s, sig[i, j])
            pre = lo_b + threshold * lo_s
            for r in range(max(bi * tile, r0), min((bi + 1) * tile, r1)):
                for c in range(max(bj * tile, c0), min((bj + 1) * tile, c1)):
                    v = filt[r, c]
                    if v <= pre:
                        continue
                    b = _node(bg, tile, r, c)
                    s = _node(sig, tile, r, c) * gain_y[r] * gain_x[c]
                    if v - b <= threshold * s or not math.isfinite(float(image[r, c])):
                        continue
                    if use_mask and mask[r, c]:
                        continue
                    peak = True
                    for k in range(dy.shape[0]):
                        rr = r + dy[k]
                        cc = c + dx[k]
                        if 0 <= rr < h and 0 <= cc < w:
                            u = filt[rr, cc]
                            if u > v or (u == v and (dy[k] < 0 or (dy[k] == 0 and dx[k] < 0))):
                                peak = False
                                break
                    if peak:
                        if n == out.shape[0]:
                            return n
                        out[n, 0] = r
                        out[n, 1] = c
                        out[n, 2] = v - b
                        out[n, 3] = s
                        out[n, 4] = b
                        n += 1
    return n


def stamp_origins(x, y, size, shape):
    """(column, row) of the first pixel of ``size`` x ``size`` stamps around pixels (x, y), kept inside the frame.

    A stamp near the edge slides inwards rather than hanging off the frame, so
    a window that reaches past the frame also reaches past its stamp and is
    flagged ``edge`` exactly as on the frame.
    """
    h, w = shape
    col = np.clip(np.rint(np.asarray(x, float)).astype(np.int64) - size // 2, 0, max(w - size, 0))
    row = np.clip(np.rint(np.asarray(y, float)).astype(np.int64) - size // 2, 0, max(h - size, 0))
    return np.column_stack([col, row])


@nb.njit(cache=True)
def _cut(image, origins, out):
    h, w = image.shape
    size = out.shape[1]
    for k in range(origins.shape[0]):
        for i in range(size):
            r = origins[k, 1] + i
            for j in range(size):
                c = origins[k, 0] + j
                out[k, i, j] = float(image[r, c]) if 0 <= r < h and 0 <= c < w else np.nan


def cut_stamps(image, origins, size):
    """Float64 ``size`` x ``size`` cut-outs of a frame (any dtype) at ``origins`` (n, 2) (column, row); NaN off it."""
    origins = np.ascontiguousarray(origins, dtype=np.int64).reshape(-1, 2)
    out = np.empty((len(origins), size, size))
    _cut(as_frame(image), origins, out)
    return out


def _filtered(img, smooth, mask):
    """The frame matched-filtered by a Gaussian of radius ``smooth`` (float32; unusable pixels at the local sky)."""
    bad = mask
    if img.dtype.kind == "f":
        nonfinite = ~np.isfinite(img)
        if nonfinite.any():
            bad = nonfinite if bad is None else (bad | nonfinite)
    if bad is not None:
        # a hole must not ring: fill it with the local sky before filtering
        bg, _, tile = _sky_grid(img, 64, bad)
        img = np.where(bad, _upsample(bg, tile, img.shape), img)
    out = img.astype(np.float32)  # OpenCV's float32 blur is ~3x its 16-bit-to-float one
    if smooth:
        k = int(2 * math.ceil(3 * smooth) + 1)
        cv2.GaussianBlur(out, (k, k), smooth, dst=out, borderType=cv2.BORDER_REFLECT)
    return out


def _elongated(stamps, background, peak, row, col):
    """Line-like detections: the connected pixels above half the peak spread along one axis.

    A satellite trail or a lit roof edge crossing a stamp fills it along the
    line: the pixels above half the peak that connect to the peak pixel
    (``row``, ``col`` in each stamp) have coordinates whose larger covariance
    eigenvalue exceeds 4 px^2 and 4x the smaller one. A star, even saturated,
    spreads evenly; a neighbouring star is not connected; half the peak keeps
    a sky gradient out of the measure.
    """
    n, size, _ = stamps.shape
    if n == 0:
        return np.zeros(0, bool)
    with np.errstate(invalid="ignore"):
        above = (stamps - background[:, None, None]) > 0.5 * peak[:, None, None]
    on = np.zeros_like(above)
    on[np.arange(n), row, col] = above[np.arange(n), row, col]
    for _ in range(size):  # grow the peak's region through its 8-connected neighbours
        grown = on.copy()
        grown[:, 1:] |= on[:, :-1]
        grown[:, :-1] |= on[:, 1:]
        grown[:, :, 1:] |= grown[:, :, :-1]
        grown[:, :, :-1] |= grown[:, :, 1:]
        grown &= above
        if np.array_equal(grown, on):
            break
        on = grown
    yy, xx = np.mgrid[0:size, 0:size]
    cnt = np.maximum(on.sum(axis=(1, 2)), 1)
    mx = (on * xx).sum(axis=(1, 2)) / cnt
    my = (on * yy).sum(axis=(1, 2)) / cnt
    cxx = (on * xx**2).sum(axis=(1, 2)) / cnt - mx**2
    cyy = (on * yy**2).sum(axis=(1, 2)) / cnt - my**2
    cxy = (on * xx * yy).sum(axis=(1, 2)) / cnt - mx * my
    half = 0.5 * (cxx + cyy)
    root = np.sqrt(np.maximum(0.25 * (cxx - cyy) ** 2 + cxy**2, 0.0))
    major, minor = half + root, half - root
    return (major > 4.0) & (major > 4.0 * np.maximum(minor, 0.0))


def _edge_gain(n, smooth):
    """Per row (or column) of a frame n px long: the filtered noise's sigma relative to mid-frame.

    Near an edge the reflected border counts pixels twice, so white noise
    comes out of the matched filter up to ~1.4x stronger per axis.
    """
    gain = np.ones(n)
    if not smooth:
        return gain
    g = cv2.getGaussianKernel(int(2 * math.ceil(3 * smooth) + 1), smooth)[:, 0]
    half = len(g) // 2
    base = np.sum(g**2)
    for p in [*range(min(half, n)), *range(max(n - half, half), n)]:
        idx = p + np.arange(-half, half + 1)
        idx = np.where(idx < 0, -idx - 1, idx)
        idx = np.where(idx >= n, 2 * n - idx - 1, idx)
        w = np.bincount(np.clip(idx, 0, n - 1), weights=g, minlength=n)
        gain[p] = math.sqrt(np.sum(w**2) / base)
    return gain


def _region_box(region, shape):
    """(row0, row1, col0, col1) of a region given as (x0, y0, x1, y1) px, and its mask if it is one."""
    h, w = shape
    if region is None:
        return (0, h, 0, w), None
    arr = np.asarray(region)
    if arr.dtype == bool:
        inside = as_mask(arr, shape, "region")
        return (0, h, 0, w), ~inside
    box = np.asarray(region, dtype=float).ravel()
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"region must be (x0, y0, x1, y1) in px or a boolean mask of the frame, got {region!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(x0, x1)), min(w, max(x0, x1))
    y0, y1 = max(0, min(y0, y1)), min(h, max(y0, y1))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"region {region!r} does not overlap the {w}x{h} frame")
    return (y0, y1, x0, x1), None


def detect(image, sensor: Sensor | None = None, *, threshold=5.0, smooth=1.0, roi=5, min_separation=2.5,
           max_stars=None, mask=None, region=None, tile=64, border=0, stamps=None):
    """Find stars in a frame and measure their centre of gravity.

    One pass over the frame in its own dtype: a Gaussian matched filter
    (OpenCV, to float32), sigma-clipped background and noise of the filtered
    frame on a block grid, and local maxima above ``threshold`` local sigmas;
    only the detections are then cut out ("stamps") for the centre of
    gravity. No full-resolution background map is made.

    Parameters
    ----------
    image : 2-D array
        Raw frame (DN), uint8, uint16 or float. Non-finite pixels are ignored.
    sensor : Sensor, optional
        When given, saturated pixels are recognised and ``flux`` is in e-;
        otherwise fluxes stay in image units.
    threshold : float
        Detection threshold in standard deviations of the matched-filtered
        background noise (measured per block, so a bright moon's noisier sky
        does not fill the frame with detections).
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
        Keep only the brightest ``max_stars`` (a tracker needs ~50): the
        centre of gravity is taken for those only.
    mask : 2-D bool array, optional
        True where pixels must be ignored.
    region : (x0, y0, x1, y1) or 2-D bool array, optional
        Search only this box (px, end exclusive) or where the mask is True;
        the background still comes from the whole frame.
    tile : int
        Block size (px) of the background grid.
    border : int
        Ignore maxima closer than this to the image edge.
    stamps : int, optional
        Also return, in ``meta["stamps"]`` and ``meta["stamp_origins"]``, a
        ``stamps`` x ``stamps`` float cut-out of the frame around each star
        (for :func:`startrack.localize` on stamps, without a float copy of the
        frame).

    Returns
    -------
    Table
        One row per star, brightest first: ``id, x_cg, y_cg, peak`` (above
        background, image units), ``flux`` (e- with a sensor, else image
        units), ``background`` (image units), ``snr`` (peak over noise of the
        filtered image), ``npix``, ``saturated`` and ``elongated`` (a piece
        of a line: a trail or a lit edge, not a star). Empty when the sky is
        empty. ``meta``: ``noise_sigma_filtered`` (median over the blocks),
        ``noise_sigma`` (the raw pixels' equivalent white noise),
        ``background_level`` (median background), ``threshold_sigma``,
        ``time_s`` (seconds spent on the background, the peaks and the CG).
    """
    img = as_frame(image)
    roi = as_int(roi, "roi", minimum=2)
    threshold = as_float(threshold, "threshold", positive=True, unit="sigmas")
    smooth = as_float(smooth, "smooth", nonnegative=True, unit="px")
    mask = as_mask(mask, img.shape)
    box, outside = _region_box(region, img.shape)
    search_mask = mask if outside is None else (outside if mask is None else (mask | outside))
    t0 = perf_counter()
    filt = _filtered(img, smooth, mask)
    bg, sig, tile = _sky_grid(filt, as_int(tile, "tile", minimum=4), mask)
    t1 = perf_counter()
    if not np.all(sig > 0):
        sig = np.maximum(sig, max(float(np.max(sig)), 1e-6) * 1e-3)
    rad = max(1, int(min_separation))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rad + 1, 2 * rad + 1))
    dy, dx = (np.nonzero(disk)[k] - rad for k in (0, 1))
    keep = (dy != 0) | (dx != 0)
    b = as_int(border, "border", minimum=0)
    box = (max(box[0], b), min(box[1], img.shape[0] - b), max(box[2], b), min(box[3], img.shape[1] - b))
    use_mask = search_mask is not None
    gain_y, gain_x = _edge_gain(img.shape[0], smooth), _edge_gain(img.shape[1], smooth)
    cap = 4096
    while True:
        found = np.empty((cap, 5))
        n = _find_peaks(filt, img, search_mask if use_mask else np.zeros((1, 1), bool), use_mask, bg, sig, tile,
                        threshold, gain_y, gain_x, dy[keep].astype(np.int64), dx[keep].astype(np.int64), box, found)
        if n < cap:
            break
        cap *= 4
    found = found[:n][np.argsort(-found[:n, 2], kind="stable")]
    if max_stars is not None:
        found = found[: as_int(max_stars, "max_stars", minimum=1)]
    t2 = perf_counter()
    py = found[:, 0].astype(np.int64)
    px = found[:, 1].astype(np.int64)
    size = max(roi + 4, int(stamps or 0))  # room for the elongation test and the fit's window
    origins = stamp_origins(px, py, size, img.shape)
    cut = cut_stamps(img, origins, size)
    if len(px):
        cg = centroid(cut, np.column_stack([px, py]).astype(float), origins=origins, roi=roi,
                      background=found[:, 4], threshold=0.0)
    else:
        cg = dict.fromkeys(("x_cg", "y_cg", "flux_cg", "npix"), np.zeros(0))
    x_cg = np.where(np.isfinite(cg["x_cg"]), cg["x_cg"], px)
    y_cg = np.where(np.isfinite(cg["y_cg"]), cg["y_cg"], py)
    flux = np.asarray(cg["flux_cg"], float)
    sat = np.zeros(len(px), bool)
    if sensor is not None:
        flux = flux / sensor.gain
        if sensor.saturation is not None:
            win = stamp_origins(px, py, roi, img.shape) - origins  # the CG window inside each stamp
            rr = win[:, 1, None, None] + np.arange(roi)[None, :, None]
            cc = win[:, 0, None, None] + np.arange(roi)[None, None, :]
            with np.errstate(invalid="ignore"):
                sat = np.any(cut[np.arange(len(px))[:, None, None], rr, cc] >= sensor.saturation, axis=(1, 2))
    # the filter's noise gain for white noise: the 2-D kernel's L2 norm, (sum g^2) of its separable halves
    norm = float(np.sum(cv2.getGaussianKernel(int(2 * math.ceil(3 * smooth) + 1), smooth) ** 2)) if smooth else 1.0
    t = Table()
    t["id"] = np.arange(1, len(px) + 1)
    t["x_cg"] = x_cg
    t["y_cg"] = y_cg
    t["peak"] = cut[np.arange(len(px)), py - origins[:, 1], px - origins[:, 0]] - found[:, 4]
    t["flux"] = flux
    t["background"] = found[:, 4]
    t["snr"] = found[:, 2] / found[:, 3]
    t["npix"] = np.asarray(cg["npix"])
    t["saturated"] = sat
    t["elongated"] = _elongated(cut, found[:, 4], np.asarray(t["peak"], float), py - origins[:, 1],
                                px - origins[:, 0])
    t.meta["noise_sigma_filtered"] = float(np.median(sig))
    t.meta["noise_sigma"] = float(np.median(sig)) / norm
    t.meta["background_level"] = float(np.median(bg))
    t.meta["threshold_sigma"] = float(threshold)
    t.meta["time_s"] = {"background": t1 - t0, "peaks": t2 - t1, "cg": perf_counter() - t2}
    if stamps:
        t.meta["stamps"] = cut
        t.meta["stamp_origins"] = origins
    return t
