"""PSF models behind one interface.

Every model answers one question for a batch of stars: *which fraction of a
star's flux does each pixel of a region of interest record, and how does that
fraction change when the star moves?* :meth:`PSFModel.render` returns the
pixel values and their x/y derivatives on an ROI grid. The fitter
(:func:`startrack.localize`), the Cramér–Rao bound (:mod:`startrack.crlb`) and
the simulator (:mod:`startrack.simulate`) use nothing else, so a new model
plugs in without touching them.

The models: :class:`GaussianPSF` (pixel-integrated Gaussian),
:class:`GaussianMixturePSF`, :class:`EPSF` (an effective PSF on a grid,
built from the data by :func:`startrack.epsf.build_epsf`) and
:class:`PixelEPSF` (per-pixel ePSF of a turntable calibration);
:func:`parse_psf` makes any of them from its text form.

Conventions: pixel (row i, column j) is centred at (x=j, y=i) and spans
[j-0.5, j+0.5); positions are in pixels.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numba as nb
import numpy as np

from ._kernels import VECTOR_MATH, bspline_weights, normal_edges
from .validate import as_float, as_int

__all__ = ["PSFModel", "GaussianPSF", "GaussianMixturePSF", "EPSF", "PixelEPSF", "parse_psf", "roi_origin"]


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

    def equivalent_radius(self) -> float:
        """Radius (px) of the pixel-integrated Gaussian that best matches the model's pixel values.

        Least squares over stars at 16 intra-pixel phases (the Gaussian's centre
        free), so the noisy far tails of a measured ePSF, which would dominate a
        second moment, barely count.
        """
        half = int(math.ceil(min(self.support, 6.0)))
        size = 2 * half + 1
        ph = np.arange(-0.375, 0.5, 0.25)
        px, py = (a.ravel() + half for a in np.meshgrid(ph, ph))
        zero = np.zeros(px.size, np.int64)
        target = self.render(px, py, zero, zero, (size, size))[0]

        def resid(p):
            g = GaussianPSF(abs(p[0]) + 1e-3).render(px + p[1], py + p[2], zero, zero, (size, size))[0]
            return (g - target).ravel()

        from scipy.optimize import least_squares  # here: importing scipy.optimize costs every CLI run 0.3 s

        fit = least_squares(resid, [0.5, 0.0, 0.0], x_scale=[0.1, 0.1, 0.1])
        return float(abs(fit.x[0]) + 1e-3)


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
    normal_edges(t, tail, pdf, width)
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
    wx, dwx, hwx = bspline_weights(u - iu, -os)
    wy, dwy, hwy = bspline_weights(v - iv, -os)
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

    ``params`` = (ndim, col0, row0, ncols, nrows, nbx, nby, tx, ty,
    a00, a01, a10, a11, x breaks..., y breaks...): the calibrated pixels are
    columns col0.. and rows row0.. of the frame. ndim 1: ``table[p, k]`` holds
    pixel p's coefficients in powers of ``(x - bx[k])`` on interval k (y is
    not a variable). ndim 2: the grid coordinates are
    ``(u, v) = A ((x, y) - (tx, ty))`` and ``table[p, k (nby - 1) + l, 4a + b]``
    multiplies ``(u - bx[k])^a (v - by[l])^b``. Value and derivatives are
    those of the interpolant itself; pixels outside the block record nothing.
    """
    ny, nx = out.shape[1], out.shape[2]
    ndim = int(params[0])
    col0, row0 = int(params[1]), int(params[2])
    ncols, nrows = int(params[3]), int(params[4])
    nbx, nby = int(params[5]), int(params[6])
    out[:, :, :] = 0.0
    a00, a01, a10, a11 = params[9], params[10], params[11], params[12]
    bx = params[13:13 + nbx]
    if ndim == 1:
        u = x
        v = 0.0
        cell = _segment(bx, u)
        tu = u - bx[cell]
        tv = 0.0
    else:
        by = params[13 + nbx:13 + nbx + nby]
        u = a00 * (x - params[7]) + a01 * (y - params[8])
        v = a10 * (x - params[7]) + a11 * (y - params[8])
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
        sx = as_float(sigma, "sigma", positive=True, unit="pixels")
        sy = sx if sigma_y is None else as_float(sigma_y, "sigma_y", positive=True, unit="pixels")
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

    def equivalent_radius(self) -> float:
        return float(math.sqrt(0.5 * (self.sigma_x**2 + self.sigma_y**2)))

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


# -- the effective PSF on a grid (built from the data by startrack.epsf.build_epsf) -------------------

#: Zero nodes padded around the grid: the spline decays to zero beyond the ePSF's extent.
_PAD = 4

#: FITS header keywords of the metadata :meth:`EPSF.save` writes.
_KEYS = {"oversampling": "OVERSAMP", "roi": "ROI", "n_stars": "NSTARS", "n_input": "NINPUT",
         "iterations": "NITER", "converged": "CONVERGD", "shift": "LASTSHFT", "flux": "FLUX",
         "per_star": "PERSTAR", "star": "STAR", "n_saturated": "NSATUR", "n_contaminated": "NCONTAM",
         "n_incomplete": "NINCOMPL", "clip": "CLIP", "smoothing": "SMOOTHNG", "tie": "TIE",
         "chi2": "CHI2", "clipped": "CLIPPED"}


class EPSF(PSFModel):
    """An effective PSF on a grid, as a PSF model (cubic B-spline interpolation).

    Parameters
    ----------
    data : 2-D array, odd shape (ny, nx)
        ePSF samples: ``data[k, l]`` is the fraction of unit flux recorded by
        a pixel whose centre is at offset ``((l - (nx-1)/2) / oversampling,
        (k - (ny-1)/2) / oversampling)`` px from the star. A unit-flux ePSF
        sums to ``oversampling**2``.
    oversampling : int
        Grid nodes per pixel.
    roi : int, optional
        Fitting window the ePSF was built for (default: the largest odd
        window its grid covers).
    meta : dict, optional
        Build metadata (``n_stars``, ``iterations``, ``converged``, ``flux`` ...).

    Notes
    -----
    The spline interpolates the grid values; its derivatives, used by the
    Newton fitter, are exact for the interpolant. Beyond the grid the ePSF
    falls to zero within two nodes.
    """

    kind = GRID

    def __init__(self, data, oversampling, *, roi=None, meta=None):
        os_ = as_int(oversampling, "oversampling", minimum=1)
        arr = np.array(data, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] % 2 == 0 or arr.shape[1] % 2 == 0 or min(arr.shape) < 3:
            raise ValueError(f"ePSF data must be a 2-D grid with odd sides >= 3, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("ePSF data must be finite")
        arr.setflags(write=False)
        self.data = arr
        self.oversampling = os_
        ny, nx = arr.shape
        half = (min(nx, ny) - 1) / (2.0 * os_)
        self.roi = int(roi) if roi is not None else max(1, 2 * int(math.floor(half)) + 1)
        self.meta = dict(meta or {})
        self.meta.update(oversampling=os_, roi=self.roi)
        self.support = (max(nx, ny) - 1) / (2.0 * os_) + 2.0 / os_
        from scipy import ndimage  # here: scipy.ndimage costs every `import startrack` 0.2 s

        coef = ndimage.spline_filter(np.pad(arr, _PAD), order=3, mode="mirror")
        self.table = np.ascontiguousarray(coef[None])
        self.params = np.array([float(os_), (nx - 1) / 2.0 + _PAD, (ny - 1) / 2.0 + _PAD])
        self.path = None

    @property
    def flux(self):
        """Star flux (e-) of a per-star ePSF (``build_epsf(per_star=True)``), else None."""
        return self.meta.get("flux")

    def default_roi(self) -> int:
        return self.roi

    @property
    def spec(self) -> str:
        return f"epsf:{self.path}" if self.path else "epsf:<in memory>"

    def __repr__(self):
        ny, nx = self.data.shape
        return f"<EPSF {nx}x{ny} nodes, oversampling {self.oversampling}, roi {self.roi}>"

    def evaluate(self, dx, dy):
        """The interpolated ePSF at offsets ``(dx, dy) = pixel centre - star`` (px), broadcast."""
        dx, dy = np.broadcast_arrays(np.asarray(dx, float), np.asarray(dy, float))
        zero = np.zeros(dx.size, np.int64)
        val, _, _ = self.render(-dx.ravel(), -dy.ravel(), zero, zero, (1, 1))
        return val[:, 0, 0].reshape(dx.shape)

    def save(self, path, overwrite=True):
        """Write the grid and its metadata to a FITS file (read back with :meth:`EPSF.load`)."""
        from astropy.io import fits

        path = Path(path)
        hdu = fits.PrimaryHDU(self.data)
        hdr = hdu.header
        hdr["EPSF"] = (True, "startrack effective PSF")
        for key, card in _KEYS.items():
            value = self.meta.get(key)
            if isinstance(value, (bool, np.bool_)):
                hdr[card] = bool(value)
            elif isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
                hdr[card] = value.item() if hasattr(value, "item") else value
            elif isinstance(value, str):
                hdr[card] = value
        hdr["COMMENT"] = "pixel (i, j) records data at offset ((j - x) * OVERSAMP, (i - y) * OVERSAMP)"
        hdr["COMMENT"] = "nodes from the grid centre; unit flux sums to OVERSAMP**2"
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        hdu.writeto(path, overwrite=overwrite)
        self.path = str(path)

    @classmethod
    def load(cls, path) -> EPSF:
        """Read an ePSF written by :meth:`save`."""
        from astropy.io import fits

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ePSF file not found: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path, memmap=False) as hdul:
                    data = np.asarray(hdul[0].data, dtype=float)
                    hdr = hdul[0].header.copy()
        except (OSError, ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"{path}: not a readable FITS file ({str(exc).splitlines()[0]})") from None
        if "OVERSAMP" not in hdr or data.ndim != 2:
            raise ValueError(f"{path}: not an ePSF file (no OVERSAMP keyword or no 2-D grid)")
        meta = {key: hdr[card] for key, card in _KEYS.items() if card in hdr}
        model = cls(data, int(hdr["OVERSAMP"]), roi=hdr.get("ROI"), meta=meta)
        model.path = str(path)
        return model


# -- the per-pixel ePSF of a turntable calibration (startrack.calibration.turntable) ------------------


def _breaks(v, name):
    v = np.asarray(v, dtype=float)
    if v.ndim != 1 or v.size < 4:
        raise ValueError(f"{name} must hold at least 4 star positions (not-a-knot cubic spline), got {v.size}")
    if not np.all(np.isfinite(v)) or np.any(np.diff(v) <= 0):
        raise ValueError(f"{name} must be finite and strictly increasing")
    return v


class PixelEPSF(PSFModel):
    """Per-pixel ePSF: each calibrated pixel's recorded fraction of the flux against the star position.

    The small-PSF paper's first way (Zhan et al. 2023, Engineering 27, 140,
    section 2.1): a spot is stepped across the sensor at known sub-pixel
    steps; each pixel's mean value, as a function of the known star position,
    is that pixel's own ePSF ``phi_ij(x)`` (or ``phi_ij(x, y)`` on a 2-D grid
    of positions), interpolated by a not-a-knot cubic spline. Unlike one
    shared ePSF it carries each pixel's response non-uniformity and the
    optics' local aberrations, but only for the sensor region and the range
    of positions calibrated. Rendered by kind ``PIXEL_GRID`` with the
    spline's exact first and second derivatives. Build one with
    :func:`startrack.calibration.turntable.build_pixel_epsf`.

    Parameters
    ----------
    values : ndarray
        Fraction of unit flux recorded by each pixel of the calibrated block:
        shape ``(nx, nrows, ncols)`` for stars at positions ``x`` along one
        axis (1-D), or ``(nx, ny, nrows, ncols)`` for stars on the grid
        ``x`` by ``y`` (2-D).
    x : array, shape (nx,)
        Star x positions (px, frame coordinates), strictly increasing.
    y : float or array, shape (ny,)
        The star row the 1-D scan ran along (px; a number), or the grid's y
        positions (2-D).
    col0, row0 : int
        Frame column and row of the block's first pixel.
    transform : (tx, ty, A), optional
        2-D only: the grid coordinates of a star at frame position (x, y) are
        ``(u, v) = A @ (x - tx, y - ty)`` (A a 2x2 matrix), so a grid stepped
        by a turntable mounted at an angle to the pixel rows is modelled
        exactly; ``x`` and ``y`` are then the grid's u and v positions.
        Default: the identity (grid in frame coordinates).
    meta : dict, optional
        Calibration metadata (``flux`` e-, ``background`` e-/px, ...).

    Notes
    -----
    A 1-D model ignores the star's y (it is the calibrated row ``y``): fit
    x only, with y held (``fit=("x",)`` or with flux/background). Beyond the
    calibrated positions the end cubic pieces extrapolate; stay inside
    :attr:`x_range` (and :attr:`y_range`).
    """

    kind = PIXEL_GRID
    support = 2.0

    def __init__(self, values, x, y, *, col0, row0, transform=None, meta=None):
        values = np.asarray(values, dtype=float)
        self.x = _breaks(x, "x")
        if np.ndim(y) == 0:
            self.ndim = 1
            self.y = float(y)
            shape_ok = values.ndim == 3 and values.shape[0] == self.x.size
        else:
            self.ndim = 2
            self.y = _breaks(y, "y")
            shape_ok = values.ndim == 4 and values.shape[:2] == (self.x.size, self.y.size)
        if not shape_ok:
            want = "(nx, nrows, ncols)" if self.ndim == 1 else "(nx, ny, nrows, ncols)"
            raise ValueError(f"values must have shape {want} matching the positions, got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("values must be finite")
        self.values = values
        self.col0, self.row0 = int(col0), int(row0)
        self.nrows, self.ncols = values.shape[-2:]
        if transform is None:
            transform = (0.0, 0.0, np.eye(2))
        tx, ty, A = float(transform[0]), float(transform[1]), np.asarray(transform[2], dtype=float)
        if A.shape != (2, 2) or not np.all(np.isfinite(A)) or abs(np.linalg.det(A)) < 1e-12:
            raise ValueError("transform must be (tx, ty, A) with A an invertible 2x2 matrix")
        if self.ndim == 1 and not (tx == 0 and ty == 0 and np.array_equal(A, np.eye(2))):
            raise ValueError("a transform applies to 2-D grids only (a 1-D model is a function of frame x)")
        self.transform = (tx, ty, A)
        self.meta = dict(meta or {})
        self.path = None
        self.params, self.table = self._coefficients()

    def _coefficients(self):
        from scipy.interpolate import CubicSpline

        npix = self.nrows * self.ncols
        if self.ndim == 1:
            v = self.values.reshape(self.x.size, npix)
            c = CubicSpline(self.x, v, axis=0, bc_type="not-a-knot").c  # (4, nx-1, npix), highest power first
            table = np.ascontiguousarray(c[::-1].transpose(2, 1, 0))
            ybreaks = np.zeros(0)
        else:
            v = self.values.reshape(self.x.size, self.y.size, npix)
            cx = CubicSpline(self.x, v, axis=0, bc_type="not-a-knot").c  # (a', k, l, p)
            c = CubicSpline(self.y, cx, axis=2, bc_type="not-a-knot").c  # (b', l, a', k, p)
            c = c[::-1, :, ::-1]  # ascending powers: (b, l, a, k, p)
            table = np.ascontiguousarray(
                c.transpose(4, 3, 1, 2, 0).reshape(npix, (self.x.size - 1) * (self.y.size - 1), 16))
            ybreaks = self.y
        tx, ty, A = self.transform
        params = np.concatenate([[self.ndim, self.col0, self.row0, self.ncols, self.nrows, self.x.size,
                                  ybreaks.size, tx, ty], A.ravel(), self.x, ybreaks]).astype(np.float64)
        return params, table

    @property
    def x_range(self):
        """Calibrated star x positions (min, max), px."""
        return float(self.x[0]), float(self.x[-1])

    @property
    def y_range(self):
        """Calibrated star y positions (min, max), px; a single row for a 1-D model."""
        return (self.y, self.y) if self.ndim == 1 else (float(self.y[0]), float(self.y[-1]))

    def default_roi(self) -> int:
        return 5

    def shifted(self, columns, rows) -> PixelEPSF:
        """The same model in a frame whose origin is ``columns``, ``rows`` px to the left and up.

        For a model built on a crop at (col0, row0) of a full frame,
        ``model.shifted(col0, row0)`` is the model in full-frame coordinates.
        """
        columns, rows = int(columns), int(rows)
        kw = dict(col0=self.col0 + columns, row0=self.row0 + rows, meta=self.meta)
        if self.ndim == 1:
            return PixelEPSF(self.values, self.x + columns, self.y + rows, **kw)
        tx, ty, A = self.transform
        return PixelEPSF(self.values, self.x, self.y, transform=(tx + columns, ty + rows, A), **kw)

    # -- files ---------------------------------------------------------------
    def save(self, path, overwrite=True):
        """Write a FITS file: the pixel values (primary HDU) and the star positions (XPOS, YPOS)."""
        from astropy.io import fits

        hdr = fits.Header()
        hdr["PSFKIND"] = ("PIXEL_EPSF", "per-pixel ePSF (startrack.PixelEPSF)")
        hdr["NDIMPOS"] = (self.ndim, "1: scan along x at row YFIXED; 2: grid of x, y")
        hdr["COL0"] = (self.col0, "frame column of the first calibrated pixel")
        hdr["ROW0"] = (self.row0, "frame row of the first calibrated pixel")
        if self.ndim == 1:
            hdr["YFIXED"] = (self.y, "star row of the 1-D scan (px)")
        else:
            tx, ty, A = self.transform
            hdr["GRIDTX"] = (tx, "grid (u, v) = A (x - TX, y - TY)")
            hdr["GRIDTY"] = (ty, "grid (u, v) = A (x - TX, y - TY)")
            for (i, j), v in np.ndenumerate(A):
                hdr[f"GRIDA{i}{j}"] = (float(v), f"A[{i}, {j}]")
        for k, v in self.meta.items():
            if isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and not math.isfinite(v)):
                hdr[f"HIERARCH {k}"] = v
        hdus = [fits.PrimaryHDU(self.values, header=hdr), fits.ImageHDU(self.x, name="XPOS")]
        if self.ndim == 2:
            hdus.append(fits.ImageHDU(self.y, name="YPOS"))
        fits.HDUList(hdus).writeto(path, overwrite=overwrite)
        self.path = str(path)

    @classmethod
    def load(cls, path) -> PixelEPSF:
        """Read a file written by :meth:`save`."""
        from astropy.io import fits

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            with fits.open(path) as hdul:
                hdr = hdul[0].header
                if hdr.get("PSFKIND") != "PIXEL_EPSF":
                    raise ValueError("not a per-pixel ePSF file (no PSFKIND = PIXEL_EPSF)")
                values = np.array(hdul[0].data, dtype=float)
                x = np.array(hdul["XPOS"].data, dtype=float)
                y = float(hdr["YFIXED"]) if hdr["NDIMPOS"] == 1 else np.array(hdul["YPOS"].data, dtype=float)
                transform = None
                if hdr["NDIMPOS"] == 2:
                    transform = (hdr["GRIDTX"], hdr["GRIDTY"],
                                 np.array([[hdr["GRIDA00"], hdr["GRIDA01"]], [hdr["GRIDA10"], hdr["GRIDA11"]]]))
                skip = {"PSFKIND", "NDIMPOS", "COL0", "ROW0", "YFIXED", "GRIDTX", "GRIDTY", "GRIDA00", "GRIDA01",
                        "GRIDA10", "GRIDA11"}
                meta = {k: hdr[k] for k in hdr if k not in skip and k not in fits.PrimaryHDU().header
                        and not k.startswith("NAXIS")}
                col0, row0 = int(hdr["COL0"]), int(hdr["ROW0"])
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read a per-pixel ePSF ({str(exc).splitlines()[0]})") from None
        model = cls(values, x, y, col0=col0, row0=row0, transform=transform, meta=meta)
        model.path = str(path)
        return model

    @property
    def spec(self) -> str:
        return f"pixel-epsf:{self.path}" if self.path else "pixel-epsf"

    def __repr__(self):
        where = f"x {self.x[0]:.3f}..{self.x[-1]:.3f}"
        where += f", y {self.y:.3f}" if self.ndim == 1 else f", y {self.y[0]:.3f}..{self.y[-1]:.3f}"
        return (f"PixelEPSF({self.ndim}-D, {self.nrows}x{self.ncols} px block at column {self.col0}, row "
                f"{self.row0}; {where})")


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
        return EPSF.load(arg)
    if kind == "pixel-epsf":
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
