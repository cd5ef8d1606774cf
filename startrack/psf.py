"""PSF models behind one interface.

Every model answers one question for a batch of stars: *which fraction of a
star's flux does each pixel of a region of interest record, and how does that
fraction change when the star moves?* :meth:`PSFModel.render` returns the
pixel values and their x/y derivatives on an ROI grid. The fitter
(:func:`startrack.localize`), the Cramér–Rao bound (:mod:`startrack.crlb`) and
the simulator (:mod:`startrack.simulate`) use nothing else, so a new model
(the data-built ePSF, a per-pixel turntable ePSF) plugs in without touching them.

Conventions: pixel (row i, column j) is centred at (x=j, y=i) and spans
[j-0.5, j+0.5); positions are in pixels.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["PSFModel", "GaussianPSF", "GaussianMixturePSF", "parse_psf", "roi_origin"]


@nb.njit(cache=True)
def origin(pos, roi):
    """First pixel index of an ``roi``-wide window centred as nearly as possible on ``pos``.

    For odd ``roi`` the window is centred on the pixel containing ``pos``; for
    even ``roi`` on the pixel corner nearest to ``pos``. Usable inside kernels.
    """
    return int(math.floor(pos - (roi - 1) / 2.0 + 0.5))


@nb.njit(cache=True)
def _origins(pos, roi):
    out = np.empty(pos.shape[0], np.int64)
    for k in range(pos.shape[0]):
        out[k] = origin(pos[k], roi)
    return out


def roi_origin(pos, roi):
    """:func:`origin` for a scalar or an array of positions (int64 array out)."""
    pos = np.asarray(pos, dtype=np.float64)
    return _origins(np.ascontiguousarray(pos.ravel()), int(roi)).reshape(pos.shape)


#: Renderer kinds known to :func:`render_one` (the fitter's fused kernel).
GAUSSIAN = 0
GRID = 1
PIXEL_GRID = 2
GAUSSIAN_MIXTURE = 3


class PSFModel:
    """Interface of a pixel-integrated PSF model.

    A model is three things the numba kernels understand: ``kind`` (which
    branch of :func:`render_one` renders it), ``params`` (1-D float64 array)
    and ``table`` (3-D float64 array, e.g. spline coefficients; ``(0, 0, 0)``
    when unused). Subclasses set them and :meth:`render` follows.

    Attributes
    ----------
    support : float
        Radius in pixels beyond which the model records a negligible fraction
        of the flux; used to size simulation stamps and default ROIs.
    """

    kind: int = -1
    support: float = 3.0
    params: np.ndarray = np.zeros(0)
    table: np.ndarray = np.zeros((0, 0, 0))

    def render(self, x, y, x0, y0, shape, second=False):
        """Pixel fractions of unit flux and their derivatives for a batch of stars.

        Parameters
        ----------
        x, y : array-like, shape (n,)
            Star positions in pixels.
        x0, y0 : array-like of int, shape (n,)
            Column and row of each ROI's first pixel.
        shape : tuple (ny, nx)
            ROI size in pixels.
        second : bool
            Also return the second derivatives.

        Returns
        -------
        value, d_dx, d_dy[, d2_dx2, d2_dxdy, d2_dy2] : ndarray, shape (n, ny, nx)
            ``value[k, i, j]``: fraction of star k's flux recorded by pixel
            ``(y0[k] + i, x0[k] + j)``; the derivatives are with respect to
            the star's x/y position (1/px, 1/px^2).
        """
        ny, nx = (int(s) for s in shape)
        x, y = np.broadcast_arrays(np.atleast_1d(np.asarray(x, np.float64)), np.atleast_1d(np.asarray(y, np.float64)))
        x0, y0 = np.broadcast_arrays(np.atleast_1d(np.asarray(x0, np.int64)), np.atleast_1d(np.asarray(y0, np.int64)))
        out = _render_batch(self.kind, np.ascontiguousarray(self.params, np.float64),
                            np.ascontiguousarray(self.table, np.float64),
                            np.ascontiguousarray(x.ravel()), np.ascontiguousarray(y.ravel()),
                            np.ascontiguousarray(x0.ravel()), np.ascontiguousarray(y0.ravel()), ny, nx, bool(second))
        return tuple(out[:, i] for i in range(6 if second else 3))

    def default_roi(self) -> int:
        """Odd ROI width (px) that holds the model's support, at least 5."""
        return int(max(5, 2 * math.ceil(self.support) + 1))

    def image(self, x, y, shape, flux=1.0):
        """Noise-free image (``flux`` times the pixel fractions) of one star on a ``shape`` grid."""
        val, _, _ = self.render([float(x)], [float(y)], [0], [0], shape)
        return flux * val[0]

    @property
    def spec(self) -> str:
        """Short text form accepted by :func:`parse_psf`."""
        raise NotImplementedError


_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_LOG2E = 1.0 / math.log(2.0)
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2^20
_LN2_LO = 1.90821492927058770002e-10
_INV_FACTORIALS = tuple(1.0 / math.factorial(j) for j in range(14))
# Kernels that vectorise: sums may be reordered and divisions need no Python zero-division
# check; NaN and inf keep their IEEE meaning.
VECTOR_MATH = {"reassoc", "contract", "nsz", "arcp"}
# Edge rows of the render work space are padded to whole multiples of this many lanes: loops of a
# dozen iterations otherwise run in LLVM's scalar remainder instead of on SIMD vectors.
_LANES = 16


@nb.njit(cache=True)
def _edge_width(ny, nx):
    """Length of the edge rows: both axes' nx + ny + 2 pixel edges, padded to whole lanes."""
    return -(-(nx + ny + 2) // _LANES) * _LANES


@nb.njit(cache=True)
def work_shape(ny, nx):
    """(rows, width) of the scratch array :func:`render_one` needs for an ``ny`` x ``nx`` ROI."""
    return 9, max(ny, nx, _edge_width(ny, nx))


@nb.njit(cache=True, fastmath=VECTOR_MATH, error_model="numpy")
def _normal_edges(t, tail, pdf, n):
    """Upper normal tail Q(|t|) = erfc(|t|/sqrt 2)/2 and density phi(t) of ``t[:n]``, on SIMD vectors.

    numba's ``math.erfc`` and ``math.exp`` are libm calls that neither vectorise
    nor share work (PyPI's llvmlite has no SVML). Here ``exp`` is a range
    reduction to ``2^k e^r`` (the power of two built on the bits, ``e^r`` by its
    Taylor series to r^13, |r| <= ln2/2), and the tail is W. J. Cody's rational
    approximations of erf/erfc (Math. Comp. 23, 631, 1969; the coefficients of
    his CALERF) in the form ``exp(-x^2) R(x)``, so one exponential serves both.
    All three of Cody's intervals are evaluated and one is selected, so the
    loop has no branches. Relative error < 3e-13 wherever the tail is a normal
    float. ``pdf`` holds the powers of two until it is overwritten.
    """
    scale = pdf.view(np.int64)
    for e in range(n):
        k = max(math.floor(-0.5 * t[e] * t[e] * _LOG2E + 0.5), -1022.0)
        scale[e] = (np.int64(k) + 1023) << 52
        tail[e] = k
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13 = _INV_FACTORIALS
    for e in range(n):
        y = -0.5 * t[e] * t[e]
        k = tail[e]
        r = (y - k * _LN2_HI) - k * _LN2_LO
        ex = ((((((((((((c13 * r + c12) * r + c11) * r + c10) * r + c9) * r + c8) * r + c7) * r + c6) * r
                    + c5) * r + c4) * r + c3) * r + c2) * r + c1) * r + c0
        ex = ex * pdf[e] if y > -708.0 else 0.0  # exp(-t^2/2); below e^-708 it is not a normal float
        x = abs(t[e]) * _SQRT1_2
        z = x * x
        # erf(x) = x n1(z)/d1(z) for x <= 0.46875
        n1 = ((((1.85777706184603153e-1 * z + 3.16112374387056560e0) * z + 1.13864154151050156e2) * z
               + 3.77485237685302021e2) * z + 3.20937758913846947e3)
        d1 = ((((z + 2.36012909523441209e1) * z + 2.44024637934444173e2) * z + 1.28261652607737228e3) * z
              + 2.84423683343917062e3)
        # erfc(x) = exp(-x^2) n2(x)/d2(x) for 0.46875 < x <= 4
        n2 = ((((((((2.15311535474403846e-8 * x + 5.64188496988670089e-1) * x + 8.88314979438837594e0) * x
                   + 6.61191906371416295e1) * x + 2.98635138197400131e2) * x + 8.81952221241769090e2) * x
                 + 1.71204761263407058e3) * x + 2.05107837782607147e3) * x + 1.23033935479799725e3)
        d2 = ((((((((x + 1.57449261107098347e1) * x + 1.17693950891312499e2) * x + 5.37181101862009858e2) * x
                   + 1.62138957456669019e3) * x + 3.29079923573345963e3) * x + 4.36261909014324716e3) * x
                + 3.43936767414372164e3) * x + 1.23033935480374942e3)
        # erfc(x) = exp(-x^2) (1/sqrt(pi) - n3/(z d3)) / x for x > 4: Cody's series in 1/z times z^5
        n3 = (((((6.58749161529837803e-4 * z + 1.60837851487422766e-2) * z + 1.25781726111229246e-1) * z
                + 3.60344899949804439e-1) * z + 3.05326634961232344e-1) * z + 1.63153871373020978e-2)
        d3 = (((((2.33520497626869185e-3 * z + 6.05183413124413191e-2) * z + 5.27905102951428412e-1) * z
                + 1.87295284992346047e0) * z + 2.56852019228982242e0) * z + 1.0)
        if x <= 0.46875:
            num = 0.5 * (d1 - x * n1)
            den = d1
            f = 1.0
        elif x <= 4.0:
            num = n2
            den = d2
            f = 0.5 * ex
        else:
            num = _INV_SQRT_PI * z * d3 - n3
            den = x * z * d3
            f = 0.5 * ex
        tail[e] = f * (num / den)
        pdf[e] = ex * _INV_SQRT_2PI


@nb.njit(cache=True, fastmath=VECTOR_MATH, error_model="numpy")
def _axis_edges(c, first, n, inv, t, off):
    """Pixel edges first-0.5 .. first+n-0.5 of one axis in units of sigma from c, into t[off:off+n+1]."""
    for e in range(n + 1):
        t[off + e] = (first - 0.5 + e - c) * inv


@nb.njit(cache=True, fastmath=VECTOR_MATH, error_model="numpy")
def _axis_profile(t, tail, pdf, off, n, inv, val, der, der2):
    """Fraction of a 1-D Gaussian over n pixels and its 1st/2nd derivatives in the centre.

    Takes the edges written by :func:`_axis_edges` and their tails and
    densities; each pixel uses the tails on the far side of the mean, so that
    tiny tail fractions keep full precision.
    """
    for k in range(n):
        a = off + k
        if t[a] >= 0.0:  # both edges above the mean: difference of upper tails
            val[k] = tail[a] - tail[a + 1]
        elif t[a + 1] <= 0.0:  # both below: difference of lower tails
            val[k] = tail[a + 1] - tail[a]
        else:  # the pixel holds the mean
            val[k] = 1.0 - tail[a] - tail[a + 1]
        der[k] = (pdf[a] - pdf[a + 1]) * inv
        der2[k] = (t[a] * pdf[a] - t[a + 1] * pdf[a + 1]) * inv * inv


@nb.njit(cache=True, fastmath=VECTOR_MATH, error_model="numpy")
def _gaussian_profiles(x, y, sx, sy, x0, y0, nx, ny, work):
    """x and y profiles of a pixel-integrated Gaussian into work rows 0-2 and 3-5 (rows 6-8: edges)."""
    t, tail, pdf = work[6], work[7], work[8]
    ix, iy = 1.0 / sx, 1.0 / sy
    _axis_edges(x, x0, nx, ix, t, 0)
    _axis_edges(y, y0, ny, iy, t, nx + 1)
    width = _edge_width(ny, nx)
    t[nx + ny + 2:width] = 0.0
    _normal_edges(t, tail, pdf, width)
    _axis_profile(t, tail, pdf, 0, nx, ix, work[0], work[1], work[2])
    _axis_profile(t, tail, pdf, nx + 1, ny, iy, work[3], work[4], work[5])


@nb.njit(cache=True, fastmath=VECTOR_MATH, error_model="numpy")
def _gaussian_one(params, x, y, x0, y0, out, work, second):
    ny, nx = out.shape[1], out.shape[2]
    _gaussian_profiles(x, y, params[0], params[1], x0, y0, nx, ny, work)
    flat = out.reshape((6, ny * nx))
    for i in range(ny):
        vy, gy, hy = work[3, i], work[4, i], work[5, i]
        for j in range(nx):
            p = i * nx + j
            flat[0, p] = vy * work[0, j]
            flat[1, p] = vy * work[1, j]
            flat[2, p] = gy * work[0, j]
            if second:
                flat[3, p] = vy * work[2, j]
                flat[4, p] = gy * work[1, j]
                flat[5, p] = hy * work[0, j]


@nb.njit(cache=True)
def _mixture_one(params, x, y, x0, y0, out, work, second):
    """Sum of pixel-integrated Gaussians; ``params`` holds (weight, sigma, dx, dy) per component."""
    ny, nx = out.shape[1], out.shape[2]
    vx, gx, hx = work[0, :nx], work[1, :nx], work[2, :nx]
    vy, gy, hy = work[3, :ny], work[4, :ny], work[5, :ny]
    out[:, :, :] = 0.0
    for c in range(params.shape[0] // 4):
        wgt, sig = params[4 * c], params[4 * c + 1]
        _gaussian_profiles(x + params[4 * c + 2], y + params[4 * c + 3], sig, sig, x0, y0, nx, ny, work)
        for i in range(ny):
            for j in range(nx):
                out[0, i, j] += wgt * vy[i] * vx[j]
                out[1, i, j] += wgt * vy[i] * gx[j]
                out[2, i, j] += wgt * gy[i] * vx[j]
                if second:
                    out[3, i, j] += wgt * vy[i] * hx[j]
                    out[4, i, j] += wgt * gy[i] * gx[j]
                    out[5, i, j] += wgt * hy[i] * vx[j]


@nb.njit(cache=True)
def _bspline_weights(t, scale):
    """Uniform cubic B-spline weights of the four knots around fraction ``t`` in [0, 1),
    and their first and second derivatives times ``scale`` and ``scale**2``."""
    s = 1.0 - t
    t2 = t * t
    sc2 = scale * scale
    w = (s * s * s / 6.0, (3.0 * t2 * t - 6.0 * t2 + 4.0) / 6.0, (-3.0 * t2 * t + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
         t2 * t / 6.0)
    dw = (-0.5 * s * s * scale, (1.5 * t2 - 2.0 * t) * scale, (-1.5 * t2 + t + 0.5) * scale, 0.5 * t2 * scale)
    hw = (s * sc2, (3.0 * t - 2.0) * sc2, (1.0 - 3.0 * t) * sc2, t * sc2)
    return w, dw, hw


@nb.njit(cache=True)
def _grid_one(params, table, x, y, x0, y0, out, second):
    """Cubic B-spline ePSF: the value of a pixel is ``ePSF(pixel centre - star)``.

    ``table[0]`` holds the spline coefficients on a grid of spacing
    ``1/params[0]`` px whose node (row ``params[2]``, column ``params[1]``)
    is offset (0, 0); coefficients off the table are zero. Pixels are a whole
    number of nodes apart, so the knot weights are computed once per star
    and each pixel is a 4x4 tensor product. The derivatives are those of the
    spline itself (exact for the interpolant); d/dx of a pixel is minus
    d/d(offset), hence the negative scale.
    """
    ny, nx = out.shape[1], out.shape[2]
    coef = table[0]
    nrow, ncol = coef.shape
    os = params[0]
    step = int(os)
    u = (x0 - x) * os + params[1]
    v = (y0 - y) * os + params[2]
    iu = int(math.floor(u))
    iv = int(math.floor(v))
    wx, dwx, hwx = _bspline_weights(u - iu, -os)
    wy, dwy, hwy = _bspline_weights(v - iv, -os)
    for i in range(ny):
        rb = iv - 1 + i * step
        for j in range(nx):
            cb = iu - 1 + j * step
            v0 = 0.0
            gx = 0.0
            gy = 0.0
            hxx = 0.0
            hxy = 0.0
            hyy = 0.0
            inside = cb >= 0 and cb + 3 < ncol
            for a in range(4):
                r = rb + a
                if r < 0 or r >= nrow:
                    continue
                if inside:
                    q0 = coef[r, cb]
                    q1 = coef[r, cb + 1]
                    q2 = coef[r, cb + 2]
                    q3 = coef[r, cb + 3]
                    s0 = q0 * wx[0] + q1 * wx[1] + q2 * wx[2] + q3 * wx[3]
                    s1 = q0 * dwx[0] + q1 * dwx[1] + q2 * dwx[2] + q3 * dwx[3]
                    s2 = q0 * hwx[0] + q1 * hwx[1] + q2 * hwx[2] + q3 * hwx[3]
                else:
                    s0 = 0.0
                    s1 = 0.0
                    s2 = 0.0
                    for b in range(4):
                        c = cb + b
                        if 0 <= c < ncol:
                            q = coef[r, c]
                            s0 += q * wx[b]
                            s1 += q * dwx[b]
                            s2 += q * hwx[b]
                v0 += wy[a] * s0
                gx += wy[a] * s1
                gy += dwy[a] * s0
                hxx += wy[a] * s2
                hxy += dwy[a] * s1
                hyy += hwy[a] * s0
            out[0, i, j] = v0
            out[1, i, j] = gx
            out[2, i, j] = gy
            if second:
                out[3, i, j] = hxx
                out[4, i, j] = hxy
                out[5, i, j] = hyy


@nb.njit(cache=True)
def _segment(breaks, v):
    """Interval k with breaks[k] <= v < breaks[k+1], clamped so the end pieces extrapolate."""
    k = np.searchsorted(breaks, v, side="right") - 1
    return min(max(k, 0), breaks.shape[0] - 2)


@nb.njit(cache=True)
def _pixel_grid_one(params, table, x, y, x0, y0, out, second):
    """Per-pixel ePSF of a turntable calibration: every pixel has its own piecewise cubic in the star position.

    ``params`` = (ndim, col0, row0, ncols, nrows, nbx, nby, period, tx, ty,
    a00, a01, a10, a11, x breaks..., y breaks...): the calibrated pixels are
    columns col0.. and rows row0.. of the frame. ndim 1: ``table[p, k]`` holds
    pixel p's coefficients in powers of ``(x - bx[k])`` on interval k (y is
    not a variable). ndim 2: the grid coordinates are
    ``(u, v) = A ((x, y) - (tx, ty))`` and ``table[p, k (nby - 1) + l, 4a + b]``
    multiplies ``(u - bx[k])^a (v - by[l])^b``. A ``period`` > 0 repeats the
    block every ``period`` rows (frames stacked into one mosaic). Value and
    derivatives are those of the interpolant itself; pixels outside the
    block record nothing.
    """
    ny, nx = out.shape[1], out.shape[2]
    ndim = int(params[0])
    col0, row0 = int(params[1]), int(params[2])
    ncols, nrows = int(params[3]), int(params[4])
    nbx, nby = int(params[5]), int(params[6])
    period = int(params[7])
    out[:, :, :] = 0.0
    if period > 0:  # move the star and its ROI into the tile of the block nearest to the ROI
        tile = int(math.floor((y0 + 0.5 * ny - row0 - 0.5 * nrows) / period + 0.5))
        y0 = y0 - tile * period
        y = y - tile * period
    a00, a01, a10, a11 = params[10], params[11], params[12], params[13]
    bx = params[14:14 + nbx]
    if ndim == 1:
        u = x
        v = 0.0
        cell = _segment(bx, u)
        tu = u - bx[cell]
        tv = 0.0
    else:
        by = params[14 + nbx:14 + nbx + nby]
        u = a00 * (x - params[8]) + a01 * (y - params[9])
        v = a10 * (x - params[8]) + a11 * (y - params[9])
        kx = _segment(bx, u)
        ky = _segment(by, v)
        tu = u - bx[kx]
        tv = v - by[ky]
        cell = kx * (nby - 1) + ky
    for i in range(ny):
        r = y0 + i - row0
        if r < 0 or r >= nrows:
            continue
        for j in range(nx):
            c = x0 + j - col0
            if c < 0 or c >= ncols:
                continue
            cf = table[r * ncols + c, cell]
            if ndim == 1:
                out[0, i, j] = cf[0] + tu * (cf[1] + tu * (cf[2] + tu * cf[3]))
                out[1, i, j] = cf[1] + tu * (2.0 * cf[2] + 3.0 * tu * cf[3])
                if second:
                    out[3, i, j] = 2.0 * cf[2] + 6.0 * tu * cf[3]
                continue
            # q_a(v) = sum_b cf[4a + b] tv^b by Horner, then the powers of tu.
            f = 0.0
            fu = 0.0
            fv = 0.0
            fuu = 0.0
            fuv = 0.0
            fvv = 0.0
            pa = 1.0
            for a in range(4):
                q = cf[4 * a] + tv * (cf[4 * a + 1] + tv * (cf[4 * a + 2] + tv * cf[4 * a + 3]))
                dq = cf[4 * a + 1] + tv * (2.0 * cf[4 * a + 2] + 3.0 * tv * cf[4 * a + 3])
                d2q = 2.0 * cf[4 * a + 2] + 6.0 * tv * cf[4 * a + 3]
                f += pa * q
                fv += pa * dq
                fvv += pa * d2q
                if a >= 1:
                    dpa = a * tu ** (a - 1)
                    fu += dpa * q
                    fuv += dpa * dq
                    if a >= 2:
                        fuu += a * (a - 1) * tu ** (a - 2) * q
                pa *= tu
            # Chain rule through the linear map (x, y) -> (u, v).
            out[0, i, j] = f
            out[1, i, j] = a00 * fu + a10 * fv
            out[2, i, j] = a01 * fu + a11 * fv
            if second:
                out[3, i, j] = a00 * a00 * fuu + 2.0 * a00 * a10 * fuv + a10 * a10 * fvv
                out[4, i, j] = a00 * a01 * fuu + (a00 * a11 + a01 * a10) * fuv + a10 * a11 * fvv
                out[5, i, j] = a01 * a01 * fuu + 2.0 * a01 * a11 * fuv + a11 * a11 * fvv


@nb.njit(cache=True)
def render_one(kind, params, table, x, y, x0, y0, out, work, second):
    """Render one star at (x, y) into an ROI whose first pixel is (column x0, row y0).

    ``out`` has shape (6, ny, nx): the pixel fractions of unit flux, their
    derivatives d/dx, d/dy and, when ``second`` is True, d2/dx2, d2/dxdy,
    d2/dy2 (all with respect to the star position). ``work`` is scratch of
    :func:`work_shape`. This is the single place where a model's ``kind`` selects its
    numba renderer: a new model adds its branch here, and the fitter, the
    CRLB and the simulator use it unchanged.
    """
    if kind == GAUSSIAN:
        _gaussian_one(params, x, y, x0, y0, out, work, second)
    elif kind == GRID:
        _grid_one(params, table, x, y, x0, y0, out, second)
    elif kind == GAUSSIAN_MIXTURE:
        _mixture_one(params, x, y, x0, y0, out, work, second)
    elif kind == PIXEL_GRID:
        _pixel_grid_one(params, table, x, y, x0, y0, out, second)
    else:
        out[:, :, :] = np.nan


@nb.njit(cache=True, parallel=True)
def _render_batch(kind, params, table, x, y, x0, y0, ny, nx, second):
    n = x.shape[0]
    out = np.empty((n, 6, ny, nx))
    rows, width = work_shape(ny, nx)
    work = np.empty((n, rows, width))
    for k in nb.prange(n):
        render_one(kind, params, table, x[k], y[k], x0[k], y0[k], out[k], work[k], second)
    return out


class GaussianPSF(PSFModel):
    """Gaussian PSF integrated over square pixels (the erf model).

    ``value_ij = [Phi((j+.5-x)/sx) - Phi((j-.5-x)/sx)] * [Phi((i+.5-y)/sy) - Phi((i-.5-y)/sy)]``

    Parameters
    ----------
    sigma : float
        Gaussian radius (standard deviation) in pixels; the small-PSF paper's ``r``.
    sigma_y : float, optional
        Radius along y when it differs from ``sigma`` (then ``sigma`` is the x radius).
    """

    def __init__(self, sigma, sigma_y=None):
        sx = float(sigma)
        sy = sx if sigma_y is None else float(sigma_y)
        for name, s in (("sigma", sx), ("sigma_y", sy)):
            if not math.isfinite(s) or s <= 0:
                raise ValueError(f"{name} must be a positive number of pixels, got {s}")
        self.sigma_x = sx
        self.sigma_y = sy
        self.support = 4.0 * max(sx, sy) + 0.5

    def default_roi(self) -> int:
        # +-3.5 sigma holds 99.95 % of the flux: wider ROIs add only noise.
        return int(max(5, 2 * math.ceil(3.5 * max(self.sigma_x, self.sigma_y)) + 1))

    kind = GAUSSIAN

    @property
    def params(self) -> np.ndarray:
        return np.array([self.sigma_x, self.sigma_y])

    @property
    def spec(self) -> str:
        if self.sigma_x == self.sigma_y:
            return f"gaussian:{self.sigma_x:g}"
        return f"gaussian:{self.sigma_x:g},{self.sigma_y:g}"

    def __repr__(self):
        if self.sigma_x == self.sigma_y:
            return f"GaussianPSF(sigma={self.sigma_x:g})"
        return f"GaussianPSF(sigma={self.sigma_x:g}, sigma_y={self.sigma_y:g})"


class GaussianMixturePSF(PSFModel):
    """Sum of circular pixel-integrated Gaussians with their own radii, weights and offsets.

    A simple non-Gaussian PSF (a core with an offset halo, coma-like) for
    simulations and for the exact bound of such a PSF: the star position
    is the reference point, component ``c`` is centred at ``(x + dx_c, y + dy_c)``.

    Parameters
    ----------
    components : sequence of (weight, sigma, dx, dy)
        Flux fraction, Gaussian radius (px) and offset (px) of each
        component. The weights must be positive; they are used as given
        (they should sum to 1 for a unit-flux PSF).

    Examples
    --------
    >>> psf = GaussianMixturePSF([(0.8, 0.3, 0.0, 0.0), (0.2, 0.6, 0.25, 0.10)])
    >>> round(float(psf.image(10.0, 10.0, (21, 21)).sum()), 6)
    1.0
    """

    kind = GAUSSIAN_MIXTURE

    def __init__(self, components):
        comp = np.asarray(components, dtype=float)
        if comp.ndim != 2 or comp.shape[1] != 4 or len(comp) == 0:
            raise ValueError("components must be a sequence of (weight, sigma, dx, dy) rows")
        if not np.all(np.isfinite(comp)) or np.any(comp[:, 0] <= 0) or np.any(comp[:, 1] <= 0):
            raise ValueError("components need finite values, positive weights and positive sigmas")
        self.components = comp
        self.support = float(np.max(4.0 * comp[:, 1] + np.hypot(comp[:, 2], comp[:, 3]))) + 0.5

    @property
    def params(self) -> np.ndarray:
        return self.components.ravel().copy()

    def default_roi(self) -> int:
        reach = np.max(3.5 * self.components[:, 1] + np.abs(self.components[:, 2:]).max(axis=1))
        return int(max(5, 2 * math.ceil(reach) + 1))

    @property
    def spec(self) -> str:
        return "mixture:" + ";".join(",".join(f"{v:g}" for v in row) for row in self.components)

    def __repr__(self):
        return f"GaussianMixturePSF({self.components.tolist()})"


def parse_psf(spec: str) -> PSFModel:
    """Build a PSF model from its text form.

    ``gaussian:SIGMA`` or ``gaussian:SX,SY`` (pixels); ``epsf:FILE`` (an ePSF
    FITS file written by :meth:`startrack.EPSF.save`); ``pixel-epsf:FILE`` (a
    turntable per-pixel ePSF written by :meth:`startrack.PixelEPSF.save`);
    ``mixture:W,S,DX,DY;...`` (a :class:`GaussianMixturePSF`, one
    ``weight,sigma,dx,dy`` group per component).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"--psf must look like 'gaussian:SIGMA' or 'epsf:FILE', got {spec!r}")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "gaussian":
        try:
            sig = [float(v) for v in arg.split(",")]
        except ValueError:
            raise ValueError(f"--psf gaussian needs a number of pixels, got {arg!r}") from None
        if len(sig) not in (1, 2):
            raise ValueError(f"--psf gaussian takes SIGMA or SX,SY, got {arg!r}")
        return GaussianPSF(*sig)
    if kind == "epsf":
        from .epsf import EPSF

        return EPSF.load(arg)
    if kind == "pixel-epsf":
        from .pixel_epsf import PixelEPSF

        return PixelEPSF.load(arg)
    if kind == "mixture":
        try:
            rows = [[float(v) for v in part.split(",")] for part in arg.split(";")]
        except ValueError:
            raise ValueError(f"--psf mixture needs numbers 'W,S,DX,DY;...', got {arg!r}") from None
        if any(len(r) != 4 for r in rows):
            raise ValueError(f"--psf mixture takes groups of four numbers W,S,DX,DY, got {arg!r}")
        return GaussianMixturePSF(rows)
    raise ValueError(f"unknown PSF model {kind!r}; use 'gaussian:SIGMA', 'epsf:FILE', 'pixel-epsf:FILE' "
                     "or 'mixture:W,S,DX,DY;...'")
