"""``startrack calib``: lab calibrations — photon transfer, turntable per-pixel ePSF, turntable intrinsics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import progress

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


def register(sub):
    p = sub.add_parser("calib", help="lab calibrations: photon transfer, turntable ePSF, intrinsics",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cs = p.add_subparsers(dest="calib_command", metavar="CALIBRATION")
    p.set_defaults(func=lambda args: _no_sub(p))

    q = cs.add_parser("ptc", help="photon transfer (EMVA 1288) -> [sensor] table", description=PTC_HELP,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("manifest", metavar="MANIFEST", help="manifest.csv (or its folder)")
    q.add_argument("--out", "-o", default="sensor.toml", metavar="TOML",
                   help="[sensor] table to write (default sensor.toml)")
    q.add_argument("--table", metavar="FILE", help="per-level table (default: OUT with suffix _levels.ecsv)")
    q.add_argument("--plot", metavar="PNG", help="photon transfer plot (default: OUT with suffix .png)")
    q.add_argument("--read-noise", type=float, default=0.0, metavar="E",
                   help="Gaussian part of the dark noise in e- if known from elsewhere (default 0)")
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    q.set_defaults(func=run_ptc)


def _no_sub(parser):
    parser.print_help()
    return 2


def _sibling(out: Path, given, suffix):
    return Path(given) if given else out.with_name(out.stem + suffix)


def _maybe_plot(fn, result, path, quiet):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if not quiet:
            print("(install the 'plot' extra for the plot)", file=sys.stderr)
        return
    fn(result, path)
    if not quiet:
        print(f"plot:  {path}", file=sys.stderr)


def run_ptc(args):
    from ..calibration.ptc import measure_ptc, plot_ptc
    from ..io import write_table

    out = Path(args.out)
    res = measure_ptc(args.manifest, read_noise=args.read_noise,
                      progress=lambda it: progress(it, total=len(it), desc="ptc", quiet=args.quiet))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(res.to_toml())
    table = _sibling(out, args.table, "_levels.ecsv")
    write_table(res.levels, table)
    if not args.quiet:
        print(res.summary())
        print(f"wrote {out} and {table}", file=sys.stderr)
    _maybe_plot(plot_ptc, res, _sibling(out, args.plot, ".png"), args.quiet)
    return 0
