"""Dual-focal-plane axial localisation (issue #7), in one run.

1. Train the axial CNN (``startrack.microscope.axial.train``, default settings)
   for the acceptance optics (NA 0.8, n 1.5, 550 nm, 100 nm pixels, planes at
   -0.5 and +0.5 um, z in [-2, 2] um, the simulator's realistic photon counts):
   dark-field and bright-field pairs, and the same network on one dark-field
   plane inside the z range (-0.5 um) and one outside it (-2.5 um).
2. Held-out simulated pairs (own seed) over z in [-2, 2] um: RMSE over the
   central +-1.5 um, bias per 100 nm bin, for every model and for the
   normalised cross-correlation library baseline (``LibraryMatcher``, a
   noise-free simulated library) on the same pairs; then both on dimmer,
   brighter and higher-background pairs.
3. Inference speed of the exported ONNX model through onnxruntime and
   ``cv2.dnn`` (``AxialLocalizer.predict``, batches of 4096 pairs, end to end),
   and the largest ONNX-vs-torch difference.

Writes ``axial.ecsv`` (per-bin bias and RMSE) and ``axial.png`` beside this
script; ``--save-models`` also writes the dual-plane models into
``startrack/data`` (the shipped defaults). Run::

    /work/venv/bin/python benchmarks/bench_axial.py --save-models
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

# The simulator's small matrix products run best on one BLAS thread, and multi-threaded OpenBLAS collapses
# on a shared CPU (measured: 2000 renders in 1.1 s on one thread, 16.7 s on two at load 4). torch keeps its
# own two threads for training. Must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from astropy.table import Table

from startrack.microscope import axial, defocus
from startrack.microscope.axial import AxialLocalizer, LibraryMatcher, axial_errors

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "startrack" / "data"
CENTRAL = 1.5  # um: the acceptance RMSE is over |z| <= 1.5
BIN = 0.1  # um


def held_out(z, lateral, optics, mode, seed):
    return defocus.simulate_pairs(z, optics, mode=mode, lateral_px=lateral, rng=seed)


def rmse_nm(zp, z, mask):
    return float(np.sqrt(np.mean((zp[mask] - z[mask]) ** 2)) * 1e3)


def rate(fn, n, repeats=3):
    """Pairs per second of ``fn()`` over ``n`` pairs, best of ``repeats`` (after one warm-up call)."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=10000, help="held-out pairs per mode (default 10000)")
    ap.add_argument("--quick", action="store_true", help="small training and test sets (smoke test)")
    ap.add_argument("--save-models", action="store_true", help="write the dual-plane models to startrack/data")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    n_test = 2000 if args.quick else args.n_test
    train_kw = dict(n_train=4000, epochs=3) if args.quick else {}
    optics = defocus.Optics()
    rng = np.random.default_rng(20261202)
    z = rng.uniform(-2.0, 2.0, n_test)
    lateral = rng.uniform(-0.5, 0.5, (n_test, 2))
    central = np.abs(z) <= CENTRAL
    print(f"startrack axial benchmark {datetime.date.today()} on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; {n_test} held-out pairs per mode, z in [-2, 2] um")

    cases = {  # name: (optics, mode)
        "darkfield_dual": (optics, "darkfield"),
        "brightfield_dual": (optics, "brightfield"),
        "darkfield_plane_-0.5": (optics.with_planes(-0.5), "darkfield"),
        "darkfield_plane_-2.5": (optics.with_planes(-2.5), "darkfield"),
    }
    tests = {name: held_out(z, lateral, opt, mode, seed=7) for name, (opt, mode) in cases.items()}
    models, results, tables = {}, {}, {}
    for name, (opt, mode) in cases.items():
        t0 = time.perf_counter()
        model = axial.train(opt, mode, **train_kw)
        wall = time.perf_counter() - t0
        models[name] = model
        zp = model.predict(tests[name])
        tab = axial_errors(z, zp, bin_um=BIN, z_range=(-2.0, 2.0))
        inner = np.abs(np.asarray(tab["z_um"])) < CENTRAL
        results[name] = dict(rmse=rmse_nm(zp, z, central), rmse_all=rmse_nm(zp, z, np.ones_like(central)),
                             max_bias=float(np.nanmax(np.abs(np.asarray(tab["bias_nm"])[inner]))), wall=wall,
                             epochs=model.meta["metrics"]["epochs_run"], best=model.meta["metrics"]["best_epoch"],
                             val=model.meta["metrics"]["val_rmse_um"] * 1e3, zp=zp)
        tables[name] = tab
        r = results[name]
        print(f"{name:22s} CNN: RMSE |z|<=1.5 {r['rmse']:7.1f} nm, all {r['rmse_all']:7.1f} nm, "
              f"max |bias| {r['max_bias']:6.1f} nm; training {wall:5.0f} s wall ({r['epochs']} epochs, best "
              f"{r['best']}, validation {r['val']:.1f} nm); load {os.getloadavg()[0]:.2f}")

    matchers = {}
    for name in ("darkfield_dual", "brightfield_dual", "darkfield_plane_-0.5"):
        opt, mode = cases[name]
        t0 = time.perf_counter()
        matchers[name] = LibraryMatcher.simulated(opt, mode, z_range=(-2.1, 2.1), step_um=0.01,
                                                  offsets_px=(-1 / 3, 0, 1 / 3))
        zp = matchers[name].predict(tests[name])
        seconds = time.perf_counter() - t0
        tab = axial_errors(z, zp, bin_um=BIN, z_range=(-2.0, 2.0))
        inner = np.abs(np.asarray(tab["z_um"])) < CENTRAL
        key = name + "_ncc"
        results[key] = dict(rmse=rmse_nm(zp, z, central), rmse_all=rmse_nm(zp, z, np.ones_like(central)),
                            max_bias=float(np.nanmax(np.abs(np.asarray(tab["bias_nm"])[inner]))), wall=seconds,
                            zp=zp)
        tables[key] = tab
        r = results[key]
        print(f"{name:22s} NCC: RMSE |z|<=1.5 {r['rmse']:7.1f} nm, all {r['rmse_all']:7.1f} nm, "
              f"max |bias| {r['max_bias']:6.1f} nm; library + matching {seconds:.1f} s")

    # One model for a range of brightness: the dual models and the library on dimmer, brighter and
    # higher-background pairs (|z| <= 1.5 um; the training drew 0.1x-3x photons and 0-10x background).
    sweep = {}
    for name in ("darkfield_dual", "brightfield_dual"):
        opt, mode = cases[name]
        nominal = defocus.DEFAULT_PHOTONS[mode]
        zs = rng.uniform(-CENTRAL, CENTRAL, n_test // 5)
        levels = [(f, 1.0) for f in (0.1, 0.25, 1.0, 4.0)] + ([(1.0, 10.0)] if mode == "darkfield" else [])
        for f, b in levels:
            pairs = defocus.simulate_pairs(zs, opt, mode=mode, photons=f * nominal,
                                           background=b * defocus.DEFAULT_BACKGROUND[mode], rng=11)
            cnn = rmse_nm(models[name].predict(pairs), zs, slice(None))
            ncc = rmse_nm(matchers[name].predict(pairs), zs, slice(None))
            sweep[(name, f, b)] = (cnn, ncc)
            print(f"{name:22s} {f:5.2f}x photons ({f * nominal:7.0f}), {b:4.1f}x background: CNN {cnn:6.1f} nm, "
                  f"NCC {ncc:6.1f} nm ({len(zs)} pairs, |z| <= 1.5 um)")

    dual, single_in = results["darkfield_dual"]["rmse"], results["darkfield_plane_-0.5"]["rmse"]
    single_out = results["darkfield_plane_-2.5"]["rmse"]
    print(f"dual vs in-range plane: {single_in / dual:.1f}x better; vs out-of-range plane: {single_out / dual:.1f}x")

    out_dir = DATA if args.save_models else Path(os.environ.get("TMPDIR", "/tmp"))
    for name, mode in (("darkfield_dual", "darkfield"), ("brightfield_dual", "brightfield")):
        path = out_dir / axial.DEFAULT_MODELS[mode]
        onnx_path, _ = models[name].save(path)
        pairs = tests[name]
        z_torch = models[name].predict(pairs)
        line = [f"{mode:11s} ONNX {onnx_path.stat().st_size / 1e3:.0f} kB"]
        for backend in axial.BACKENDS:
            loc = AxialLocalizer.load(onnx_path, backend=backend)
            diff = float(np.max(np.abs(loc.predict(pairs) - z_torch)) * 1e3)
            speed = rate(lambda loc=loc, pairs=pairs: loc.predict(pairs), len(pairs))
            results[f"{name}_{backend}"] = dict(diff=diff, speed=speed)
            line.append(f"{backend}: {speed:,.0f} pairs/s, max |ONNX - torch| {diff:.2g} nm")
        print("; ".join(line) + f"; load {os.getloadavg()[0]:.2f}")
    arch = models["darkfield_dual"].meta["architecture"]
    print(f"network: {arch['parameters']} parameters, {arch['macs_per_pair'] / 1e6:.2f} M MACs per pair")

    table = Table({"z_um": tables["darkfield_dual"]["z_um"], "n": tables["darkfield_dual"]["n"]})
    for key, tab in tables.items():
        table[f"{key}_bias_nm"] = tab["bias_nm"]
        table[f"{key}_rmse_nm"] = tab["rmse_nm"]
    table.meta.update(date=str(datetime.date.today()), n_test=n_test, central_um=CENTRAL,
                      summary={k: {kk: float(vv) for kk, vv in v.items() if kk != "zp"} for k, v in results.items()},
                      brightness={f"{n} {f}x photons {b}x background": {"cnn_rmse_nm": c, "ncc_rmse_nm": m}
                                  for (n, f, b), (c, m) in sweep.items()})
    table.write(HERE / "axial.ecsv", format="ascii.ecsv", overwrite=True)
    plot(z, results, tables, HERE / "axial.png")
    print(f"wrote {HERE / 'axial.ecsv'} and {HERE / 'axial.png'}")


def plot(z, results, tables, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, name in zip(axes[:2], ("darkfield_dual", "brightfield_dual"), strict=True):
        zp = results[name]["zp"]
        ax.plot(z, (zp - z) * 1e3, ",", color="0.7")
        for key, style in ((name, "o-"), (name + "_ncc", "s--")):
            zc = np.asarray(tables[key]["z_um"])
            label = "CNN" if key == name else "NCC library"
            ax.plot(zc, np.asarray(tables[key]["bias_nm"]), style, ms=3, label=f"{label} bias")
            ax.plot(zc, np.asarray(tables[key]["rmse_nm"]), style, ms=3, alpha=0.5, label=f"{label} RMSE")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvspan(-CENTRAL, CENTRAL, color="0.95", zorder=0)
        ax.set_ylim(-60, 60)
        ax.set_xlabel("true z (um)")
        ax.set_ylabel("nm")
        ax.set_title(f"{name.split('_')[0]}, planes -0.5/+0.5 um: RMSE {results[name]['rmse']:.1f} nm")
        ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    for key in ("darkfield_dual", "darkfield_plane_-0.5", "darkfield_plane_-2.5", "darkfield_dual_ncc"):
        ax.semilogy(np.asarray(tables[key]["z_um"]), np.asarray(tables[key]["rmse_nm"]), ".-", label=key)
    ax.set_xlabel("true z (um)")
    ax.set_ylabel("RMSE per 100 nm bin (nm)")
    ax.set_title("dark-field: dual vs single plane")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
