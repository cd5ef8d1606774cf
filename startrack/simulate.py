"""Seeded rendering of spots and star fields through a PSF model and the sensor model.

Light and dark electrons are Poisson (``Poisson(signal + background + dark_var)``),
read noise is Gaussian, the result is amplified by the gain, rounded to whole
DN and clipped at saturation: what a real frame goes through.
"""

from __future__ import annotations

import math

import cv2
import numba as nb
import numpy as np
from astropy import units as u
from astropy.table import Table

from .psf import PSFModel
from .sensor import Sensor
from .validate import as_float, as_image, as_int, as_positions, one_of

__all__ = ["render", "expose", "simulate_frame", "spot_grid", "star_field", "dithered_frames", "add_silhouette",
           "add_clouds", "add_moon", "add_trail", "add_hot_pixels", "jpeg_roundtrip", "add_gradient"]


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


# -- frame defects: what real skies add to a frame (each takes a frame in DN and returns a new one) -------------


# the options every defect that adds light takes, spliced into their docstrings by _light_doc
_LIGHT_OPTIONS = """gain : float
        DN per electron: the added light gets its shot noise (Poisson in electrons).
    saturation : float, optional
        Clip level (DN); default the integer dtype's largest value, none for float frames.
    seed : int or Generator"""


def _light_doc(fn):
    fn.__doc__ = fn.__doc__.replace("{light_options}", _LIGHT_OPTIONS)
    return fn


def _defect_start(image, seed):
    """The frame as float64 (a copy), its dtype and a generator."""
    arr = np.asarray(image)
    as_image(arr)  # the boundary checks (2-D, numeric)
    return np.array(arr, dtype=np.float64), arr.dtype, np.random.default_rng(seed)


def _defect_end(work, dtype, saturation):
    """Clip at ``saturation`` (default: an integer dtype's largest value) and return in the input's dtype."""
    if np.issubdtype(dtype, np.integer):
        top = np.iinfo(dtype).max if saturation is None else min(float(saturation), np.iinfo(dtype).max)
        return np.clip(np.round(work), 0, top).astype(dtype)
    if saturation is not None:
        work = np.minimum(work, float(saturation))
    return work.astype(dtype, copy=False)


def _add_light(work, light, gain, rng):
    """Add expected light (DN) with its shot noise: Poisson in electrons, ``gain`` DN per electron."""
    gain = as_float(gain, "gain", positive=True, unit="DN/e-")
    work += rng.poisson(np.maximum(light, 0.0) / gain) * gain


def _robust_sigma(work):
    from astropy.stats import mad_std

    return float(mad_std(work))


@_light_doc
def add_silhouette(image, *, fraction=1 / 3, side="bottom", level=None, noise=None, rim=None, rim_width=4.0,
                   roughness=0.05, gain=1.0, saturation=None, seed=None):
    """A dark foreground object (trees, a roof, a hill) over one side of the frame, with a bright rim.

    Below a ragged skyline the sky is hidden: those pixels hold only the
    sensor's dark level and noise. Where the sky glow meets the object a
    bright rim runs along the skyline (glow scattered at the edge, lights
    behind it), decaying into the sky over ``rim_width`` px.

    Parameters
    ----------
    image : 2-D array (DN; uint8, uint16 or float)
    fraction : float
        Share of the frame covered (0-1), on average along the skyline.
    side : {"bottom", "top", "left", "right"}
        Edge the object stands on.
    level, noise : float, optional
        Mean and standard deviation (DN) of the hidden pixels; default the
        frame's 1st percentile and its robust (MAD) noise.
    rim : float, optional
        Rim brightness at the skyline (DN above the sky); default 30x the noise.
    rim_width : float
        e-folding width (px) of the rim into the sky.
    roughness : float
        Amplitude of the skyline's raggedness as a fraction of the frame side.
    {light_options}

    Returns
    -------
    image : 2-D array, the input's dtype
    covered : 2-D bool array
        True on the object.
    """
    work, dtype, rng = _defect_start(image, seed)
    side = one_of(side, "side", ("bottom", "top", "left", "right"))
    fraction = as_float(fraction, "fraction", nonnegative=True)
    if fraction > 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    view = work if side in ("bottom", "top") else work.T
    if side in ("top", "left"):
        view = view[::-1]
    h, w = view.shape
    sigma = _robust_sigma(work) if noise is None else as_float(noise, "noise", nonnegative=True, unit="DN")
    level = float(np.percentile(work, 1)) if level is None else as_float(level, "level", unit="DN")
    rim = 30.0 * max(sigma, 1.0) if rim is None else as_float(rim, "rim", nonnegative=True, unit="DN")
    width = as_float(rim_width, "rim_width", positive=True, unit="px")
    # the skyline: a few random sines (a tree line, a roof with a chimney are both this ragged)
    col = np.arange(w)
    k = np.arange(1, 9)
    amp = rng.normal(0, 1, k.size) / k
    phase = rng.uniform(0, 2 * math.pi, k.size)
    wiggle = (amp[:, None] * np.sin(2 * math.pi * k[:, None] * col[None] / w + phase[:, None])).sum(0)
    wiggle *= as_float(roughness, "roughness", nonnegative=True) * h / max(float(np.abs(wiggle).max()), 1e-9)
    skyline = (1.0 - fraction) * h + wiggle  # rows at or below this are covered
    row = np.arange(h)[:, None]
    covered = row >= skyline[None]
    above = np.where(covered, np.inf, skyline[None] - row)
    _add_light(view, rim * np.exp(-above / width), gain, rng)
    view[covered] = level + rng.normal(0, sigma, int(covered.sum()))
    mask = covered if side in ("bottom", "right") else covered[::-1]
    return _defect_end(work, dtype, saturation), (mask if side in ("bottom", "top") else mask.T)


@_light_doc
def add_clouds(image, *, cover=0.5, scale=40.0, opacity=0.95, glow=None, dark=None, gain=1.0, saturation=None,
               seed=None):
    """Patchy clouds: smooth multiplicative attenuation of the sky's light, plus the clouds' own glow.

    A Gaussian random field smoothed over ``scale`` px is thresholded softly
    so that ``cover`` of the frame is under cloud; the light above the dark
    level is multiplied by ``1 - opacity * thickness`` and the clouds add
    ``glow * thickness`` DN (city light they scatter back), with its shot
    noise.

    Parameters
    ----------
    image : 2-D array (DN)
    cover : float
        Fraction of the frame under cloud (1: overcast).
    scale : float
        Size of the cloud structure (px).
    opacity : float
        Fraction of the light a thick cloud stops (1: none gets through).
    glow : float, optional
        Glow of a thick cloud (DN); default 10x the frame's robust noise.
    dark : float, optional
        DN of no light (offset plus dark); default the frame's 0.1th percentile.
    {light_options}

    Returns
    -------
    image : 2-D array, the input's dtype
    thickness : 2-D array
        Cloud thickness 0-1 per pixel.
    """
    work, dtype, rng = _defect_start(image, seed)
    cover = as_float(cover, "cover", nonnegative=True)
    opacity = as_float(opacity, "opacity", nonnegative=True)
    if cover > 1 or opacity > 1:
        raise ValueError(f"cover and opacity must be in [0, 1], got {cover} and {opacity}")
    scale = as_float(scale, "scale", positive=True, unit="px")
    sigma = _robust_sigma(work)
    glow = 10.0 * max(sigma, 1.0) if glow is None else as_float(glow, "glow", nonnegative=True, unit="DN")
    dark = float(np.percentile(work, 0.1)) if dark is None else as_float(dark, "dark", unit="DN")
    field = cv2.GaussianBlur(rng.normal(0, 1, work.shape), (0, 0), scale, borderType=cv2.BORDER_REFLECT)
    field = (field - field.mean()) / max(float(field.std()), 1e-12)
    if cover >= 1:
        thick = np.ones_like(work)
    elif cover <= 0:
        thick = np.zeros_like(work)
    else:
        edge = float(np.quantile(field, 1.0 - cover))
        # a soft edge (half a standard deviation of the field): cloud margins are thin, not cut out
        thick = np.clip((field - edge) / 0.5, 0.0, 1.0)
    work = dark + (work - dark) * (1.0 - opacity * thick)
    _add_light(work, glow * thick, gain, rng)
    return _defect_end(work, dtype, saturation), thick


def add_moon(image, *, edge="right", position=0.5, brightness=None, falloff=0.5, glare_radius=0.08, gain=1.0,
             saturation=None, seed=None):
    """A bright moon just outside one edge: a big gradient of scattered light and a saturated glare.

    The scattered light falls as ``brightness / (1 + (d / (falloff L))^2)``
    with the distance ``d`` from the moon (``L`` the frame's larger side);
    within ``glare_radius L`` of it the pixels are saturated.

    Parameters
    ----------
    image : 2-D array (DN)
    edge : {"right", "left", "top", "bottom"}
        Edge the moon sits just beyond.
    position : float
        Where along that edge (0-1).
    brightness : float, optional
        Scattered light at the moon (DN); default a quarter of the saturation.
    falloff : float
        Half-light distance as a fraction of the frame's larger side.
    glare_radius : float
        Radius of the saturated glare as a fraction of the larger side
        (centred on the edge, so about half of it lies in the frame).
    gain : float
        DN per electron, for the moonlight's shot noise.
    saturation : float, optional
        Saturation level (DN); default the integer dtype's largest value;
        required for float frames.
    seed : int or Generator

    Returns
    -------
    image : 2-D array, the input's dtype
    glare : 2-D bool array
        True on the saturated glare.
    """
    work, dtype, rng = _defect_start(image, seed)
    edge = one_of(edge, "edge", ("right", "left", "top", "bottom"))
    if saturation is None:
        if not np.issubdtype(dtype, np.integer):
            raise ValueError("saturation (DN) is needed for a float frame")
        saturation = float(np.iinfo(dtype).max)
    saturation = as_float(saturation, "saturation", positive=True, unit="DN")
    brightness = 0.25 * saturation if brightness is None else as_float(brightness, "brightness", nonnegative=True)
    h, w = work.shape
    size = max(h, w)
    pos = as_float(position, "position")
    mx, my = {"right": (w - 0.5, pos * (h - 1)), "left": (-0.5, pos * (h - 1)),
              "top": (pos * (w - 1), -0.5), "bottom": (pos * (w - 1), h - 0.5)}[edge]
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(xx - mx, yy - my)
    _add_light(work, brightness / (1.0 + (d / (as_float(falloff, "falloff", positive=True) * size)) ** 2), gain, rng)
    glare = d <= as_float(glare_radius, "glare_radius", nonnegative=True) * size
    work[glare] = saturation
    return _defect_end(work, dtype, saturation), glare


@_light_doc
def add_trail(image, start, end, *, brightness=None, width=1.0, dash=None, gain=1.0, saturation=None, seed=None):
    """A satellite or aircraft trail: a bright line from ``start`` to ``end``, optionally dashed.

    Parameters
    ----------
    image : 2-D array (DN)
    start, end : (x, y)
        End points (px; may lie outside the frame so the trail crosses it).
    brightness : float, optional
        Peak of the line (DN above the sky); default 50x the frame's robust noise.
    width : float
        Gaussian sigma (px) of the line's cross-section.
    dash : (on, off), optional
        Lengths (px) of the lit and dark stretches (an aircraft's blinking
        lights); default a continuous line.
    {light_options}

    Returns
    -------
    image : 2-D array, the input's dtype
    """
    work, dtype, rng = _defect_start(image, seed)
    (x0, y0), (x1, y1) = (as_positions([start])[0], as_positions([end])[0])
    brightness = 50.0 * max(_robust_sigma(work), 1.0) if brightness is None else as_float(
        brightness, "brightness", nonnegative=True, unit="DN")
    width = as_float(width, "width", positive=True, unit="px")
    length = math.hypot(x1 - x0, y1 - y0)
    if length == 0:
        raise ValueError("start and end of the trail must differ")
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    yy, xx = np.mgrid[:work.shape[0], :work.shape[1]]
    along = (xx - x0) * ux + (yy - y0) * uy
    across = -(xx - x0) * uy + (yy - y0) * ux
    light = brightness * np.exp(-0.5 * (across / width) ** 2) * ((along >= 0) & (along <= length))
    if dash is not None:
        on, off = (as_float(v, "dash", positive=True, unit="px") for v in dash)
        light *= np.mod(along, on + off) < on
    _add_light(work, light, gain, rng)
    return _defect_end(work, dtype, saturation)


def add_hot_pixels(image, n=100, *, value_range=(500.0, 4000.0), saturation=None, seed=None):
    """``n`` single-pixel spikes (hot pixels, cosmic-ray hits) at random places.

    Parameters
    ----------
    image : 2-D array (DN)
    n : int
    value_range : (low, high)
        Each spike's value (DN) is uniform in this range.
    saturation : float, optional
        Clip level (DN); default the integer dtype's largest value.
    seed : int or Generator

    Returns
    -------
    image : 2-D array, the input's dtype
    positions : (n, 2) int array
        (x, y) of the spikes.
    """
    work, dtype, rng = _defect_start(image, seed)
    n = as_int(n, "n", minimum=0)
    lo, hi = (as_float(v, "value_range", unit="DN") for v in value_range)
    xy = np.column_stack([rng.integers(0, work.shape[1], n), rng.integers(0, work.shape[0], n)])
    work[xy[:, 1], xy[:, 0]] = rng.uniform(lo, hi, n)
    return _defect_end(work, dtype, saturation), xy


def jpeg_roundtrip(image, quality=70):
    """An 8-bit frame through JPEG compression and back (OpenCV), with the block artefacts that leaves.

    Parameters
    ----------
    image : 2-D array
        8-bit frame: uint8, or values in 0-255 (rounded and clipped).
    quality : int
        JPEG quality 1-100.

    Returns
    -------
    image : 2-D uint8 array
    """
    arr = np.asarray(image)
    as_image(arr)
    if arr.dtype != np.uint8:
        if np.nanmax(arr) > 255 or np.nanmin(arr) < 0:
            raise ValueError("image must be an 8-bit frame (values 0-255) for JPEG; scale it first")
        arr = np.clip(np.round(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    quality = as_int(quality, "quality", minimum=1, maximum=100)
    ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


@_light_doc
def add_gradient(image, amplitude, *, angle=0.0, gain=1.0, saturation=None, seed=None):
    """A linear gradient of added light across the frame (light pollution, twilight, moonlight far away).

    Parameters
    ----------
    image : 2-D array (DN)
    amplitude : float
        Added light (DN) at the brightest corner side; 0 at the opposite side.
    angle : float
        Direction (deg) the light increases towards: 0 = +x (right), 90 = +y (down).
    {light_options}

    Returns
    -------
    image : 2-D array, the input's dtype
    """
    work, dtype, rng = _defect_start(image, seed)
    amplitude = as_float(amplitude, "amplitude", nonnegative=True, unit="DN")
    a = math.radians(as_float(angle, "angle", unit="deg"))
    yy, xx = np.mgrid[:work.shape[0], :work.shape[1]]
    ramp = xx * math.cos(a) + yy * math.sin(a)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-12)
    _add_light(work, amplitude * ramp, gain, rng)
    return _defect_end(work, dtype, saturation)
