"""Pass 2 of a night-sky sequence: every star's own ePSF, its relocalisation, the attitude again.

The small-PSF paper's night-sky mode (section 3.3): a camera fixed to the
ground sees each star drift over many pixel phases, so each star's images in
the sequence build that star's effective PSF (:func:`startrack.build_epsf`
with ``per_star=True``; 7 x 7 ROI, 0.25 px grid, 29 x 29 nodes), which
removes the systematic error a Gaussian model leaves on a non-Gaussian spot.
Each image is then refitted by Poisson MLE on its star's ePSF
(:func:`startrack.localize` on the stamps, placed in the frame by their
origins), and each frame's attitude is solved again from these positions with
the identities pass 1 found (no re-identification): CRLB-weighted Wahba
against the catalog's apparent places at the frame time.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from astropy.table import Table
from astropy.time import Time

from ..epsf import build_epsf
from ..flags import BAD_FIT, SATURATED
from ..localize import localize
from ..psf import PSFModel
from ..sensor import Sensor, as_sensor
from ..validate import as_float, as_int, as_stamps
from .attitude import ARCSEC, solve_attitude
from .camera import Camera
from .catalog import Catalog, parse_time

__all__ = ["per_star_epsf", "resolve_attitudes", "frame_seconds", "EPSF_STAR_COLUMNS", "EPSF_FRAME_COLUMNS",
           "PER_STAR_SMOOTHING"]

#: Columns :func:`per_star_epsf` adds to the star table.
EPSF_STAR_COLUMNS = ("x_epsf", "y_epsf", "x_epsf_err", "y_epsf_err", "flux_epsf", "epsf")
#: Columns :func:`per_star_epsf` adds to the frame table.
EPSF_FRAME_COLUMNS = ("qx_epsf", "qy_epsf", "qz_epsf", "qw_epsf", "sigma_cross_epsf_arcsec", "sigma_roll_epsf_arcsec",
                      "rms_epsf_arcsec", "n_epsf", "focal_length_epsf_px")
#: Roughness penalty of a per-star ePSF. Measured on the simulated zenith sequence of issue 14 (0.3 px core +
#: offset wing; track tie; one focal length per sequence), error against the truth about each star's mean, over
#: its CRLB, all stars / the 4 brightest: 500 frames 1.10 / 1.36 at 0.3, 1.03 / 1.14 at 0.1, 1.01 / 1.05 at 0.03;
#: 60 frames 1.17 / 1.71, 1.04 / 1.36, 0.97 / 1.12. A stiffer ePSF keeps part of the Gaussian start's
#: pixel-phase bias (0.008 px peak to peak at 0.3, 0.0025 at 0.03), which the brightest stars, carrying the
#: attitude, cannot hide; below ~0.03 a short sequence's ePSF starts to learn its images' noise (0.97 < 1).
PER_STAR_SMOOTHING = 0.03
_STAR_NEEDS = ("frame", "hip", "x", "y", "x_err", "y_err", "flux", "stamp")
_FRAME_NEEDS = ("frame", "time", "status", "focal_length_px")


def _require(table, columns, name):
    if not isinstance(table, Table):
        raise ValueError(f"{name} must be an astropy Table, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.colnames]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}")


def per_star_epsf(stars: Table, stamps, origins, frames: Table, camera: Camera, sensor: Sensor, catalog: Catalog, *,
                  model: PSFModel, min_frames=20, roi=7, oversampling=4, smoothing=PER_STAR_SMOOTHING):
    """Per-star ePSF positions of a sequence's identified stars, and the attitudes solved from them.

    Parameters
    ----------
    stars : Table
        Pass 1: one row per identified star per solved frame, with ``frame,
        hip, x, y, x_err, y_err`` (px), ``flux`` (e-) and ``stamp`` (row of
        ``stamps``); with ``flags``, failed and saturated fits keep the Gaussian.
    stamps : (n, S, S) array
        Pixels (DN) around each star row, ``S >= roi + 4`` (room for the
        build's refits).
    origins : (n, 2) int array
        Frame (column, row) of each stamp's pixel [0, 0].
    frames : Table
        Pass 1: one row per frame with ``frame, time`` (ISO UTC, "" if
        none), ``status`` and ``focal_length_px`` (the refined focal length).
    camera : Camera
    sensor : Sensor
    catalog : Catalog
        The catalog the identification used (its HIP numbers).
    model : PSFModel
        Pass 1's PSF model, recorded in the metadata (stars without an ePSF
        keep its positions).
    min_frames : int
        A star needs images in at least this many frames for its own ePSF
        (and at least ``oversampling**2`` usable ones, or the build fails
        and it keeps the Gaussian).
    roi : int
        Odd window (px) of the ePSF and of the refits (the paper: 7).
    oversampling : int
        ePSF nodes per pixel (the paper: 4, i.e. 0.25 px; 29 x 29 nodes at roi 7).
    smoothing : float
        The build's roughness penalty (:func:`startrack.build_epsf`);
        see :data:`PER_STAR_SMOOTHING`.

    Returns
    -------
    stars2 : Table
        ``stars`` with ``x_epsf, y_epsf, x_epsf_err, y_epsf_err`` (px; sqrt
        CRLB of the ePSF fit of x, y, flux and background), ``flux_epsf``
        (e-) and ``epsf`` (True where the ePSF fit replaced the Gaussian;
        False rows repeat the Gaussian values). ``meta["epsf_stars"]`` holds
        a row per star tried: ``hip, n_images, n_epsf, iterations,
        converged`` and ``note`` (why it kept the Gaussian).
    frames2 : Table
        ``frames`` with the attitude from the ePSF positions
        (:func:`resolve_attitudes`): ``qx_epsf .. qw_epsf`` (ICRS -> camera,
        scalar last), ``sigma_cross_epsf_arcsec``, ``sigma_roll_epsf_arcsec``,
        ``rms_epsf_arcsec``, ``n_epsf`` (stars with ePSF positions) and
        ``focal_length_epsf_px`` (one for the sequence, fitted to the ePSF positions).
    """
    _require(stars, _STAR_NEEDS, "stars")
    _require(frames, _FRAME_NEEDS, "frames")
    sensor = as_sensor(sensor)
    min_frames = as_int(min_frames, "min_frames", minimum=1)
    roi = as_int(roi, "roi", minimum=3, odd=True)
    oversampling = as_int(oversampling, "oversampling", minimum=1, maximum=16)
    smoothing = as_float(smoothing, "smoothing", nonnegative=True)
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be a startrack Camera, got {type(camera).__name__}")
    if not isinstance(catalog, Catalog):
        raise ValueError(f"catalog must be a startrack Catalog, got {type(catalog).__name__}")
    if not isinstance(model, PSFModel):
        raise ValueError(f"model must be a startrack PSF model, got {type(model).__name__}")
    row = np.asarray(stars["stamp"], np.int64)
    stack, org, _ = as_stamps(stamps, len(np.asarray(stamps)), origins, "stamps")
    if len(row) and (row.min() < 0 or row.max() >= len(stack)):
        raise ValueError(f"stars['stamp'] must index the {len(stack)} stamps, got values in [{row.min()}, {row.max()}]")
    if min(stack.shape[1:]) < roi + 4:
        raise ValueError(f"stamps must be at least {roi + 4} px wide for roi {roi}, got {stack.shape[1:]}")

    x, y = np.asarray(stars["x"], float), np.asarray(stars["y"], float)
    out = {"x_epsf": x.copy(), "y_epsf": y.copy(), "x_epsf_err": np.asarray(stars["x_err"], float).copy(),
           "y_epsf_err": np.asarray(stars["y_err"], float).copy(), "flux_epsf": np.asarray(stars["flux"], float).copy()}
    used = np.zeros(len(stars), bool)
    hip = np.asarray(stars["hip"], np.int64)
    frame = np.asarray(stars["frame"], np.int64)
    ok = np.isfinite(x) & np.isfinite(y) & (hip > 0)
    if "flags" in stars.colnames:
        # a saturated core leaves the image nothing an ePSF could be built from or fitted to at the bound
        ok &= (np.asarray(stars["flags"], np.int64) & (BAD_FIT | SATURATED)) == 0
    summary = []
    seconds = frame_seconds(frames)
    for h in np.unique(hip[ok]):
        sel = np.flatnonzero(ok & (hip == h))
        n_frames = len(np.unique(frame[sel]))
        note, n_epsf, iters, conv = "", 0, 0, False
        if n_frames < min_frames:
            note = f"in {n_frames} frames (< min_frames {min_frames})"
        else:
            k = row[sel]
            corner = org[k]
            when = np.array([seconds.get(int(f), np.nan) for f in frame[sel]])
            # the star's images on one smooth track: what removes the pixel-phase bias of its positions
            tie = dict(tie="track", times=when) if np.all(np.isfinite(when)) else {}
            canvas, start = _on_canvas(stack[k], corner)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    epsf = build_epsf(canvas, [p[None] for p in np.column_stack([x[sel], y[sel]]) - start], sensor,
                                      oversampling=oversampling, roi=roi, per_star=True, smoothing=smoothing,
                                      **tie)[0]
                except ValueError as exc:
                    epsf, note = None, str(exc).splitlines()[0]
            if epsf is None:
                note = note or "too few usable images for an ePSF"
            else:
                iters, conv = int(epsf.meta["iterations"]), bool(epsf.meta["converged"])
                if caught:
                    note = "; ".join(sorted({str(w.message).splitlines()[0] for w in caught}))
                fit = localize(stack[k], np.column_stack([x[sel], y[sel]]), epsf, sensor, origins=corner, roi=roi,
                               start="given")
                good = ((np.asarray(fit["flags"]) & BAD_FIT) == 0) & np.isfinite(np.asarray(fit["x_err"], float))
                gi = sel[good]
                for col, src in (("x_epsf", "x"), ("y_epsf", "y"), ("x_epsf_err", "x_err"), ("y_epsf_err", "y_err"),
                                 ("flux_epsf", "flux")):
                    out[col][gi] = np.asarray(fit[src], float)[good]
                used[gi] = True
                n_epsf = int(good.sum())
        summary.append((int(h), len(sel), n_epsf, iters, conv, note))
    stars2 = stars.copy(copy_data=True)
    for col, val in out.items():
        stars2[col] = val
        stars2[col].unit = "electron" if col == "flux_epsf" else "pix"
    stars2["epsf"] = used
    stars2["epsf"].description = "position from the star's own ePSF (False: pass 1's Gaussian values)"
    stars2.meta["epsf_stars"] = Table(rows=summary, names=("hip", "n_images", "n_epsf", "iterations", "converged",
                                                           "note"),
                                      dtype=(np.int64, np.int64, np.int64, np.int64, bool, str)) if summary else \
        Table(names=("hip", "n_images", "n_epsf", "iterations", "converged", "note"),
              dtype=(np.int64, np.int64, np.int64, np.int64, bool, str))
    stars2.meta.update(epsf_roi=roi, epsf_oversampling=oversampling, epsf_smoothing=smoothing,
                       epsf_min_frames=min_frames,
                       pass1_psf=getattr(model, "spec", repr(model)))
    frames2 = resolve_attitudes(frames, stars2, camera, catalog)
    return stars2, frames2


def _on_canvas(stamps, origins):
    """One star's stamps pasted into NaN images of the area its track covers, and that area's frame origin.

    :func:`startrack.build_epsf` takes frames; on a shared canvas the star's
    positions keep their frame-coordinate track (up to one shift), which
    its ``tie="track"`` needs.
    """
    start = origins.min(axis=0)
    size = origins.max(axis=0) - start + np.array(stamps.shape[2:0:-1])
    canvas = np.full((len(stamps), size[1], size[0]), np.nan)
    for i, (c, r) in enumerate(origins - start):
        canvas[i, r:r + stamps.shape[1], c:c + stamps.shape[2]] = stamps[i]
    return list(canvas), start


def frame_seconds(frames: Table) -> dict:
    """``{frame number: seconds from the first timed frame}`` of a frame table (``frame``, ``time`` ISO UTC).

    Frames without a time are left out; when no frame has one, the frame
    numbers stand in for the times (a constant cadence).
    """
    times = [str(t).strip() for t in frames["time"]]
    number = np.asarray(frames["frame"], np.int64)
    if not any(times):
        return dict(zip(number.tolist(), number.astype(float).tolist(), strict=True))
    have = [i for i, t in enumerate(times) if t]
    t = Time([parse_time(times[i]) for i in have])
    sec = (t - t[0]).to_value("s")
    return {int(number[i]): float(s) for i, s in zip(have, sec, strict=True)}


def resolve_attitudes(frames: Table, stars: Table, camera: Camera, catalog: Catalog, *, x="x_epsf", y="y_epsf",
                      x_err="x_epsf_err", y_err="y_epsf_err", suffix="_epsf", focal_length="sequence") -> Table:
    """Each solved frame's attitude again from other star positions, with the identities pass 1 found.

    CRLB-weighted Wahba (:func:`startrack.sky.attitude.solve_attitude`) of
    the stars' directions (through ``camera`` at ``focal_length``) against
    the catalog's apparent places at the frame time.

    Parameters
    ----------
    frames, stars : Table
        As in :func:`per_star_epsf`; ``stars`` has the position columns named by ``x, y, x_err, y_err`` (px).
    camera : Camera
    catalog : Catalog
    suffix : str
        Appended to the new columns' names (``qx`` + suffix ...).
    focal_length : {"sequence", "frame"} or float
        ``"sequence"`` (default): one focal length for every frame, the one
        that best fits these positions over the whole sequence (least
        squares, each frame's attitude free). A frame's own refit moves with
        its stars' noise, and with the stars off-centre that error turns into
        a cross-boresight rotation the covariance does not know of: on a
        simulated 500-frame zenith sequence, pass 1's per-frame focal lengths
        (+-0.07 px of 4717) put 0.15" into the attitude against its 0.06"
        sigma. ``"frame"``: each frame's pass-1 value (``focal_length_px``);
        a number: that focal length (px).

    Returns
    -------
    Table
        ``frames`` with ``qx, qy, qz, qw`` (ICRS -> camera, scalar last),
        ``sigma_cross_arcsec, sigma_roll_arcsec`` (QUEST covariance, scaled
        by the reduced chi-square of the residuals when above 1, as in pass 1),
        ``rms_arcsec`` (RMS angle between each star and its catalog
        direction), ``n`` (stars used) and ``focal_length_px`` (the one
        used), each name with ``suffix``; NaN for frames not solved, without
        a time or with fewer than 3 stars.
    """
    from scipy.optimize import minimize_scalar

    index = {int(h): i for i, h in enumerate(catalog.hip)}
    names = [c.replace("_epsf", suffix) for c in EPSF_FRAME_COLUMNS]
    sframe = np.asarray(stars["frame"], np.int64)
    sx, sy = np.asarray(stars[x], float), np.asarray(stars[y], float)
    ex, ey = np.asarray(stars[x_err], float), np.asarray(stars[y_err], float)
    hip = np.asarray(stars["hip"], np.int64)
    known = np.array([int(h) in index for h in hip], bool)
    usable = known & np.isfinite(sx) & np.isfinite(sy) & (ex > 0) & (ey > 0)
    order = np.argsort(sframe, kind="stable")
    number = np.asarray(frames["frame"], np.int64)
    bounds = np.searchsorted(sframe[order], number, side="left")
    ends = np.searchsorted(sframe[order], number, side="right")
    pass1_f = np.asarray(frames["focal_length_px"], float)
    todo = []  # (frame row, star rows, apparent catalog directions)
    for i, fr in enumerate(frames):
        when = str(fr["time"]).strip()
        if fr["status"] != "solved" or not when or not math.isfinite(pass1_f[i]):
            continue
        sel = order[bounds[i]:ends[i]]
        sel = sel[usable[sel]]
        if len(sel) >= 3:
            todo.append((i, sel, catalog.apparent(parse_time(when))[[index[int(h)] for h in hip[sel]]]))

    def solve(sel, ref, f_px):
        cam = camera.with_focal_length(f_px)
        obs = cam.pixel_to_vector(sx[sel], sy[sel])
        sigma = cam.angular_sigma(sx[sel], sy[sel], ex[sel], ey[sel])
        att = solve_attitude(obs, ref, sigma)
        resid = np.arccos(np.clip(np.sum(obs * (ref @ att.matrix.T), axis=1), -1.0, 1.0))
        return att, resid, sigma

    mode = focal_length if isinstance(focal_length, str) else "value"
    if mode == "frame":
        f_of = pass1_f
    elif mode == "sequence":
        f_of = pass1_f  # no frame to fit: nothing is solved
        if todo:
            def chi2(f_px):
                return sum(float(np.sum((r / s) ** 2)) for r, s in (solve(sel, ref, f_px)[1:] for _, sel, ref in todo))

            start = float(np.median(pass1_f[[i for i, _, _ in todo]]))
            # the per-frame values scatter by ~1e-5 of f: +-0.1 % holds the answer with room to spare
            fit = minimize_scalar(chi2, bounds=(start * 0.999, start * 1.001), method="bounded",
                                  options={"xatol": start * 1e-8})
            f_of = np.full(len(frames), float(fit.x))
    else:
        f_of = np.full(len(frames), as_float(focal_length, "focal_length", positive=True, unit="px"))
    res = np.full((len(frames), 8), np.nan)
    count = np.zeros(len(frames), np.int64)
    for i, sel, ref in todo:
        att, resid, sigma = solve(sel, ref, f_of[i])
        # as pass 1 reports it: the covariance grows with the reduced chi-square when the stars scatter
        # more than their bounds (two residual components per star, three attitude parameters)
        scale = math.sqrt(max(1.0, float(np.sum((resid / sigma) ** 2)) / max(2 * len(sel) - 3, 1)))
        res[i] = (*att.quaternion, scale * att.sigma_cross_arcsec, scale * att.sigma_roll_arcsec,
                  math.sqrt(float(np.mean(resid**2))) / ARCSEC, f_of[i])
        count[i] = len(sel)
    out = frames.copy(copy_data=True)
    for j, name in enumerate(names[:7]):
        out[name] = res[:, j]
        if name.startswith(("sigma", "rms")):
            out[name].unit = "arcsec"
    out[names[7]] = count
    out[names[8]] = res[:, 7]
    out[names[8]].unit = "pix"
    out[names[0]].description = f"quaternion (ICRS -> camera, scalar last) from the {x}, {y} positions"
    return out
