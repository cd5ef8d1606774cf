"""Calibration accuracy on synthetic data with a known truth: photon transfer, turntable ePSF, intrinsics.

    python benchmarks/bench_calib.py [--quick] [--write]

A. Photon transfer (EMVA 1288) on the small-PSF paper's lab camera (K = 0.14 DN/e-, s0 = 37 DN,
   sd2 = 54.40 e-^2), 128 x 128 frames, 24 exposure levels to beyond saturation, 0.5 % PRNU.
B. Turntable per-pixel ePSF in the paper's lab setting (f = 25 mm, 5.3 um, 0.0005 deg = 0.041 px
   steps over 10 px, 30 frames per step, 5 x 5 window, a focused non-Gaussian spot). In the same run
   and on the same frames: ePSF + Poisson MLE, the centre of gravity and scipy's least-squares
   Gaussian fit, against the precision limit (PL) -- and the fits per second of MLE and Gaussian fit.
C. Per-pixel ePSF against one ePSF shared by all pixels and against that shared ePSF times a fitted
   per-pixel response (all built from the same model frames), for several pixel response
   non-uniformities (PRNU) and frames per step: single-frame error, error of the mean of the
   repeats, and the systematic (model) error on noise-free test frames.
D. Turntable intrinsics (focal length, principal point, distortion, mounting) from spot centroids,
   against the truth and the fit's own covariance.
``--write`` replaces the "Calibration" section of benchmarks/BENCHMARKS.md with the tables printed.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
from astropy.table import Table
from bench_localize import machine  # the same machine line in every benchmark

import startrack as st
from startrack.calibration.intrinsics import fit_intrinsics
from startrack.calibration.ptc import level_statistics, photon_transfer
from startrack.calibration.synthetic import simulate_intrinsics, simulate_ptc, simulate_turntable, spot_image
from startrack.calibration.turntable import (
    _brightest,
    calibrate_turntable,
    evaluate_turntable,
    gaussian_fit,
    shared_epsf,
)
from startrack.sky.camera import Camera

ROOT = Path(__file__).resolve().parents[1]
SENSOR = st.Sensor(gain=0.14, offset=37.0, dark_var=54.40)


def bench_ptc(seeds):
    rows = []
    for seed in seeds:
        frames, manifest, _ = simulate_ptc((128, 128), sensor=SENSOR, seed=seed)
        kinds, t = np.asarray(manifest["kind"]), np.asarray(manifest["exposure_s"])
        levels = Table(rows=[{"kind": k, "exposure_s": e, **level_statistics(frames[(kinds == k) & (t == e)])}
                             for k in ("dark", "flat") for e in np.unique(t)])
        r = photon_transfer(levels)
        rows.append((r.gain, r.gain_err, r.offset, r.offset_err, r.dark_var, r.dark_var_err, r.linearity_error))
    a = np.array(rows)
    k_err = np.abs(a[:, 0] / 0.14 - 1)
    s_err = np.abs(a[:, 2] - 37.0)
    d_err = np.abs(a[:, 4] / 54.40 - 1)
    lines = ["| quantity | truth | typical estimate +- stated uncertainty | worst error over "
             f"{len(seeds)} datasets | acceptance |", "|---|---|---|---|---|",
             f"| gain K (DN/e-) | 0.14 | {a[0, 0]:.5f} +- {a[0, 1]:.5f} | {100 * k_err.max():.2f} % | 2 % |",
             f"| offset s0 (DN) | 37 | {a[0, 2]:.3f} +- {a[0, 3]:.3f} | {s_err.max():.3f} DN | 0.5 DN |",
             f"| dark variance sd2 (e-^2) | 54.40 | {a[0, 4]:.2f} +- {a[0, 5]:.2f} | {100 * d_err.max():.2f} % | 2 % |",
             f"| linearity error (%) | 0 | {a[0, 6]:.3f} | {a[:, 6].max():.3f} % | |"]
    return lines


def true_model(truth, cal):
    """The per-pixel ePSF without noise (true spot x the pixel responses), on a fine scan: gives the true PL."""
    m = cal.model
    xt, yt = np.asarray(truth["x"]), np.asarray(truth["y"])
    off = np.mean(np.asarray(cal.steps["x"]) - xt)  # calibration's origin minus the truth's reference point
    fine = np.linspace(xt[0], xt[-1], 2000)
    resp = truth.meta["response"]
    vals = spot_image(fine, np.interp(fine, xt, yt), resp.shape) * resp
    return st.PixelEPSF(vals[:, m.row0:m.row0 + m.nrows, m.col0:m.col0 + m.ncols], fine + off, m.y, col0=m.col0,
                        row0=m.row0)


def expected_frames(truth, cal):
    """Noise-free frames (DN) of every input frame's step: the systematic error of a model alone."""
    resp = truth.meta["response"]
    light = truth.meta["flux"] * spot_image(truth["x"], truth["y"], resp.shape) * resp
    # Truth rows and calibration steps are both sorted by (azimuth, elevation).
    return SENSOR.mean_dn(light)[cal.step_of_frame]


def bench_turntable(seed, quick):
    steps = 122 if quick else 244
    frames, manifest, truth = simulate_turntable(seed=seed, steps=steps)
    cal = calibrate_turntable(frames, manifest["azimuth_deg"], manifest["elevation_deg"], SENSOR, 25.0, 5.3)
    evaluate_turntable(cal, frames, SENSOR, gaussian=False)  # compile (or load the cache) before timing
    t0 = time.perf_counter()
    ev = evaluate_turntable(cal, frames, SENSOR, gaussian=False)
    t_mle = time.perf_counter() - t0
    test = np.asarray(cal.steps["role"]) == "test"
    pl_true = st.crlb.precision_limit(true_model(truth, cal), np.asarray(cal.steps["x"])[test], cal.model.y,
                                      truth.meta["flux"], 0.0, SENSOR, params=("x",), roi=5)[0]
    # Gaussian fit on the same test windows, timed on its own.
    idx = np.flatnonzero(test[cal.step_of_frame])
    sub = frames[idx]
    cg = st.centroid(sub, _brightest(sub), roi=5)  # each frame its own stamp
    t0 = time.perf_counter()
    gf = gaussian_fit(sub, np.column_stack([cg["x_cg"], cg["y_cg"]]), roi=5)
    t_gf = time.perf_counter() - t0
    ref = np.asarray(cal.steps["x"])[cal.step_of_frame[idx]]
    gf_err = gf[:, 0] - ref
    step = cal.step_of_frame[idx]
    gf_rmse = np.sqrt(np.mean([np.mean(gf_err[step == s] ** 2) for s in np.unique(step)]))
    gf_mean = np.sqrt(np.mean([np.mean(gf_err[step == s]) ** 2 for s in np.unique(step)]))
    m = ev.meta
    near = np.abs(np.abs(np.asarray(ev["dx"])) - 0.5) <= 0.1
    nearest = np.abs(np.abs(np.asarray(ev["dx"])) - 0.5) <= 0.05
    pl_true_rms = float(np.sqrt(np.mean(pl_true**2)))
    n = len(sub)
    lines = [f"{int(test.sum())} test positions x 30 frames = {n} fits; spot {truth.meta['flux']:.0f} e-, "
             f"0.5 % PRNU; x errors against the turntable reference, RMS over the test positions (px):", "",
             "| estimator | single frame | mean of 30 frames | ratio to PL (single frame) |", "|---|---|---|---|",
             f"| precision limit, from the calibrated model | {m['rms_pl_x']:.4f} | "
             f"{m['rms_pl_x'] / np.sqrt(30):.4f} (PL/sqrt 30) | 1 |",
             f"| precision limit, true spot (simulation only) | {pl_true_rms:.4f} | | |",
             f"| ePSF + MLE (startrack) | {m['rms_rmse_mle']:.4f} | {m['rms_mean_mle']:.4f} | "
             f"{m['rms_rmse_mle'] / m['rms_pl_x']:.2f} (true PL: {m['rms_rmse_mle'] / pl_true_rms:.2f}) |",
             f"| centre of gravity | {m['rms_rmse_cg']:.4f} | {m['rms_mean_cg']:.4f} | "
             f"{m['rms_rmse_cg'] / m['rms_pl_x']:.1f} |",
             f"| least-squares Gaussian fit (scipy) | {gf_rmse:.4f} | {gf_mean:.4f} | {gf_rmse / m['rms_pl_x']:.1f} |",
             "",
             f"- CG / MLE = {m['rms_rmse_cg'] / m['rms_rmse_mle']:.1f}x (acceptance >= 5x); MLE / PL = "
             f"{m['rms_rmse_mle'] / m['rms_pl_x']:.2f} (acceptance <= 1.2; paper 0.011 / 0.010).",
             f"- Within 0.1 px of a pixel boundary: MLE {np.nanmean(ev['rmse_mle'][near]):.4f} px, PL "
             f"{np.mean(ev['pl_x'][near]):.4f} px (acceptance < 0.005); within 0.05 px: MLE "
             f"{np.nanmean(ev['rmse_mle'][nearest]):.4f} px.",
             f"- Speed on the same windows: ePSF + MLE {n / t_mle:,.0f} fits/s (whole evaluation, one localize "
             f"call), scipy Gaussian fit {n / t_gf:,.0f} fits/s: {t_gf / t_mle:.0f}x."]
    return lines


def bench_prnu(cases, seeds):
    lines = ["| PRNU | frames per step | single frame: per-pixel / shared / shared x response | "
             "mean of repeats: same three | systematic: same three |", "|---|---|---|---|---|"]
    for prnu, repeats in cases:
        acc = []
        for seed in seeds:
            frames, manifest, truth = simulate_turntable(seed=seed, prnu=prnu, repeats=repeats, steps=244)
            cal = calibrate_turntable(frames, manifest["azimuth_deg"], manifest["elevation_deg"], SENSOR, 25.0, 5.3)
            noisefree = expected_frames(truth, cal)
            row = []
            for model in (cal.model, shared_epsf(cal), shared_epsf(cal, response=True)):
                ev = evaluate_turntable(cal, frames, SENSOR, model=model, gaussian=False)
                sy = evaluate_turntable(cal, noisefree, SENSOR, model=model, gaussian=False)
                row.append((ev.meta["rms_rmse_mle"], ev.meta["rms_mean_mle"], sy.meta["rms_mean_mle"]))
            acc.append(row)
        a = np.sqrt(np.mean(np.square(acc), axis=0))  # (model, quantity), RMS over seeds
        cells = [" / ".join(f"{v:.4f}" for v in a[:, q]) for q in range(3)]
        lines.append(f"| {100 * prnu:.1f} % | {repeats} | " + " | ".join(cells) + " |")
    return lines


def bench_intrinsics(seeds):
    nominal = Camera(width=1024, height=1024, focal_length_px=25000.0 / 5.3, pixel_pitch_um=5.3)
    lines = ["| centroid noise | grid | points | worst focal length error | worst principal point error | "
             "stated sigma of the principal point | residual RMS / noise |", "|---|---|---|---|---|---|---|"]
    for noise, grid in ((0.01, 21), (0.002, 61)):
        f_err, pp_err, pp_sig, ratio = [], [], [], []
        for seed in seeds:
            t, truth = simulate_intrinsics(centroid_noise=noise, grid=grid, seed=seed)
            r = fit_intrinsics(t["azimuth_deg"], t["elevation_deg"], t["x"], t["y"], nominal)
            cam = truth["camera"]
            f_err.append(abs(r.camera.focal_length_px / cam.focal_length_px - 1))
            pp_err.append(np.max(np.abs(np.subtract(r.camera.principal_point, cam.principal_point))))
            pp_sig.append(max(r.errors["cx"], r.errors["cy"]))
            ratio.append(r.rms / noise)
        lines.append(f"| {noise} px | {grid} x {grid} over +-5.5 deg | {len(t)} | {100 * max(f_err):.5f} % | "
                     f"{max(pp_err):.3f} px | {np.mean(pp_sig):.3f} px | {max(ratio):.3f} |")
    return lines


def write_section(text):
    path = ROOT / "benchmarks" / "BENCHMARKS.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    head = "## Calibration"
    if head in old:
        start = old.index(head)
        nxt = old.find("\n## ", start + len(head))
        old = old[:start].rstrip("\n") + ("\n\n" + old[nxt + 1:] if nxt >= 0 else "\n")
    path.write_text(old.rstrip("\n") + "\n\n" + text + "\n")
    print(f"updated {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer datasets and a shorter scan")
    ap.add_argument("--write", action="store_true", help="replace the Calibration section of BENCHMARKS.md")
    args = ap.parse_args()
    seeds = range(3) if args.quick else range(10)
    out = ["## Calibration", "",
           f"`python benchmarks/bench_calib.py{' --quick' if args.quick else ''}` on "
           f"{datetime.date.today().isoformat()}, {machine()}. Synthetic data with a known truth "
           "(`startrack.calibration.synthetic`, the same generators as `startrack simulate`).", "",
           "### Photon transfer (EMVA 1288)", ""]
    out += bench_ptc(seeds)
    out += ["", "### Turntable per-pixel ePSF, the small-PSF paper's lab setting", ""]
    out += bench_turntable(1, args.quick)
    out += ["", "### Per-pixel ePSF against one shared ePSF", "",
            "The paper's per-pixel ePSF (each pixel's own spline through 30-frame means), one shared ePSF "
            "(all pixels' samples pooled: PRNU averaged out) and the shared ePSF times each pixel's fitted response "
            "(`shared_epsf(cal, response=True)`), all from the same model frames; x error RMS over test positions "
            "and 3 datasets (px). 'Systematic' is the model's own error: the MLE on noise-free test frames.", ""]
    cases = [(0.0, 30), (0.005, 30), (0.02, 30), (0.005, 120)]
    out += bench_prnu(cases[:3] if args.quick else cases, range(1) if args.quick else range(3))
    out += ["", "### Turntable intrinsics", "",
            "Focal length 25 mm (4716.98 px), principal point (520.3, 505.7) px, k1..p2 = (-0.25, 0.4, 2e-4, -1e-4), "
            f"mounting rotation (0.3, -0.5, 1.2) deg; fit of f, principal point, k1, k2, p1, p2 and the mounting; "
            f"{len(list(seeds))} datasets per row.", ""]
    out += bench_intrinsics(seeds)
    out += ["", "The principal point trades off against the mounting tilt (module notes of "
            "`startrack.calibration.intrinsics`): its uncertainty is ~660 x centroid noise / sqrt(points) over this "
            "field, so 0.05 px needs centroid noise / sqrt(points) of ~4e-5 px; the fit reaches that bound (errors "
            "within ~2 stated sigma, residuals at the noise)."]
    text = "\n".join(out)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
