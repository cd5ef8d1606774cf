"""The star-tracker pipeline: frame -> detect -> localise -> identify -> attitude.

:func:`startrack.measure_stars` turns a frame into star positions with their
CRLB (detection, centre-of-gravity start, Poisson MLE), leaving out what
cannot be a star (failed fits, single hot pixels). :func:`solve_frame` adds
the identification and the attitude; :func:`solve_frames` maps it over a
sequence, each solved frame serving as the next one's prior (tracking), and
turns every problem with a frame into a row with a status and a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from time import perf_counter

import numpy as np
from astropy.table import Table

from ..detect import background_map, detect
from ..measure import measure_stars
from ..psf import PSFModel
from ..sensor import Sensor
from ..validate import as_frame
from .camera import Camera
from .catalog import parse_time, vector_to_radec
from .starid.solver import Solution, StarIdentifier

__all__ = ["solve_frame", "solve_frames", "estimate_sensor", "FrameResult", "RESULT_COLUMNS", "STAGE_COLUMNS"]

#: Columns of the per-frame results table, in order.
RESULT_COLUMNS = ["file", "status", "reason", "ra_deg", "dec_deg", "roll_deg", "qx", "qy", "qz", "qw", "fov_deg",
                  "focal_length_px", "n_detected", "n_matched", "rms_arcsec", "sigma_cross_arcsec",
                  "sigma_roll_arcsec", "p_false", "time_ms"]
#: Per-stage wall times (ms) of a frame, after ``time_ms`` in the results.
STAGE_COLUMNS = ["t_read_ms", "t_background_ms", "t_detect_ms", "t_cg_ms", "t_mle_ms", "t_identify_ms",
                 "t_attitude_ms"]
RESULT_COLUMNS += STAGE_COLUMNS



def estimate_sensor(image, bit_depth=None) -> Sensor:
    """A stand-in sensor for a frame from an unknown camera, with its noise measured from the image.

    With no gain known, pixel values are taken as photo-electrons (gain 1)
    and the offset is chosen so that the Poisson variance of the background,
    ``(background - offset)``, equals its measured variance (robust MAD).
    Star fluxes are then in DN and the CRLB reflects the measured noise.
    """
    bg, sigma = background_map(image)
    return _sky_sensor(float(np.nanmedian(bg)), sigma, bit_depth)


def _sky_sensor(level, sigma, bit_depth):
    """:func:`estimate_sensor`'s sensor from a sky level and its noise (image units)."""
    sat = float(2**bit_depth - 1) if bit_depth else None
    offset = level - max(sigma, 1e-6) ** 2
    if sat is not None and sat <= offset:
        sat = None
    return Sensor(gain=1.0, offset=offset, saturation=sat)


@dataclass
class FrameResult:
    """One frame's outcome: its row of the results table, its star table and solution (None if
    unreadable), and the camera with the focal length the solution found."""

    row: dict
    stars: Table | None
    solution: Solution | None
    camera: Camera | None = None


def solve_frame(image, identifier: StarIdentifier, model: PSFModel, sensor: Sensor | None = None, *, time=None,
                prior=None, threshold=5.0, bit_depth=None, max_stars=None, region=None) -> FrameResult:
    """Identify the stars of one frame and solve its attitude.

    Parameters
    ----------
    image : 2-D array (DN)
    identifier : StarIdentifier
        Camera (or blind FOV range), catalog and pattern database.
    model : PSFModel
    sensor : Sensor, optional
        Without one the noise is measured from the image (:func:`estimate_sensor`).
    time : astropy Time or ISO string, optional
        Frame time for the stars' apparent places.
    prior : Solution or Attitude, optional
        The previous frame's solution (tracking).
    max_stars : int, optional
        Fit and identify only the brightest ``max_stars`` detections.
    region : (x0, y0, x1, y1) or 2-D bool array, optional
        Look for stars only there (e.g. to leave out a foreground object).

    Returns
    -------
    FrameResult
        ``row`` with the keys of :data:`RESULT_COLUMNS` (less ``file``);
        ``stars``: each detected star with its CRLB, flux and matched HIP id.
    """
    t0 = perf_counter()
    img = as_frame(image)
    cam = identifier.camera
    if img.shape != (cam.height, cam.width):
        raise ValueError(f"the frame is {img.shape[1]}x{img.shape[0]} px but the camera is {cam.width}x{cam.height}")
    if img.dtype.kind == "f" and not np.isfinite(img).any():
        raise ValueError("the frame has no finite pixels (all NaN)")
    roi = model.default_roi()
    det = None
    if sensor is None:
        # one detection in image units gives both the noise for the stand-in sensor and the stars
        sat = Sensor(gain=1.0, saturation=float(2**bit_depth - 1)) if bit_depth else None
        det = detect(img, sat, threshold=threshold, smooth=max(0.7, model.equivalent_radius()), roi=roi,
                     max_stars=max_stars, region=region, stamps=roi + 4)
        sensor = _sky_sensor(det.meta["background_level"], det.meta["noise_sigma"], bit_depth)
    stars = measure_stars(img, model, sensor, threshold=threshold, roi=roi, max_stars=max_stars, region=region,
                          detections=det)
    spent = {k: 1000.0 * v for k, v in stars.meta["time_s"].items()}
    t2 = perf_counter()
    sol = identifier.identify(stars["x"], stars["y"], sigma=(stars["x_err"], stars["y_err"]), flux=stars["flux"],
                              time=time, prior=prior)
    t3 = perf_counter()
    row = _row(sol, len(stars))
    stars["hip"] = sol.hip
    stars["residual_arcsec"] = sol.residual_arcsec
    stars["residual_arcsec"].unit = "arcsec"
    if sol.solved:
        cam = cam.with_focal_length(sol.focal_length_px)
        ra, dec = vector_to_radec(sol.attitude.to_icrs(cam.pixel_to_vector(stars["x"], stars["y"])))
        stars["ra_deg"], stars["dec_deg"] = np.degrees(ra), np.degrees(dec)
    t4 = perf_counter()
    row.update(time_ms=1000.0 * (t4 - t0), t_read_ms=0.0, t_background_ms=spent["background"],
               t_detect_ms=spent["peaks"], t_cg_ms=spent["cg"], t_mle_ms=spent["mle"],
               t_identify_ms=1000.0 * (t3 - t2), t_attitude_ms=1000.0 * (t4 - t3))
    return FrameResult(row, stars, sol, cam)


def _row(sol: Solution, n_detected: int) -> dict:
    nan = math.nan
    row = {"status": sol.status, "reason": sol.reason, "n_detected": int(n_detected), "n_matched": int(sol.n_matched)}
    if sol.solved:
        att = sol.attitude
        q = att.quaternion
        row.update(ra_deg=att.ra, dec_deg=att.dec, roll_deg=att.roll, qx=q[0], qy=q[1], qz=q[2], qw=q[3],
                   fov_deg=sol.fov_deg, focal_length_px=sol.focal_length_px, rms_arcsec=sol.rms_arcsec,
                   sigma_cross_arcsec=att.sigma_cross_arcsec, sigma_roll_arcsec=att.sigma_roll_arcsec,
                   p_false=sol.p_false)
    else:
        row.update(dict.fromkeys(("ra_deg", "dec_deg", "roll_deg", "qx", "qy", "qz", "qw", "fov_deg", "focal_length_px",
                                  "rms_arcsec", "sigma_cross_arcsec", "sigma_roll_arcsec", "p_false"), nan))
    return row


def error_row(reason: str) -> dict:
    """A results row for a frame that could not be processed."""
    row = _row(Solution("error", reason), 0)
    row.update(dict.fromkeys(["time_ms", *STAGE_COLUMNS], math.nan))
    return row


def solve_frames(paths, identifier_for, model: PSFModel, sensor: Sensor | None = None, *, time=None,
                 tracking=True, threshold=5.0, on_frame=None):
    """Solve a sequence of frame files; every frame gives a row, whatever goes wrong with it.

    Parameters
    ----------
    paths : iterable of str or Path
    identifier_for : callable
        ``identifier_for(shape) -> StarIdentifier`` (so blind mode can size
        its identifier from the frames); may raise ``ValueError``.
    time : astropy Time or str, optional
        Time for frames whose FITS header has no ``DATE-OBS``.
    tracking : bool
        Use each solved frame as the prior of the next.
    on_frame : callable, optional
        Called with ``(path, FrameResult)`` after each frame (progress, writing).

    Returns
    -------
    results : Table
        One row per frame with :data:`RESULT_COLUMNS`.
    stars : list of Table
        The star table of each readable frame (with a ``file`` column).
    """
    from ..io import read_frame

    rows, star_tables = [], []
    prior = None
    for path in paths:
        try:
            t_read = perf_counter()
            image, meta = read_frame(path)
            t_read = perf_counter() - t_read
            header = meta.get("header")
            when = header.get("DATE-OBS") if header is not None else None
            when = parse_time(when) if when else (parse_time(time) if time is not None else None)
            ident = identifier_for(image.shape)
            res = solve_frame(image, ident, model, sensor, time=when, prior=prior if tracking else None,
                              threshold=threshold, bit_depth=meta.get("bit_depth"))
        except (ValueError, FileNotFoundError, OSError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            res = FrameResult(error_row(msg), None, None)
            prior = None
        else:
            prior = res.solution if res.solution.solved else None
            res.row["t_read_ms"] = 1000.0 * t_read
            res.stars["file"] = str(path)
            star_tables.append(res.stars)
        res.row["file"] = str(path)
        rows.append(res.row)
        if on_frame is not None:
            on_frame(path, res)
    dtype = [str, str, str] + [float] * 9 + [int, int] + [float] * (5 + len(STAGE_COLUMNS))
    table = (Table(rows=[[r[c] for c in RESULT_COLUMNS] for r in rows], names=RESULT_COLUMNS, dtype=dtype) if rows
             else Table(names=RESULT_COLUMNS, dtype=dtype))
    _describe(table)
    return table, star_tables


def _describe(table):
    units = {"ra_deg": "deg", "dec_deg": "deg", "roll_deg": "deg", "fov_deg": "deg", "focal_length_px": "pix",
             "rms_arcsec": "arcsec", "sigma_cross_arcsec": "arcsec", "sigma_roll_arcsec": "arcsec", "time_ms": "ms"}
    for c, unit in units.items():
        table[c].unit = unit
    table["status"].description = "solved, no-solution or error"
    table["roll_deg"].description = ("0 when north is image-up and east image-left; "
                                     "north's position angle from up towards left")
    table["qx"].description = "quaternion of the ICRS -> camera rotation, scalar last (scipy order)"
    table["p_false"].description = "probability that the identification is false (corrected for the candidates tried)"
    table["sigma_cross_arcsec"].description = ("1-sigma attitude error across the boresight "
                                               "(QUEST covariance, CRLB weights)")
    table["time_ms"].description = "wall time from pixels in memory to attitude (detection, MLE, identification)"
    stages = {"t_read_ms": "reading and decoding the file",
              "t_background_ms": "matched filter, background and noise grid",
              "t_detect_ms": "peaks above the local threshold",
              "t_cg_ms": "stamps and their centres of gravity",
              "t_mle_ms": "Poisson MLE with the CRLB",
              "t_identify_ms": "identification, with the attitude solve it verifies against",
              "t_attitude_ms": "star directions and results from the attitude"}
    for c, text in stages.items():
        table[c].unit = "ms"
        table[c].description = text
