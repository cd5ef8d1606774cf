"""Numerical kernels shared by the core's numba code: vectorised exp/erfc/log, a sorting-network median,
cubic B-spline weights.

numba compiles ``math.exp``, ``math.erfc`` and ``math.log`` to scalar libm calls
that never vectorise (PyPI's llvmlite has no SVML); the versions here are
written so that LLVM runs their loops on whole SIMD vectors. They live in one
place so that the PSF renderer, the likelihood and the microscope estimators
share one implementation of each.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

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


@nb.njit(cache=True, fastmath=VECTOR_MATH, error_model="numpy")
def normal_edges(t, tail, pdf, n):
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


_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD  # IEEE-754 bits of sqrt(1/2)
_MANTISSA = 0xFFFFFFFFFFFFF
_LN2 = math.log(2.0)
# Q(z) = (atanh(s)/s - 1)/z, z = s^2 <= (3 - 2 sqrt 2)^2: a least-squares fit on Chebyshev nodes of the
# series sum z^k/(2k+3), within 4e-16 of it.
_ATANH_Q = (0.3333333333333334, 0.1999999999994963, 0.14285714313160025, 0.11111105539707332,
            0.09091446472194892, 0.07665802998446265, 0.0730886393571344)


@nb.njit(cache=True, fastmath=VECTOR_MATH, error_model="numpy")
def log_into(x, out, n):
    """Natural log of ``x[:n]`` (positive normal floats) into ``out[:n]``, within 2 ulp.

    numba's ``math.log`` is a libm call that does not vectorise (PyPI's llvmlite has
    no SVML); this splits ``x = 2^k m`` with ``m`` in [sqrt(1/2), sqrt 2) on the bits
    and sums ``log m = 2 atanh((m-1)/(m+1))``, a loop LLVM runs on whole SIMD vectors.
    ``x`` is overwritten with ``m``.
    """
    bits = x.view(np.int64)
    for p in range(n):
        b = bits[p] - _SQRT_HALF_BITS
        out[p] = np.float64(b >> 52)
        bits[p] = (b & _MANTISSA) + _SQRT_HALF_BITS
    q0, q1, q2, q3, q4, q5, q6 = _ATANH_Q
    for p in range(n):
        m = x[p]
        s = (m - 1.0) / (m + 1.0)
        z = s * s
        q = (((((q6 * z + q5) * z + q4) * z + q3) * z + q2) * z + q1) * z + q0
        out[p] = out[p] * _LN2 + (2.0 * s + 2.0 * s * z * q)


def _batcher_network(n):
    """Comparator pairs of Batcher's odd-even merge sort for ``n`` (a power of two) inputs.

    Knuth, TAOCP vol. 3, 5.3.4 (Algorithm M): 63 comparators for 16 inputs. The
    pairs whose indices are both below ``m`` sort any ``m <= n`` inputs (the rest
    only touch padding that would hold +inf).
    """
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


# Networks for 1, 2, 4, ..., 64 inputs, concatenated; network e is _SORT_PAIRS[_SORT_FROM[e]:_SORT_FROM[e + 1]].
_SORT_NETS = [_batcher_network(2 ** e) for e in range(7)]
_SORT_PAIRS = np.array([pair for net in _SORT_NETS for pair in net], np.int64)
_SORT_FROM = np.cumsum([0] + [len(net) for net in _SORT_NETS]).astype(np.int64)


@nb.njit(cache=True)
def median_inplace(buf, m):
    """Median of ``buf[:m]``, sorting that slice in place.

    Written out because ``np.median`` allocates a copy, and it runs once per
    star inside parallel loops over ROI borders of a few dozen pixels. Up to 64
    values go through a branch-free sorting network, which beats insertion
    sort's mispredicted branches (benchmarks/BENCHMARKS.md, localisation core).
    """
    if m > 64:
        buf[:m].sort()
    else:
        e = 0
        while (1 << e) < m:
            e += 1
        for q in range(_SORT_FROM[e], _SORT_FROM[e + 1]):
            a = _SORT_PAIRS[q, 0]
            b = _SORT_PAIRS[q, 1]
            if b < m:
                u = buf[a]
                v = buf[b]
                buf[a] = u if u < v else v
                buf[b] = v if u < v else u
    h = m // 2
    return buf[h] if m % 2 else 0.5 * (buf[h - 1] + buf[h])


@nb.njit(cache=True)
def bspline_weights(t, scale):
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

