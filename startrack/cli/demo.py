"""``startrack demo``: the main job, a night-sky sequence, on a built-in simulated zenith sequence."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..flags import EDGE
from ..io import read_frame, read_table, sample_path, write_table
from ..measure import measure_stars
from ..psf import parse_psf
from ..sensor import Sensor
from ..sky.attitude import ARCSEC, Attitude
from ..sky.camera import Camera
from .common import pyplot

HELP = """Run the main job, the night-sky sequence (startrack nightsky), on a built-in
sequence: a camera fixed to the ground looking at the zenith (1024x1024, 5.3 um
pixels, f = 25 mm, the small-PSF paper's EMVA sensor), one frame every 0.366 s,
the stars of Hipparcos 2 drifting with the Earth's rotation, a non-Gaussian
small PSF. The sequence is simulated once (deterministically, ~40 MB in the
user cache folder) and reused. Pass 1: detection, centre of gravity, Gaussian
MLE with the CRLB, identification, attitude; pass 2: each star's own ePSF and
ePSF MLE; then the accuracy against the bound and the attitude against the
Earth's rotation, written to --out/report.md. --frame runs the single-frame
demo instead (the sample frame against its truth). The first run compiles the
kernels and builds the camera's pattern database (both cached afterwards).

examples:
  startrack demo                         # the sequence; report in startrack-demo/report.md
  startrack demo --frames 60 --workers 2
  startrack demo --frame --out frame-demo
"""

#: The built-in sequence (the tests' night: 47 N 8 E, camera rolled 30 deg so stars cross both pixel phases).
SEQUENCE = dict(start="2026-03-20T22:00:00", cadence=0.366, latitude=47.0, longitude=8.0, roll_deg=30.0,
                mag_limit=7.0, seed=3)
SEQUENCE_PSF = ((0.8, 0.3, -0.05, -0.02), (0.2, 0.6, 0.20, 0.08))


def register(sub):
    p = sub.add_parser("demo", help="run the night-sky job on a built-in sequence (or --frame: one frame)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", "-o", default="startrack-demo", metavar="DIR",
                   help="output folder (default startrack-demo; a previous demo run there is replaced)")
    p.add_argument("--frames", type=int, default=40, help="frames in the sequence (default 40, at least 25)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default all cores)")
    p.add_argument("--frame", action="store_true", help="the single-frame demo on the sample frame instead")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def demo_sequence(n_frames, folder=None, *, quiet=True) -> Path:
    """The built-in sequence of ``n_frames`` frames in ``folder`` (default: the user cache), simulated on first use.

    ``benchmarks/bench_nightsky.py`` runs the job on the same night, 500 frames long.
    """
    from .._cache import cache_dir
    from ..psf import GaussianMixturePSF
    from ..sky.earth import Site
    from ..sky.simulate import write_ground_sequence

    folder = cache_dir() / f"demo-sequence-{n_frames}" if folder is None else Path(folder)
    if (folder / "truth_frames.ecsv").is_file():
        return folder
    camera = Camera.from_dict({"focal_length_mm": 25.0, "pixel_pitch_um": 5.3, "width": 1024, "height": 1024})
    sensor = Sensor(gain=0.14, offset=37.0, dark_var=54.4, saturation=65535)
    kw = dict(SEQUENCE)
    site = Site(kw.pop("latitude"), kw.pop("longitude"))
    if not quiet:
        print(f"simulating the demo sequence once ({n_frames} frames) into {folder}", file=sys.stderr)
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    write_ground_sequence(tmp, camera, GaussianMixturePSF(SEQUENCE_PSF), sensor, site, n_frames, **kw)
    tmp.rename(folder)  # a killed simulation leaves no half sequence behind
    return folder


def sequence_model() -> str:
    """Pass 1's PSF model for the built-in sequence: a Gaussian of the PSF's equivalent radius."""
    from ..psf import GaussianMixturePSF

    return f"gaussian:{GaussianMixturePSF(SEQUENCE_PSF).equivalent_radius():.3f}"


def run(args):
    if args.frame:
        return _single_frame(args)
    from ..sky.assess import headline_lines
    from ..sky.nightsky import run as nightsky

    if args.frames < 25:
        raise ValueError(f"--frames must be at least 25 (each star's ePSF needs 20 frames), got {args.frames}")
    seq = demo_sequence(args.frames, quiet=args.quiet)
    out = Path(args.out)
    if (out / "run.json").is_file():
        shutil.rmtree(out)  # a previous demo's run: the demo starts afresh
    model = sequence_model()
    res = nightsky(seq, seq / "camera.toml", out=out, psf=model, workers=args.workers,
                   progress=not args.quiet and sys.stderr.isatty())
    print(f"night-sky demo: {len(res.frames)} frames of a ground-fixed zenith camera, pass 1 {model} MLE, "
          f"pass 2 each star's own ePSF")
    for line in headline_lines(res.assessment.headline):
        print(line)
    print(f"  report: {res.report}")
    return 0


def _single_frame(args):
    """The sample frame through detection, MLE and identification, against its truth."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, meta = read_frame(sample_path("sample_frame.fits"))
    sensor = Sensor.from_toml(sample_path("sample_camera.toml"))
    truth = read_table(sample_path("sample_truth.ecsv"))
    model = parse_psf(truth.meta["psf"])
    stars = measure_stars(image, model, sensor, roi=5, keep_bad=True)
    write_table(stars, out / "stars.ecsv")

    tree = cKDTree(np.column_stack([truth["x"], truth["y"]]))
    dist, j = tree.query(np.column_stack([stars["x_cg"], stars["y_cg"]]), distance_upper_bound=2.0)
    # a real sky has close pairs: compare only stars with no other star within the fitting window
    near, _ = tree.query(np.column_stack([truth["x"], truth["y"]]), k=2)
    isolated = np.append(near[:, 1] > 5.0, False)
    ok = (np.isfinite(dist) & isolated[np.minimum(j, len(truth))] & np.asarray(stars["converged"])
          & ~np.asarray(stars["saturated"]) & ((np.asarray(stars["flags"]) & EDGE) == 0))
    t = truth[j[ok]]
    s = stars[ok]

    def rms(a):
        return float(np.sqrt(np.mean(np.square(a))))

    mle = rms(np.hypot(s["x"] - t["x"], s["y"] - t["y"]) / np.sqrt(2))
    cg = rms(np.hypot(s["x_cg"] - t["x"], s["y_cg"] - t["y"]) / np.sqrt(2))
    bound = rms(np.hypot(s["x_err"], s["y_err"]) / np.sqrt(2))
    print(f"sample frame: {len(stars)} stars detected, {len(truth)} simulated "
          f"(PSF {model.spec}, gain {sensor.gain} DN/e-, dark variance {sensor.dark_var} e-^2)")
    print(f"  {ok.sum()} isolated, unsaturated stars away from the edges matched to the truth:")
    print(f"  centre of gravity   RMS error {cg:.4f} px per axis")
    print(f"  Poisson MLE         RMS error {mle:.4f} px per axis")
    print(f"  Cramér–Rao bound    RMS       {bound:.4f} px per axis")
    _attitude(stars, meta["header"]["DATE-OBS"], truth.meta)
    print(f"  table: {out / 'stars.ecsv'}")
    plt = pyplot("install the 'plot' extra for a picture")
    if plt is None:
        return 0
    fig, ax = plt.subplots(1, 2, figsize=(11, 5))
    lo, hi = np.percentile(image, [1, 99.8])
    ax[0].imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="upper")
    ax[0].scatter(stars["x"], stars["y"], s=60, facecolors="none", edgecolors="tab:orange", lw=0.8)
    ax[0].set_title("sample frame and detections")
    snr = np.asarray(s["flux"]) / np.sqrt(np.asarray(s["flux"]) + 25 * (np.asarray(s["background"]) + sensor.dark_var))
    ax[1].loglog(snr, np.abs(s["x_cg"] - t["x"]), ".", label="CG |error|", alpha=0.7)
    ax[1].loglog(snr, np.abs(s["x"] - t["x"]), ".", label="MLE |error|", alpha=0.7)
    ax[1].loglog(snr, s["x_err"], "k_", label="CRLB (x_err)")
    ax[1].set_xlabel("signal-to-noise ratio")
    ax[1].set_ylabel("x error (px)")
    ax[1].legend()
    ax[1].set_title("per-star x error against the bound")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=110)
    print(f"  plot:  {out / 'demo.png'}")
    return 0


def _attitude(stars, date_obs, truth):
    """Identify the sample frame's stars, solve the attitude and print it beside the truth."""
    from ..sky.starid import StarIdentifier

    good = np.asarray(stars["converged"]) & np.isfinite(np.asarray(stars["x_err"], float))
    s = stars[good]
    camera = Camera.from_toml(sample_path("sample_camera.toml"))
    ident = StarIdentifier(camera, progress=lambda m: print(f"  (first run: building the pattern database: {m})",
                                                             file=sys.stderr))
    solve = lambda: ident.identify(s["x"], s["y"], sigma=(s["x_err"], s["y_err"]), flux=s["flux"],  # noqa: E731
                                   time=date_obs)
    first = solve()
    sol = solve()  # timed again: the first call of a fresh install also compiles the kernels
    compiled = f"; the first call took {first.time_ms / 1000:.1f} s, compiling" if first.time_ms > 2000 else ""
    if not sol.solved:
        print(f"  star identification failed: {sol.reason}")
        return
    att = sol.attitude
    true = Attitude.from_radec_roll(truth["ra_deg"], truth["dec_deg"], truth["roll_deg"])
    err = att.error(true) / ARCSEC
    sd = np.sqrt(np.diag(att.covariance)) / ARCSEC
    print(f"  star identification: {sol.n_matched} of {len(s)} stars matched to Hipparcos 2 ({sol.mode}, "
          f"probability of a false match {sol.p_false:.1e}, {sol.time_ms:.1f} ms{compiled})")
    print(f"  attitude            RA {att.ra:11.6f} deg  Dec {att.dec:+10.6f} deg  roll {att.roll:10.6f} deg")
    print(f"  truth               RA {true.ra:11.6f} deg  Dec {true.dec:+10.6f} deg  roll {true.roll:10.6f} deg")
    print(f"  attitude error      {err[0]:+.3f} / {err[1]:+.3f} arcsec across the boresight, {err[2]:+.2f} arcsec roll")
    print(f"  1-sigma (QUEST)     {sd[0]:.3f} / {sd[1]:.3f} arcsec across the boresight, {sd[2]:.2f} arcsec roll; "
          f"residual RMS {sol.rms_arcsec:.2f} arcsec")
