"""Phasor localisation: ePhasor for line-sensor signals and the pSMLM-style 2-D phasor.

A spot's position is the phase of the first Fourier harmonic of a window
around it: for a window of W pixels, ``H1 = sum_k I_k exp(-2 pi i k / W)`` and
``p = -angle(H1) W / (2 pi)``. A constant background cancels exactly, so no
background estimate enters the position. The window is what matters:
:func:`ephasor` (Ma et al., *ePhasor*, embedded 1-D position tracking) sizes it
from the spot itself, a half-width of 4 sigma around the peak, where a fixed
window (:func:`phasor`) either clips a wide spot or lets a narrow spot drown in
background noise. :func:`atca` (an adaptive thresholded centroid) is the
fast centroid the ePhasor paper compares against; :func:`phasor_2d` is the
two-dimensional form of Martens et al. (pSMLM, J. Chem. Phys. 148, 123311, 2018).

Conventions: pixel k of a signal is centred at x = k; positions in pixels.
Every 1-D function takes one signal (1-D) or a batch, one signal per row
(2-D), and runs the batch in parallel numba kernels. Integer signals (the
native output of a line sensor's ADC) are read as they are, without a
float copy.

Bad input: an empty array, a boolean or complex one, or more than two
dimensions raise ``ValueError``. Problems of one signal in a batch give NaN
and a bit in the flags (:data:`PHASOR_FLAGS`, reported by
:func:`startrack.microscope.track1d`): a non-finite pixel, a signal with no
peak above its baseline (constant, all zero), a peak on the first or last
pixel (the spot may be partly off the sensor). A window that reaches the end
of the signal is narrowed to stay centred on the peak and flagged.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba.core import types
from numba.extending import overload

from ..flags import NO_SIGNAL, NONFINITE, PEAK_AT_EDGE, PHASOR_FLAGS, WINDOW_CLIPPED
from ..validate import as_float, as_int, as_stack

__all__ = ["ephasor", "phasor", "atca", "phasor_2d", "PHASOR_FLAGS", "OPTIMAL_WINDOW", "line_kernel"]

#: Kernel modes: what a window of the signal is turned into.
EPHASOR, FIXED_PHASOR, CENTROID = 0, 1, 2

# Threshold (fraction of peak above baseline) of the width estimate, and
# m2 / sigma^2 of a Gaussian cut there: int_{-a}^{a} x^2 (g - f) / int (g - f),
# g = exp(-x^2/2), a = sqrt(-2 ln f); evaluated numerically once below.
_WIDTH_FRACTION = 0.2
_BLOCK = 64  # pixels per block of the peak/baseline scan: long enough to vectorise, short enough to be local
_MIN_HALF_WIDTH = 2  # a narrower window aliases the harmonic of a pixel-sized spot

#: Default window half-width of :func:`ephasor` in spot sigmas. With a noise
#: variance v per pixel the phasor's variance is ~ (W/2pi)^2 (W v / 2) / |H1|^2 and
#: |H1| ~ exp(-2 pi^2 sigma^2 / W^2): smallest at W = 2 pi sqrt(2/3) sigma, half of which is this.
OPTIMAL_WINDOW = math.pi * math.sqrt(2.0 / 3.0)


def _truncated_moment_ratio(f):
    a = math.sqrt(-2.0 * math.log(f))
    x = np.linspace(-a, a, 200001)
    g = np.exp(-0.5 * x * x) - f
    return float(np.sum(g * x * x) / np.sum(g))


_WIDTH_RATIO = _truncated_moment_ratio(_WIDTH_FRACTION)


def _twiddles(wmax):
    """``exp(-2 pi i (k - (W - 1)/2) / W)`` for k < W, for every window width W <= wmax.

    Row ``W (W - 1) / 2 + k`` holds (cos, sin) of pixel k of a W-pixel window.
    """
    w = np.repeat(np.arange(1, wmax + 1), np.arange(1, wmax + 1))
    k = np.arange(w.size) - w * (w - 1) // 2
    a = -2.0 * np.pi * (k - 0.5 * (w - 1)) / w
    return np.ascontiguousarray(np.column_stack([np.cos(a), np.sin(a)]))


# Windows up to 256 px (a 4-sigma window of a 30 px spot) read their twiddles from this
# table (0.5 MB, of which a tracker touches the few rows of its window widths).
_TW_MAX = 256
_TWIDDLE = _twiddles(_TW_MAX)


def _zero_sum(s):
    """0 in the type that sums a block of ``s`` exactly and vectorises (numba only)."""


@overload(_zero_sum)
def _zero_sum_impl(s):
    if isinstance(s.dtype, types.Integer):
        if s.dtype.bitwidth <= 16:
            return lambda s: np.int32(0)
        return lambda s: np.int64(0)
    return lambda s: 0.0


_FM = {"reassoc", "nsz", "contract", "arcp"}  # no 'nnan': the NaN test on the total must survive


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _block(s, lo, size):
    """Sum and maximum of ``size`` pixels from ``lo``; inlined so that a literal size vectorises."""
    blk = s[lo:lo + size]
    acc = _zero_sum(s)
    m = blk[0]
    for j in range(size):
        v = blk[j]
        acc += v
        m = max(m, v)
    return acc, m


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _blocks(s, nblk, size):
    """Over ``nblk`` blocks of ``size`` px: the maximum, its block, the lowest block sum and the total."""
    best = s[0]
    bestblk = 0
    low = np.inf
    total = 0.0
    for k in range(nblk):
        acc, m = _block(s, k * size, size)
        total += acc
        low = min(low, acc)
        if m > best:
            best = m
            bestblk = k
    return best, bestblk, low, total


@nb.njit(cache=True, fastmath=_FM, error_model="numpy")
def _scan(s):
    """One pass: peak pixel, baseline (lowest block mean) and whether every pixel is finite.

    Block means rather than the minimum pixel: the minimum of a noisy signal
    sits several noise sigmas below the true baseline, a 64-pixel block mean
    only ``1/8`` of one. Signals shorter than 256 pixels use four blocks.
    """
    n = s.shape[0]
    size = _BLOCK if n >= 4 * _BLOCK else max(n // 4, 1)
    nblk = n // size
    if size == _BLOCK:  # the literal block size lets the compiler vectorise the block loop
        best, bestblk, low, total = _blocks(s, nblk, _BLOCK)
    else:
        best, bestblk, low, total = _blocks(s, nblk, size)
    lo = bestblk * size
    for j in range(nblk * size, n):  # the tail shorter than a block: peak search only
        v = s[j]
        total += v
        if v > best:
            best = v
            lo = nblk * size
    p = lo
    for j in range(lo, n):
        if s[j] == best:
            p = j
            break
    return p, low / size, math.isfinite(total)


@nb.njit(cache=True, error_model="numpy")
def _moments(s, p, base, frac):
    """Centroid and second moment of the connected run of pixels above ``base + frac (s[p] - base)`` around p.

    Weights are the excess over that threshold, so the run's ends enter
    smoothly; the sums are taken while walking out from the peak.
    Returns (centroid, variance, sum of weights).
    """
    n = s.shape[0]
    thr = base + frac * (s[p] - base)
    sw = s[p] - thr
    sx = 0.0
    sxx = 0.0
    for step in (-1, 1):
        j = p + step
        while 0 <= j < n and s[j] > thr:
            w = s[j] - thr
            d = j - p
            sw += w
            sx += w * d
            sxx += w * d * d
            j += step
    if not sw > 0.0:
        return np.nan, np.nan, 0.0
    c = sx / sw
    return p + c, max(sxx / sw - c * c, 0.0), sw


@nb.njit(cache=True, fastmath=_FM, error_model="numpy")
def _harmonic_position(s, lo, w, tab):
    """Position from the phase of the first harmonic over the ``w`` pixels from ``lo``.

    The phase is taken about the window centre ``lo + (w - 1)/2``, so it
    stays inside (-pi, pi) and needs no unwrapping.
    """
    re = 0.0
    im = 0.0
    if w <= _TW_MAX:
        o = w * (w - 1) // 2
        for k in range(w):
            v = s[lo + k]
            re += v * tab[o + k, 0]
            im += v * tab[o + k, 1]
    else:
        for k in range(w):
            a = -2.0 * math.pi * (k - 0.5 * (w - 1)) / w
            re += s[lo + k] * math.cos(a)
            im += s[lo + k] * math.sin(a)
    return lo + 0.5 * (w - 1) - math.atan2(im, re) * w / (2.0 * math.pi)


@nb.njit(cache=True)
def _box_smooth(s, k, out):
    """Centred running mean of odd width k (shrinking at the ends), into ``out``."""
    n = s.shape[0]
    r = k // 2
    acc = 0.0
    cnt = 0
    for j in range(min(r, n)):
        acc += s[j]
        cnt += 1
    for j in range(n):
        if j + r < n:
            acc += s[j + r]
            cnt += 1
        if j - r - 1 >= 0:
            acc -= s[j - r - 1]
            cnt -= 1
        out[j] = acc / cnt


@nb.njit(cache=True, error_model="numpy")
def _one(s, ref, mode, param, frac, smooth, tab):
    """Locate the spot of one signal: (position, sigma, half-width, peak, baseline, flags).

    ``mode``: EPHASOR (window ``param`` sigmas), FIXED_PHASOR (half-width
    ``param`` px) or CENTROID (threshold fraction ``frac``). Peak, baseline
    and width are read from ``ref``: the signal itself, or its running mean
    of ``smooth`` pixels; the phasor always reads the raw signal ``s``, whose
    first-harmonic phase a symmetric smoothing would not change.
    """
    n = s.shape[0]
    nan = np.nan
    p, base, finite = _scan(ref)
    peak = float(ref[p])
    if not finite:
        return nan, nan, nan, nan, nan, NONFINITE
    if not peak > base:
        return nan, nan, nan, peak, base, NO_SIGNAL
    if p == 0 or p == n - 1:
        return nan, nan, nan, peak, base, PEAK_AT_EDGE
    sigma = nan
    if mode == FIXED_PHASOR:
        h = int(param)
    else:
        c, var, sw = _moments(ref, p, base, frac if mode == CENTROID else _WIDTH_FRACTION)
        if not sw > 0.0:
            return nan, nan, nan, peak, base, NO_SIGNAL
        if mode == CENTROID:
            return c, nan, nan, peak, base, 0
        # Undo the cut at the threshold, the running mean and the pixel's own width (1/12 px^2).
        sigma = math.sqrt(max(var / _WIDTH_RATIO - (smooth * smooth - 1) / 12.0 - 1.0 / 12.0, 0.0))
        h = max(int(param * sigma), _MIN_HALF_WIDTH)  # the odd width 2h + 1 nearest to 2 param sigma
    flags = 0
    room = min(p, n - 1 - p)
    if h > room:
        h = room
        flags = WINDOW_CLIPPED
    return _harmonic_position(s, p - h, 2 * h + 1, tab), sigma, h, peak, base, flags


@nb.njit(cache=True)
def _one_smoothed(s, mode, param, frac, smooth, buf, tab):
    """:func:`_one` with peak, baseline and width from a running mean of ``smooth`` px, held in ``buf``."""
    _box_smooth(s, smooth, buf)
    return _one(s, buf[:s.shape[0]], mode, param, frac, smooth, tab)


@nb.njit(cache=True)
def _line_single(s, mode, param, frac, smooth, tab):
    """One signal without the thread pool (a tracker's per-frame call)."""
    if smooth > 1:
        return _one_smoothed(s, mode, param, frac, smooth, np.empty(s.shape[0]), tab)
    return _one(s, s, mode, param, frac, 1, tab)


@nb.njit(cache=True, parallel=True)
def _line_batch(signals, mode, param, frac, smooth, tab, x, sigma, hw, peak, base, flags, nthreads):
    # One output array per quantity: six sequential write streams cost less than rows of a 2-D table.
    n, length = signals.shape
    per = (n + nthreads - 1) // nthreads
    for t in nb.prange(nthreads):
        if smooth > 1:
            buf = np.empty(length)
            for k in range(t * per, min(n, (t + 1) * per)):
                x[k], sigma[k], hw[k], peak[k], base[k], flags[k] = _one_smoothed(signals[k], mode, param, frac,
                                                                                  smooth, buf, tab)
        else:
            for k in range(t * per, min(n, (t + 1) * per)):
                x[k], sigma[k], hw[k], peak[k], base[k], flags[k] = _one(signals[k], signals[k], mode, param, frac,
                                                                         1, tab)


_INT_OK = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)


def as_signals(signal, name="signal"):
    """Validate line-sensor signals: a 2-D C-contiguous array, one signal per row, and whether one was given.

    Integer types up to 32 bits and float32/float64 pass through unchanged;
    other integer types become float64.
    """
    arr = np.asarray(signal)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be one signal (1-D) or one signal per row (2-D), got shape {arr.shape}")
    if arr.shape[-1] < 3:
        raise ValueError(f"{name} needs at least 3 pixels per signal, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype.type not in _INT_OK and arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    single = arr.ndim == 1
    return np.ascontiguousarray(arr.reshape(-1, arr.shape[-1])), single


def _check_smooth(smooth):
    if smooth is None or smooth == 1:
        return 1
    return as_int(smooth, "smooth (an odd number of pixels, e.g. 3 or 5, or None)", minimum=1, odd=True)


def line_kernel(signals, mode, param, *, frac=_WIDTH_FRACTION, smooth=None):
    """Run one of the line-signal estimators on a batch.

    Returns
    -------
    x, sigma, half_width, peak, baseline : ndarray (n,)
        Position (px), width sigma (px, ePhasor only), window half-width
        (px, phasors), peak value and baseline (signal units).
    flags : ndarray of int (n,)
        :data:`PHASOR_FLAGS`.

    Used by the public functions and :func:`startrack.microscope.track1d`;
    ``signals`` as from :func:`as_signals`.
    """
    n = signals.shape[0]
    cols = tuple(np.empty(n) for _ in range(5)) + (np.empty(n, np.int64),)
    smooth = _check_smooth(smooth)
    if n == 1:
        single = _line_single(signals[0], mode, float(param), float(frac), smooth, _TWIDDLE)
        for col, value in zip(cols, single, strict=True):
            col[0] = value
    else:
        _line_batch(signals, mode, float(param), float(frac), smooth, _TWIDDLE, *cols, nb.get_num_threads())
    return cols


def _result(pos, single):
    return float(pos[0]) if single else pos


def ephasor(signal, *, smooth=None, window=OPTIMAL_WINDOW):
    """Position of the spot on a line-sensor signal by the ePhasor algorithm.

    Peak pixel = the maximum; baseline = the lowest 64-pixel block mean;
    width sigma from the second moment of the connected pixels more than 20 %
    of the peak above the baseline (corrected for that cut and for the pixel
    width); position from the phase of the first Fourier harmonic of a window
    centred on the peak pixel, of the odd width nearest to ``2 window sigma``
    (at least 5 px).

    The paper (Ma et al.) uses a half-width of 4 sigma, near-optimal in its
    Fig. 2. With the noise of its own Fig. 3 (background 20 % of the peak
    plus 100 e- of read noise) a 4-sigma window is 20-30 % less precise
    than the best one; the default here, 2.57 sigma, minimises the
    phasor's variance when the noise is mostly uniform background and read
    noise, and costs at most ~8 % when the spot's own shot noise dominates
    (``benchmarks/bench_micro.py`` measures both). The narrower window cuts
    more of the tails, a bias of up to 3e-3 px at sigma = 1 px (a 5-px
    window) and 4e-4 px from sigma = 2 px (noise-free); at very high signal
    levels, where that matters, ``window=4`` leaves < 2e-4 px.

    Parameters
    ----------
    signal : array, shape (n_pixels,) or (n_signals, n_pixels)
        One signal, or one per row (a batch, run in parallel). Any real
        dtype; integers are read without conversion.
    smooth : odd int, optional
        Width (px) of a running mean used to find the peak and the width of
        weak signals; the phase is always taken from the raw signal.
    window : float
        Half-width of the window in units of the measured sigma
        (:data:`OPTIMAL_WINDOW` = pi sqrt(2/3) by default; 4 is the paper's).

    Returns
    -------
    float or ndarray, shape (n_signals,)
        Position in pixels (pixel k centred at k). NaN for a signal with a
        non-finite pixel, no peak above its baseline or the peak on the first
        or last pixel; :func:`startrack.microscope.track1d` gives the reason
        as a flag.

    Examples
    --------
    >>> import numpy as np
    >>> k = np.arange(64)
    >>> signal = 100 + 1000 * np.exp(-0.5 * ((k - 30.3) / 2.0) ** 2)
    >>> round(ephasor(signal), 3)
    30.3
    """
    window = as_float(window, "window", positive=True, unit="sigmas")
    sig, single = as_signals(signal)
    return _result(line_kernel(sig, EPHASOR, window, smooth=smooth)[0], single)


def phasor(signal, half_width, *, smooth=None):
    """Conventional phasor position with a fixed window of ``half_width`` px around the peak pixel.

    The user-defined window of the ePhasor paper's comparison ("Phasor(4)",
    "Phasor(20)"): right for one spot width, wrong for others. Parameters and
    result as :func:`ephasor`.
    """
    half_width = as_int(half_width, "half_width", minimum=1)
    sig, single = as_signals(signal)
    return _result(line_kernel(sig, FIXED_PHASOR, half_width, smooth=smooth)[0], single)


def atca(signal, *, fraction=0.2, smooth=None):
    """Adaptive thresholded centroid (ATCA-like) of a line-sensor signal.

    The threshold adapts to each signal: ``baseline + fraction (peak -
    baseline)``; the centroid is taken over the connected run of pixels above
    it around the peak, each weighted by its excess over the threshold. This
    is the family of the optimised adaptive centroid of Chen et al. (Opt.
    Lett. 46, 1616, 2021) the ePhasor paper compares against, not a copy of
    its exact rules. Parameters and result as :func:`ephasor`.
    """
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction < 1.0):
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    sig, single = as_signals(signal)
    return _result(line_kernel(sig, CENTROID, 0.0, frac=fraction, smooth=smooth)[0], single)


@nb.njit(cache=True, parallel=True)
def _phasor2d_batch(rois, tab, out, nthreads):
    n, ny, nx = rois.shape
    per = (n + nthreads - 1) // nthreads
    for t in nb.prange(nthreads):
        px = np.empty(nx)
        py = np.empty(ny)
        for k in range(t * per, min(n, (t + 1) * per)):
            px[:] = 0.0
            py[:] = 0.0
            for i in range(ny):
                for j in range(nx):
                    v = rois[k, i, j]
                    px[j] += v
                    py[i] += v
            # The first harmonic of the 2-D ROI along x is that of its column sums.
            out[k, 0] = _harmonic_position(px, 0, nx, tab)
            out[k, 1] = _harmonic_position(py, 0, ny, tab)


def phasor_2d(roi):
    """pSMLM-style 2-D phasor position of a spot in a region of interest.

    The phases of the first Fourier coefficients of the ROI along x and y
    (Martens et al. 2018) give the position; the ROI should be centred on the
    spot and about 3-4 PSF sigmas wide each side (a constant background
    cancels, a neighbouring spot does not).

    Parameters
    ----------
    roi : array, shape (ny, nx) or (n, ny, nx)
        One ROI or a stack (run in parallel).

    Returns
    -------
    (x, y) tuple of float, or ndarray (n, 2)
        Position in ROI pixel coordinates (pixel (i, j) centred at x=j, y=i).
    """
    stack = as_stack(roi, "roi", min_size=3)
    out = np.empty((stack.shape[0], 2))
    _phasor2d_batch(stack, _TWIDDLE, out, nb.get_num_threads())
    if np.ndim(roi) == 2:
        return float(out[0, 0]), float(out[0, 1])
    return out
