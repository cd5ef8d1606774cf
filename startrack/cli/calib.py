"""``startrack calib``: lab calibrations — photon transfer, turntable per-pixel ePSF, turntable intrinsics."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .common import command, command_group, draw, load_sensor, progress

HELP = """Lab calibrations of a star sensor. Each reads a dataset folder (frames plus a
manifest.csv; 'startrack simulate ...' writes realistic ones to try):

  ptc             photon transfer (EMVA 1288): gain, offset, dark variance, read
                  noise, saturation, linearity -> the [sensor] table of camera.toml
  turntable-epsf  per-pixel effective PSF from a turntable scan -> a PSF model file
                  for 'startrack localize --psf pixel-epsf:FILE', and its evaluation
  intrinsics      focal length, principal point, distortion and mounting alignment
                  from spot centroids over a grid of turntable angles -> [camera]

example:
  startrack simulate ptc ptc-data && startrack calib ptc ptc-data --out sensor.toml
"""

PTC_HELP = """Photon transfer after EMVA 1288. The manifest lists dark frames and flat
frames (columns file,kind,exposure_s; kind 'dark' or 'flat'; at least two
frames per exposure, so that frame differences cancel fixed-pattern noise).
The slope of temporal variance against mean signal is the gain K; the dark
frames give the offset and the dark noise (quantisation noise 1/12 DN^2
removed); the variance peak gives saturation and full well; the mean signal
against exposure time gives the linearity error. Every number comes with its
standard uncertainty.

Photon transfer cannot split the dark noise into a Poisson part (dark_var,
whose mean raises the dark level) and Gaussian read noise: --read-noise sets
the Gaussian part (default 0, all Poisson, the small-PSF paper's model).
The likelihood used by 'startrack localize' is the same for any split.

Writes the [sensor] table (TOML, uncertainties as comments), the per-level
table (ECSV) and the photon transfer plot (PNG, with matplotlib).

example:
  startrack simulate ptc ptc-data
  startrack calib ptc ptc-data/manifest.csv --out sensor.toml
"""


EPSF_HELP = """Per-pixel effective PSF from a turntable scan (the small-PSF paper's first
way). The manifest lists frames with columns file,azimuth_deg,elevation_deg,repeat:
several repeats at each turntable step. One elevation is a 1-D scan (model
phi_ij(x)); a full azimuth x elevation grid gives phi_ij(x, y). Angles become
positions by f tan(theta) / a, placed on the sensor by fitting the scan's
offset and direction to the centres of gravity of the averaged steps.

Every other step builds the model (each pixel's mean light against position,
not-a-knot cubic splines); the others test it: ePSF + Poisson MLE, centre of
gravity and a least-squares Gaussian fit against the precision limit, per
frame and for the mean over the repeats.

Writes the model (FITS, in full-frame coordinates: valid for this sensor
region and range of positions), the evaluation table (ECSV) and a plot. A
2-D grid model works in 'startrack localize --psf pixel-epsf:FILE'; a 1-D
scan model knows no y, so fit x alone in Python:
startrack.localize(frame, xy, PixelEPSF.load(FILE), sensor, fit=("x",), ...).

example:
  startrack simulate turntable tt-data
  startrack calib turntable-epsf tt-data --camera tt-data/camera.toml --out pixel_epsf.fits
"""

INTR_HELP = """Camera intrinsics from a turntable: a collimated star imaged at a grid of
azimuth x elevation angles. The table holds one spot centroid per angle
(columns azimuth_deg, elevation_deg, x, y and optionally x_err, y_err, e.g.
from 'startrack localize' on the mean frame of each position). Least squares
(scipy) fits the focal length, principal point, OpenCV distortion terms and
the turntable-to-camera mounting rotation, starting from the nominal camera.

The principal point trades off against a tilt of the mounting and is the
least certain number: its uncertainty is roughly 660 x centroid noise /
sqrt(number of points) over a 12 deg field; the printed uncertainties come
from the fit's covariance.

Writes the [camera] table (uncertainties and mounting as comments), the
residual table (ECSV) and a residual map (PNG).

example:
  startrack simulate intrinsics intr-data
  startrack calib intrinsics intr-data/centroids.ecsv --camera intr-data/nominal.toml --out camera.toml
"""


def register(sub):
    command_group(sub, "calib", "lab calibrations: photon transfer, turntable ePSF, intrinsics", HELP,
                  [_add_ptc, _add_turntable_epsf, _add_intrinsics], metavar="CALIBRATION")


def _add_ptc(cs):
    q = command(cs, "ptc", "photon transfer (EMVA 1288) -> [sensor] table", PTC_HELP, out="sensor.toml",
                what="[sensor] table", metavar="TOML")
    q.add_argument("manifest", metavar="MANIFEST", help="manifest.csv (or its folder)")
    q.add_argument("--table", metavar="FILE", help="per-level table (default: OUT with suffix _levels.ecsv)")
    q.add_argument("--plot", metavar="PNG", help="photon transfer plot (default: OUT with suffix .png)")
    q.add_argument("--read-noise", type=float, default=0.0, metavar="E",
                   help="Gaussian part of the dark noise in e- if known from elsewhere (default 0)")
    q.set_defaults(func=run_ptc)


def _add_turntable_epsf(cs):
    q = command(cs, "turntable-epsf", "per-pixel ePSF from a turntable scan, and its evaluation", EPSF_HELP,
                out="pixel_epsf.fits", what="per-pixel ePSF model", metavar="FITS")
    q.add_argument("manifest", metavar="MANIFEST", help="manifest.csv (or its folder)")
    q.add_argument("--camera", required=True, metavar="TOML",
                   help="camera file: [sensor] (gain, offset, dark_var) and [camera] focal_length_mm, pixel_pitch_um")
    q.add_argument("--focal-length-mm", type=float, metavar="F", help="override [camera] focal_length_mm")
    q.add_argument("--pixel-pitch-um", type=float, metavar="A", help="override [camera] pixel_pitch_um")
    q.add_argument("--roi", type=int, default=5, help="fitting window width in px (default 5)")
    q.add_argument("--table", metavar="FILE", help="evaluation table (default: OUT with suffix _eval.ecsv)")
    q.add_argument("--plot", metavar="PNG", help="evaluation plot (default: OUT with suffix .png)")
    q.add_argument("--no-gaussian", action="store_true", help="skip the (slow) least-squares Gaussian fit")
    q.add_argument("--shared", action="store_true",
                   help="also evaluate one ePSF shared by all pixels, and it times each pixel's fitted response "
                        "(1-D scans), to see what per-pixel buys")
    q.set_defaults(func=run_turntable_epsf)


def _add_intrinsics(cs):
    q = command(cs, "intrinsics", "focal length, principal point, distortion from a turntable grid", INTR_HELP,
                out="camera.toml", what="[camera] table", metavar="TOML")
    q.add_argument("centroids", metavar="TABLE",
                   help="spot centroids: azimuth_deg, elevation_deg, x, y [, x_err, y_err] (ECSV, CSV, FITS)")
    q.add_argument("--camera", required=True, metavar="TOML",
                   help="nominal camera: [camera] focal_length_mm, pixel_pitch_um, width, height")
    q.add_argument("--distortion", default="k1,k2,p1,p2", metavar="TERMS",
                   help="distortion terms to fit, from k1,k2,p1,p2,k3, or 'none' (default k1,k2,p1,p2)")
    q.add_argument("--residuals", metavar="FILE", help="residual table (default: OUT with suffix _residuals.ecsv)")
    q.add_argument("--plot", metavar="PNG", help="residual map (default: OUT with suffix .png)")
    q.set_defaults(func=run_intrinsics)


def _sibling(out: Path, given, suffix):
    return Path(given) if given else out.with_name(out.stem + suffix)


def run_ptc(args):
    from ..calibration.ptc import measure_ptc, plot_ptc

    res = measure_ptc(args.manifest, read_noise=args.read_noise,
                      progress=lambda it: progress(it, total=len(it), desc="ptc", quiet=args.quiet))
    _write_result(res, res.levels, args.out, args.table, "_levels.ecsv", plot_ptc, args.plot, args.quiet)
    return 0


def _write_result(res, table, out, table_path, suffix, plot_fn, plot_path, quiet):
    """The TOML table, the per-point table and the plot of a calibration, and its summary."""
    from ..io import write_table

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(res.to_toml())
    table_path = _sibling(out, table_path, suffix)
    write_table(table, table_path)
    if not quiet:
        print(res.summary())
        print(f"wrote {out} and {table_path}", file=sys.stderr)
    draw(plot_fn, _sibling(out, plot_path, ".png"), res, quiet=quiet)


def _camera_numbers(path, focal_length_mm, pixel_pitch_um):
    """Sensor and (focal length mm, pixel pitch um) from a camera file, options winning."""
    from ..validate import load_toml

    data = load_toml(path)
    if "sensor" not in data:
        raise ValueError(f"{path}: no [sensor] table (gain, offset, dark_var); run 'startrack calib ptc' first")
    sensor = load_sensor(path)
    cam = data.get("camera", {})
    f = focal_length_mm if focal_length_mm is not None else cam.get("focal_length_mm")
    a = pixel_pitch_um if pixel_pitch_um is not None else cam.get("pixel_pitch_um")
    if f is None or a is None:
        raise ValueError(f"{path}: [camera] needs focal_length_mm and pixel_pitch_um (or give --focal-length-mm "
                         "and --pixel-pitch-um)")
    return sensor, float(f), float(a)


def run_turntable_epsf(args):
    from ..calibration.turntable import (
        calibrate_turntable,
        evaluate_turntable,
        plot_turntable,
        read_turntable,
        shared_epsf,
    )
    from ..io import write_table

    sensor, f_mm, pitch = _camera_numbers(args.camera, args.focal_length_mm, args.pixel_pitch_um)
    frames, table, (c0, r0) = read_turntable(
        args.manifest, roi=args.roi,
        progress=lambda it: progress(it, total=len(it), desc="read", quiet=args.quiet))
    cal = calibrate_turntable(frames, table["azimuth_deg"], table["elevation_deg"], sensor, f_mm, pitch,
                              roi=args.roi)
    ev = evaluate_turntable(cal, frames, sensor, gaussian=not args.no_gaussian)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = cal.model.shifted(c0, r0)
    model.save(out)
    for col in ("x", "y"):
        ev[col] += c0 if col == "x" else r0
    tab = _sibling(out, args.table, "_eval.ecsv")
    write_table(ev, tab)
    if not args.quiet:
        print(cal.summary())
        print(_evaluation_summary(ev))
    if args.shared:
        if cal.model.ndim != 1:
            raise ValueError("--shared compares 1-D scans only")
        for label, resp in (("one shared ePSF", False), ("shared ePSF x pixel response", True)):
            sh = evaluate_turntable(cal, frames, sensor, model=shared_epsf(cal, response=resp), gaussian=False)
            print(f"{label}: MLE {sh.meta['rms_rmse_mle']:.4f} px rms single frame, "
                  f"{sh.meta['rms_mean_mle']:.4f} px rms mean of repeats (per-pixel: "
                  f"{ev.meta['rms_rmse_mle']:.4f}, {ev.meta['rms_mean_mle']:.4f})")
    if not args.quiet:
        print(f"wrote {out} and {tab}", file=sys.stderr)
    draw(plot_turntable, _sibling(out, args.plot, ".png"), ev, quiet=args.quiet)
    return 0


def _evaluation_summary(ev) -> str:
    m = ev.meta
    near = np.abs(np.abs(np.asarray(ev["dx"])) - 0.5) <= 0.1
    lines = [f"{len(ev)} test positions, {m['n_frames']} frames; x RMS error over positions (px):",
             f"  precision limit      {m['rms_pl_x']:.4f}",
             f"  ePSF + MLE           {m['rms_rmse_mle']:.4f} single frame, {m['rms_mean_mle']:.4f} mean of repeats"]
    for name, label in (("cg", "centre of gravity"), ("gf", "Gaussian fit")):
        if f"rms_rmse_{name}" in m:
            lines.append(f"  {label:<20} {m[f'rms_rmse_{name}']:.4f} single frame, "
                         f"{m[f'rms_mean_{name}']:.4f} mean of repeats")
    if near.any():
        lines.append(f"  within 0.1 px of a pixel boundary: MLE {np.nanmean(ev['rmse_mle'][near]):.4f}, "
                     f"PL {np.mean(ev['pl_x'][near]):.4f}")
    return "\n".join(lines)


def run_intrinsics(args):
    from ..calibration.intrinsics import fit_intrinsics, plot_intrinsics
    from ..io import read_table
    from ..sky.camera import Camera

    nominal = Camera.from_toml(args.camera)
    t = read_table(args.centroids)
    need = ["azimuth_deg", "elevation_deg", "x", "y"]
    missing = [c for c in need if c not in t.colnames]
    if missing:
        raise ValueError(f"{args.centroids}: missing column(s) {', '.join(missing)}; the table needs {','.join(need)}")
    terms = () if args.distortion.strip().lower() == "none" else tuple(
        v.strip() for v in args.distortion.split(",") if v.strip())
    errs = {k: np.asarray(t[k], float) for k in ("x_err", "y_err") if k in t.colnames}
    res = fit_intrinsics(t["azimuth_deg"], t["elevation_deg"], t["x"], t["y"], nominal, distortion=terms, **errs)
    _write_result(res, res.residuals, args.out, args.residuals, "_residuals.ecsv", plot_intrinsics, args.plot,
                  args.quiet)
    return 0
