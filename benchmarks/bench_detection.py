"""Detection quality against the truth: completeness and false detections per frame, startrack and photutils.

    python benchmarks/bench_detection.py [--label before] [--frames 5] [--quick]

Frames: 512 x 512 uint16, the sample camera's sensor (gain 0.14 DN/e-, offset 37 DN, dark variance 54.4 e-^2,
12 bits), sky 20 e-/px, 441 stars a frame on a jittered 24 px grid (isolated: blending is not the question
here) through a pixel-integrated Gaussian PSF of r = 0.5 px (star-tracker PSF) and 1.0 px. Every star has the
same signal-to-noise ratio SNR = F / sqrt(F + N_eff (sky + dark)), with N_eff = 1 / sum(p_i^2) its own
noise-equivalent pixel count (the matched-filter SNR a detection threshold is about); the flux F is solved
from it star by star. Cases: SNR 5, 10, 20, and SNR 10 with 100 hot pixels (500-4000 DN,
:func:`startrack.simulate.add_hot_pixels`).

Methods, each at its documented 5-sigma threshold on the same frames:

- ``st.detect(frame, sensor)``: startrack's detection (matched filter, local maxima, CG);
- ``st.measure_stars(frame, psf, sensor)``: detection + MLE, failed fits and single hot pixels rejected;
- photutils ``DAOStarFinder(threshold=5 std, fwhm=2.355 r)`` on the frame less its sigma-clipped median
  (``sigma_clipped_stats``), the photutils documentation's recipe.

A true star counts as found when a detection lies within 1.5 px of it; a detection with no true star within
1.5 px is false (hot pixels found count as false, and also in ``hot_found``). ``pos_rms_px`` is the RMS
position error of the found stars (CG for detect, MLE for measure_stars, DAOStarFinder's centroid).
Only public functions are called, so the same script measures any version of the frame path; the results
go to ``benchmarks/detection_<label>.ecsv``. Times are context only (one run, a busy machine).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from bench_localize import machine  # the same machine line in every benchmark
from scipy.spatial import cKDTree

import startrack as st
from startrack.simulate import add_hot_pixels, expose, render

HERE = Path(__file__).resolve().parent
SENSOR = st.Sensor(gain=0.14, offset=37.0, dark_var=54.4, saturation=4095.0)
SKY = 20.0  # e-/px
SIZE, SPACING = 512, 24
MATCH = 1.5  # px
CASES = (("SNR 5", 5.0, 0), ("SNR 10", 10.0, 0), ("SNR 20", 20.0, 0), ("SNR 10 + 100 hot pixels", 10.0, 100))


def flux_for_snr(snr, psf, x, y):
    """Per-star flux (e-) giving the matched-filter SNR ``snr``: F^2 = snr^2 (F + N_eff B), solved for F."""
    b = SKY + SENSOR.dark_var + SENSOR.read_noise**2
    x0 = np.floor(x + 0.5).astype(np.int64) - 4
    y0 = np.floor(y + 0.5).astype(np.int64) - 4
    p, _, _ = psf.render(x, y, x0, y0, (9, 9))
    n_eff = 1.0 / np.sum(p**2, axis=(1, 2))
    s2 = snr * snr
    return 0.5 * (s2 + np.sqrt(s2 * s2 + 4.0 * s2 * n_eff * b))


def make_frame(psf, snr, n_hot, rng):
    """One uint16 frame, the true (x, y) of its stars and of its hot pixels."""
    g = np.arange(SPACING // 2, SIZE - SPACING // 2 + 1, SPACING, dtype=float)
    gx, gy = np.meshgrid(g, g)
    x = gx.ravel() + rng.uniform(-4, 4, gx.size)
    y = gy.ravel() + rng.uniform(-4, 4, gy.size)
    flux = flux_for_snr(snr, psf, x, y)
    frame = expose(render((SIZE, SIZE), x, y, flux, psf, SKY), SENSOR, rng).astype(np.uint16)
    hot = np.zeros((0, 2))
    if n_hot:
        frame, hot = add_hot_pixels(frame, n_hot, value_range=(500.0, 4000.0), saturation=SENSOR.saturation,
                                    seed=rng)
    return frame, np.column_stack([x, y]), hot


def run_startrack_detect(frame, psf):
    d = st.detect(frame, SENSOR)
    return np.column_stack([d["x_cg"], d["y_cg"]])


def run_measure_stars(frame, psf):
    m = st.measure_stars(frame, psf, SENSOR)
    return np.column_stack([m["x"], m["y"]])


def run_daofind(frame, psf):
    from photutils.detection import DAOStarFinder

    data = frame.astype(float)
    _, median, std = sigma_clipped_stats(data, sigma=3.0)
    found = DAOStarFinder(threshold=5.0 * std, fwhm=2.3548 * psf.sigma_x)(data - median)
    if found is None:
        return np.zeros((0, 2))
    return np.column_stack([found["xcentroid"], found["ycentroid"]])


METHODS = (("startrack detect", run_startrack_detect), ("startrack measure_stars", run_measure_stars),
           ("photutils DAOStarFinder", run_daofind))


def score(found, truth, hot):
    """(n found, n false, n hot pixels found, position errors of the found stars)."""
    if not len(found):
        return 0, 0, 0, np.zeros(0)
    d, j = cKDTree(truth).query(found)
    good = d <= MATCH
    hit = np.zeros(len(truth), bool)
    hit[j[good]] = True
    # the nearest detection of each found star gives its position error
    err = cKDTree(found).query(truth[hit])[0]
    false = ~good
    n_hot = int(np.sum(cKDTree(hot).query(found[false])[0] <= MATCH)) if len(hot) and false.any() else 0
    return int(hit.sum()), int(false.sum()), n_hot, err


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="run", help="name of this run (before / after); the ECSV is "
                                                   "detection_<label>.ecsv")
    ap.add_argument("--frames", type=int, default=5, help="frames per case and PSF (441 stars each)")
    ap.add_argument("--quick", action="store_true", help="one frame per case")
    args = ap.parse_args()
    n_frames = 1 if args.quick else args.frames
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    print(f"startrack detection benchmark '{args.label}' {datetime.date.today()} at {commit}, {machine()}")
    rows = []
    for r in (0.5, 1.0):
        psf = st.GaussianPSF(r)
        for case, snr, n_hot in CASES:
            rng = np.random.default_rng(int(1000 * r + 10 * snr + n_hot))
            frames = [make_frame(psf, snr, n_hot, rng) for _ in range(n_frames)]
            for _, fn in METHODS:  # compile and import outside the timings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn(frames[0][0], psf)
            for name, fn in METHODS:
                n_true = n_hit = n_false = n_hot_found = 0
                errs, secs = [], 0.0
                for frame, truth, hot in frames:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # photutils' "no sources found" and the like
                        t0 = time.perf_counter()
                        found = fn(frame, psf)
                        secs += time.perf_counter() - t0
                    hit, false, hf, err = score(found, truth, hot)
                    n_true += len(truth)
                    n_hit += hit
                    n_false += false
                    n_hot_found += hf
                    errs.append(err)
                err = np.concatenate(errs)
                rows.append({"label": args.label, "psf_r_px": r, "case": case, "snr": snr, "hot_pixels": n_hot,
                             "method": name, "frames": n_frames, "n_true": n_true,
                             "completeness": n_hit / n_true, "false_per_frame": n_false / n_frames,
                             "hot_found_per_frame": n_hot_found / n_frames,
                             "pos_rms_px": float(np.sqrt(np.mean(err**2))) if len(err) else np.nan,
                             "ms_per_frame": 1000.0 * secs / n_frames})
                row = rows[-1]
                print(f"| {r} | {case} | {name} | {100 * row['completeness']:.1f} % | {row['false_per_frame']:.1f} "
                      f"| {row['hot_found_per_frame']:.1f} | {row['pos_rms_px']:.3f} | {row['ms_per_frame']:.0f} |",
                      flush=True)
    table = Table(rows=[list(r.values()) for r in rows], names=list(rows[0]))
    table["completeness"].description = "fraction of the true stars with a detection within 1.5 px"
    table["false_per_frame"].description = "detections with no true star within 1.5 px, per frame"
    table["pos_rms_px"].unit = "pix"
    table["ms_per_frame"].unit = "ms"
    table.meta.update(date=datetime.date.today().isoformat(), machine=machine(), commit=commit,
                      frame=f"{SIZE}x{SIZE} uint16, {((SIZE - SPACING) // SPACING + 1) ** 2} stars, sky {SKY} e-/px",
                      match_radius_px=MATCH)
    out = HERE / f"detection_{args.label}.ecsv"
    table.write(out, format="ascii.ecsv", overwrite=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
