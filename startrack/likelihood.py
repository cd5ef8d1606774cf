"""The Poisson likelihood of one star's region of interest: what the fitter climbs and the bound measures.

Each pixel's datum ``d = (P - s0)/K + read_noise^2`` (e-) is Poisson with mean

    lambda = flux * psf(x, y) + background + floor,   floor = dark_var + read_noise^2

(EMVA 1288 with the shifted-Poisson read noise). :func:`accumulate` sums, over
the ROI's usable pixels, the log-likelihood ``sum d ln(lambda) - lambda``, its
gradient, the Fisher matrix ``sum (d lambda/d a)(d lambda/d b)/lambda`` and the
observed negative Hessian in the parameters :data:`PARAMS`, in one branch-free
pass. :func:`startrack.localize` maximises it; :mod:`startrack.crlb` inverts
its Fisher matrix.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._kernels import VECTOR_MATH, log_into

__all__ = ["PARAMS", "param_mask", "param_names", "accumulate"]

PARAMS = ("x", "y", "flux", "background")


def param_mask(params, name="params") -> np.ndarray:
    """Boolean mask over :data:`PARAMS` for a parameter subset, validated."""
    if isinstance(params, str):
        params = {"x": ("x",), "xy": ("x", "y"), "all": PARAMS}.get(params, (params,))
    params = tuple(params)
    bad = [p for p in params if p not in PARAMS]
    if bad or not params:
        raise ValueError(f"{name} must be a non-empty subset of {PARAMS}, got {params}")
    return np.array([p in params for p in PARAMS])


def param_names(params):
    """The parameter names selected by ``params`` (validated), in canonical order."""
    mask = param_mask(params)
    return tuple(p for p, m in zip(PARAMS, mask, strict=True) if m)


@nb.njit(cache=True, fastmath=VECTOR_MATH, error_model="numpy")
def accumulate(r, d, w, flux, bg, floor, g, F, H, scratch):
    """Poisson log-likelihood, gradient, Fisher matrix and observed Hessian over one ROI.

    ``r`` is a rendered stack (value, d/dx, d/dy, d2/dx2, d2/dxdy, d2/dy2);
    ``d`` the data and ``w`` the 0/1 pixel weights (pixels of weight 0 are left
    out). ``g`` receives the gradient of the log-likelihood, ``F`` the Fisher
    matrix and ``H`` the negative Hessian; ``scratch`` is (2, pixels) work
    space. Returns the log-likelihood (without its data-only constant), or
    -inf when the model mean is not positive on a used pixel. The loops are
    branch-free so that they run on SIMD vectors.
    """
    npix = d.size
    rr = r.reshape((6, npix))
    dd = d.reshape(npix)
    ww = w.reshape(npix)
    lam = scratch[0]
    logs = scratch[1]
    f00 = f01 = f02 = f03 = f11 = f12 = f13 = f22 = f23 = f33 = 0.0
    h00 = h01 = h02 = h03 = h11 = h12 = h13 = h22 = h23 = h33 = 0.0
    g0 = g1 = g2 = g3 = 0.0
    for p in range(npix):
        v = rr[0, p]
        wp = ww[p]
        la = flux * v + bg + floor if wp != 0.0 else 1.0
        inv = wp / la
        j0 = flux * rr[1, p]
        j1 = flux * rr[2, p]
        f00 += j0 * j0 * inv
        f01 += j0 * j1 * inv
        f02 += j0 * v * inv
        f03 += j0 * inv
        f11 += j1 * j1 * inv
        f12 += j1 * v * inv
        f13 += j1 * inv
        f22 += v * v * inv
        f23 += v * inv
        f33 += inv
        q = dd[p] / la
        res = (q - 1.0) * wp
        g0 += j0 * res
        g1 += j1 * res
        g2 += v * res
        g3 += res
        a = q * inv
        h00 += j0 * j0 * a - res * flux * rr[3, p]
        h01 += j0 * j1 * a - res * flux * rr[4, p]
        h02 += j0 * v * a - res * rr[1, p]
        h03 += j0 * a
        h11 += j1 * j1 * a - res * flux * rr[5, p]
        h12 += j1 * v * a - res * rr[2, p]
        h13 += j1 * a
        h22 += v * v * a
        h23 += v * a
        h33 += a
    F[0, 0], F[0, 1], F[0, 2], F[0, 3] = f00, f01, f02, f03
    F[1, 1], F[1, 2], F[1, 3], F[2, 2], F[2, 3], F[3, 3] = f11, f12, f13, f22, f23, f33
    H[0, 0], H[0, 1], H[0, 2], H[0, 3] = h00, h01, h02, h03
    H[1, 1], H[1, 2], H[1, 3], H[2, 2], H[2, 3], H[3, 3] = h11, h12, h13, h22, h23, h33
    for a_ in range(4):
        for b_ in range(a_):
            F[a_, b_] = F[b_, a_]
            H[a_, b_] = H[b_, a_]
    g[0], g[1], g[2], g[3] = g0, g1, g2, g3
    # Apart from the sums above: that loop then stores nothing and vectorises without alias checks.
    lo = np.inf
    hi = 0.0
    expected = 0.0  # sum of w lambda: the likelihood's second term
    for p in range(npix):
        la = flux * rr[0, p] + bg + floor if ww[p] != 0.0 else 1.0
        if not la > 0.0:
            return -np.inf
        lam[p] = la
        expected += ww[p] * la
        lo = min(lo, la)
        hi = max(hi, la)
    if lo >= 2.3e-308 and hi <= 1.7e308:
        log_into(lam, logs, npix)
    else:  # subnormal or infinite means: outside what the bit split handles
        for p in range(npix):
            logs[p] = math.log(lam[p])
    L = 0.0
    for p in range(npix):
        L += ww[p] * dd[p] * logs[p]
    return L - expected

