"""Turntable per-pixel ePSF: build it from a sub-pixel scan and test it against the precision limit.

The small-PSF paper's first way (Zhan et al. 2023, Engineering 27, 140,
sections 2.1 and 3.2). A collimated point source is imaged while a turntable
turns the camera in small known steps; each step's repeated frames are
averaged, and every pixel's mean light, against the star position the
turntable angle gives (``f tan(theta) / a`` px), becomes that pixel's own ePSF
through a not-a-knot cubic spline (:class:`startrack.PixelEPSF`). Half of the
positions build the model, the other half test it: ePSF + Poisson MLE
(:func:`startrack.localize`), centre of gravity and a least-squares Gaussian
fit are compared with the Cramér–Rao precision limit at every test position,
for single frames and for the mean over the repeats (the paper's Fig. 4(b)(c)).

The turntable only knows angles, so the star positions need the mounting:
an offset and the direction(s) of the scan on the sensor, fitted to the
centres of gravity of the averaged steps with the scale fixed by ``f / a``
(an orthogonal Procrustes fit). The centre of gravity's periodic S-curve
bias averages out over a scan of several pixels, so the offset is unbiased
there; on a scan of a pixel or less it can be off by the S-curve's mean,
which only shifts every position by the same amount.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from scipy.interpolate import make_lsq_spline
from scipy.linalg import orthogonal_procrustes
from scipy.optimize import least_squares
from scipy.special import ndtr
from scipy.stats import trim_mean

from ..crlb import precision_limit
from ..detect import centroid
from ..likelihood import param_names
from ..localize import localize
from ..psf import PixelEPSF, roi_origin
from ..sensor import Sensor
from ..validate import as_float, as_int, as_positions, as_stack, as_stamps, one_of
from .dataset import load_frames, read_manifest

__all__ = ["scan_offsets", "fit_alignment", "calibrate_turntable", "TurntableCalibration", "evaluate_turntable",
           "shared_epsf", "gaussian_fit", "read_turntable", "plot_turntable"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def scan_offsets(azimuth_deg, elevation_deg, focal_length_mm, pixel_pitch_um):
    """Image shift (px) of a collimated source for turntable angles: ``f tan(theta) / a`` per axis.

    Azimuth moves the spot along the first scan axis, elevation along the
    second; the cross-coupling of a two-axis mount, ``1/cos(azimuth)``, is
    below 1e-5 px over the few pixels of an ePSF scan and left out.
    """
    f_px = (1000.0 * as_float(focal_length_mm, "focal_length_mm", positive=True, unit="mm")
            / as_float(pixel_pitch_um, "pixel_pitch_um", positive=True, unit="um"))
    return (f_px * np.tan(np.radians(np.asarray(azimuth_deg, float))),
            f_px * np.tan(np.radians(np.asarray(elevation_deg, float))))


def fit_alignment(u, v, x, y):
    """Place turntable offsets on the sensor: ``(x, y) = t + R (u, v)`` with R orthogonal (unit scale).

    Parameters
    ----------
    u, v : array
        Scan offsets (px) from :func:`scan_offsets`.
    x, y : array
        Measured spot positions (px), e.g. centres of gravity of the averaged steps.

    Returns
    -------
    dict
        ``t`` (2,), ``R`` (2, 2; rotation, or rotation and reflection),
        ``rotation_deg`` (angle of the first scan axis from the sensor's x axis),
        ``scale`` (least-squares scale along the scan: 1 when ``f`` and ``a``
        are right), ``residual_rms`` (px).
    """
    uv = np.column_stack([u, v]).astype(float)
    xy = np.column_stack([x, y]).astype(float)
    cu, cx = uv - uv.mean(axis=0), xy - xy.mean(axis=0)
    if np.ptp(uv[:, 0]) <= 0:
        raise ValueError("the scan has a single azimuth: nothing to align")
    if np.ptp(uv[:, 1]) > 0:
        R = orthogonal_procrustes(cu, cx)[0].T
    else:  # 1-D scan: only the direction of u is defined; v is its perpendicular
        d = cu[:, 0] @ cx / (cu[:, 0] @ cu[:, 0])
        d = d / np.hypot(*d)
        R = np.array([[d[0], -d[1]], [d[1], d[0]]])
    t = xy.mean(axis=0) - R @ uv.mean(axis=0)
    fitted = uv @ R.T + t
    scale = float(np.sum(cx * (cu @ R.T)) / np.sum(cu * cu))
    return {"t": t, "R": R, "rotation_deg": float(np.degrees(np.arctan2(R[1, 0], R[0, 0]))), "scale": scale,
            "residual_rms": float(np.sqrt(np.mean(np.sum((xy - fitted) ** 2, axis=1))))}


def _brightest(frames):
    """(x, y) of the brightest pixel of each frame (the small-PSF paper centres its window there)."""
    frames = np.asarray(frames)
    k = frames.reshape(len(frames), -1).argmax(axis=1)
    return np.column_stack([k % frames.shape[2], k // frames.shape[2]]).astype(float)


@dataclass
class TurntableCalibration:
    """Result of :func:`calibrate_turntable`.

    Attributes
    ----------
    model : PixelEPSF
        The per-pixel ePSF built from the model half of the positions.
    steps : Table
        One row per turntable step: ``azimuth_deg, elevation_deg, u, v``
        (turntable offsets, px), ``x, y`` (the reference position on the
        sensor, px), ``x_cg, y_cg`` (centre of gravity of the averaged
        frames), ``n_frames`` and ``role`` (``model``, ``test`` or ``unused``).
    step_of_frame : ndarray of int
        Step index of every input frame.
    alignment : dict
        :func:`fit_alignment` of the scan to the sensor.
    flux : float
        Photo-electrons in the spot (the ePSF is normalised to it).
    background : float
        Light background left after the sensor's dark level, e-/px.
    roi : int
        Fitting window the model is meant for (px).
    light : ndarray
        Mean light per step in e- (steps, ny, nx), dark level removed.
    """

    model: PixelEPSF
    steps: Table
    step_of_frame: np.ndarray
    alignment: dict
    flux: float
    background: float
    roi: int
    light: np.ndarray = field(repr=False)

    @property
    def fit(self):
        """Parameters the evaluation fits: x (1-D scan) or x and y (2-D grid); flux and background known."""
        return ("x",) if self.model.ndim == 1 else ("x", "y")

    def summary(self) -> str:
        a = self.alignment
        role = np.asarray(self.steps["role"])
        lines = [f"per-pixel ePSF: {self.model.ndim}-D, {np.sum(role == 'model')} model and {np.sum(role == 'test')} "
                 f"test positions, {self.model.nrows}x{self.model.ncols} px block",
                 f"spot flux {self.flux:.1f} e-, residual background {self.background:.3f} e-/px",
                 f"scan on the sensor: rotation {a['rotation_deg']:.3f} deg, scale {a['scale']:.5f} "
                 f"(1 if focal length and pitch are right), CG residual {a['residual_rms']:.4f} px rms"]
        return "\n".join(lines)


def calibrate_turntable(frames, azimuth_deg, elevation_deg, sensor: Sensor, focal_length_mm, pixel_pitch_um, *,
                        roi=5, test="alternate", edge=0.25):
    """Per-pixel ePSF from turntable frames (the small-PSF paper's first way).

    Parameters
    ----------
    frames : (n, ny, nx) array
        Raw frames in DN: several repeats at every turntable step.
    azimuth_deg, elevation_deg : array, shape (n,)
        Turntable angles of each frame (degrees from the optical axis). One
        elevation: a 1-D scan along the azimuth direction, model
        ``phi_ij(x)``. Several: a full azimuth x elevation grid, model
        ``phi_ij(x, y)``.
    sensor : Sensor
        Gain, offset and dark variance (from photon transfer).
    focal_length_mm, pixel_pitch_um : float
        Turn angles into pixels.
    roi : int
        Fitting window (px) the model must cover.
    test : {"alternate", "none"}
        ``alternate``: every other azimuth step tests, the rest model (the
        paper's half and half), except within ``edge`` px of the ends of the
        scan, where all steps model (azimuth) or are left out (elevation), so
        that no test fit reaches beyond the calibrated positions;
        ``none``: all steps model.
    edge : float
        Width (px) of the scan's ends kept out of the test set.

    Returns
    -------
    TurntableCalibration
    """
    frames = as_stack(frames, "frames")
    az = np.asarray(azimuth_deg, float)
    el = np.asarray(elevation_deg, float)
    if az.shape != (len(frames),) or el.shape != (len(frames),):
        raise ValueError(f"azimuth_deg and elevation_deg need one value per frame ({len(frames)})")
    one_of(test, "test", ("alternate", "none"))
    roi = as_int(roi, "roi", minimum=2)
    edge = as_float(edge, "edge", nonnegative=True, unit="px")
    keys, step_of_frame = np.unique(np.column_stack([az, el]), axis=0, return_inverse=True)
    step_of_frame = step_of_frame.ravel()
    n_steps = len(keys)
    azs, els = np.unique(keys[:, 0]), np.unique(keys[:, 1])
    two_d = els.size > 1
    if two_d and n_steps != azs.size * els.size:
        raise ValueError(f"the turntable steps do not form a full grid: {n_steps} steps for {azs.size} azimuths "
                         f"x {els.size} elevations")
    if azs.size < 8:
        raise ValueError(f"too few turntable steps: {azs.size} azimuths; the per-pixel ePSF needs at least 8 "
                         f"(half model, half test, 4 per spline)")
    if two_d and els.size < 4:
        raise ValueError(f"too few elevations for a 2-D grid: {els.size}; at least 4 are needed (cubic spline)")
    counts = np.bincount(step_of_frame, minlength=n_steps)
    mean = np.zeros((n_steps,) + frames.shape[1:])
    np.add.at(mean, step_of_frame, frames)
    mean /= counts[:, None, None]
    light = (mean - sensor.offset) / sensor.gain - sensor.dark_var

    u, v = scan_offsets(keys[:, 0], keys[:, 1], focal_length_mm, pixel_pitch_um)
    cg = centroid(light, _brightest(light), roi=roi)
    x_cg = np.asarray(cg["x_cg"], float)
    y_cg = np.asarray(cg["y_cg"], float)
    if not np.all(np.isfinite(x_cg)):
        raise ValueError("no spot found in some turntable steps: check the frames and the [sensor] offset")
    align = fit_alignment(u, v, x_cg, y_cg)
    ref = np.column_stack([u, v]) @ align["R"].T + align["t"]

    ia = np.searchsorted(azs, keys[:, 0])
    ie = np.searchsorted(els, keys[:, 1])
    su = np.sort(np.unique(u))
    sv = np.sort(np.unique(v))
    inner_u = (u >= su[0] + edge) & (u <= su[-1] - edge)
    inner_v = (v >= sv[0] + edge) & (v <= sv[-1] - edge) if two_d else np.ones(n_steps, bool)
    odd = (ia % 2 == 1) & (test == "alternate")
    role = np.where(odd & inner_u & inner_v, "test", np.where(odd & inner_u, "unused", "model"))
    is_model = role == "model"

    # Block of pixels any ROI around a calibrated position can reach.
    h = roi // 2 + 1
    c0 = max(int(np.floor(ref[:, 0].min() + 0.5)) - h, 0)
    c1 = min(int(np.floor(ref[:, 0].max() + 0.5)) + h + 1, frames.shape[2])
    r0 = max(int(np.floor(ref[:, 1].min() + 0.5)) - h, 0)
    r1 = min(int(np.floor(ref[:, 1].max() + 0.5)) + h + 1, frames.shape[1])

    # Residual light background: pixels well outside the spot, model steps only.
    rows, cols = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    far = [light[k][np.hypot(cols - ref[k, 0], rows - ref[k, 1]) > h + 1.5] for k in np.flatnonzero(is_model)]
    far = np.concatenate(far) if far else np.zeros(0)
    # A trimmed mean: the median of frame averages sits on their DN lattice (1/repeats DN), biased by up to half a step.
    background = float(trim_mean(far, 0.1)) if far.size >= 10 else 0.0
    # Flux: the light in a window one pixel wider than the ROI around each model position.
    w = h + 1
    sums = [np.sum(light[k][(np.abs(cols - ref[k, 0]) <= w) & (np.abs(rows - ref[k, 1]) <= w)] - background)
            for k in np.flatnonzero(is_model)]
    flux = float(np.mean(sums))
    if not flux > 0:
        raise ValueError("the averaged frames hold no light above the dark level: check the [sensor] offset and gain")
    phi = (light[:, r0:r1, c0:c1] - background) / flux

    meta = {"flux": flux, "background": background, "roi": roi, "focal_length_mm": float(focal_length_mm),
            "pixel_pitch_um": float(pixel_pitch_um), "n_model": int(is_model.sum()),
            "repeats": int(np.median(counts)), "rotation_deg": align["rotation_deg"]}
    if not two_d:
        order = np.flatnonzero(is_model)[np.argsort(ref[is_model, 0])]
        xm = ref[order, 0]
        if np.any(np.diff(xm) <= 0):
            raise ValueError("the scan does not move the spot along x: is it along y? Rotate the frames so the "
                             "azimuth scan runs along the rows")
        model = PixelEPSF(phi[order], xm, float(np.mean(ref[is_model, 1])), col0=c0, row0=r0, meta=meta)
    else:
        ua = np.unique(u[is_model])
        vb = np.unique(v)
        grid = np.empty((ua.size, vb.size) + phi.shape[1:])
        for k in np.flatnonzero(is_model):
            grid[np.searchsorted(ua, u[k]), np.searchsorted(vb, v[k])] = phi[k]
        tx, ty = align["t"]
        model = PixelEPSF(grid, ua, vb, col0=c0, row0=r0, transform=(tx, ty, align["R"].T), meta=meta)

    steps = Table({"azimuth_deg": keys[:, 0], "elevation_deg": keys[:, 1], "u": u, "v": v, "x": ref[:, 0],
                   "y": ref[:, 1], "x_cg": x_cg, "y_cg": y_cg, "n_frames": counts, "role": role,
                   "azimuth_index": ia, "elevation_index": ie})
    for col in ("u", "v", "x", "y", "x_cg", "y_cg"):
        steps[col].unit = "pix"
    return TurntableCalibration(model=model, steps=steps, step_of_frame=step_of_frame, alignment=align, flux=flux,
                                background=background, roi=roi, light=light)


def shared_epsf(cal: TurntableCalibration, *, knot_spacing=0.05, response=False) -> PixelEPSF:
    """One ePSF shared by all pixels, from the same model positions: the comparison for the per-pixel one.

    For a 1-D scan each block row's samples ``(x_star - column, phi)`` from
    every pixel are pooled and fitted by one least-squares cubic spline
    (knots every ``knot_spacing`` px), so pixel response non-uniformity
    averages out; the result is returned as a :class:`PixelEPSF` whose pixels
    all follow that shared curve. (A 2-D shared ePSF is what
    :class:`startrack.EPSF` builds from sky data.)

    With ``response=True`` each pixel's curve is the shared one times the
    pixel's own response, one least-squares factor per pixel fitted to its
    samples: the shared shape's low noise with the per-pixel gains.
    """
    m = cal.model
    if m.ndim != 1:
        raise ValueError("shared_epsf compares 1-D scans; for 2-D use startrack.EPSF")
    cols = m.col0 + np.arange(m.ncols)
    offsets = m.x[:, None] - cols[None, :]  # (positions, columns)
    lim = cal.roi / 2.0 + 1.0
    shared = np.zeros_like(m.values)
    for r in range(m.nrows):
        o = offsets.ravel()
        val = m.values[:, r, :].ravel()
        keep = np.abs(o) <= lim
        o, val = o[keep], val[keep]
        order = np.argsort(o)
        o, val = o[order], val[order]
        inner = np.arange(o[0] + knot_spacing, o[-1] - 0.5 * knot_spacing, knot_spacing)
        knots = np.r_[[o[0]] * 4, inner, [o[-1]] * 4]
        spl = make_lsq_spline(o, val, knots, k=3)
        inside = np.abs(offsets) <= lim
        shared[:, r, :] = np.where(inside, spl(np.clip(offsets, o[0], o[-1])), 0.0)
    if response:
        ss = np.sum(shared * shared, axis=0)
        lit = ss > 1e-4 * ss.max()  # pixels the spot reaches; the rest keep unit response
        gain = np.ones_like(ss)
        gain[lit] = np.sum(shared * m.values, axis=0)[lit] / ss[lit]
        shared *= gain
    meta = dict(m.meta, shared=True, response=bool(response))
    return PixelEPSF(shared, m.x, m.y, col0=m.col0, row0=m.row0, meta=meta)


def gaussian_fit(image, positions, *, origins=None, roi=5, sigma=0.3):
    """Least-squares fit of a pixel-integrated Gaussian (x, y, sigma, amplitude, background) to each window.

    The star sensors' conventional "Gaussian fit" (GF), unweighted as it is
    usually run; scipy's Levenberg–Marquardt per window. Windows are
    ``roi`` wide, centred on the pixel holding each rough position.

    Parameters
    ----------
    image : 2-D array, or (n, ny, nx) stack
        One frame, or one stamp per position (as :func:`startrack.localize`
        takes them, with ``origins``).
    positions : (n, 2) array
        Rough (x, y) of each star (px, frame coordinates).
    origins : (n, 2) int array, optional
        Frame (column, row) of each stamp's pixel [0, 0] (default zeros).
    roi : int
        Window width (px).
    sigma : float
        Start Gaussian radius (px).

    Returns
    -------
    (n, 2) array of (x, y) in px; NaN where the fit failed or the window leaves the image.
    """
    xy = as_positions(positions)
    images, org, stacked = as_stamps(image, len(xy), origins)
    roi = as_int(roi, "roi", minimum=3, odd=True)
    sigma = as_float(sigma, "sigma", positive=True, unit="px")
    c = np.arange(roi)
    out = np.full((len(xy), 2), np.nan)
    finite = np.all(np.isfinite(xy), axis=1)
    x0 = roi_origin(np.where(finite, xy[:, 0], 0.0), roi)
    y0 = roi_origin(np.where(finite, xy[:, 1], 0.0), roi)

    def profile(centre, s):
        hi, lo = (c + 0.5 - centre) / s, (c - 0.5 - centre) / s
        ph, pl = np.exp(-0.5 * hi * hi) / _SQRT_2PI, np.exp(-0.5 * lo * lo) / _SQRT_2PI
        return ndtr(hi) - ndtr(lo), -(ph - pl) / s, -(hi * ph - lo * pl) / s

    def resid(p, d):
        fx, _, _ = profile(p[0], abs(p[2]) + 1e-6)
        fy, _, _ = profile(p[1], abs(p[2]) + 1e-6)
        return (p[3] * np.outer(fy, fx) + p[4] - d).ravel()

    def jac(p, d):
        s = abs(p[2]) + 1e-6
        fx, gx, sx = profile(p[0], s)
        fy, gy, sy = profile(p[1], s)
        ds = np.sign(p[2]) or 1.0
        return np.column_stack([(p[3] * np.outer(fy, gx)).ravel(), (p[3] * np.outer(gy, fx)).ravel(),
                                (p[3] * ds * (np.outer(sy, fx) + np.outer(fy, sx))).ravel(),
                                np.outer(fy, fx).ravel(), np.ones(roi * roi)])

    for k in np.flatnonzero(finite):
        s = k if stacked else 0
        img = images[s]
        c0, r0 = x0[k] - org[s, 0], y0[k] - org[s, 1]
        if c0 < 0 or r0 < 0 or c0 + roi > img.shape[1] or r0 + roi > img.shape[0]:
            continue
        d = img[r0:r0 + roi, c0:c0 + roi]
        bg = float(np.median(np.r_[d[0], d[-1], d[1:-1, 0], d[1:-1, -1]]))
        p0 = [xy[k, 0] - x0[k], xy[k, 1] - y0[k], sigma, max(d.sum() - bg * d.size, 1.0), bg]
        res = least_squares(resid, p0, jac=jac, args=(d,), method="lm")
        if res.success:
            out[k] = res.x[0] + x0[k], res.x[1] + y0[k]
    return out


def evaluate_turntable(cal: TurntableCalibration, frames, sensor: Sensor, *, model=None, gaussian=True,
                       steps="test"):
    """Localisation error at the test positions: ePSF + MLE, centre of gravity and Gaussian fit against the PL.

    Every frame of a test step is localised on its own (single frame) with
    the model, flux and background known as in the small-PSF paper (x fitted
    for a 1-D scan, x and y for a grid), in a ``roi`` window centred on the
    brightest pixel; the centre of gravity uses the same window. The errors
    are against the turntable reference position of the step.

    Parameters
    ----------
    cal : TurntableCalibration
    frames : (n, ny, nx) array
        The same frames given to :func:`calibrate_turntable` (raw DN).
    sensor : Sensor
    model : PSFModel, optional
        Model to test (default ``cal.model``; e.g. :func:`shared_epsf` to compare).
    gaussian : bool
        Also run the least-squares Gaussian fit (scipy, the slow part).
    steps : {"test", "model", "all"}
        Which positions to evaluate.

    Returns
    -------
    Table
        One row per evaluated step: ``x, y`` (reference, px), ``dx`` (offset
        from the nearest pixel centre), ``n``, ``pl_x`` (precision limit of the
        fitted parameters at the reference, from the model), and per method
        (``mle``, ``cg``, ``gf``) the single-frame ``rmse_*`` and the error of
        the mean over the repeats ``mean_*`` (px; ``*_y`` columns too for a grid).
        ``meta`` holds the RMS over positions of each column.
    """
    frames = as_stack(frames, "frames")
    model = cal.model if model is None else model
    fit = cal.fit
    role = np.asarray(cal.steps["role"])
    one_of(steps, "steps", ("test", "model", "all"))
    chosen = {"test": role == "test", "model": role == "model", "all": np.ones(len(role), bool)}[steps]
    idx = np.flatnonzero(chosen[cal.step_of_frame])
    if idx.size == 0:
        raise ValueError(f"no {steps} steps to evaluate")
    sub = frames[idx]
    step = cal.step_of_frame[idx]
    ref = np.column_stack([np.asarray(cal.steps["x"], float), np.asarray(cal.steps["y"], float)])[step]
    rough = _brightest(sub)
    if model.ndim == 1:
        rough[:, 1] = model.y  # the calibrated row: y is held there
    # Every frame is its own stamp: one star each, in frame coordinates.
    res = localize(sub, rough, model, sensor, fit=fit, flux=cal.flux, background=cal.background, roi=cal.roi)
    est = {"mle": np.column_stack([np.asarray(res["x"], float), np.asarray(res["y"], float)])}
    est["mle"][~np.asarray(res["converged"])] = np.nan
    cg = centroid(sub, rough, roi=cal.roi)
    est["cg"] = np.column_stack([np.asarray(cg["x_cg"], float), np.asarray(cg["y_cg"], float)])
    if gaussian:
        est["gf"] = gaussian_fit(sub, est["cg"], roi=cal.roi)
    steps_used = np.flatnonzero(chosen)
    xs = np.asarray(cal.steps["x"], float)[steps_used]
    ys = np.asarray(cal.steps["y"], float)[steps_used]
    pl = precision_limit(model, xs, ys, cal.flux, cal.background, sensor, params=param_names(fit), roi=cal.roi)
    out = Table({"x": xs, "y": ys, "dx": xs - np.round(xs),
                 "n": np.bincount(step, minlength=len(role))[steps_used], "pl_x": pl[0]})
    axes = ("x",) if model.ndim == 1 else ("x", "y")
    if model.ndim == 2:
        out["pl_y"] = pl[1]
    for name, e in est.items():
        err = e - ref
        for a, axis in enumerate(axes):
            suffix = "" if axis == "x" else "_y"
            rm = np.full(len(steps_used), np.nan)
            mn = np.full(len(steps_used), np.nan)
            for i, s in enumerate(steps_used):
                d = err[step == s, a]
                d = d[np.isfinite(d)]
                if d.size:
                    rm[i] = np.sqrt(np.mean(d**2))
                    mn[i] = np.mean(d)
            out[f"rmse_{name}{suffix}"] = rm
            out[f"mean_{name}{suffix}"] = mn
    for col in out.colnames:
        if col not in ("n",):
            out[col].unit = "pix"
            out.meta[f"rms_{col}"] = float(np.sqrt(np.nanmean(np.square(out[col]))))
    out.meta.update(fit=list(fit), roi=cal.roi, flux=cal.flux, background=cal.background,
                    n_frames=int(idx.size), model=getattr(model, "spec", repr(model)))
    return out


def read_turntable(manifest, *, roi=5, progress=None):
    """Frames and angles of a turntable dataset: ``manifest.csv`` with ``file, azimuth_deg, elevation_deg, repeat``.

    Only the window the spot visits (plus the fitting window) is kept in
    memory: the first frame of every step locates the spot, then all frames
    are read cropped to that region.

    Returns
    -------
    frames : (n, ny, nx) ndarray
        Raw DN, cropped.
    table : Table
        The manifest rows.
    origin : (int, int)
        Column and row of the crop's first pixel in the full frames.
    """
    t = read_manifest(manifest, {"azimuth_deg": float, "elevation_deg": float},
                      optional={"repeat": (int, 0)})
    roi = as_int(roi, "roi", minimum=2)
    keys, first = np.unique(np.column_stack([t["azimuth_deg"], t["elevation_deg"]]), axis=0, return_index=True)
    probe = load_frames([t["path"][k] for k in first])
    spot = _brightest(probe)
    h = roi // 2 + 3
    ny, nx = probe.shape[1:]
    c0 = max(int(spot[:, 0].min()) - h, 0)
    r0 = max(int(spot[:, 1].min()) - h, 0)
    c1 = min(int(spot[:, 0].max()) + h + 1, nx)
    r1 = min(int(spot[:, 1].max()) + h + 1, ny)
    paths = list(t["path"])
    if progress is not None:
        paths = progress(paths)
    frames = load_frames(paths, shape=(ny, nx), region=(c0, r0, c1 - c0, r1 - r0))
    return frames, t, (c0, r0)


def plot_turntable(table, path, *, title="turntable per-pixel ePSF"):
    """Single-frame RMSE and error of the mean over repeats against position (the paper's Fig. 4(b)(c))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    x = np.asarray(table["x"])
    styles = {"cg": ("CG", "tab:orange"), "gf": ("Gaussian fit", "tab:green"), "mle": ("ePSF + MLE", "tab:blue")}
    for name, (label, colour) in styles.items():
        if f"rmse_{name}" not in table.colnames:
            continue
        ax[0].plot(x, table[f"rmse_{name}"], ".", color=colour,
                   label=f"{label} ({table.meta[f'rms_rmse_{name}']:.4f} px rms)")
        ax[1].plot(x, np.abs(table[f"mean_{name}"]), ".", color=colour,
                   label=f"{label} ({table.meta[f'rms_mean_{name}']:.4f} px rms)")
    ax[0].plot(x, table["pl_x"], "k-", lw=1, label=f"precision limit ({table.meta['rms_pl_x']:.4f} px rms)")
    ax[1].plot(x, table["pl_x"] / np.sqrt(np.asarray(table["n"])), "k-", lw=1, label="PL / sqrt(repeats)")
    for a in ax:
        for b in np.arange(np.floor(x.min()) + 0.5, x.max(), 1.0):
            a.axvline(b, color="0.85", lw=0.8, zorder=0)
        a.set_yscale("log")
        a.set_xlabel("spot position x (px; grey lines: pixel boundaries)")
        a.legend(fontsize=8)
    ax[0].set_ylabel("x RMS error, single frame (px)")
    ax[1].set_ylabel(f"|x error| of the mean of {int(np.median(table['n']))} frames (px)")
    ax[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
