"""``startrack nightsky``: a night-sky frame sequence end to end, resumable, on local cores or a Dask cluster."""

from __future__ import annotations

import sys

HELP = """Process a sequence of frames from one camera: every frame solved (detection,
centre of gravity, Gaussian MLE with its Cramér-Rao bound, identification
with tracking from frame to frame, attitude); then each star seen in enough
frames gets its own ePSF from its images in the sequence and is relocalised
with ePSF MLE, and the attitudes are solved again; then the accuracy report.

Frame times come from the FITS header (DATE-OBS, or --time-key), else from
--time and --cadence (frame k at T0 + k * cadence); a frame with no time is
an error row. Bad frames (unreadable, missing, cloudy, saturated, another
size) are rows with a status and a reason; the sequence goes on.

The sequence is cut into blocks of consecutive frames (tracking inside a
block) that run on all local cores (--workers) or on a Dask cluster
(--scheduler; workers must see the frame files). Each finished block is
written to OUT/parts at once: after a crash or a kill, --resume on the same
--out continues where it stopped and ends with the same tables.

Writes OUT/frames.ecsv, OUT/stars.ecsv and OUT/report.md (open this first).

examples:
  startrack nightsky frames/ --camera frames/camera.toml --out night
  startrack nightsky frames/*.fits --camera camera.toml --out night --time 2026-11-25T22:00:00 --cadence 0.366
  startrack nightsky frames/ --camera camera.toml --out night --resume
  startrack nightsky frames/ --camera camera.toml --out night --scheduler tcp://10.0.0.5:8786
"""


def register(sub):
    from .common import command, fit_options

    p = command(sub, "nightsky", "a night-sky frame sequence: attitudes, per-star ePSF, accuracy report", HELP,
                out="nightsky", what="folder", metavar="DIR")
    p.add_argument("frames", nargs="+", metavar="FRAME", help="frame files, or one folder of them (sorted by name)")
    p.add_argument("--camera", required=True, metavar="TOML",
                   help="camera file: [camera], optionally [sensor] and [site] (latitude_deg, longitude_deg)")
    p.add_argument("--time", metavar="ISOT", help="UTC time of frame 0 for frames without a header time")
    p.add_argument("--cadence", type=float, metavar="S", help="seconds between frames (with --time)")
    p.add_argument("--time-key", default="DATE-OBS", metavar="KEY", help="FITS keyword of the frame time")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="local worker processes (default all cores)")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run the blocks on this Dask scheduler")
    p.add_argument("--resume", action="store_true", help="continue the run already in --out")
    fit_options(p, "PSF model of pass 1's MLE")
    p.add_argument("--no-epsf", action="store_true", help="skip pass 2 (per-star ePSF); assess the Gaussian MLE only")
    p.set_defaults(func=run)


def run(args):
    from ..sky.assess import headline_lines
    from ..sky.nightsky import run as nightsky

    frames = args.frames[0] if len(args.frames) == 1 else args.frames
    res = nightsky(frames, args.camera, out=args.out, psf=args.psf, time=args.time, cadence=args.cadence,
                   time_key=args.time_key, workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                   epsf=not args.no_epsf, threshold=args.threshold, progress=not args.quiet and sys.stderr.isatty())
    if not args.quiet:
        solved = int((res.frames["status"] == "solved").sum())
        print(f"{solved} of {len(res.frames)} frames solved; report: {res.report}", file=sys.stderr)
        for line in headline_lines(res.assessment.headline):
            print(line, file=sys.stderr)
    return 0
