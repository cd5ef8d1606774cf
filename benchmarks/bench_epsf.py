"""ePSF build and localisation against photutils (EPSFBuilder + PSFPhotometry), on the same stars, in one run.

True PSF: a pixel-integrated Gaussian core (r = 0.3 px, 80 % of the flux) plus
a Gaussian halo (r = 0.6 px, 20 %) offset by (+0.25, +0.10) px, through the
sensor model (N = 5000 e-, K = 0.2 DN/e-, dark variance 25 e-^2). 300 star
images at random sub-pixel positions over 50 frames (6 stars a frame) build
the ePSF from centre-of-gravity starts; 2000 independent test stars are then
localised. Errors are taken after removing one offset common to all stars.

Two sequences: "dithered" (the same 6 stars in every frame, shifted by a
random amount: a star sensor's sequence) and "independent" (a new field
every frame). On the dithered one the build ties each star across frames
(``tie="shift"``); independent images allow no tie.

Run:  python benchmarks/bench_epsf.py [--seed S] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
from astropy.nddata import NDData
from astropy.table import Table

import startrack as st
from startrack.evaluate import position_errors
from startrack.simulate import dithered_frames, spot_grid

TRUTH = st.GaussianMixturePSF([(0.8, 0.3, 0.0, 0.0), (0.2, 0.6, 0.25, 0.10)])
SENSOR = st.Sensor(gain=0.2, offset=37.0, dark_var=25.0)
FLUX = 5000.0
ROI = 7


def cpu(fn, *a, **k):
    t = time.process_time()
    out = fn(*a, **k)
    return out, time.process_time() - t


def photutils_build(frames, positions, size=ROI):
    """photutils EPSFBuilder on the same star images (background-subtracted e-, CG starts)."""
    from photutils.psf import EPSFBuilder, extract_stars

    data = [NDData((f - SENSOR.offset) / SENSOR.gain - SENSOR.dark_var) for f in frames]
    cats = [Table({"x": p[:, 0], "y": p[:, 1]}) for p in positions]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stars = extract_stars(data, cats, size=size)
        builder = EPSFBuilder(oversampling=4, maxiters=10, progress_bar=False)
        return builder(stars).epsf


def photutils_fit(epsf, image, start):
    from photutils.psf import PSFPhotometry

    data = (image - SENSOR.offset) / SENSOR.gain - SENSOR.dark_var
    err = np.sqrt(np.maximum(data, 0) + SENSOR.dark_var)
    init = Table({"x": start[:, 0], "y": start[:, 1]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        phot = PSFPhotometry(epsf, fit_shape=(ROI, ROI), aperture_radius=3)
        out = phot(data, error=err, init_params=init)
    return np.asarray(out["x_fit"], float), np.asarray(out["y_fit"], float)


def cg_positions(frames, truth):
    """Rough detections (the true pixel) refined by centre of gravity, per frame."""
    out = []
    for f, xy in zip(frames, truth, strict=True):
        cg = st.centroid(f, np.round(xy), roi=ROI)
        out.append(np.column_stack([cg["x_cg"], cg["y_cg"]]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="skip photutils' photometry (slow)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n_test = 2000
    dx, dy = rng.uniform(-0.5, 0.5, (2, n_test))
    timg, tt = spot_grid(TRUTH, dx, dy, FLUX, SENSOR, spacing=12, seed=rng)
    truth_xy = np.column_stack([tt["x"], tt["y"]])
    m = st.crlb.intrapixel_map(TRUTH, FLUX, 0.0, SENSOR, n=40, roi=ROI)
    pl = np.sqrt(0.5 * (np.mean(np.square(m["pl_x"])) + np.mean(np.square(m["pl_y"]))))
    print(f"startrack {st.__version__} | {platform.platform()} | {platform.processor() or platform.machine()}")
    print(f"PL of the true PSF (x, y, flux, background fitted), RMS over the pixel: {pl:.5f} px")
    cg = st.centroid(timg, tt, roi=ROI)
    rows = []

    def score(name, x, y, build_s=np.nan, n_build=np.nan):
        e = position_errors(x, y, truth_xy[:, 0], truth_xy[:, 1])
        rmse = np.sqrt(0.5 * (e["rmse_x"] ** 2 + e["rmse_y"] ** 2))
        rows.append((name, e["n"], rmse, rmse / pl, max(e["s_curve_x"], e["s_curve_y"]), build_s, n_build))

    def fit(model):
        r = st.localize(timg, tt, model, SENSOR, roi=ROI)
        ok = np.asarray(r["converged"])
        return np.where(ok, r["x"], np.nan), np.where(ok, r["y"], np.nan)

    score("true PSF, MLE", *fit(TRUTH))
    score("centre of gravity", np.asarray(cg["x_cg"]), np.asarray(cg["y_cg"]))
    st.localize(timg[:40, :40], tt[:4], st.GaussianPSF(0.3), SENSOR, roi=ROI)  # compile outside the timings
    for kind in ("dithered", "independent"):
        frames, truth = dithered_frames((64, 80), 6, 50, TRUTH, SENSOR, flux=FLUX, dither=3.0,
                                        independent=kind == "independent", min_separation=15, seed=rng)
        start = cg_positions(frames, truth)
        tie = "shift" if kind == "dithered" else None
        one, t1 = cpu(st.build_epsf, frames, start, SENSOR, iterations=1)
        score(f"{kind}: one-pass ePSF (CG only), MLE", *fit(one), t1, one.meta["n_stars"])
        if tie:
            untied, tu = cpu(st.build_epsf, frames, start, SENSOR)
            score(f"{kind}: AK ePSF, no tie, MLE", *fit(untied), tu, untied.meta["n_stars"])
        ours, to = cpu(st.build_epsf, frames, start, SENSOR, tie=tie)
        if tie:
            tied = ours
        score(f"{kind}: AK ePSF{', tie=shift' if tie else ''}, MLE", *fit(ours), to, ours.meta["n_stars"])
        gauss = st.GaussianPSF(ours.equivalent_radius())
        score(f"{kind}: Gaussian r={gauss.sigma_x:.3f} (best match to the ePSF), MLE", *fit(gauss))
        pu, tp = cpu(photutils_build, frames, start)
        if not args.quick:
            score(f"{kind}: photutils EPSFBuilder + PSFPhotometry", *photutils_fit(pu, timg, np.column_stack(
                [cg["x_cg"], cg["y_cg"]])), tp, sum(len(s) for s in start))
        if kind == "dithered":
            # Build time for 200 star images (the first 34 frames hold 204; use 200 of them).
            sub_f, sub_p = frames[:34], [p.copy() for p in start[:34]]
            sub_p[-1][-4:] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                e200, t200 = cpu(st.build_epsf, sub_f, sub_p, SENSOR, tie="shift")
                _, tp200 = cpu(photutils_build, sub_f, [p[np.all(np.isfinite(p), axis=1)] for p in sub_p])
            speed = (e200.meta["n_stars"], t200, tp200)
    t = Table(rows=rows, names=("method", "n", "rmse_px", "rmse_over_pl", "s_curve_px", "build_cpu_s", "n_build"))
    for c in ("rmse_px", "rmse_over_pl", "s_curve_px", "build_cpu_s"):
        t[c].format = ".4f"
    t.pprint(max_lines=-1, max_width=-1)
    print(f"build of {speed[0]} star images: startrack {speed[1]:.3f} CPU-s, photutils {speed[2]:.2f} CPU-s "
          f"({speed[2] / speed[1]:.1f}x)")
    # Localisation speed: the ePSF in the fitter's inner loop against the analytic Gaussian.
    gauss = st.GaussianPSF(0.3)
    for model in (gauss, tied):
        st.localize(timg, tt, model, SENSOR, roi=ROI)
    tg = min(cpu(st.localize, timg, tt, gauss, SENSOR, roi=ROI)[1] for _ in range(3))
    te = min(cpu(st.localize, timg, tt, tied, SENSOR, roi=ROI)[1] for _ in range(3))
    print(f"localize {n_test} stars: Gaussian {tg:.3f} CPU-s, ePSF {te:.3f} CPU-s ({te / tg:.2f}x)")


if __name__ == "__main__":
    main()
