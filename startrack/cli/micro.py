"""``startrack micro``: microscope mode, one sub-command per job.

A sub-command is an ``add_<name>(sub)`` function that adds its parser to
``sub`` and sets ``func`` to the function that runs it, plus one line in
:data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..flags import NO_FIT, NO_POSITION
from ..io import read_signals
from .axial import add_axial
from .common import command, command_group, load_sensor, progress, run_frames, save, stack_tables

HELP = """Microscope mode: particle tracking and localisation on the startrack core.

examples:
  startrack micro track1d signals.npy --pixel-nm 80 --out positions.ecsv
  startrack micro localize frame.tif --method bancroft --sigma 1.3 --out locs.ecsv
  startrack micro axial predict pairs.npy --model darkfield --out z.ecsv
"""

TRACK1D_HELP = """Track a beam on a line sensor (drift stabilisation, chromatic confocal):
one position per readout by ePhasor (Ma et al.), the first-harmonic phase of a
window sized from the spot's own width. SIGNALS is an NPY file (one readout per
row, integer types are read as they are; a 1-D array is one readout) or a
FITS/TIFF image whose rows are readouts.

Columns: frame, x (px), x_nm (with --pixel-nm), sigma (spot width, px),
half_width (window, px), peak, baseline, flags (1 window clipped at the sensor
end, 2 peak on the first/last pixel, 4 no signal, 8 NaN/inf in the readout;
x is NaN for 2, 4 and 8).

With --frames-per-step N (a stage-step experiment: the stage rests for N
readouts per step) the per-step mean and standard deviation, the tracking
precision, go to OUT_steps.ecsv and are summarised on stderr.

example:
  startrack micro track1d signals.npy --pixel-nm 80 --frames-per-step 100 --out positions.ecsv
"""

LOCALIZE_HELP = """Detect the spots of each frame with startrack's detector and localise each
with the chosen method:
  mle       Poisson maximum likelihood of a pixel-integrated Gaussian (x, y,
            flux, background), with x_err/y_err = sqrt of the Cramér-Rao bound
  phasor    2-D phasor (pSMLM): phases of the ROI's first Fourier coefficients
  bancroft  fluoroBancroft: algebraic, Poisson-weighted (no fitting)
  gauss     least-squares Gaussian fit (scipy)
Frames: FITS, TIFF, PNG, JPEG or NPY; pixel values in DN with --camera, else
photo-electrons.

example:
  startrack micro localize frame.tif --method mle --sigma 1.3 --camera camera.toml --out locs.ecsv
"""

_CHUNK = 65536  # readouts per kernel call: bounds memory on memory-mapped files and feeds the progress bar


def register(sub):
    command_group(sub, "micro", "microscope mode: line-sensor tracking, spot localisation, axial position", HELP,
                  SUBCOMMANDS)


# -- track1d --------------------------------------------------------------------------------------------

def add_track1d(sub):
    p = command(sub, "track1d", "positions of a beam on a line sensor (ePhasor)", TRACK1D_HELP, out="positions.ecsv")
    p.add_argument("signals", metavar="SIGNALS", help="NPY file (one readout per row) or FITS/TIFF image")
    p.add_argument("--pixel-nm", type=float, default=None, metavar="NM",
                   help="pixel size in the object plane (nm): adds x_nm")
    p.add_argument("--method", default="ephasor", choices=["ephasor", "phasor", "atca"],
                   help="ephasor (default), fixed-window phasor, or adaptive thresholded centroid")
    p.add_argument("--smooth", type=int, default=None, metavar="K",
                   help="running mean of K px (odd) to find peak and width of weak signals")
    p.add_argument("--window", type=float, default=None, metavar="W",
                   help="ePhasor window half-width in spot sigmas (default pi sqrt(2/3) = 2.57; the paper's is 4)")
    p.add_argument("--half-width", type=int, default=8, metavar="H",
                   help="window half-width in px of --method phasor (default 8)")
    p.add_argument("--frames-per-step", type=int, default=None, metavar="N",
                   help="stage-step experiment: N readouts per step; writes OUT_steps.ecsv")
    p.set_defaults(func=run_track1d)


def run_track1d(args):
    from ..microscope import OPTIMAL_WINDOW, step_precision, track1d

    signals = read_signals(args.signals)
    window = OPTIMAL_WINDOW if args.window is None else args.window
    kw = dict(pixel_nm=args.pixel_nm, method=args.method, smooth=args.smooth, window=window,
              half_width=args.half_width)
    n = signals.shape[0]
    parts = []
    for lo in progress(range(0, n, _CHUNK), total=(n + _CHUNK - 1) // _CHUNK, desc="track1d", quiet=args.quiet):
        part = track1d(np.asarray(signals[lo:lo + _CHUNK]), **kw)
        part["frame"] += lo
        parts.append(part)
    out = stack_tables(parts)
    save(out, args.out, args.quiet)
    x = np.asarray(out["x"], float)
    bad = int(np.count_nonzero(out["flags"] & NO_POSITION))
    if not args.quiet:
        unit = f" = {np.nanstd(x) * args.pixel_nm:.2f} nm" if args.pixel_nm else ""
        print(f"{n} readouts, {bad} without a position; x spread (std) {np.nanstd(x):.4f} px{unit}", file=sys.stderr)
    if args.frames_per_step:
        steps = step_precision(x, args.frames_per_step, pixel_nm=args.pixel_nm)
        out_path = Path(args.out)
        save(steps, out_path.with_name(out_path.stem + "_steps" + (out_path.suffix or ".ecsv")), args.quiet)
        if not args.quiet:
            std = np.asarray(steps["std"], float)
            nm = f" ({np.nanmedian(std) * args.pixel_nm:.2f} nm)" if args.pixel_nm else ""
            print(f"{len(steps)} steps of {args.frames_per_step} readouts: median per-step std "
                  f"{np.nanmedian(std):.4f} px{nm}", file=sys.stderr)
    return 0


# -- localize -------------------------------------------------------------------------------------------

def add_localize(sub):
    from ..microscope.spots import METHODS

    p = command(sub, "localize", "detect and localise spots in microscopy frames", LOCALIZE_HELP, out="locs.ecsv")
    p.add_argument("frames", nargs="+", metavar="FRAME", help="frame file(s)")
    p.add_argument("--method", default="mle", choices=METHODS, help="estimator (default mle)")
    p.add_argument("--sigma", type=float, required=True, metavar="S", help="Gaussian PSF radius in px")
    p.add_argument("--camera", metavar="TOML",
                   help="camera file whose [sensor] table gives gain, offset, dark_var, read_noise, saturation")
    p.add_argument("--roi", type=int, default=None, help="ROI width in px (default 2 ceil(3 sigma) + 1)")
    p.add_argument("--threshold", type=float, default=5.0, help="detection threshold in sigma (default 5)")
    p.add_argument("--max-spots", type=int, default=None, help="keep only the brightest N spots per frame")
    p.set_defaults(func=run_localize)


def run_localize(args):
    from ..microscope.spots import localize_spots

    sensor = load_sensor(args.camera)
    out, used, _ = run_frames(
        args.frames, lambda image: localize_spots(image, args.sigma, method=args.method, sensor=sensor, roi=args.roi,
                                                  threshold=args.threshold, max_spots=args.max_spots),
        command="micro localize", quiet=args.quiet)
    save(out, args.out, args.quiet)
    if not args.quiet:
        ok = np.count_nonzero((np.asarray(out["flags"]) & NO_FIT) == 0)
        print(f"{len(out)} spots in {used} frame(s), {ok} localised ({args.method})", file=sys.stderr)
    return 0


#: The ``micro`` sub-commands, in the order ``--help`` lists them.
SUBCOMMANDS = [add_track1d, add_localize, add_axial]
