"""Effective PSF (ePSF) built from the data, and the ePSF as a PSF model.

The ePSF is the pixel-integrated PSF sampled finely: ``ePSF(dx, dy)`` is the
fraction of a star's flux recorded by a pixel whose centre lies at offset
``(dx, dy)`` from the star, so pixel (i, j) of a star at (x, y) records
``flux * ePSF(j - x, i - y)`` (the small-PSF paper's
``phi(x_pix - x_star, y_pix - y_star)``, Anderson & King's convention).

:func:`build_epsf` estimates it from star images with the iteration of
Anderson & King (2000, PASP 112, 1360): start from centre-of-gravity
positions, map every pixel of every star to a sample of the ePSF, estimate
the ePSF on a grid of spacing ``1/oversampling`` px by a sigma-clipped local
fit of the samples, re-centre and normalise it, refit every star's position
and flux by Poisson MLE on it (:func:`startrack.localize`), and repeat until
the positions stop moving. :class:`EPSF` is the result as a PSF model:
a cubic B-spline through the grid, rendered in numba with exact first and
second derivatives, so :func:`startrack.localize` and :mod:`startrack.crlb`
use it unchanged.
"""

from __future__ import annotations

import math
import warnings

import numba as nb
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ._kernels import bspline_weights
from .detect import centroid
from .flags import BAD_FIT
from .localize import localize
from .psf import EPSF, roi_origin
from .sensor import Sensor, as_sensor
from .validate import as_float, as_image, as_int, as_mask, as_positions, one_of

__all__ = ["EPSF", "build_epsf", "match_stars"]

#: Default roughness penalty of the ePSF estimate, relative to a coefficient's data weight.
SMOOTHING = 0.1
#: Pixels of room around each star's ROI in its stamp: refits may move a star this far.
_MARGIN = 2
#: Below this many star images the build runs on one thread: each refit is too small for the
#: parallel kernels to pay for their threads, which otherwise spin between the many short calls.
_PARALLEL_MIN = 5000


# -- grid estimate ----------------------------------------------------------

#: Spline coefficients beyond the outermost grid node on each side of the estimate.
_CPAD = 2


@nb.njit(cache=True)
def _normal_stencil(su, sv, wt, val, nc):
    """Weighted normal equations ``B' W B c = B' W val`` of a cubic B-spline fit, in stencil form.

    ``su, sv`` are sample coordinates in coefficient units on an ``nc x nc``
    coefficient grid. ``G[r, c, 3 + dr, 3 + dc]`` couples coefficient (r, c)
    with (r + dr, c + dc): a B-spline overlaps only its 7 x 7 neighbours.
    Also returns, per coefficient, the unweighted sum of its squared basis
    values (how much data reaches it).
    """
    G = np.zeros((nc, nc, 7, 7))
    rhs = np.zeros((nc, nc))
    reach = np.zeros((nc, nc))
    bas = np.empty((4, 4))
    for k in range(su.shape[0]):
        w = wt[k]
        if w == 0.0:
            continue
        iu = int(math.floor(su[k]))
        iv = int(math.floor(sv[k]))
        wx, _, _ = bspline_weights(su[k] - iu, 1.0)
        wy, _, _ = bspline_weights(sv[k] - iv, 1.0)
        for a in range(4):
            for b in range(4):
                bas[a, b] = wy[a] * wx[b]
        for a in range(4):
            r = iv - 1 + a
            for b in range(4):
                c = iu - 1 + b
                wb = w * bas[a, b]
                reach[r, c] += bas[a, b] * bas[a, b]
                rhs[r, c] += wb * val[k]
                for a2 in range(4):
                    for b2 in range(4):
                        G[r, c, 3 + a2 - a, 3 + b2 - b] += wb * bas[a2, b2]
    return G, rhs, reach


@nb.njit(cache=True)
def _stencil_apply(G, x, y):
    nc = x.shape[0]
    for r in range(nc):
        for c in range(nc):
            acc = 0.0
            for a in range(max(0, 3 - r), min(7, nc + 3 - r)):
                for b in range(max(0, 3 - c), min(7, nc + 3 - c)):
                    acc += G[r, c, a, b] * x[r + a - 3, c + b - 3]
            y[r, c] = acc


@nb.njit(cache=True)
def _stencil_cg(G, rhs, x, rtol, max_iter):
    """Solve the symmetric positive definite stencil system G x = rhs by Jacobi-preconditioned CG from x."""
    nc = x.shape[0]
    inv = np.empty((nc, nc))
    res = np.empty((nc, nc))
    p = np.empty((nc, nc))
    Ap = np.empty((nc, nc))
    _stencil_apply(G, x, Ap)
    rz = 0.0
    stop = 0.0
    for r in range(nc):
        for c in range(nc):
            inv[r, c] = 1.0 / G[r, c, 3, 3]
            res[r, c] = rhs[r, c] - Ap[r, c]
            p[r, c] = res[r, c] * inv[r, c]
            rz += res[r, c] * p[r, c]
            stop += rhs[r, c] * rhs[r, c] * inv[r, c]
    stop *= rtol * rtol
    for _ in range(max_iter):
        if rz <= stop:
            break
        _stencil_apply(G, p, Ap)
        pap = 0.0
        for r in range(nc):
            for c in range(nc):
                pap += p[r, c] * Ap[r, c]
        alpha = rz / pap
        rz_new = 0.0
        for r in range(nc):
            for c in range(nc):
                x[r, c] += alpha * p[r, c]
                res[r, c] -= alpha * Ap[r, c]
                rz_new += res[r, c] * res[r, c] * inv[r, c]
        beta = rz_new / rz
        for r in range(nc):
            for c in range(nc):
                p[r, c] = res[r, c] * inv[r, c] + beta * p[r, c]
        rz = rz_new
    return x


@nb.njit(cache=True)
def _spline_at(coef, su, sv):
    """Cubic B-spline with coefficients ``coef`` at coefficient coordinates (su, sv)."""
    out = np.empty(su.shape[0])
    for k in range(su.shape[0]):
        iu = int(math.floor(su[k]))
        iv = int(math.floor(sv[k]))
        wx, _, _ = bspline_weights(su[k] - iu, 1.0)
        wy, _, _ = bspline_weights(sv[k] - iv, 1.0)
        acc = 0.0
        for a in range(4):
            for b in range(4):
                acc += wy[a] * wx[b] * coef[iv - 1 + a, iu - 1 + b]
        out[k] = acc
    return out


@nb.njit(cache=True)
def _add_penalty(G, dd, d_ref, weight):
    """Add ``weight`` times the squared second differences of the coefficients along both axes.

    ``dd`` is the 1-D penalty matrix D'D; each coupling is scaled by the
    ``d_ref`` of the two coefficients it joins.
    """
    nc = G.shape[0]
    for r in range(nc):
        for c in range(nc):
            for k in range(-2, 3):
                if 0 <= c + k < nc:
                    G[r, c, 3, 3 + k] += weight * dd[c, c + k] * d_ref[r, c] * d_ref[r, c + k]
                if 0 <= r + k < nc:
                    G[r, c, 3 + k, 3] += weight * dd[r, r + k] * d_ref[r, c] * d_ref[r + k, c]


def _estimate_grid(off_x, off_y, val, a1, a2, oversampling, roi, clip, smoothing, start=None):
    """Sigma-clipped, lightly smoothed estimate of the ePSF at the nodes of its grid.

    A cubic B-spline with one coefficient per node (spacing 1/oversampling
    px) is fitted to the samples by weighted least squares, each sample
    weighted by its Poisson variance ``mean * a1 + a2`` under the current
    fit; samples more than ``clip`` local standard deviations from the fit
    (measured over the 3 x 3 nodes around each) are rejected and the fit is
    repeated. A small penalty on the coefficients' second differences
    (``smoothing`` times the typical data weight of a coefficient) is the
    light smoothing: it fills nodes that no sample reaches and damps
    noise at the node scale without flattening the core. Each coefficient
    rests only on the samples within two nodes of it: the estimate is local,
    and needs no window geometry at the grid's edges.

    ``start`` (coefficients of a previous estimate) sets the first weights
    and starts the solver.

    Returns the q x q grid of node values (NaN where no sample lies within
    two nodes), the spline coefficients and residual statistics: ``chi2``
    (mean squared residual of the kept samples in units of their Poisson
    noise; 1 for a perfect model) and ``clipped`` (fraction of samples rejected).
    The grid has a node at offset 0 and reaches no farther than ``roi/2``.
    """
    hn = int(oversampling * roi) // 2  # nodes either side of offset 0 (a node), inside the sampled +-roi/2
    q = 2 * hn + 1
    nc = q + 2 * _CPAD
    su = off_x * oversampling + hn
    sv = off_y * oversampling + hn
    ci = np.rint(su).astype(np.int64)
    ri = np.rint(sv).astype(np.int64)
    inside = (ci >= 0) & (ci < q) & (ri >= 0) & (ri < q)
    su, sv, val, a1, a2 = su[inside] + _CPAD, sv[inside] + _CPAD, val[inside], a1[inside], a2[inside]
    cell = ri[inside] * q + ci[inside]
    count = np.bincount(cell, minlength=q * q).reshape(q, q)
    d = np.diff(np.eye(nc), 2, axis=0)
    dd = d.T @ d
    keep = np.ones(len(val), bool)
    if start is None:
        coef = np.zeros((nc, nc))
        pred = val  # the first weights come from the samples themselves
    else:
        coef = start.copy()
        pred = _spline_at(coef, su, sv)
    for _ in range(4 if start is None else 2):
        var = a1 * np.maximum(pred, 0.0) + a2
        G, rhs, reach = _normal_stencil(su, sv, np.where(keep, 1.0 / var, 0.0), val, nc)
        # The penalty is weighted like the data it competes with: the local noise level times the
        # typical number of samples of a coefficient. The faint, precise tails and the bright, noisier
        # core are smoothed alike, and a coefficient with few samples (at the grid's edge) leans on
        # its neighbours instead of following its noise.
        seen = reach > 0
        wbar = np.where(seen, G[:, :, 3, 3] / np.where(seen, reach, 1.0), 0.0)
        wbar[~seen] = wbar.max()
        d_ref = np.sqrt(wbar * np.median(reach[seen]))
        _add_penalty(G, dd, d_ref, smoothing)
        G[:, :, 3, 3] += 1e-9 * d_ref**2  # a far-out coefficient with no sample decays to zero
        coef = _stencil_cg(G, rhs, coef, 1e-7, 1000)
        pred = _spline_at(coef, su, sv)
        var = a1 * np.maximum(pred, 0.0) + a2
        z2 = (val - pred) ** 2 / var
        s2 = ndimage.uniform_filter(np.bincount(cell, weights=np.where(keep, z2, 0.0), minlength=q * q)
                                    .reshape(q, q), 3, mode="constant")
        n2 = ndimage.uniform_filter(np.bincount(cell, weights=keep.astype(float), minlength=q * q)
                                    .reshape(q, q), 3, mode="constant")
        # Never clip tighter than the Poisson noise itself: where the data are better than the fit,
        # the residuals are the fit's own error and the samples are good.
        sigma2 = np.maximum(s2 / np.maximum(n2, 1e-12), 1.0).ravel()[cell]
        new = z2 <= clip**2 * sigma2
        if np.array_equal(new, keep):
            break
        keep = new
    k1 = np.array([1.0, 4.0, 1.0]) / 6.0  # a cubic B-spline at its knots
    grid = ndimage.correlate1d(ndimage.correlate1d(coef, k1, axis=0), k1, axis=1)[_CPAD:-_CPAD, _CPAD:-_CPAD]
    reach = ndimage.maximum_filter(count, size=5, mode="constant") > 0
    stats = dict(chi2=float(np.mean(z2[keep])) if keep.any() else np.nan, clipped=float(1.0 - keep.mean()))
    return np.where(reach, grid, np.nan), coef, stats


def _recentre(grid, oversampling):
    """Shift the grid so its centroid is at offset (0, 0) and scale it to unit flux."""
    q = grid.shape[0]
    u = (np.arange(q) - (q - 1) / 2.0) / oversampling
    for _ in range(3):  # a cubic-spline shift moves the centroid slightly: repeat
        s = grid.sum()
        if not s > 0:
            raise ValueError("the ePSF estimate has no positive flux: check the sensor offset and the positions")
        cx = float((grid.sum(axis=0) * u).sum() / s)
        cy = float((grid.sum(axis=1) * u).sum() / s)
        if max(abs(cx), abs(cy)) < 1e-6:
            break
        grid = ndimage.shift(grid, (-cy * oversampling, -cx * oversampling), order=3, mode="grid-constant")
    return grid * (oversampling**2 / grid.sum())


# -- star stamps ------------------------------------------------------------


def _as_frames(images):
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images = [images]
    try:
        frames = [as_image(im, f"images[{i}]") for i, im in enumerate(images)]
    except TypeError:
        raise ValueError("images must be a sequence of 2-D frames") from None
    if not frames:
        raise ValueError("images is empty: give at least one frame")
    return frames


def _frame_positions(positions, n_frames):
    if n_frames == 1 and not isinstance(positions, (list, tuple)):
        positions = [positions]
    if len(positions) != n_frames:
        raise ValueError(f"positions must hold one (n, 2) array per frame: {len(positions)} for {n_frames} frames")
    return [as_positions(p, f"positions[{i}]") for i, p in enumerate(positions)]


def _frame_masks(mask, frames):
    if mask is None:
        return [None] * len(frames)
    if isinstance(mask, np.ndarray) and mask.ndim == 2:
        mask = [mask] * len(frames)
    if len(mask) != len(frames):
        raise ValueError(f"mask must be one 2-D array or one per frame, got {len(mask)} for {len(frames)} frames")
    return [as_mask(m, f.shape, f"mask[{i}]") for i, (m, f) in enumerate(zip(mask, frames, strict=True))]


def _cut_stamps(frames, positions, masks, sensor, roi, isolation):
    """Every star's neighbourhood as a NaN-padded stamp, with unusable pixels set to NaN.

    Left out: pixels off the frame, masked, non-finite or saturated, and
    pixels within ``isolation`` px (Chebyshev) of another star of the same
    frame. Returns stamps (n, S, S) in DN, the star positions (frame
    coordinates), the frame (column, row) of each stamp's pixel [0, 0], the
    (frame, index) of each star and the counts of stars dropped.
    """
    size = roi + 2 * _MARGIN
    hw = size // 2
    stamps, given, corner, ids = [], [], [], []
    n_sat = n_contam = 0
    sat = np.inf if sensor.saturation is None else sensor.saturation
    yy, xx = np.mgrid[0:size, 0:size]
    core = (slice(hw - 1, hw + 2), slice(hw - 1, hw + 2))
    for f, (img, pos, msk) in enumerate(zip(frames, positions, masks, strict=True)):
        h, w = img.shape
        bad = ~np.isfinite(img) | (img >= sat)
        if msk is not None:
            bad |= msk
        for k, (x, y) in enumerate(pos):
            if not (np.isfinite(x) and np.isfinite(y)) or not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
                continue
            cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            r0, c0 = cy - hw, cx - hw
            st = np.full((size, size), np.nan)
            rs, re = max(r0, 0), min(r0 + size, h)
            cs, ce = max(c0, 0), min(c0 + size, w)
            st[rs - r0:re - r0, cs - c0:ce - c0] = np.where(bad[rs:re, cs:ce], np.nan, img[rs:re, cs:ce])
            if np.any(img[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] >= sat):
                n_sat += 1
                continue
            others = np.delete(pos, k, axis=0)
            near = others[np.max(np.abs(others - (x, y)), axis=1) < isolation + hw] if len(others) else others
            if len(near):
                ox = near[:, 0, None, None] - c0
                oy = near[:, 1, None, None] - r0
                hit = np.any((np.abs(xx - ox) <= isolation) & (np.abs(yy - oy) <= isolation), axis=0)
                if np.any(hit[core]):
                    n_contam += 1
                    continue
                st[hit] = np.nan
            stamps.append(st)
            given.append((x, y))
            corner.append((c0, r0))
            ids.append((f, k))
    return (np.array(stamps).reshape(-1, size, size), np.array(given, float).reshape(-1, 2),
            np.array(corner, np.int64).reshape(-1, 2), np.array(ids, np.int64).reshape(-1, 2), n_sat, n_contam)


def _samples(stamps_e, origins, pos, roi):
    """ROI pixels of every star, read from its stamp, as (offset x, offset y, value) with offsets = pixel centre - star.

    ``pos`` are frame positions within ``_MARGIN`` of where each stamp was cut, so every ROI lies in its stamp.
    """
    x0 = roi_origin(pos[:, 0], roi)
    y0 = roi_origin(pos[:, 1], roi)
    j = np.arange(roi)
    cols = x0[:, None, None] + j[None, None, :]
    rows = y0[:, None, None] + j[None, :, None]
    cols, rows = np.broadcast_arrays(cols, rows)
    k = np.arange(len(pos))[:, None, None]
    val = stamps_e[k, rows - origins[:, 1, None, None], cols - origins[:, 0, None, None]]
    return cols - pos[:, 0, None, None], rows - pos[:, 1, None, None], val


def _tie_track(pos, weight, ids, times, n_stars, degree=2):
    """Each star's positions tied to a polynomial track in time (a star drifting over a fixed camera).

    The drift carries the star over many pixel phases, so a smooth track
    averages each image's pixel-phase bias with the star's other images,
    as the shift tie does with the other stars of a frame.
    """
    out = pos.copy()
    t = np.asarray(times, float)[ids[:, 0]]
    for s in range(n_stars):
        sel = np.flatnonzero((ids[:, 1] == s) & (weight > 0) & np.all(np.isfinite(pos), axis=1))
        if len(sel) < degree + 2:
            continue
        ts = t[sel]
        tc = (ts - ts.mean()) / max(float(np.ptp(ts)), 1e-12)
        w = np.sqrt(weight[sel])
        design = np.vander(tc, degree + 1) * w[:, None]
        coef = np.linalg.lstsq(design, pos[sel] * w[:, None], rcond=None)[0]
        out[sel] = np.vander(tc, degree + 1) @ coef
    return out


def _tie(pos, weight, ids, n_frames, n_stars, kind, times=None):
    """Positions of repeated stars tied across frames: ``pos[f, s] = T_f(X_s)``.

    ``T_f`` is a shift (``kind="shift"``) or an affine map (``"affine"``)
    per frame and ``X_s`` one position per star, fitted by alternating
    weighted least squares to the per-image positions. The pixel-phase bias
    of one image is then shared with the other images of the star and of
    the frame, which all sit at other phases: this is what removes it
    (a single image cannot tell a biased position from a warped ePSF).
    Frames with too few stars for their map fall back to a shift.
    ``kind="track"`` ties each star to a quadratic in ``times`` instead (:func:`_tie_track`).
    """
    if kind == "track":
        return _tie_track(pos, weight, ids, times, n_stars)
    P = np.full((n_frames, n_stars, 2), np.nan)
    W = np.zeros((n_frames, n_stars))
    P[ids[:, 0], ids[:, 1]] = pos
    W[ids[:, 0], ids[:, 1]] = np.where(np.all(np.isfinite(pos), axis=1), weight, 0.0)
    P0 = np.where(W[..., None] > 0, P, 0.0)
    A = np.broadcast_to(np.eye(2), (n_frames, 2, 2)).copy()
    t = np.zeros((n_frames, 2))
    seen = W.sum(axis=0) > 0
    X = np.zeros((n_stars, 2))
    for _ in range(200):
        # Stars given the frame maps: (sum w A'A) X = sum w A'(P - t).
        M = np.einsum("fs,fji,fjk->sik", W, A, A)
        rhs = np.einsum("fs,fji,fsj->si", W, A, P0 - t[:, None, :])
        M[~seen] = np.eye(2)
        X_new = np.linalg.solve(M, rhs[..., None])[..., 0]
        # Frame maps given the stars.
        wsum = W.sum(axis=1)
        has = wsum > 0
        xm = np.einsum("fs,si->fi", W, X_new) / np.where(has, wsum, 1)[:, None]
        pm = np.einsum("fs,fsi->fi", W, P0) / np.where(has, wsum, 1)[:, None]
        if kind == "affine":
            dx = X_new[None] - xm[:, None]
            dp = P0 - pm[:, None]
            S = np.einsum("fs,fsi,fsj->fij", W, dx, dx)
            C = np.einsum("fs,fsi,fsj->fij", W, dp, dx)
            ok = has & ((W > 0).sum(axis=1) >= 3) & (np.linalg.det(S) > 1e-9 * np.einsum("fii->f", S) ** 2)
            A[ok] = C[ok] @ np.linalg.inv(S[ok])
        t = np.where(has[:, None], pm - np.einsum("fij,fj->fi", A, xm), 0.0)
        change = np.max(np.abs(X_new - X)[seen]) if seen.any() else 0.0
        X = X_new
        if change < 1e-9:
            break
    tied = np.einsum("fij,fsj->fsi", A, np.broadcast_to(X, (n_frames, n_stars, 2))) + t[:, None, :]
    out = tied[ids[:, 0], ids[:, 1]]
    return np.where(np.all(np.isfinite(out), axis=1)[:, None], out, pos)


def match_stars(positions, *, radius=1.0, max_stars=100):
    """Line up the same stars in several frames that differ by an unknown shift (for ``tie``).

    Each frame's shift from the first frame is the mode of all pairwise
    position differences between the frames' ``max_stars`` first stars
    (list them brightest first), refined by the median over the pairs near
    it; stars are then paired with the first frame's within ``radius`` px.

    Parameters
    ----------
    positions : sequence of (n_f, 2) arrays or Tables
        Star positions per frame (detection tables work).
    radius : float
        Largest distance (px) between a star and its shifted reference.
    max_stars : int
        Stars per frame used to find the shift.

    Returns
    -------
    list of (n, 2) arrays
        One per frame, row k being the first frame's star k (NaN when it was
        not found in that frame).
    """
    pos = [as_positions(p, f"positions[{i}]") for i, p in enumerate(positions)]
    if not pos or len(pos[0]) == 0:
        raise ValueError("match_stars needs stars in the first frame")
    ref = pos[0]
    tree = cKDTree(ref)
    out = [ref.copy()]
    for p in pos[1:]:
        row = np.full_like(ref, np.nan)
        if len(p):
            d = (p[:max_stars, None, :] - ref[None, :max_stars, :]).reshape(-1, 2)
            key = np.floor(d / radius).astype(np.int64)
            uniq, cnt = np.unique(key, axis=0, return_counts=True)
            # A shift near a cell edge splits its votes: count each cell with its neighbours.
            votes = {tuple(k): c for k, c in zip(uniq, cnt, strict=True)}
            score = [sum(votes.get((k[0] + a, k[1] + b), 0) for a in (-1, 0, 1) for b in (-1, 0, 1)) for k in uniq]
            guess = (uniq[int(np.argmax(score))] + 0.5) * radius
            near = np.all(np.abs(d - guess) <= 1.5 * radius, axis=1)
            shift = np.median(d[near], axis=0)
            dist, j = tree.query(p - shift, distance_upper_bound=radius)
            for i in np.argsort(dist):
                if np.isfinite(dist[i]) and np.isnan(row[j[i], 0]):
                    row[j[i]] = p[i]
        out.append(row)
    return out


def build_epsf(images, positions, sensor: Sensor | None = None, *, oversampling=4, roi=7, iterations=50,
               per_star=False, tie=None, times=None, mask=None, clip=2.5, smoothing=SMOOTHING, tol=1e-3,
               isolation=None):
    """Effective PSF from star images by the Anderson & King (2000) iteration.

    Parameters
    ----------
    images : sequence of 2-D arrays
        Raw frames (DN).
    positions : sequence of (n, 2) arrays or Tables
        Rough (x, y) of the stars in each frame (detections good to ~0.5 px;
        a detection table with ``x_cg, y_cg`` works). With ``per_star`` or
        ``tie`` every frame lists the same stars in the same order (NaN where
        a star is missing).
    sensor : Sensor, optional
        Gain, offset, dark variance and saturation (default: frames in e-).
    oversampling : int
        Grid nodes per pixel (the paper: 4, i.e. 0.25 px). Spots sharper
        than a Gaussian of r ~ 0.25 px need 6-8 (and more stars): a warning
        says so when the grid is too coarse for the ePSF it finds.
    roi : int
        Odd width (px) of the window around each star that feeds the ePSF
        and the refits; the grid covers ``+-roi/2`` px (7 -> 29 x 29 nodes).
    iterations : int
        Maximum number of builds. 1 is the paper's single pass from
        centre-of-gravity positions, which keeps their pixel-phase bias; the
        default iterates to convergence.
    per_star : bool
        Night-sky mode: one ePSF per star from its images in all frames,
        flux included (``EPSF.flux``; refits hold the flux at it).
    tie : {None, "shift", "affine"}
        Tie the positions of the same star in different frames: each frame
        is a shifted (or affinely mapped) copy of one star list. From
        independent images a periodically warped ePSF fits the data exactly
        at positions that keep the start's pixel-phase bias; only the
        smoothing wears it down, over tens of builds, and not for the
        sharpest spots. Tied, each star's bias is averaged with its other
        images and its frame's other stars at other phases, and the build
        converges in a few builds. Use it whenever the stars repeat
        (dithered or drifting frames). ``"track"``: each star's positions
        lie on a quadratic in ``times`` (a star drifting over a camera fixed
        to the ground, the night-sky mode; frames may hold any stars).
    times : sequence of float, optional
        With ``tie="track"``: each frame's time (s).
    mask : 2-D bool array or one per frame, optional
        True where pixels must be ignored.
    clip : float
        Sigma-clipping threshold of the local estimate (2.5 in the paper).
    smoothing : float
        Weight of the penalty on the ePSF's second differences between
        nodes, relative to the data (0 = none). The default is light: it
        fills sparse nodes without broadening a 0.3 px core.
    tol : float
        Stop when the stars are within this distance (px) of where the
        iteration is going: the largest move of the last refit, extrapolated
        over the remaining builds at the observed rate of contraction.
    isolation : float, optional
        Pixels within this Chebyshev distance (px) of another star are left
        out (default ``roi // 2``); a star with such a pixel in its central
        3 x 3 is dropped.

    Returns
    -------
    EPSF, or list of EPSF with ``per_star`` (None for a star with too few usable images)
        Unit flux, centroid at (0, 0). ``meta`` records ``n_stars`` (star
        images in the final build), ``n_input``, ``iterations``,
        ``converged``, ``shift`` (largest move in the last refit, px) and the
        counts of stars left out (``n_saturated``, ``n_contaminated``,
        ``n_incomplete``).

    Raises
    ------
    ValueError
        On bad input, when no star is usable, or when there are fewer usable
        stars than ``oversampling**2`` (the grid cannot be filled). With fewer
        than ``4 * oversampling**2`` a warning says how many were usable.

    Examples
    --------
    >>> import numpy as np, startrack as st
    >>> sensor = st.Sensor(gain=0.2, offset=37, dark_var=25)
    >>> rng = np.random.default_rng(0)
    >>> sky = np.column_stack([np.arange(8) * 12.0 + 10, rng.uniform(10, 50, 8)])
    >>> frames, pos = [], []
    >>> for f in range(20):  # the same 8 stars, dithered by a few pixels
    ...     xy = sky + rng.uniform(-3, 3, 2)
    ...     frames.append(st.simulate.simulate_frame((60, 110), xy[:, 0], xy[:, 1], 5000,
    ...                                              st.GaussianPSF(0.4), sensor, seed=f))
    ...     pos.append(np.round(xy))
    >>> epsf = st.epsf.build_epsf(frames, pos, sensor, tie="shift")
    >>> epsf.meta["n_stars"], epsf.meta["converged"]
    (160, True)
    """
    frames = _as_frames(images)
    pos = _frame_positions(positions, len(frames))
    masks = _frame_masks(mask, frames)
    sensor = as_sensor(sensor)
    roi = as_int(roi, "roi", minimum=3, odd=True)
    oversampling = as_int(oversampling, "oversampling", minimum=1, maximum=16)
    iterations = as_int(iterations, "iterations", minimum=1)
    one_of(tie, "tie", (None, "shift", "affine", "track"))
    if tie == "track":
        times = np.asarray(times if times is not None else [], dtype=float).ravel()
        if len(times) != len(frames) or not np.all(np.isfinite(times)):
            raise ValueError(f"tie='track' needs times: one finite time (s) per frame, got {len(times)} for "
                             f"{len(frames)} frames")
    clip = as_float(clip, "clip", positive=True, unit="sigmas")
    tol = as_float(tol, "tol", positive=True, unit="px")
    smoothing = as_float(smoothing, "smoothing", nonnegative=True)
    if (per_star or tie) and len({len(p) for p in pos}) > 1:
        raise ValueError("per_star and tie need the same stars, in the same order, in every frame's positions "
                         "(NaN where a star is missing)")
    isolation = roi // 2 if isolation is None else float(isolation)
    n_input = sum(len(p) for p in pos)
    n_nan = sum(int(np.sum(~np.all(np.isfinite(p), axis=1))) for p in pos)
    if n_nan and not (per_star or tie):
        warnings.warn(f"{n_nan} of {n_input} positions are not finite and were left out", stacklevel=2)

    stamps, given, corner, ids, n_sat, n_contam = _cut_stamps(frames, pos, masks, sensor, int(roi), isolation)
    counts = dict(n_input=n_input, n_saturated=n_sat, n_contaminated=n_contam)
    if len(stamps) == 0:
        raise ValueError(f"no usable stars: {n_input} given, {n_sat} saturated, {n_contam} too close to a "
                         f"neighbour, {n_nan} not finite, the rest off the frame")
    n_stars = max(len(p) for p in pos)
    groups = [np.flatnonzero(ids[:, 1] == k) for k in range(n_stars)] if per_star else [np.arange(len(ids))]
    settings = dict(oversampling=int(oversampling), roi=int(roi), iterations=int(iterations), clip=float(clip),
                    smoothing=float(smoothing), tol=float(tol), tie=tie, per_star=bool(per_star), counts=counts,
                    shape=(len(frames), n_stars), times=times)
    threads = nb.get_num_threads()
    if len(ids) < _PARALLEL_MIN:
        nb.set_num_threads(1)
    try:
        models = _iterate(stamps, given, corner, ids, groups, sensor, settings)
    finally:
        nb.set_num_threads(threads)
    if not per_star:
        return models[0]
    if all(m is None for m in models):
        raise ValueError(f"no star had enough usable images for a per-star ePSF (at least {oversampling ** 2} "
                         f"at oversampling {oversampling})")
    return models


def _start(stamps_e, origins, given, roi):
    """Centre-of-gravity positions, and the ROI sum and border-median background of complete ROIs."""
    cg = centroid(stamps_e, given, origins=origins, roi=roi)
    xy = np.column_stack([cg["x_cg"], cg["y_cg"]])
    good = np.all(np.isfinite(xy), axis=1)
    good &= np.all(np.abs(np.where(good[:, None], xy, given) - given) <= _MARGIN, axis=1)
    xy = np.where(good[:, None], xy, given)
    _, _, val = _samples(stamps_e, origins, xy, roi)
    ring = np.concatenate([val[:, 0, :], val[:, -1, :], val[:, 1:-1, 0], val[:, 1:-1, -1]], axis=1)
    with np.errstate(invalid="ignore"):
        bg = np.median(ring, axis=1)
        flux = np.sum(val, axis=(1, 2)) - bg * roi * roi
    complete = good & np.all(np.isfinite(val), axis=(1, 2)) & (flux > 0)
    return xy, flux, bg, complete


def _build_grid(stamps_e, origins, xy, flux, bg, floor, os_, roi, clip, smoothing, normalise, start):
    """One ePSF grid from the stars at ``xy``: samples, sigma-clipped local estimate, re-centring.

    Returns the unit-flux grid, the flux it had before normalising (the
    star's flux when the samples are not normalised), the residual
    statistics of the estimate and its spline coefficients (the next
    build's start).
    """
    ox, oy, val = _samples(stamps_e, origins, xy, roi)
    f = flux[:, None, None] if normalise else np.ones((len(xy), 1, 1))
    b = bg[:, None, None]
    sval = (val - b) / f
    # Poisson variance of a sample is mean * a1 + a2, with at least 1 e-^2 of noise per pixel.
    a1 = np.broadcast_to(1.0 / f, val.shape)
    a2 = np.broadcast_to(np.maximum(b + floor, 1.0) / f**2, val.shape)
    ok = np.isfinite(sval)
    grid, coef, stats = _estimate_grid(ox[ok], oy[ok], sval[ok], a1[ok], a2[ok], os_, roi, clip, smoothing, start)
    holes = ~np.isfinite(grid)
    if holes.any():
        warnings.warn(f"{int(holes.sum())} ePSF grid nodes had no samples ({len(xy)} usable stars); "
                      "set to zero", stacklevel=4)
        grid[holes] = 0.0
    total = grid.sum() / os_**2
    return _recentre(grid, os_), float(total), stats, coef


def _remaining(history):
    """How far the positions still have to go, from the largest moves of the last refits (px).

    The iteration contracts geometrically: with moves d shrinking by rho per
    build, the stars still have ``d * rho / (1 - rho)`` to go. A slow
    contraction (rho near 1) is far from done even when each move is small.
    """
    if len(history) < 3:
        return np.inf  # the rate needs three moves
    d, d_before = history[-1], history[-3]
    if not d > 0 or not d_before > 0:
        return d
    rho = min(math.sqrt(d / d_before), 0.95)
    return max(d, d * rho / (1.0 - rho))


def _iterate(stamps, given, corner, ids, groups, sensor, st):
    """The Anderson & King loop: build, refit, (tie), repeat. One ePSF per group of star images.

    Every star is measured on its own stamp, in frame coordinates (the tie compares frames).
    """
    os_, roi, clip, per_star, tie = st["oversampling"], st["roi"], st["clip"], st["per_star"], st["tie"]
    stamps_e = (stamps - sensor.offset) / sensor.gain - sensor.dark_var
    xy, flux, bg, use = _start(stamps_e, corner, given, roi)
    n_incomplete = int(np.sum(~use))
    if tie:
        xy = np.where(use[:, None], _tie(xy, use.astype(float), ids, *st["shape"], tie, st["times"]), xy)
    fit = ("x", "y", "background") if per_star else ("x", "y", "flux", "background")
    need = os_**2
    converged = False
    shift = np.nan
    it = 0
    coefs = [None] * len(groups)
    history = []
    while True:
        it += 1
        models, fluxes = [], []
        for gi, g in enumerate(groups):
            sel = g[use[g]]
            if len(sel) < need:
                if not per_star:
                    c = st["counts"]
                    raise ValueError(f"too few usable stars for oversampling {os_}: {len(sel)} of {c['n_input']} "
                                     f"(need at least {need}; {c['n_saturated']} saturated, "
                                     f"{c['n_contaminated']} too close to a neighbour)")
                models.append(None)
                fluxes.append(np.nan)
                continue
            grid, total, stats, coefs[gi] = _build_grid(stamps_e[sel], corner[sel], xy[sel], flux[sel], bg[sel],
                                                        sensor.noise_floor, os_, roi, clip, st["smoothing"],
                                                        not per_star, coefs[gi])
            meta = dict(n_stars=len(sel), iterations=it, converged=converged, shift=shift, per_star=per_star,
                        n_incomplete=n_incomplete, clip=clip, smoothing=st["smoothing"], tie=tie or "none",
                        **stats, **st["counts"])
            if per_star:
                meta.update(star=int(ids[g[0], 1]), flux=total)
            models.append(EPSF(grid, os_, roi=roi, meta=meta))
            fluxes.append(total)
        if converged or it >= st["iterations"]:
            break
        new = np.full_like(xy, np.nan)
        err = np.full(len(xy), np.nan)
        good = np.zeros(len(xy), bool)
        for g, model, total in zip(groups, models, fluxes, strict=True):
            if model is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = localize(stamps[g], xy[g], model, sensor, origins=corner[g], fit=fit, roi=roi, start="given",
                               **(dict(flux=total) if per_star else {}))
            new[g] = np.column_stack([np.asarray(res["x"], float), np.asarray(res["y"], float)])
            err[g] = np.hypot(np.asarray(res["x_err"], float), np.asarray(res["y_err"], float))
            good[g] = (np.asarray(res["flags"]) & BAD_FIT) == 0
            flux[g] = np.where(good[g] & (np.asarray(res["flux"]) > 0), np.asarray(res["flux"], float), flux[g])
            bg[g] = np.where(good[g], np.asarray(res["background"], float), bg[g])
        if tie:
            new = np.where(good[:, None], _tie(new, np.where(good, 1.0 / err**2, 0.0), ids, *st["shape"], tie,
                                            st["times"]), new)
        good &= np.all(np.abs(new - given) <= _MARGIN, axis=1)
        moved = np.abs(new - xy)[good & use]
        shift = float(moved.max()) if moved.size else np.nan
        history.append(shift)
        converged = bool(moved.size) and _remaining(history) < st["tol"]
        xy = np.where(good[:, None], new, xy)
        use = good
    shared = next((m for m in models if m is not None), None)
    if shared is not None:
        r_eq = shared.equivalent_radius()
        if r_eq * os_ < 1.0:
            warnings.warn(f"the ePSF (equivalent Gaussian radius {r_eq:.2f} px) is sharper than a grid of "
                          f"{1 / os_:g} px resolves: use oversampling >= {math.ceil(1.2 / r_eq)}", stacklevel=3)
    n_use = int(use.sum())
    if not per_star and n_use < 4 * need:
        warnings.warn(f"only {n_use} usable stars for oversampling {os_} (fewer than {4 * need}): the ePSF is "
                      "noisy; lower the oversampling or add frames", stacklevel=3)
    return models
