"""``startrack solve``: star identification and attitude for each frame (lost-in-space, tracking, blind)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from astropy.table import vstack

from ..psf import parse_psf
from ..sky.camera import Camera
from ..sky.catalog import parse_time
from ..sky.pipeline import solve_frames
from .common import command, fit_options, load_sensor, progress, save

HELP = """Detect the stars of each frame, localise them by Poisson MLE with their
Cramér-Rao bounds, identify them in the bundled Hipparcos 2 catalog and solve
the attitude: boresight RA/Dec, roll (0 when north is up and east left), the
ICRS -> camera quaternion (scalar last), field of view and focal length, the
1-sigma attitude errors (QUEST covariance with CRLB weights) and the
probability that the identification is false.

The camera comes from the [camera] table of a TOML file (focal length may be
approximate: it is refined within +-5 %), or is unknown: --fov-range MIN MAX
solves blind over that range of horizontal fields of view and reports the
one found. The [sensor] table is optional; without it the noise is measured
from the image. Frames are processed in order; each solved frame predicts the
next (tracking), falling back to lost-in-space. Frame time: FITS DATE-OBS, else
--time; it places the stars at their apparent positions (proper motion,
aberration). The pattern database is built once per camera and cached.

Every frame gives one row with status solved, no-solution or error and a
reason; the command fails only on usage errors or when no frame could be read.

examples:
  startrack solve frames/*.fits --camera camera.toml --out results.ecsv --stars stars.ecsv
  startrack solve night.png --fov-range 5 30 --time 2026-11-25T22:00:00 --wcs-dir wcs/
"""


def register(sub):
    p = command(sub, "solve", "identify stars and solve the attitude of frames", HELP, out="results.ecsv",
                what="per-frame results (.ecsv, .fits, .csv or .parquet)")
    p.add_argument("frames", nargs="+", metavar="FRAME", help="frame file(s): FITS, TIFF, PNG, JPEG or NPY")
    cam = p.add_mutually_exclusive_group(required=True)
    cam.add_argument("--camera", metavar="TOML", help="camera file with a [camera] table (and optionally [sensor])")
    cam.add_argument("--fov-range", nargs=2, type=float, metavar=("MIN", "MAX"),
                     help="blind: horizontal field of view between MIN and MAX degrees")
    p.add_argument("--time", metavar="ISOT", help="UTC time of frames without DATE-OBS, e.g. 2026-11-25T22:00:00")
    p.add_argument("--stars", metavar="FILE", help="also write every detected star (position, CRLB, flux, HIP)")
    p.add_argument("--wcs-dir", metavar="DIR", help="write a FITS WCS header <frame stem>.wcs per solved frame")
    fit_options(p)
    p.add_argument("--no-tracking", action="store_true", help="solve every frame lost-in-space")
    p.set_defaults(func=run)


def _identifier_factory(args):
    """``shape -> StarIdentifier``, built once per image size (blind) or checked against the camera."""
    from ..sky.starid import StarIdentifier

    made = {}

    def note(msg):
        if not args.quiet:
            print(f"startrack solve: {msg}", file=sys.stderr)

    if args.camera:
        camera = Camera.from_toml(args.camera)
    else:
        lo, hi = args.fov_range
        if not (0 < lo <= hi < 180):
            raise ValueError(f"--fov-range must satisfy 0 < MIN <= MAX < 180 degrees, got {lo:g} {hi:g}")

    def factory(shape):
        h, w = shape
        if (w, h) not in made:
            if args.camera:
                if (camera.width, camera.height) != (w, h):
                    raise ValueError(f"the frame is {w}x{h} px but the camera file says {camera.width}x{camera.height}")
                ident = StarIdentifier(camera, progress=note)
            else:
                ident = StarIdentifier.blind(w, h, (lo, hi), progress=note)
            db = ident.database
            note(f"pattern database: {len(db)} patterns, " + ("loaded from the cache" if db.from_cache else
                                                              f"built in {db.build_seconds:.1f} s and cached"))
            made[(w, h)] = ident
        return made[(w, h)]

    return factory


def run(args):
    model = parse_psf(args.psf)
    sensor = load_sensor(args.camera) if args.camera else None
    if args.time is not None:
        parse_time(args.time)  # a bad --time is a usage error, not a row per frame
    factory = _identifier_factory(args)
    wcs_dir = Path(args.wcs_dir) if args.wcs_dir else None
    if wcs_dir:
        wcs_dir.mkdir(parents=True, exist_ok=True)
    bar = progress(args.frames, total=len(args.frames), desc="solve", quiet=args.quiet)
    it = iter(bar)

    def on_frame(path, res):
        next(it, None)
        if wcs_dir is not None and res.solution is not None and res.solution.solved:
            header = res.solution.attitude.wcs(res.camera).to_header(relax=True)
            header["COMMENT"] = f"startrack solve: {Path(path).name}"
            header.tofile(wcs_dir / (_stem(path) + ".wcs"), overwrite=True)

    results, stars = solve_frames(args.frames, factory, model, sensor, time=args.time,
                                  tracking=not args.no_tracking, threshold=args.threshold, on_frame=on_frame)
    for _ in it:
        pass
    n_read = int(np.sum(results["status"] != "error"))
    if n_read == 0:
        raise ValueError(f"no frame could be read ({results['reason'][0]})")
    save(results, args.out, args.quiet)
    if args.stars:
        table = vstack(stars, metadata_conflicts="silent") if len(stars) > 1 else stars[0]
        save(table, args.stars, args.quiet)
    if not args.quiet:
        solved = results["status"] == "solved"
        msg = f"{int(solved.sum())} of {len(results)} frames solved"
        if solved.any():
            msg += (f"; median {np.median(results['n_matched'][solved]):.0f} stars matched, "
                    f"{np.median(results['sigma_cross_arcsec'][solved]):.2f} arcsec cross-boresight, "
                    f"{np.median(results['sigma_roll_arcsec'][solved]):.1f} arcsec roll (1 sigma)")
        print(msg, file=sys.stderr)
    return 0


def _stem(path):
    name = Path(path).name
    for suf in (".fits.gz", ".fits.fz"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(path).stem

