"""``startrack epsf``: build an effective PSF from frames, and look at one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..detect import detect
from ..epsf import build_epsf, match_stars
from ..io import read_frame, read_table, write_table
from ..psf import EPSF
from ..sensor import Sensor
from .common import command, command_group, draw, load_sensor, progress

HELP = """Build an effective PSF (ePSF) from star images by the Anderson & King
iteration: centre-of-gravity start, every pixel of every star mapped to a
sample of the ePSF, a sigma-clipped estimate on a grid of 1/OVERSAMPLING px,
re-centring, Poisson-MLE refit of every star on the new ePSF, repeated until
the stars stop moving. The result is a FITS file that 'startrack localize
--psf epsf:FILE' and the Python API use as a PSF model.

Stars come from --positions (an ECSV with x, y or x_cg, y_cg and, for several
frames, a 'frame' column holding the frame's file name or index, as
'startrack localize' writes it) or are detected in each frame.

When the same stars appear in several frames (a dithered or drifting
sequence), --tie shift (or affine) ties each star's positions across frames.
Use it: from independent images the pixel-phase bias of the start cannot be
told from a warp of the ePSF, and only the smoothing wears it down, slowly.
Spots sharper than r ~ 0.25 px need --oversampling 6 to 8.

examples:
  startrack epsf build frame*.fits --camera camera.toml --tie shift --out epsf.fits
  startrack epsf show epsf.fits --out epsf.png
"""

BUILD_HELP = """Build an ePSF from frames (see 'startrack epsf --help').

example:
  startrack epsf build frame*.fits --camera camera.toml --tie shift --out epsf.fits
"""

SHOW_HELP = """Print an ePSF's build record and shape (equivalent Gaussian radius,
peak fraction, centroid, residual chi^2 of the build) and draw its image and
x/y profiles (PNG with matplotlib; an ECSV of the profiles without it).

example:
  startrack epsf show epsf.fits --out epsf.png
"""


def register(sub):
    command_group(sub, "epsf", "build an effective PSF from frames, or show one", HELP, [_add_build, _add_show],
                  metavar="ACTION")


def _add_build(sub):
    b = command(sub, "build", "build an ePSF from frames", BUILD_HELP, out="epsf.fits", what="ePSF file",
                metavar="FITS")
    b.add_argument("frames", nargs="+", metavar="FRAME", help="frame file(s): FITS, TIFF, PNG, JPEG or NPY")
    b.add_argument("--positions", metavar="ECSV", help="star table (x, y or x_cg, y_cg; 'frame' column for "
                                                      "several frames); default: detect the stars")
    b.add_argument("--camera", metavar="TOML", help="camera file with a [sensor] table (gain, offset, dark_var, "
                                                    "read_noise, saturation); without it pixel values are e-")
    b.add_argument("--oversampling", type=int, default=4, help="grid nodes per pixel (default 4: 0.25 px)")
    b.add_argument("--roi", type=int, default=7, help="odd window width around each star in px (default 7)")
    b.add_argument("--iterations", type=int, default=50, help="most builds (1: single CG pass; default 50)")
    b.add_argument("--tie", choices=["none", "shift", "affine"], default="none",
                   help="tie repeated stars across frames by a per-frame shift or affine map (default none)")
    b.add_argument("--threshold", type=float, default=10.0,
                   help="detection threshold in sigma when stars are detected (default 10: bright stars only)")
    b.add_argument("--max-stars", type=int, default=None, help="use at most N detected stars per frame")
    b.set_defaults(func=run_build)


def _add_show(sub):
    s = command(sub, "show", "summarise and plot an ePSF", SHOW_HELP, out="epsf.png", what="plot", metavar="PNG")
    s.add_argument("epsf", metavar="EPSF", help="ePSF FITS file from 'startrack epsf build'")
    s.set_defaults(func=run_show)


def _positions_for(frames, table):
    """Per-frame (n, 2) positions from a star table with an optional 'frame' column."""
    cols = next(((cx, cy) for cx, cy in (("x_cg", "y_cg"), ("x", "y"))
                 if cx in table.colnames and cy in table.colnames), None)
    if cols is None:
        raise ValueError(f"--positions needs columns x, y (or x_cg, y_cg); it has {table.colnames}")
    xy = np.column_stack([np.asarray(table[cols[0]], float), np.asarray(table[cols[1]], float)])
    if "frame" not in table.colnames:
        if len(frames) > 1:
            raise ValueError("--positions needs a 'frame' column (file name or index) when several frames are given")
        return [xy]
    key = np.array([str(v) for v in table["frame"]])
    out = []
    for i, path in enumerate(frames):
        sel = (key == str(path)) | (key == Path(path).name) | (key == str(i))
        if not sel.any():
            raise ValueError(f"--positions has no rows for frame {path} (its 'frame' column holds e.g. {key[0]!r})")
        out.append(xy[sel])
    return out


def run_build(args):
    sensor = load_sensor(args.camera) or Sensor(gain=1.0)
    images = []
    for path in progress(args.frames, total=len(args.frames), desc="read", quiet=args.quiet):
        images.append(read_frame(path)[0])
    if args.positions:
        pos = _positions_for(args.frames, read_table(args.positions))
    else:
        pos = []
        for img in progress(images, total=len(images), desc="detect", quiet=args.quiet):
            det = detect(img, sensor, threshold=args.threshold, roi=args.roi, max_stars=args.max_stars)
            det = det[~np.asarray(det["saturated"], bool)]
            pos.append(np.column_stack([np.asarray(det["x_cg"]), np.asarray(det["y_cg"])]))
    tie = None if args.tie == "none" else args.tie
    if tie:
        pos = match_stars(pos)
    epsf = build_epsf(images, pos, sensor, oversampling=args.oversampling, roi=args.roi,
                      iterations=args.iterations, tie=tie)
    epsf.save(args.out)
    if not args.quiet:
        m = epsf.meta
        print(f"wrote {args.out}: {m['n_stars']} star images of {m['n_input']} used, {m['iterations']} builds, "
              f"{'converged' if m['converged'] else 'NOT converged'} (last move {m['shift']:.2g} px), "
              f"residual chi2 {m['chi2']:.2f}, equivalent Gaussian radius {epsf.equivalent_radius():.3f} px",
              file=sys.stderr)
    return 0


def run_show(args):
    from ..plots import epsf_profiles, epsf_summary, plot_epsf

    epsf = EPSF.load(args.epsf)
    info = epsf_summary(epsf)
    width = max(len(k) for k in info)
    print(f"{args.epsf}")
    for k, v in info.items():
        print(f"  {k:<{width}}  {v}")
    if not draw(plot_epsf, args.out, epsf, quiet=args.quiet,
                hint="install the 'plot' extra for a picture; the profiles go to a table instead"):
        out = Path(args.out).with_suffix(".ecsv")
        write_table(epsf_profiles(epsf), out)
        if not args.quiet:
            print(f"  profiles: {out}", file=sys.stderr)
    return 0
