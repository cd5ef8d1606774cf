"""Seeded rendering of spots and star fields through a PSF model and the sensor model.

Light and dark electrons are Poisson (``Poisson(signal + background + dark_var)``),
read noise is Gaussian, the result is amplified by the gain, rounded to whole
DN and clipped at saturation: what a real frame goes through.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from astropy import units as u
from astropy.table import Table

from .psf import PSFModel
from .sensor import Sensor

__all__ = ["render", "expose", "simulate_frame", "spot_grid", "star_field", "dithered_frames"]


@nb.njit(cache=True)
def _splat(img, val, x0, y0, flux):
    h, w = img.shape
    n, ny, nx = val.shape
    for k in range(n):
        for i in range(ny):
            r = y0[k] + i
            if r < 0 or r >= h:
                continue
            for j in range(nx):
                c = x0[k] + j
                if 0 <= c < w:
                    img[r, c] += flux[k] * val[k, i, j]


def render(shape, x, y, flux, model: PSFModel, background=0.0):
    """Noise-free expected light in e- per pixel: stars plus a uniform or per-pixel sky background.

    Parameters
    ----------
    shape : (ny, nx)
    x, y, flux : array-like
        Star positions (px) and photo-electrons.
    model : PSFModel
    background : float or 2-D array
        Sky in e-/pixel (above the dark level).
    """
    ny, nx = (int(s) for s in shape)
    x, y, flux = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, flux)))
    img = np.zeros((ny, nx)) + np.asarray(background, dtype=float)
    if x.size:
        stamp = 2 * int(math.ceil(model.support)) + 1
        x0 = np.floor(x + 0.5).astype(np.int64) - stamp // 2
        y0 = np.floor(y + 0.5).astype(np.int64) - stamp // 2
        val, _, _ = model.render(np.ascontiguousarray(x.ravel()), np.ascontiguousarray(y.ravel()),
                                 x0.ravel(), y0.ravel(), (stamp, stamp))
        _splat(img, val, x0.ravel(), y0.ravel(), np.ascontiguousarray(flux.ravel()))
    return img


def expose(light, sensor: Sensor, rng=None, *, quantize=True):
    """Turn expected light (e- per pixel) into a raw frame in DN through the sensor model.

    ``P = s0 + K * (Poisson(light + dark_var) + Normal(0, read_noise))``,
    rounded to whole DN (``quantize``) and clipped to ``[0, saturation]``.
    """
    rng = np.random.default_rng(rng)
    light = np.asarray(light, dtype=float)
    if np.any(light < 0) or not np.all(np.isfinite(light)):
        raise ValueError("expected light must be finite and non-negative")
    e = rng.poisson(light + sensor.dark_var).astype(float)
    if sensor.read_noise > 0:
        e += rng.normal(0.0, sensor.read_noise, size=e.shape)
    dn = sensor.offset + sensor.gain * e
    if quantize:
        dn = np.round(dn)
    dn = np.maximum(dn, 0.0)
    if sensor.saturation is not None:
        dn = np.minimum(dn, sensor.saturation)
    return dn


def simulate_frame(shape, x, y, flux, model: PSFModel, sensor: Sensor, *, background=0.0, seed=None,
                   quantize=True):
    """One raw frame (DN, float array) of stars at (x, y) with ``flux`` e- each."""
    return expose(render(shape, x, y, flux, model, background), sensor, seed, quantize=quantize)


def spot_grid(model: PSFModel, dx, dy, flux, sensor: Sensor, *, background=0.0, repeats=1, spacing=None,
              seed=None, quantize=True):
    """Many isolated copies of a spot at chosen intra-pixel offsets, tiled into one frame.

    The statistical workhorse: every (dx, dy) offset is rendered ``repeats``
    times on its own cell of a grid, so one :func:`startrack.localize` call
    fits thousands of independent noise realisations.

    Parameters
    ----------
    dx, dy : array-like
        Offsets (px) from the pixel centre, broadcast together.
    spacing : int, optional
        Cell size in px (default: twice the model's ROI, so neighbours never touch).

    Returns
    -------
    image : 2-D array (DN)
    truth : Table
        ``x, y, flux, dx, dy`` of every spot, and ``x_cg, y_cg`` set to the
        cell centre (a start ~0.5 px off, as a detector would give).
    """
    dx, dy = np.broadcast_arrays(np.atleast_1d(np.asarray(dx, float)), np.atleast_1d(np.asarray(dy, float)))
    dx = np.repeat(dx.ravel(), repeats)
    dy = np.repeat(dy.ravel(), repeats)
    n = dx.size
    spacing = int(spacing or 2 * model.default_roi() + 1)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    k = np.arange(n)
    cx = (k % cols) * spacing + spacing // 2
    cy = (k // cols) * spacing + spacing // 2
    x = cx + dx
    y = cy + dy
    img = simulate_frame((rows * spacing, cols * spacing), x, y, np.broadcast_to(flux, (n,)), model, sensor,
                         background=background, seed=seed, quantize=quantize)
    truth = Table({"x": x, "y": y, "flux": np.broadcast_to(np.asarray(flux, float), (n,)).copy(),
                   "dx": dx, "dy": dy, "x_cg": cx.astype(float), "y_cg": cy.astype(float)})
    return img, truth


def _place(rng, n_stars, nx, ny, margin, min_separation):
    """Up to ``n_stars`` random (x, y) at least ``min_separation`` px apart and ``margin`` px inside the frame."""
    pts = np.empty((0, 2))
    for _ in range(50):
        need = n_stars - len(pts)
        if need <= 0:
            break
        cand = np.column_stack([rng.uniform(margin, nx - 1 - margin, 2 * need),
                                rng.uniform(margin, ny - 1 - margin, 2 * need)])
        for p in cand:
            if len(pts) >= n_stars:
                break
            if len(pts) == 0 or np.min(np.hypot(*(pts - p).T)) >= min_separation:
                pts = np.vstack([pts, p])
    return pts


def star_field(shape, n_stars, model: PSFModel, sensor: Sensor, *, flux=(500.0, 20000.0), background=0.0,
               margin=8, min_separation=None, seed=None, quantize=True):
    """A frame of randomly placed stars with a power-law flux distribution.

    Parameters
    ----------
    shape : (ny, nx)
    n_stars : int
    flux : (min, max)
        Photo-electron range; fluxes follow ``N(>f) ~ f^-1`` as for stars of
        uniformly distributed magnitude at fixed density per magnitude.
    margin : float
        Stars keep this far (px) from the edges.
    min_separation : float, optional
        Re-draw stars closer than this to another (px; default 3x the ROI).

    Returns
    -------
    image : 2-D array (DN)
    truth : Table
        ``id, x, y, flux`` (px, e-), brightest first.
    """
    rng = np.random.default_rng(seed)
    ny, nx = (int(s) for s in shape)
    if min_separation is None:
        min_separation = 3.0 * model.default_roi()
    pts = _place(rng, n_stars, nx, ny, margin, min_separation)
    lo, hi = flux
    f = lo * (hi / lo) ** rng.uniform(0, 1, len(pts))
    order = np.argsort(-f)
    pts, f = pts[order], f[order]
    img = expose(render((ny, nx), pts[:, 0], pts[:, 1], f, model, background), sensor, rng, quantize=quantize)
    truth = Table({"id": np.arange(1, len(pts) + 1), "x": pts[:, 0] * u.pix, "y": pts[:, 1] * u.pix,
                   "flux": f * u.electron})
    return img, truth


def dithered_frames(shape, n_stars, n_frames, model: PSFModel, sensor: Sensor, *, flux=5000.0, dither=3.0,
                    independent=False, background=0.0, margin=8, min_separation=None, seed=None, quantize=True):
    """A sequence of frames of the same star field, each shifted by a random (sub-pixel) dither.

    The situation of a star sensor staring at the sky (or of dithered
    exposures): every star appears in every frame at a new, unknown
    intra-pixel position. With ``independent`` every frame has a new field.

    Parameters
    ----------
    shape : (ny, nx)
    n_stars, n_frames : int
    flux : float or (n_stars,) array
        Photo-electrons per star (the same in every frame).
    dither : float
        Each frame's shift is uniform in ``[-dither, dither]`` px per axis.
    margin, min_separation : float
        As in :func:`star_field` (the margin also holds the dither).

    Returns
    -------
    frames : list of 2-D arrays (DN)
    truth : ndarray (n_frames, n_stars, 2)
        True (x, y) of every star in every frame; row k is the same star in
        every frame unless ``independent``.
    """
    rng = np.random.default_rng(seed)
    ny, nx = (int(s) for s in shape)
    if min_separation is None:
        min_separation = 3.0 * model.default_roi()
    sky = _place(rng, n_stars, nx, ny, margin + dither, min_separation)
    frames, truth = [], []
    for _ in range(int(n_frames)):
        xy = (_place(rng, n_stars, nx, ny, margin, min_separation) if independent
              else sky + rng.uniform(-dither, dither, 2))
        if len(xy) < n_stars:
            raise ValueError(f"could not place {n_stars} stars {min_separation} px apart in a {nx} x {ny} frame; "
                             "enlarge the frame or lower min_separation")
        frames.append(simulate_frame((ny, nx), xy[:, 0], xy[:, 1], np.broadcast_to(flux, (len(xy),)), model, sensor,
                                     background=background, seed=rng, quantize=quantize))
        truth.append(xy)
    return frames, np.array(truth)
