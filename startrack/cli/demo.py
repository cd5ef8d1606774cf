"""``startrack demo``: the main job on the built-in sample frame, with the known truth beside it."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..io import read_frame, read_table, write_table
from ..psf import parse_psf
from ..sensor import Sensor
from .common import pyplot
from .localize import localize_frame

HELP = """Run detection, centre of gravity and Poisson MLE on the built-in sample frame
(a simulated 512x512 star sensor frame whose true star positions are known),
and compare both estimators with the truth and with the Cramér–Rao bound.
Writes the star table (and a plot when matplotlib is installed) to --out.
"""


def sample_path(name: str) -> Path:
    """Path of a file shipped in ``startrack/data``."""
    return Path(str(resources.files("startrack") / "data" / name))


def register(sub):
    p = sub.add_parser("demo", help="run the pipeline on the built-in sample frame", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", "-o", default="startrack-demo", metavar="DIR", help="output folder (default startrack-demo)")
    p.set_defaults(func=run)


def run(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, _ = read_frame(sample_path("sample_frame.fits"))
    sensor = Sensor.from_toml(sample_path("sample_camera.toml"))
    truth = read_table(sample_path("sample_truth.ecsv"))
    model = parse_psf(truth.meta["psf"])
    stars = localize_frame(image, model, sensor, roi=5)
    write_table(stars, out / "stars.ecsv")

    dist, j = cKDTree(np.column_stack([truth["x"], truth["y"]])).query(
        np.column_stack([stars["x_cg"], stars["y_cg"]]), distance_upper_bound=2.0)
    ok = np.isfinite(dist) & np.asarray(stars["converged"]) & ~np.asarray(stars["saturated"])
    t = truth[j[ok]]
    s = stars[ok]

    def rms(a):
        return float(np.sqrt(np.mean(np.square(a))))

    mle = rms(np.hypot(s["x"] - t["x"], s["y"] - t["y"]) / np.sqrt(2))
    cg = rms(np.hypot(s["x_cg"] - t["x"], s["y_cg"] - t["y"]) / np.sqrt(2))
    bound = rms(np.hypot(s["x_err"], s["y_err"]) / np.sqrt(2))
    print(f"sample frame: {len(stars)} stars detected, {len(truth)} simulated "
          f"(PSF {model.spec}, gain {sensor.gain} DN/e-, dark variance {sensor.dark_var} e-^2)")
    print(f"  {ok.sum()} unsaturated stars matched to the truth:")
    print(f"  centre of gravity   RMS error {cg:.4f} px per axis")
    print(f"  Poisson MLE         RMS error {mle:.4f} px per axis")
    print(f"  Cramér–Rao bound    RMS       {bound:.4f} px per axis")
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
