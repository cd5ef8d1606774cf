"""``startrack simulate``: realistic synthetic calibration datasets to try the calibration scripts on."""

from __future__ import annotations

import sys
from pathlib import Path

from ..sensor import Sensor
from ..sky.camera import Camera
from .common import command, command_group

HELP = """Write a realistic synthetic dataset in exactly the format a calibration
script reads (a folder of FITS or TIFF frames and its manifest.csv), with the
truth beside it, so every calibration can be tried in a minute:

  ptc         dark frames and flat pairs for 'startrack calib ptc'
  turntable   a turntable scan of a focused spot for 'startrack calib turntable-epsf'
  intrinsics  spot centroids over a grid of turntable angles for 'startrack calib intrinsics'

example:
  startrack simulate ptc ptc-data && startrack calib ptc ptc-data --out sensor.toml
"""

PTC_HELP = """Dark frames and flat-field pairs at equally spaced exposure times up to beyond
saturation, through the EMVA 1288 sensor model: Poisson light (with pixel
response non-uniformity) and Poisson dark signal, optional Gaussian read noise,
full-well clipping, offset non-uniformity, rounding to whole DN and a 12-bit
ADC. Defaults: the small-PSF paper's lab camera (K = 0.14 DN/e-, s0 = 37 DN,
sd2 = 54.40 e-^2). Writes OUTDIR/manifest.csv (file,kind,exposure_s), the
frames and OUTDIR/truth.toml.

example:
  startrack simulate ptc ptc-data --seed 1
  startrack calib ptc ptc-data --out sensor.toml
"""

TT_HELP = """A turntable scan of a collimated point source, the small-PSF paper's lab
setting: f = 25 mm, 5.3 um pixels, 0.0005 deg steps (0.041 px) over ~10 px, 30
frames per step, K = 0.14 DN/e-, s0 = 37 DN, sd2 = 54.40 e-^2, a focused
non-Gaussian spot (core r = 0.2 px with an offset halo) of 3800 e-, 0.5 %
pixel response non-uniformity. Writes OUTDIR/manifest.csv
(file,azimuth_deg,elevation_deg,repeat), the frames, OUTDIR/camera.toml
([sensor] and [camera]) and the true positions OUTDIR/truth.ecsv.

example:
  startrack simulate turntable tt-data --seed 1
  startrack calib turntable-epsf tt-data --camera tt-data/camera.toml
"""

INTR_HELP = """Spot centroids of a collimated star over a grid of turntable angles, for
'startrack calib intrinsics': a 25 mm, 5.3 um, 1024 x 1024 camera with its
principal point off centre, Brown distortion of ~4 px at the corners and a
small mounting misalignment; Gaussian centroid noise. Writes
OUTDIR/centroids.ecsv (azimuth_deg, elevation_deg, x, y, x_err, y_err),
OUTDIR/nominal.toml (the design camera to start from) and OUTDIR/truth.toml.

example:
  startrack simulate intrinsics intr-data --seed 1
  startrack calib intrinsics intr-data/centroids.ecsv --camera intr-data/nominal.toml
"""


def register(sub):
    command_group(sub, "simulate", "write synthetic calibration datasets (ptc, turntable, intrinsics)", HELP,
                  [_add_ptc, _add_turntable, _add_intrinsics], metavar="DATASET")


def _add_ptc(ss):
    q = command(ss, "ptc", "dark frames and flat pairs (photon transfer)", PTC_HELP, quiet=False)
    q.add_argument("outdir", metavar="OUTDIR", help="folder to write (created)")
    q.add_argument("--shape", type=int, nargs=2, default=(128, 128), metavar=("NY", "NX"),
                   help="frame size in px (default 128 128)")
    q.add_argument("--gain", type=float, default=0.14, help="K in DN/e- (default 0.14)")
    q.add_argument("--offset", type=float, default=37.0, help="s0 in DN (default 37)")
    q.add_argument("--dark-var", type=float, default=54.40, help="Poisson dark variance sd2 in e-^2 (default 54.40)")
    q.add_argument("--read-noise", type=float, default=0.0, help="Gaussian read noise in e- (default 0)")
    q.add_argument("--full-well", type=float, default=20000.0, help="full well in e- (default 20000)")
    q.add_argument("--levels", type=int, default=24, help="exposure levels (default 24)")
    q.add_argument("--prnu", type=float, default=0.005, help="pixel response non-uniformity, relative (default 0.005)")
    q.add_argument("--nonlinearity", type=float, default=0.0,
                   help="relative compression of the signal at full well (default 0)")
    _common(q)
    q.set_defaults(func=run_ptc)


def _add_turntable(ss):
    q = command(ss, "turntable", "turntable scan of a focused spot (per-pixel ePSF)", TT_HELP, quiet=False)
    q.add_argument("outdir", metavar="OUTDIR", help="folder to write (created)")
    q.add_argument("--steps", type=int, default=244, help="azimuth steps (default 244: ~10 px)")
    q.add_argument("--elevations", type=int, default=1, help="elevation steps; > 1 makes a 2-D grid (default 1)")
    q.add_argument("--step-deg", type=float, default=0.0005, help="turntable step in degrees (default 0.0005)")
    q.add_argument("--repeats", type=int, default=30, help="frames per step (default 30)")
    q.add_argument("--flux", type=float, default=3800.0, help="photo-electrons in the spot (default 3800)")
    q.add_argument("--prnu", type=float, default=0.005, help="pixel response non-uniformity (default 0.005)")
    q.add_argument("--rotation-deg", type=float, default=0.2,
                   help="angle of the scan to the pixel rows, degrees (default 0.2)")
    q.add_argument("--focal-length-mm", type=float, default=25.0, help="focal length in mm (default 25)")
    q.add_argument("--pixel-pitch-um", type=float, default=5.3, help="pixel pitch in um (default 5.3)")
    _common(q)
    q.set_defaults(func=run_turntable)


def _add_intrinsics(ss):
    q = command(ss, "intrinsics", "spot centroids over a turntable grid (camera intrinsics)", INTR_HELP)
    q.add_argument("outdir", metavar="OUTDIR", help="folder to write (created)")
    q.add_argument("--grid", type=int, default=21, help="azimuth and elevation steps each (default 21)")
    q.add_argument("--half-angle-deg", type=float, default=5.5, help="grid half width in degrees (default 5.5)")
    q.add_argument("--noise", type=float, default=0.01, help="centroid noise per axis, px rms (default 0.01)")
    q.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    q.set_defaults(func=run_intrinsics)


def _common(q):
    q.add_argument("--format", choices=["fits", "tiff"], default="fits", help="frame format (default fits)")
    q.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    q.add_argument("--quiet", "-q", action="store_true", help="no summary")


def run_ptc(args):
    from ..calibration.dataset import write_frames
    from ..calibration.synthetic import simulate_ptc

    sensor = Sensor(gain=args.gain, offset=args.offset, dark_var=args.dark_var, read_noise=args.read_noise)
    frames, manifest, truth = simulate_ptc(tuple(args.shape), sensor=sensor, full_well=args.full_well,
                                           levels=args.levels, prnu=args.prnu, nonlinearity=args.nonlinearity,
                                           seed=args.seed)
    out = Path(args.outdir)
    path = write_frames(out, frames, manifest, fmt=args.format)
    (out / "truth.toml").write_text(
        f"# truth of the synthetic photon transfer dataset; full well {truth['full_well']:g} e-, clipping at "
        f"{truth['saturation']:g} DN\n" + Sensor(gain=args.gain, offset=args.offset, dark_var=args.dark_var,
                                                 read_noise=args.read_noise).to_toml())
    if not args.quiet:
        print(f"wrote {len(frames)} frames and {path}; truth in {out / 'truth.toml'}", file=sys.stderr)
    return 0


def run_turntable(args):
    from ..calibration.dataset import write_frames
    from ..calibration.synthetic import simulate_turntable
    from ..io import write_table

    frames, manifest, truth = simulate_turntable(
        focal_length_mm=args.focal_length_mm, pixel_pitch_um=args.pixel_pitch_um, step_deg=args.step_deg,
        steps=args.steps, elevations=args.elevations, repeats=args.repeats, flux=args.flux, prnu=args.prnu,
        rotation_deg=args.rotation_deg, seed=args.seed)
    out = Path(args.outdir)
    path = write_frames(out, frames, manifest, fmt=args.format)
    sensor = Sensor(gain=0.14, offset=37.0, dark_var=54.40)
    camera = Camera(width=frames.shape[2], height=frames.shape[1], pixel_pitch_um=args.pixel_pitch_um,
                    focal_length_px=1000.0 * args.focal_length_mm / args.pixel_pitch_um)
    (out / "camera.toml").write_text("# synthetic turntable dataset (startrack simulate turntable)\n"
                                     + sensor.to_toml() + "\n" + camera.to_toml())
    truth.meta = {k: v for k, v in truth.meta.items() if k != "response"}
    write_table(truth, out / "truth.ecsv")
    if not args.quiet:
        print(f"wrote {len(frames)} frames and {path}; camera in {out / 'camera.toml'}, true positions in "
              f"{out / 'truth.ecsv'}", file=sys.stderr)
    return 0


def run_intrinsics(args):
    import numpy as np

    from ..calibration.synthetic import simulate_intrinsics
    from ..io import write_table

    table, truth = simulate_intrinsics(grid=args.grid, half_angle_deg=args.half_angle_deg,
                                       centroid_noise=args.noise, seed=args.seed)
    cam = truth["camera"]
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / "centroids.ecsv")
    nominal = Camera(width=cam.width, height=cam.height, focal_length_px=cam.focal_length_px,
                     pixel_pitch_um=cam.pixel_pitch_um)
    (out / "nominal.toml").write_text("# design values to start the intrinsics fit from\n" + nominal.to_toml())
    (out / "truth.toml").write_text(
        f"# truth of the synthetic intrinsics dataset; mounting rotation vector "
        f"{np.round(truth['mounting_deg'], 4).tolist()} deg, centroid noise {args.noise:g} px\n" + cam.to_toml())
    if not args.quiet:
        print(f"wrote {len(table)} centroids to {out / 'centroids.ecsv'}; nominal camera {out / 'nominal.toml'}, "
              f"truth {out / 'truth.toml'}", file=sys.stderr)
    return 0
