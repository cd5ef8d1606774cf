"""``startrack micro axial``: dual-focal-plane axial localisation (simulate, train, evaluate, predict)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from ..io import write_array
from .common import command, command_group, draw, progress, save

HELP = """Axial (z) position of a particle from a pair of defocused images at two focal
planes, by a small CNN run through ONNX (onnxruntime, else OpenCV's dnn).

A stack is an NPY or TIFF array of plane pairs, shape (n, 2, H, W) (planes
second; (n, H, W, 2) is accepted too; a 3-D TIFF of 2n pages alternates the
planes), in any linear intensity unit. Frames larger than the model's 32x32 px
crop are cropped around the particle. A z list is an ECSV/CSV table with a
z_um column (or a text/NPY file of numbers), one z per pair, in um.

Shipped models (--model darkfield or brightfield) are trained for NA 0.8,
n 1.5, 550 nm, 100 nm pixels, planes at -0.5 and +0.5 um, z in [-2, 2] um.

examples:
  startrack micro axial simulate --n 2000 --out stack.npy          # + stack_z.ecsv
  startrack micro axial train stack.npy stack_z.ecsv --out model.onnx
  startrack micro axial evaluate test.npy test_z.ecsv --model model.onnx --plot errors.png
  startrack micro axial predict pairs.npy --model darkfield --out z.ecsv
"""

SIMULATE_HELP = """Simulate a z-stack of plane pairs (scalar Fourier optics, startrack.microscope.defocus)
with shot and read noise: random z in --z-range, or a piezo-like scan with --z-step.
Writes OUT (.npy, or .tif with tifffile) in photo-electrons and OUT_z.ecsv (z_um and
the lateral offset dx_px, dy_px of each pair).

example:
  startrack micro axial simulate --mode brightfield --z-step 0.01 --repeats 5 --out calib.npy
"""

TRAIN_HELP = """Train the axial CNN on a calibration z-stack (a bead scanned through focus) and
write MODEL.onnx plus MODEL.json (metadata, validation RMSE). A random --val-fraction
of the pairs is held out for early stopping; small stacks are augmented with 1 px
shifts and extra noise; of the optics options only --planes (how many planes) and
--mode (recorded in MODEL.json) apply to a stack. With --simulate the network trains on
simulated pairs for the optics given instead (no stack). Needs PyTorch:
pip install "startrack[ml]".

examples:
  startrack micro axial train calib.npy calib_z.ecsv --out model.onnx
  startrack micro axial train --simulate --na 1.2 --planes -0.4 0.4 --z-range -1.5 1.5 --out model.onnx
"""

EVALUATE_HELP = """Predict z for a stack with known z and tabulate the error per z bin: n, bias
(mean error), std and RMSE in nm; overall RMSE and bias on stderr; --plot draws error
and bias versus z (needs matplotlib).

example:
  startrack micro axial evaluate test.npy test_z.ecsv --model model.onnx --out errors.ecsv --plot errors.png
"""

PREDICT_HELP = """Predict the z (um) of every pair of a stack; writes a table with pair and z_um.

example:
  startrack micro axial predict pairs.npy --model darkfield --out z.ecsv
"""

_CHUNK = 4096  # pairs per prediction call: feeds the progress bar


def add_axial(sub):
    command_group(sub, "axial", "axial position from two defocused planes (CNN, ONNX)", HELP,
                  (_add_simulate, _add_train, _add_evaluate, _add_predict), metavar="ACTION")


def _add_optics(p):
    g = p.add_argument_group("optics and camera (default: the shipped models' optics)")
    g.add_argument("--mode", default="darkfield", choices=["darkfield", "fluorescence", "brightfield"],
                   help="image formation (default darkfield)")
    g.add_argument("--na", type=float, default=0.8, help="numerical aperture (default 0.8)")
    g.add_argument("--index", type=float, default=1.5, help="immersion/medium refractive index (default 1.5)")
    g.add_argument("--wavelength-nm", type=float, default=550.0, help="wavelength, nm (default 550)")
    g.add_argument("--pixel-nm", type=float, default=100.0, help="pixel in the object plane, nm (default 100)")
    g.add_argument("--planes", type=float, nargs="+", default=[-0.5, 0.5], metavar="UM",
                   help="focal-plane positions, um (default -0.5 0.5)")
    g.add_argument("--z-range", type=float, nargs=2, default=[-2.0, 2.0], metavar=("LO", "HI"),
                   help="axial range, um (default -2 2)")
    g.add_argument("--photons", type=float, default=None,
                   help="photons per plane (bright-field: illumination e-/px); default the mode's realistic value")
    g.add_argument("--background", type=float, default=None, help="background, e-/px")
    g.add_argument("--read-noise", type=float, default=None, help="read noise, e- rms")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _optics(args):
    from ..microscope.defocus import Optics

    return Optics(na=args.na, n=args.index, wavelength_um=args.wavelength_nm / 1e3, pixel_um=args.pixel_nm / 1e3,
                  planes_um=tuple(args.planes))


def _model_arg(p):
    p.add_argument("--model", "-m", default="darkfield", metavar="MODEL",
                   help="model .onnx file, or 'darkfield' / 'brightfield' for a shipped model (default darkfield)")
    p.add_argument("--backend", choices=["onnxruntime", "opencv"], default=None,
                   help="inference back-end (default onnxruntime when installed, else opencv)")


def _load_model(args):
    from ..microscope.axial import DEFAULT_MODELS, AxialLocalizer

    if args.model in DEFAULT_MODELS:
        return AxialLocalizer.load(mode=args.model, backend=args.backend)
    return AxialLocalizer.load(args.model, backend=args.backend)


def _z_path(stack_path):
    p = Path(stack_path)
    return p.with_name(p.stem + "_z.ecsv")


# -- simulate ------------------------------------------------------------------------------------------------

def _add_simulate(sub):
    p = command(sub, "simulate", "simulate a z-stack of plane pairs", SIMULATE_HELP, out="stack.npy",
                what="stack (.npy or .tif); z go to FILE_z.ecsv")
    p.add_argument("--n", type=int, default=1000, help="pairs at random z (default 1000; ignored with --z-step)")
    p.add_argument("--z-step", type=float, default=None, metavar="UM", help="regular scan through --z-range, um")
    p.add_argument("--repeats", type=int, default=1, help="pairs per scan step (with --z-step; default 1)")
    p.add_argument("--size", type=int, default=32, help="crop width, px (default 32)")
    _add_optics(p)
    p.set_defaults(func=run_simulate)


def run_simulate(args):
    from dataclasses import replace

    from ..microscope.defocus import simulate_pairs

    lo, hi = args.z_range
    if not hi > lo:
        raise ValueError(f"--z-range: HI must exceed LO, got {lo} {hi}")
    rng = np.random.default_rng(args.seed)
    if args.z_step is not None:
        if not args.z_step > 0 or args.repeats < 1:
            raise ValueError("--z-step must be > 0 and --repeats >= 1")
        z = np.repeat(np.arange(lo, hi + args.z_step / 2, args.z_step), args.repeats)
    else:
        if args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}")
        z = rng.uniform(lo, hi, args.n)
    optics = replace(_optics(args), size=args.size)
    lateral = rng.uniform(-0.5, 0.5, (z.size, 2))
    pairs = np.empty((z.size, optics.n_planes, optics.size, optics.size), np.float32)
    chunk = 1024
    for i in progress(range(0, z.size, chunk), total=-(-z.size // chunk), desc="simulate", quiet=args.quiet):
        pairs[i:i + chunk] = simulate_pairs(z[i:i + chunk], optics, mode=args.mode, lateral_px=lateral[i:i + chunk],
                                            photons=args.photons, background=args.background,
                                            read_noise=args.read_noise, rng=rng)
    write_array(args.out, pairs)
    table = Table({"z_um": z * u.um, "dx_px": lateral[:, 0] * u.pix, "dy_px": lateral[:, 1] * u.pix})
    table.meta.update(mode=args.mode, optics=optics.to_dict(), stack=str(args.out))
    if not args.quiet:
        print(f"wrote {z.size} pairs {pairs.shape[1:]} to {args.out}", file=sys.stderr)
    save(table, _z_path(args.out), args.quiet)
    return 0


# -- train ---------------------------------------------------------------------------------------------------

def _add_train(sub):
    p = command(sub, "train", "train the axial CNN on a z-stack (or simulated pairs)", TRAIN_HELP, out="model.onnx",
                what="model (.onnx, with FILE.json beside it)")
    p.add_argument("stack", nargs="?", metavar="STACK", help="calibration stack (.npy or .tif)")
    p.add_argument("z", nargs="?", metavar="Z", help="z of each pair (ECSV/CSV z_um column, or text/NPY)")
    p.add_argument("--simulate", action="store_true", help="train on simulated pairs for the optics options")
    p.add_argument("--n-train", type=int, default=40000, help="simulated training pairs (default 40000)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="stack pairs held out (default 0.2)")
    p.add_argument("--epochs", type=int, default=None,
                   help="at most this many epochs (default 30 with --simulate, 60 for a stack)")
    p.add_argument("--max-minutes", type=float, default=9.0, help="stop training after this long (default 9)")
    _add_optics(p)
    p.set_defaults(func=run_train)


def run_train(args):
    try:
        import torch  # noqa: F401

        from ..microscope.axial import read_stack, read_z, train, train_from_stack
    except ImportError:
        raise ValueError('training needs PyTorch: pip install "startrack[ml]"') from None

    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    if args.simulate:
        if args.stack:
            raise ValueError("give either a STACK and Z or --simulate, not both")
        model = train(_optics(args), args.mode, z_range=tuple(args.z_range), n_train=args.n_train,
                      photons=args.photons, background=args.background, read_noise=args.read_noise,
                      epochs=args.epochs or 30, max_seconds=args.max_minutes * 60, seed=args.seed, log=log,
                      progress=lambda it, total, desc: progress(it, total=total, desc=desc, quiet=args.quiet))
    else:
        if not (args.stack and args.z):
            raise ValueError("give a STACK and its Z list (or --simulate)")
        n_planes = len(args.planes)
        pairs = read_stack(args.stack, n_planes)
        z = read_z(args.z, len(pairs))
        model = train_from_stack(pairs, z, n_planes=n_planes, val_fraction=args.val_fraction, mode=args.mode,
                                 epochs=args.epochs or 60, max_seconds=args.max_minutes * 60, seed=args.seed,
                                 log=log)
    onnx_path, json_path = model.save(args.out)
    if not args.quiet:
        m = model.meta["metrics"]
        print(f"validation RMSE {m['val_rmse_um'] * 1e3:.1f} nm (epoch {m['best_epoch']} of {m['epochs_run']}, "
              f"{m['train_seconds']:.0f} s); wrote {onnx_path} and {json_path}", file=sys.stderr)
    return 0


# -- evaluate and predict -------------------------------------------------------------------------------------

def _predict(loc, pairs, quiet):
    return np.concatenate([loc.predict(pairs[i:i + _CHUNK])
                           for i in progress(range(0, len(pairs), _CHUNK), total=-(-len(pairs) // _CHUNK),
                                             desc="predict", quiet=quiet)])


def _add_evaluate(sub):
    p = command(sub, "evaluate", "error and bias of a model versus z on a stack with known z", EVALUATE_HELP,
                out="axial_errors.ecsv")
    p.add_argument("stack", metavar="STACK", help="stack (.npy or .tif)")
    p.add_argument("z", metavar="Z", help="true z of each pair (ECSV/CSV z_um column, or text/NPY)")
    _model_arg(p)
    p.add_argument("--bin-nm", type=float, default=100.0, help="z bin width, nm (default 100)")
    p.add_argument("--plot", metavar="PNG", default=None, help="plot of error and bias versus z")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args):
    from ..microscope.axial import axial_errors, plot_axial_errors, read_stack, read_z

    if not args.bin_nm > 0:
        raise ValueError(f"--bin-nm must be > 0, got {args.bin_nm}")
    loc = _load_model(args)
    pairs = read_stack(args.stack, loc.n_planes)
    z = read_z(args.z, len(pairs))
    zp = _predict(loc, pairs, args.quiet)
    table = axial_errors(z, zp, bin_um=args.bin_nm / 1e3)
    table.meta.update(model=str(loc.path), stack=str(args.stack))
    save(table, args.out, args.quiet)
    if not args.quiet:
        print(f"{len(z)} pairs: RMSE {table.meta['rmse_nm']:.1f} nm, bias {table.meta['bias_nm']:+.1f} nm, "
              f"worst bin bias {np.nanmax(np.abs(table['bias_nm'])):.1f} nm", file=sys.stderr)
    if args.plot:
        draw(lambda path: plot_axial_errors(z, zp, table, path, title=loc.path.name), args.plot, quiet=args.quiet,
             hint="no plot: matplotlib is not installed")
    return 0


def _add_predict(sub):
    p = command(sub, "predict", "z of every pair of a stack", PREDICT_HELP, out="axial_z.ecsv")
    p.add_argument("stack", metavar="STACK", help="stack of pairs (.npy or .tif)")
    _model_arg(p)
    p.set_defaults(func=run_predict)


def run_predict(args):
    from ..microscope.axial import read_stack

    loc = _load_model(args)
    pairs = read_stack(args.stack, loc.n_planes)
    zp = _predict(loc, pairs, args.quiet)
    table = Table({"pair": np.arange(len(zp)), "z_um": zp * u.um})
    table.meta.update(model=str(loc.path), stack=str(args.stack), backend=loc.backend)
    save(table, args.out, args.quiet)
    return 0
