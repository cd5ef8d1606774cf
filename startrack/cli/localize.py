"""``startrack localize``: detect stars in frames and refine them by Poisson MLE, with their CRLB."""

from __future__ import annotations

import sys

import numpy as np

from ..measure import measure_stars
from ..psf import parse_psf
from .common import command, fit_options, load_sensor, run_frames, save

HELP = """Detect stars in each frame (threshold on a matched-filtered image), start
from their centre of gravity and refine every star by Poisson maximum
likelihood on the PSF model. Each row carries the position, flux and
background with the square root of their Cramér–Rao bound (x_err, y_err ...)
and the detection columns (x_cg, y_cg, peak, snr). Frames: FITS, TIFF, PNG,
JPEG or NPY.

example:
  startrack localize frame.fits --psf gaussian:0.3 --camera camera.toml --out stars.ecsv
"""


def register(sub):
    p = command(sub, "localize", "detect and localise stars (MLE + CRLB)", HELP, out="stars.ecsv")
    p.add_argument("frames", nargs="+", metavar="FRAME", help="frame file(s)")
    fit_options(p, "PSF model")
    p.add_argument("--camera", metavar="TOML",
                   help="camera file whose [sensor] table gives gain, offset, dark_var, read_noise, saturation; "
                        "without it pixel values are taken as photo-electrons")
    p.add_argument("--roi", type=int, default=None,
                   help="fitting window width in px (default: the PSF model's own, 5 for a small Gaussian)")
    p.add_argument("--fit", default="all", choices=["all", "xy"],
                   help="fit x, y, flux and background (all, default) or only x, y with flux and background "
                        "from the detection (xy)")
    p.add_argument("--max-stars", type=int, default=None, help="keep only the brightest N stars per frame")
    p.set_defaults(func=run)


def run(args):
    model = parse_psf(args.psf)
    sensor = load_sensor(args.camera)
    out, used, failed = run_frames(
        args.frames, lambda image: measure_stars(image, model, sensor, roi=args.roi, threshold=args.threshold,
                                                 max_stars=args.max_stars, fit=args.fit, keep_bad=True),
        command="localize", quiet=args.quiet)
    save(out, args.out, args.quiet)
    if sensor is None:
        print("startrack localize: no [sensor] table: pixel values were taken as photo-electrons "
              "(gain 1, offset 0), so x_err/y_err assume pure shot noise", file=sys.stderr)
    if not args.quiet:
        ok = np.asarray(out["converged"])
        print(f"{len(out)} stars in {used} frame(s) ({failed} unreadable); {ok.sum()} converged; "
              f"median x_err {np.nanmedian(out['x_err']):.4f} px, y_err {np.nanmedian(out['y_err']):.4f} px",
              file=sys.stderr)
    return 0
